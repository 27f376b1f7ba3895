"""TensorBoard's HPARAMS tab: the run's choices with its real metrics (no placeholder hp_metric)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto.event_pb2 import Event
from torch.utils.tensorboard import RecordWriter
from torch.utils.tensorboard.summary import hparams

from mnist99.trackers import is_tracker

# Scalars the run logs anyway; the HPARAMS tab shows each run's latest value of each.
HPARAM_METRICS = ("val/acc_best", "val/acc", "val/loss", "test/acc", "train/loss")
# Sorts before the event files TensorBoard's writers name "events.out.tfevents.<10-digit seconds>...".
HPARAMS_EVENTS = "events.out.tfevents.0000000000.hparams"


def run_hparams(cfg: DictConfig, choices: dict[str, str]) -> dict:
    """The handful of settings people compare runs by, as flat scalars."""
    params = {
        "model": choices.get("model", OmegaConf.select(cfg, "model._target_")),
        "optimizer": choices.get("optimizer", OmegaConf.select(cfg, "optimizer._target_")),
        "scheduler": choices.get("scheduler", "none" if not cfg.get("scheduler") else cfg.scheduler.get("_target_")),
        "experiment": choices.get("experiment", "none"),
        "augment": choices.get("augment", "none"),
        "head": OmegaConf.select(cfg, "model.net.head"),  # resnets: linear or fastai
        "lr": OmegaConf.select(cfg, "optimizer.lr"),
        "weight_decay": OmegaConf.select(cfg, "optimizer.weight_decay"),
        "batch_size": OmegaConf.select(cfg, "data.batch_size"),
        "max_epochs": OmegaConf.select(cfg, "trainer.max_epochs"),
        "in_channels": OmegaConf.select(cfg, "model.in_channels"),
        "val_size": OmegaConf.select(cfg, "data.val_size"),
        "seed": cfg.get("seed"),
        "tags": ",".join(cfg.get("tags") or []),
    }
    return {k: ("none" if v is None else v) for k, v in params.items()}


def write_hparams_events(log_dir: str | Path, params: dict) -> Path:
    """The hparams summary in an event file of its own in `log_dir`, declaring HPARAM_METRICS (0.0
    only names them), with torch's RecordWriter. TensorBoard reads a folder's event files as one run,
    so the HPARAMS tab shows the run's real metrics (add_hparams would make a run of placeholder
    values); the name sorts before the run's own files, since TensorBoard follows only a folder's
    last file as it is written. Replaced when a run is resumed."""
    folder = Path(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path, partial = folder / HPARAMS_EVENTS, folder / "hparams.events.partial"  # not a "tfevents" name: unread
    now = time.time()
    with open(partial, "wb") as f:
        records = RecordWriter(f)
        records.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        for summary in hparams(params, {m: 0.0 for m in HPARAM_METRICS}):
            records.write(Event(wall_time=now, step=0, summary=summary).SerializeToString())
    os.replace(partial, path)
    return path


def log_hparams(trainer: L.Trainer, cfg: DictConfig, choices: dict[str, str]) -> None:
    """Write the hparams summary once, declaring the metric tags instead of logging fake values:
    TensorBoard fills the table from the scalars the run logs under those tags."""
    params = run_hparams(cfg, choices)
    for logger in trainer.loggers:
        if is_tracker(logger):
            continue  # a tracker gets the whole config as its params (mnist99.trackers)
        logger.log_hyperparams(params)  # hparams.yaml beside the events (and CSV's hparams)
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            write_hparams_events(logger.log_dir, params)
