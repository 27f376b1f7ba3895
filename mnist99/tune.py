"""`tune.lr_find=true`: Lightning's learning-rate finder (fastai's lr_find) before training."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig

from mnist99.errors import ConfigError

log = logging.getLogger("mnist99")


def find_lr(cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule) -> float | None:
    """Sweep the learning rate from tune.min_lr to tune.max_lr over tune.num_training steps, save
    lr_find.png and lr_find.yaml in the run folder, and return Lightning's suggestion."""
    t = cfg.tune
    if not 0 < t.min_lr < t.max_lr:
        raise ConfigError(f"tune.min_lr={t.min_lr} and tune.max_lr={t.max_lr}: need 0 < min_lr < max_lr, e.g. 1e-6 and 1.")
    result = Tuner(trainer).lr_find(model, datamodule=datamodule, min_lr=t.min_lr, max_lr=t.max_lr,
                                    num_training=t.num_training, update_attr=False)
    suggestion = result.suggestion() if result is not None else None
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
