"""mnist99's two sweepers. `GridSweeper` (every `-m`) is Hydra's basic sweeper with readable job folder
names; `StudySweeper` (`hparams_search=optuna`) is hydra-optuna-sweeper's, with a study shared by any
number of workers (mnist99/study.py). Hydra imports this module at every start-up: nothing heavy here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class GridSweeper(BasicSweeper):
    """Every combination, as Hydra's basic sweeper runs them; a job's folder holds its number and the
    overrides that vary across the sweep (mnist99.job_names)."""

    def sweep(self, arguments: list[str]) -> Any:
        params = [f"{k!s}={v}" for k, v in (self.params or {}).items()]  # the sweeper's own params, as Hydra's reads them
        parsed = OverridesParser.create().parse_overrides(params + list(arguments))
        self.varying = {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}
        self.job_number = 0
        return super().sweep(arguments)

    def get_job_batch(self) -> list[list[str]]:
        from mnist99.job_names import job_name, subdir_override

        named = []
        for overrides in super().get_job_batch():
            named.append([*overrides, subdir_override(job_name(self.job_number, overrides, self.varying))])
            self.job_number += 1
        return named


@dataclass
class GridSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.mnist99_search.GridSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="mnist99_grid", node=GridSweeperConf, provider="mnist99")


@dataclass
class StudySweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.mnist99_search.StudySweeper"
    # a running trial's worker beats every heartbeat_interval seconds; after grace_period seconds
    # without one, another worker fails the trial and runs it again (at most max_retry times)
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 3


ConfigStore.instance().store(group="hydra/sweeper", name="mnist99_optuna", node=StudySweeperConf, provider="mnist99")


class StudySweeper(OptunaSweeper):
    def __init__(self, *, sampler: Any, heartbeat_interval: int, grace_period: int, max_retry: int, **kwargs: Any) -> None:
        super().__init__(sampler=sampler, **kwargs)
        self.settings = {"sampler": sampler, "heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
                         "max_retry": max_retry}

    def sweep(self, arguments: list[str]) -> None:
        from mnist99.cli import fail
        from mnist99.errors import ConfigError
        from mnist99.study import search

        try:
            search(self.sweeper, arguments, self.settings)
        except (ConfigError, HydraException) as e:  # a storage that cannot be opened, a bad search space
            fail(str(e))
