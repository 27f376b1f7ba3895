"""`hparams_search=optuna`: hydra-optuna-sweeper's Optuna sweeper, resumable to a total.

With a storage URL (`hydra.sweeper.storage=sqlite:///outputs/optuna.db`) the study outlives the
command. Started again with the same command, the search runs only the trials still missing to
reach `hydra.sweeper.n_trials` in total, instead of that many more.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger("mnist99")


class ResumableOptunaSweeper(OptunaSweeper):
    def __init__(self, *, storage: Any, study_name: str | None, n_trials: int, **kwargs: Any) -> None:
        if storage and study_name:
            done = finished_trials(str(storage), study_name)
            if done:
                log.info("Study %s already has %d finished trials; running %d more to reach n_trials=%d.",
                         study_name, done, max(n_trials - done, 0), n_trials)
            n_trials = max(n_trials - done, 0)
        super().__init__(storage=storage, study_name=study_name, n_trials=n_trials, **kwargs)

    def sweep(self, arguments: list[str]) -> None:
        # A finished study runs no job, and so no job makes the sweep folder that the best
        # parameters (optimization_results.yaml) are written to.
        Path(self.sweeper.sweep_dir).mkdir(parents=True, exist_ok=True)
        return super().sweep(arguments)


def finished_trials(storage: str, study_name: str) -> int:
    """Trials of a stored study that ran to an end (complete or pruned). Trials left RUNNING by a
    search that was killed are marked failed, so samplers ignore them; they were never evaluated,
    and like failed ones they are not counted."""
    import optuna  # here, not at the top: Hydra imports plugin modules at every start-up
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
