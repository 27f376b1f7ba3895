"""Ensembles and test-time augmentation: average the softmax of several trained models, each over
copies of the test images shifted by whole pixels. (The members train in mnist99.pipeline.run.)"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path
from typing import Iterator, Sequence

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics.functional.classification import multiclass_accuracy

from mnist99.errors import ConfigError

log = logging.getLogger("mnist99")


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
        raise ConfigError("An ensemble trains its members one after another in one process, which trainer=ddp cannot "
                          "do; use one device (trainer=default or trainer=gpu) with ensemble.members > 1.")
    for s in shifts:
        if len(s) != 2 or not all(isinstance(v, int) and abs(v) <= 4 for v in s):
            raise ConfigError(f"ensemble.tta_shifts holds {list(s)!r}: each entry must be a [dy, dx] pair of whole pixels "
                              "between -4 and 4, e.g. [[0, 0], [1, 0], [0, 1]].")
    return members, shifts


def member_configs(cfg: DictConfig, members: int) -> Iterator[DictConfig]:
    """Each member's config: seeds seed, seed+1, ..., each a run folder of its own (member<i>/), which
    eval.py, predict.py and scripts/ensemble.py take as any run's."""
    run_dir = Path(cfg.paths.output_dir)
    for i in range(members):
        member = OmegaConf.merge(cfg, {"seed": cfg.seed + i, "paths": {"output_dir": str(run_dir / f"member{i}")},
                                       "ensemble": {"members": 1}})
        log.info("Ensemble member %d of %d (seed %d) in %s", i + 1, members, member.seed, member.paths.output_dir)
        yield member


def results(run_dir: Path, members: list[tuple[torch.Tensor, torch.Tensor, float]], shifts: list) -> dict:
    """The ensemble's figures from its members' (softmax, labels, val/acc_best), also as TensorBoard
    scalars of the run folder itself (each member has its own)."""
    best = [b for _, _, b in members]
    out = {"val/acc_best": statistics.fmean(best) if best else math.nan}
    if members:
        out |= combine([p for p, _, _ in members], members[0][1], shifts)
        out["tested_weights"] = f"softmax of {len(members)} models (final weights) averaged over {len(shifts)} test-time shifts"
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir)) as w:
        for k, v in out.items():
            if k.startswith(("test/", "val/")):
                w.add_scalar(k, v, 0)
    return out


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
