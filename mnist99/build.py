"""From a composed config to the objects of a run: data, model, loggers, callbacks, trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning as L
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from omegaconf import DictConfig

from mnist99 import ddp_sweep
from mnist99.errors import ConfigError
from mnist99.models.optim import optimizer_from_config


def choices(cfg: DictConfig | None = None) -> dict[str, str]:
    """The config-group options this run was composed from (model=cnn, optimizer=adamw, ...); for
    a resumed run (composed from its saved config, without groups) those its run.yaml recorded."""
    if not HydraConfig.initialized():
        return {}
    found = {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra") and v is not None}
    if "model" not in found and cfg is not None and cfg.get("resume_ckpt"):
        record = Path(cfg.paths.output_dir) / "run.yaml"
        found = (yaml.safe_load(record.read_text()) or {}).get("choices", {}) if record.is_file() else {}
    return found


def build_model(cfg: DictConfig) -> L.LightningModule:
    optimizer, decay_norm_and_bias = optimizer_from_config(cfg.optimizer)
    extra = {"scheduler": instantiate(cfg.scheduler)} if cfg.get("scheduler") else {}
    return instantiate(cfg.model, optimizer=optimizer, decay_norm_and_bias=decay_norm_and_bias, **extra)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The datamodule, its data prepared and read, checked against model.num_classes."""
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    if len(datamodule.classes) != cfg.model.num_classes:
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} but {cfg.data.data_dir} holds "
            f"{len(datamodule.classes)} classes {list(datamodule.classes)}; set model.num_classes to match."
        )
    return datamodule


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]


def build_callbacks(cfg: DictConfig, extra: Sequence[L.Callback] = (), with_logger: bool = True) -> list[L.Callback]:
    """`extra`, then the callbacks of the `callbacks` group (one set to null,
    `callbacks.model_checkpoint=null`, is switched off). `extra` comes first so that what it does
    at a hook (a signal sent, weights changed) is seen by the group's callbacks at that same hook.
    Two are left out where Lightning would refuse them: the progress bar when
    trainer.enable_progress_bar=false, the learning-rate monitor without a logger."""
    callbacks = list(extra) + [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not with_logger:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


def build_trainer(cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    trainer: L.Trainer = instantiate(cfg.trainer, **kwargs)
    ddp_sweep.track(trainer)
    return trainer
