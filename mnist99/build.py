"""From a checked config to the parts of one model's run, each built once and handed back together."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelSummary, ProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mnist99 import ddp_sweep, machine, trackers
from mnist99.callbacks import LogIntervalWithinEpoch, UnevenTestSplit
from mnist99.callbacks.epochs_for_data import EpochsForData
from mnist99.callbacks.spawned import SpawnedProcesses
from mnist99.console import quiet_lightning
from mnist99.errors import ConfigError
from mnist99.models.optim import optimizer_from_config
from mnist99.record import choices
from mnist99.checkpoints import StandaloneCheckpoint
from mnist99.trusted import instantiate

log = logging.getLogger("mnist99")


@dataclass
class Parts:
    """One model's run. `cfg` is the config of what runs: the composed one (left as it is) with what
    the run found out merged in, the data's class count and a learning rate tune.lr_find chose."""

    cfg: DictConfig
    datamodule: L.LightningDataModule
    model: L.LightningModule
    trainer: L.Trainer
    suggested_lr: float | None = None


def build(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> Parts:
    """The datamodule (and the class count, found without reading the data: the Trainer prepares it),
    the model, tune.lr_find's rate, the loggers, the callbacks (`callbacks` first), the trainer."""
    datamodule, num_classes = build_datamodule(cfg)
    cfg = with_found(cfg, num_classes)
    model, suggested = build_model(cfg), None
    if OmegaConf.select(cfg, "tune.lr_find"):
        # a trainer of its own, without logs or checkpoints: the search is not part of the run's curves
        # epochs enough for its steps (one step an epoch at the least): trainer.limit_train_batches or a small folder
        # must not cut it short; finite, for the schedule configure_optimizers sizes (the finder swaps in its own)
        finder = build_trainer(cfg, logger=False, callbacks=[], enable_checkpointing=False, max_epochs=int(cfg.tune.num_training),
                               max_steps=-1, max_time=None)
        suggested = find_lr(cfg, finder, model, datamodule)
        if suggested and cfg.tune.use_suggested_lr:
            cfg = with_found(cfg, lr=suggested)
            model = build_model(cfg)  # its optimizer and schedule hold the rate
    loggers = build_loggers(cfg)
    # every checkpoint carries the run's config and data settings: eval.py and predict.py take it alone
    callbacks = [*callbacks, StandaloneCheckpoint(cfg), *epochs_for_data(cfg)]
    callbacks = build_callbacks(cfg, callbacks, with_logger=bool(loggers))
    return Parts(cfg, datamodule, model, build_trainer(cfg, logger=loggers or False, callbacks=callbacks), suggested)


def epochs_for_data(cfg: DictConfig) -> list[L.Callback]:
    """The callback that sets the epochs from the data (trainer.max_epochs null: the default recipe), where nothing
    else bounds the fit (max_steps, max_time) or Lightning runs it its own way (fast_dev_run, overfit_batches)."""
    t = cfg.trainer
    if (t.get("max_epochs", 0) is not None or t.get("max_steps", -1) not in (-1, None) or t.get("max_time") or t.get("fast_dev_run")
            or t.get("overfit_batches")):
        return []
    return [EpochsForData(cfg.train_images)]


def with_found(cfg: DictConfig, num_classes: int | None = None, lr: float | None = None) -> DictConfig:
    """A copy of cfg with the data's class count for a model.num_classes of null ("one per class
    folder") and a learning rate tune.lr_find chose merged in (interpolations kept)."""
    fills: dict[str, Any] = {}
    if num_classes is not None and "num_classes" in cfg.model and cfg.model.num_classes is None:
        fills["model"] = {"num_classes": num_classes}
    if lr is not None:
        fills["optimizer"] = {"lr": lr}
    return OmegaConf.merge(cfg, fills) if fills else cfg


def build_model(cfg: DictConfig) -> L.LightningModule:
    """The LightningModule of cfg.model, given what its class takes of the run's optimizer and schedule
    (a model of the user's own may take none); a model.num_classes still null is counted from the data."""
    if cfg.model.get("num_classes", 0) is None:
        cfg = with_found(cfg, build_datamodule(cfg)[1])
    offered: dict[str, Any] = {"scheduler": instantiate(cfg.scheduler) if cfg.get("scheduler") else None}
    if cfg.get("optimizer"):
        offered["optimizer"], offered["decay_norm_and_bias"] = optimizer_from_config(cfg.optimizer)
    model = instantiate(cfg.model, _partial_=True)
    takes = inspect.signature(model.func).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in takes.values()):
        offered = {k: v for k, v in offered.items() if k in takes}
    model = model(**offered)
    check_takes_input(model, cfg)
    return model


def check_takes_input(model: L.LightningModule, cfg: DictConfig) -> None:
    """One forward pass of two blank images of the data's size and channels (eval mode, no gradients): a net that
    cannot take them (a net of the user's own; mnist99's are checked from the config at start-up) is a config
    mistake, said before the data is read, not a shape error in the first batch."""
    size, channels = OmegaConf.select(cfg, "data.image_size"), OmegaConf.select(cfg, "data.model_channels") or OmegaConf.select(cfg, "data.channels")
    if not isinstance(size, int) or not isinstance(channels, int):
        return
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, channels, size, size))
    except (RuntimeError, ValueError) as e:
        said = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"The model ({OmegaConf.select(cfg, 'model.net._target_') or cfg.model.get('_target_')}) cannot take the data's "
                          f"images, {channels} channel(s) of {size}x{size} pixels (data.channels, data.image_size): {said}. Set "
                          "data.image_size to what the net was made for (MNIST's is 28), or change the net's config.") from None
    finally:
        model.train(training)


def build_datamodule(cfg: DictConfig) -> tuple[L.LightningDataModule, int | None]:
    """(the datamodule, the number of classes its data has, where it says: `find_classes()`). A
    model.num_classes that is set must match it."""
    datamodule = instantiate(cfg.data, _convert_="all")
    wanted = cfg.model.get("num_classes")
    find = getattr(datamodule, "find_classes", None)
    if find is None:
        if "num_classes" in cfg.model and wanted is None:
            raise ConfigError(f"model.num_classes=null counts the data's classes, and {cfg.data.get('_target_')} does not say them "
                              "(it has no find_classes()): set model.num_classes=<the number of classes>.")
        return datamodule, None
    classes = find()
    if wanted not in (None, len(classes)):
        where = cfg.data.get("data_dir", cfg.data.get("_target_"))
        raise ConfigError(f"model.num_classes={wanted} but {where} holds {len(classes)} classes "
                          f"{list(classes)}; set model.num_classes={len(classes)}, or null to count them.")
    return datamodule, len(classes)


def build_loggers(cfg: DictConfig) -> list:
    configs = [c for c in (cfg.get("logger") or {}).values() if c]
    loggers = [instantiate(c) for c in configs]
    for logger, logger_cfg in zip(loggers, configs):
        trackers.prepare(logger, logger_cfg, cfg, choices(cfg))  # MLflow: the run's tags, a local store's folder
    for logger in loggers if rank_zero_only.rank == 0 else ():
        # Lightning's CSVLogger deletes a metrics.csv it finds: a resumed run's earlier attempts
        # are kept as metrics-1.csv, metrics-2.csv, ..., and this attempt writes metrics.csv
        earlier = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if earlier is not None and earlier.is_file():
            n = 1
            while (kept := earlier.with_name(f"metrics-{n}.csv")).exists():
                n += 1
            earlier.rename(kept)
    return loggers


def build_callbacks(cfg: DictConfig, extra: Sequence[L.Callback] = (), with_logger: bool = True) -> list[L.Callback]:
    """`extra` (first: what it does at a hook is seen by the group's at that hook), then the callbacks
    group's; left out, those the trainer switches off and the learning-rate monitor without a logger or
    a schedule (the module logs a constant rate itself)."""
    callbacks = list(extra) + [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not cfg.trainer.get("enable_model_summary", True):
        callbacks = [c for c in callbacks if not isinstance(c, ModelSummary)]
    if not with_logger or not cfg.get("scheduler"):
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


def build_trainer(cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """The Trainer of cfg.trainer (kwargs and this job's share of the machine over its keys), quiet, with
    a logging interval that fits a short epoch; the model summary is the callbacks group's."""
    quiet_lightning()
    kwargs = {**machine.trainer_settings(cfg), **kwargs}
    callbacks = list(kwargs.pop("callbacks", None) or [])
    kwargs["enable_model_summary"] = False
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[*callbacks, LogIntervalWithinEpoch(), UnevenTestSplit(), SpawnedProcesses()],
                                     **kwargs)
    ddp_sweep.track(trainer)
    return trainer


def find_lr(cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule) -> float | None:
    """Sweep the learning rate from tune.min_lr to tune.max_lr over tune.num_training steps, save
    lr_find.png and lr_find.yaml in the run folder, and return Lightning's suggestion."""
    t = cfg.tune
    if not 0 < t.min_lr < t.max_lr:
        raise ConfigError(f"tune.min_lr={t.min_lr} and tune.max_lr={t.max_lr}: need 0 < min_lr < max_lr, e.g. 1e-6 and 1.")
    result = Tuner(trainer).lr_find(model, datamodule=datamodule, min_lr=t.min_lr, max_lr=t.max_lr,
                                    num_training=t.num_training, update_attr=False)
    suggestion = result.suggestion() if result is not None else None
    taken = len(result.results.get("lr", [])) if result is not None else 0
    if taken < t.num_training:  # Lightning stops the sweep where the loss blows up (4x its best)
        log.warning("lr_find took %d of its %d steps: the loss diverged at learning rate %.3g, so the sweep stopped there "
                    "(its plot ends there too).", taken, t.num_training, result.results["lr"][-1] if taken else t.min_lr)
    if trainer.is_global_zero and result is not None:
        out = Path(cfg.paths.output_dir)
        fig = result.plot(suggest=suggestion is not None)
        fig.savefig(out / "lr_find.png", dpi=100)
        (out / "lr_find.yaml").write_text(yaml.safe_dump({
            "suggested_lr": None if suggestion is None else float(suggestion),
            "min_lr": float(t.min_lr), "max_lr": float(t.max_lr), "num_training": int(t.num_training),
            "lr": [float(v) for v in result.results["lr"]], "loss": [float(v) for v in result.results["loss"]],
        }, sort_keys=False))
    log.info("lr_find suggests optimizer.lr=%s (plot: %s)", suggestion, Path(cfg.paths.output_dir) / "lr_find.png")
    return None if suggestion is None else float(suggestion)
