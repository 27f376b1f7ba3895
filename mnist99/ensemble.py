"""Ensembles and test-time augmentation: average the softmax of several trained models, each over
copies of the test images shifted by whole pixels. (Training the members: pipeline.train_ensemble.)"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from omegaconf import DictConfig
from torchmetrics.functional.classification import multiclass_accuracy

from mnist99.errors import ConfigError


class ShiftTTA(L.LightningModule):
    """Predicts with a trained classifier, its softmax averaged over the image shifted by each
    (dy, dx). MNIST digits sit in a 20x20 box with a 4-pixel empty border, so a roll by a pixel or
    two only wraps background around."""

    def __init__(self, model: L.LightningModule, shifts: Sequence[Sequence[int]]):
        super().__init__()
        self.model, self.shifts = model, [tuple(int(v) for v in s) for s in shifts]

    def predict_step(self, batch, batch_idx):
        x, y = batch
        return torch.stack([self.model(torch.roll(x, s, dims=(2, 3))).float().softmax(dim=1) for s in self.shifts], 1), y


def test_probs(model: L.LightningModule, datamodule: L.LightningDataModule, shifts, trainer_cfg: dict,
               split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax (N, shifts, classes), labels (N,)) of `model` on the test split (or the validation
    split, `split="val"`), on the run's device."""
    trainer = L.Trainer(
        accelerator=trainer_cfg.get("accelerator", "auto"),
        devices=1,  # every rank would predict the whole test set: one device is enough
        precision=trainer_cfg.get("precision", "32-true"),
        limit_predict_batches=trainer_cfg.get("limit_test_batches"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    datamodule.predict_dataloader = datamodule.val_dataloader if split == "val" else datamodule.test_dataloader
    out = trainer.predict(ShiftTTA(model, shifts).eval(), datamodule=datamodule)
    return torch.cat([p.cpu() for p, _ in out]), torch.cat([y.cpu() for _, y in out])


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float(multiclass_accuracy(probs, labels, num_classes=probs.shape[-1], average="micro"))


def check(cfg: DictConfig) -> tuple[int, list]:
    """(members, shifts) of cfg.ensemble, refusing values that cannot work."""
    members = cfg.ensemble.get("members", 1)
    shifts = [list(s) for s in (cfg.ensemble.get("tta_shifts") or [[0, 0]])]
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        raise ConfigError(f"ensemble.members={members!r} is impossible: it must be an integer of at least 1.")
    if members > 1 and "ddp" in str(cfg.trainer.get("strategy")):
        raise ConfigError(
            "An ensemble trains its members one after another in one process, which trainer=ddp cannot "
            "do; use one device (trainer=default or trainer=gpu) with ensemble.members > 1."
        )
    for s in shifts:
        if len(s) != 2 or not all(isinstance(v, int) and abs(v) <= 4 for v in s):
            raise ConfigError(
                f"ensemble.tta_shifts holds {list(s)!r}: each entry must be a [dy, dx] pair of whole pixels "
                "between -4 and 4, e.g. [[0, 0], [1, 0], [0, 1]]."
            )
    return members, shifts


def check_held_out(cfgs: Sequence[DictConfig]) -> None:
    """Refuses to score runs on their validation split unless they all held out the same training
    images: with data.val_size=0 that split is testing/, and other sizes or split seeds differ."""
    held_out = {(c.data.val_size, c.data.get("split_seed")) for c in cfgs}
    if len(held_out) != 1 or next(iter(held_out))[0] == 0:
        raise ConfigError(
            f"Scoring on held-out images needs runs that held out the same training images (one data.val_size > 0 "
            f"and one data.split_seed), not (val_size, split_seed) {sorted(held_out)}; with data.val_size=0 the "
            "validation split is testing/. Train them with e.g. data.val_size=5000, or score on testing/.")


def combine(probs: list[torch.Tensor], labels: torch.Tensor, shifts: list) -> dict[str, float]:
    """Accuracies of each model (plain and with its test-time shifts) and of their average;
    `probs` holds each model's (N, shifts, classes) softmax. test/acc is the full ensemble's."""
    plain = shifts.index([0, 0]) if [0, 0] in shifts else None
    out = {"ensemble/members": float(len(probs))}
    for i, p in enumerate(probs):
        if plain is not None:
            out[f"test/acc_member{i}"] = accuracy(p[:, plain], labels)
        out[f"test/acc_member{i}_tta"] = accuracy(p.mean(1), labels)
    if plain is not None:
        accs = [out[f"test/acc_member{i}"] for i in range(len(probs))]
        out["test/acc_members_mean"] = statistics.fmean(accs)
        out["test/acc_members_std"] = statistics.stdev(accs) if len(accs) > 1 else 0.0
        out["test/acc_ensemble_no_tta"] = accuracy(sum(p[:, plain] for p in probs), labels)
    out["test/acc"] = accuracy(sum(p.mean(1) for p in probs), labels)
    return out


def log_scalars(run_dir: Path, scalars: dict[str, float]) -> None:
    """The ensemble's figures as TensorBoard scalars of the run folder itself (members have their own)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir)) as w:
        for k, v in scalars.items():
            w.add_scalar(k, v, 0)
