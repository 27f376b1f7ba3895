"""From a composed config to the objects of a run: data, model, loggers, callbacks, trainer."""

from __future__ import annotations

from typing import Any, Sequence

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import LearningRateMonitor, ModelSummary, ProgressBar
from omegaconf import DictConfig, OmegaConf

from mnist99 import ddp_sweep, machine
from mnist99.callbacks import LogIntervalWithinEpoch, UnevenTestSplit
from mnist99.console import quiet_lightning
from mnist99.errors import ConfigError
from mnist99.models.optim import optimizer_from_config
from mnist99.trusted import instantiate


def choices(cfg: DictConfig | None = None) -> dict[str, str]:
    """The config-group options the run was composed from (model=cnn, optimizer=adamw, ...): Hydra's
    for a new run; for a resumed one, composed from its config.yaml without groups, those that
    config.yaml recorded (run_info.save_config)."""
    if cfg is not None and isinstance(cfg.get("choices"), DictConfig):
        return {str(k): str(v) for k, v in cfg.choices.items()}
    if not HydraConfig.initialized():
        return {}
    return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra") and v is not None}


def with_found(cfg: DictConfig, num_classes: int | None = None, lr: float | None = None) -> DictConfig:
    """The config of what runs: a copy of cfg with what the run found out merged in (cfg itself is
    left as composed): the data's class count for model.num_classes=null ("one per class folder"),
    a learning rate tune.lr_find chose. The merge keeps interpolations (model.net.num_classes)."""
    fills: dict[str, Any] = {}
    if num_classes is not None and cfg.model.get("num_classes") is None:
        fills["model"] = {"num_classes": num_classes}
    if lr is not None:
        fills["optimizer"] = {"lr": lr}
    return OmegaConf.merge(cfg, fills) if fills else cfg


def build_model(cfg: DictConfig) -> L.LightningModule:
    """The LightningModule of cfg. A model.num_classes still null (a config built from outside a
    run) is found as a run finds it (build_datamodule)."""
    if cfg.model.get("num_classes") is None:
        cfg = with_found(cfg, build_datamodule(cfg)[1])
    optimizer, decay_norm_and_bias = optimizer_from_config(cfg.optimizer)
    extra = {"scheduler": instantiate(cfg.scheduler)} if cfg.get("scheduler") else {}
    return instantiate(cfg.model, optimizer=optimizer, decay_norm_and_bias=decay_norm_and_bias, **extra)


def build_datamodule(cfg: DictConfig) -> tuple[L.LightningDataModule, int]:
    """(the datamodule, the number of classes its data has), found before the model is built
    without reading or writing any data (MNISTDataModule.find_classes): the Trainer prepares the
    data (one process per node) and sets it up (every process) when it runs. A model.num_classes
    that is set must match it."""
    datamodule = instantiate(cfg.data, _convert_="all")
    classes = datamodule.find_classes()
    if cfg.model.get("num_classes") not in (None, len(classes)):
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} but {cfg.data.data_dir} holds "
            f"{len(classes)} classes {list(classes)}; set model.num_classes={len(classes)}, or null to count them."
        )
    return datamodule, len(classes)


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]


def build_callbacks(cfg: DictConfig, extra: Sequence[L.Callback] = (), with_logger: bool = True) -> list[L.Callback]:
    """`extra`, then the callbacks of the `callbacks` group (one set to null,
    `callbacks.model_checkpoint=null`, is switched off). `extra` comes first so that what it does
    at a hook (a signal sent, weights changed) is seen by the group's callbacks at that same hook.
    Left out: the progress bar when trainer.enable_progress_bar=false and the learning-rate
    monitor without a logger (Lightning would refuse them), the model summary when
    trainer.enable_model_summary=false, and the learning-rate monitor without a schedule
    (scheduler=none): the module logs a constant rate as train/lr once an epoch, where the monitor
    would add the same number as lr-<Optimizer> every logged step."""
    callbacks = list(extra) + [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not cfg.trainer.get("enable_model_summary", True):
        callbacks = [c for c in callbacks if not isinstance(c, ModelSummary)]
    if not with_logger or not cfg.get("scheduler"):
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


def build_trainer(cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """The Trainer of cfg.trainer (kwargs, then this job's share of the machine, override its
    keys: machine.trainer_settings), quiet: Lightning's notices and its
    pointless warnings off (console.quiet_lightning), log_every_n_steps at most an epoch
    (callbacks.LogIntervalWithinEpoch), an uneven DDP test split said in mnist99's words
    (callbacks.UnevenTestSplit), and no model summary of Lightning's: the summary is the callbacks
    group's (NetSummary), which build_callbacks leaves out when trainer.enable_model_summary=false."""
    quiet_lightning()
    kwargs = {**machine.trainer_settings(cfg), **kwargs}
    callbacks = list(kwargs.pop("callbacks", None) or [])
    kwargs["enable_model_summary"] = False
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[*callbacks, LogIntervalWithinEpoch(), UnevenTestSplit()], **kwargs)
    ddp_sweep.track(trainer)
    return trainer
