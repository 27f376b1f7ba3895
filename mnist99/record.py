"""The run's record beside its outputs, so it can be understood and repeated: run.yaml (command,
overrides, choices, versions, machine, then status and metrics) and config.yaml (what ran)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mnist99 import run_info


def choices(cfg: DictConfig) -> dict[str, str]:
    """The config-group options the run was composed from (model=cnn, optimizer=adamw, ...): Hydra's
    for a new run; for a resumed one, composed from config.yaml without groups, those it recorded."""
    if isinstance(cfg.get("choices"), DictConfig):
        return {str(k): str(v) for k, v in cfg.choices.items()}
    if not HydraConfig.initialized():
        return {}
    return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items()
            if not k.startswith("hydra") and k != "local" and v is not None}  # local: this machine's, not the recipe's


def save_config(cfg: DictConfig, run_dir: Path, choices: dict[str, str]) -> None:
    """The resolved config as config.yaml in run_dir, with the group choices: what ran, written once
    before training (resume=, eval.py, predict.py and sweep summaries read it)."""
    if rank_zero_only.rank != 0:
        return
    saved = OmegaConf.to_container(cfg, resolve=True)
    if choices:
        saved["choices"] = dict(choices)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(saved), Path(run_dir) / "config.yaml")


class RunRecord(L.Callback):
    """`run.yaml` in the run folder, written as the run starts and again at its end (rank 0 only);
    as a callback of every trainer of the run, it times the fits and knows whether one trained."""

    def __init__(self, run_dir: Path, cfg: DictConfig, overrides: list[str]):
        self.path = Path(run_dir) / "run.yaml"
        self.start, self.fit_seconds, self.fits = time.time(), 0.0, []
        self.choices = choices(cfg)
        self.writes = rank_zero_only.rank == 0
        resumed = bool(cfg.get("resume_ckpt")) and self.path.is_file()
        self.earlier_text = self.path.read_text() if resumed else None  # put back if this attempt is refused
        config = self.path.parent / "config.yaml"
        self.earlier_config = config.read_text() if resumed and config.is_file() else None
        earlier = (yaml.safe_load(self.earlier_text) or {}) if resumed else {}
        command = run_info.COMMAND or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        self.data: dict[str, Any] = {"status": "running", "command": command, "overrides": list(overrides),
                                     "choices": self.choices, "tags": list(cfg.get("tags") or []), "started": now, "versions": run_info.versions() if self.writes else {}}
        if earlier:  # a resumed run keeps what it was started with, and says when it went on
            self.data["overrides"] = earlier.get("overrides", self.data["overrides"])
            self.data["started"] = earlier.get("started", now)
            self.data["resumed"] = [*earlier.get("resumed", []), {"at": now, "from": str(cfg.resume_ckpt), "command": command}]
        self.write()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # fit time counts from here: reading and decoding the data is not fitting
        self.fit_start = time.perf_counter()
        skipped = len(getattr(trainer.datamodule, "skipped", ()))
        for logger in trainer.loggers if skipped else ():  # data.on_bad_image=skip
            logger.log_metrics({"data/skipped_images": skipped}, step=0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fits.append((trainer, trainer.global_step))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_seconds += time.perf_counter() - self.fit_start

    @property
    def trained(self) -> bool:
        """Did this attempt take a training step (its folder is then worth keeping)?"""
        return any(trainer.global_step > start for trainer, start in self.fits)

    @property
    def seconds(self) -> float:
        return time.time() - self.start

    def finish(self, status: str, **fields: Any) -> None:
        self.data.update(status=status, wall_seconds=round(self.seconds, 1), **fields)
        self.write()

    def discard(self) -> None:
        """No trace of a run refused before it trained: a new run's folder goes, a resumed one's record is as before."""
        if not self.writes:
            return
        if self.earlier_text is not None:
            self.path.write_text(self.earlier_text)
            if self.earlier_config is not None:
                (self.path.parent / "config.yaml").write_text(self.earlier_config)
        else:
            shutil.rmtree(self.path.parent, ignore_errors=True)

    def write(self) -> None:
        if self.writes:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(yaml.safe_dump(self.data, sort_keys=False))
