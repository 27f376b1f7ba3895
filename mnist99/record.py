"""The run's record beside its outputs, so it can be understood and repeated: run.yaml (command,
overrides, choices, versions, machine, then status and metrics) and config.yaml (what ran)."""

from __future__ import annotations

import os
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


# The files of a run folder a resumed attempt may rewrite before it trains (run.yaml, config.yaml, hparams.yaml,
# TensorBoard's hparams events) are kept whole up to this size; larger ones (train.log) only by their length.
KEPT_BYTES = 1 << 20


def folder_state(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """The top-level files of a run folder: {name: (size, bytes for a small one)}, for put_back."""
    return {p.name: (p.stat().st_size, p.read_bytes() if p.stat().st_size <= KEPT_BYTES else None)
            for p in folder.iterdir() if p.is_file()}


def put_back(folder: Path, state: dict[str, tuple[int, bytes | None]]) -> None:
    """The folder's files as folder_state found them: small ones rewritten, lines appended (train.log) cut off,
    TensorBoard event files this attempt began removed. Nothing else is deleted."""
    for p in folder.iterdir():
        if p.is_file() and p.name not in state and p.name.startswith("events.out.tfevents."):
            p.unlink()
    for name, (size, content) in state.items():
        p = folder / name
        if content is not None and (not p.is_file() or p.read_bytes() != content):
            p.write_bytes(content)
        elif content is None and p.is_file() and p.stat().st_size > size:
            os.truncate(p, size)


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
        self.earlier_files = folder_state(self.path.parent) if resumed else {}
        earlier = (yaml.safe_load(self.earlier_text) or {}) if resumed else {}
        command = run_info.COMMAND or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        overrides = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != "hydra"]  # +hydra=default: resume's console
        self.data: dict[str, Any] = {"status": "running", "command": command, "overrides": list(overrides),
                                     "choices": self.choices, "tags": list(cfg.get("tags") or []), "started": now, "versions": run_info.versions() if self.writes else {}}
        if earlier:  # a resumed run keeps what it was started with
            self.data["overrides"] = earlier.get("overrides", self.data["overrides"])
            self.data["started"] = earlier.get("started", now)
        if cfg.get("resume_ckpt"):  # and says when it went on, and from which checkpoint (a lone .ckpt's new folder too)
            self.data["resumed"] = [*earlier.get("resumed", []), {"at": now, "from": str(cfg.resume_ckpt), "command": command}]
        self.tested = 0
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

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.tested = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        labels = batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        self.tested += len(labels) if hasattr(labels, "__len__") else 0

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """run.yaml's `test_set`: the test folder, its images, and how many of them the run's test saw
        (trainer.limit_test_batches tests fewer): what eval.py compares its own test with."""
        data = getattr(trainer.datamodule, "data_test", None)
        splits = getattr(trainer.datamodule, "splits", None)
        try:
            images = len(data)
        except TypeError:  # no test set of mnist99's datamodule: nothing to compare with
            return
        self.data["test_set"] = {"folder": str(Path(splits[1]).resolve()) if splits else None, "images": images,
                                 "tested": min(images, self.tested * trainer.world_size)}  # each rank counts its share

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
            put_back(self.path.parent, self.earlier_files)
        else:
            shutil.rmtree(self.path.parent, ignore_errors=True)

    def write(self) -> None:
        if self.writes:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(yaml.safe_dump(self.data, sort_keys=False))
