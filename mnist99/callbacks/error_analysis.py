"""What a test got wrong (the confusion matrix and the top losses, drawn), and a test on several
devices whose test set does not split evenly."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassConfusionMatrix

log = logging.getLogger(__name__)


class ErrorAnalysis(L.Callback):
    """What the model got wrong on the test set: the confusion matrix and the `top_losses` images with the
    highest loss, drawn into TensorBoard's IMAGES tab and (`output_dir`) confusion_matrix.png and
    top_losses.png; `self.result` holds the numbers. A running top-k per batch; under DDP the matrix is
    summed and the candidates gathered, and rank 0 draws."""

    def __init__(self, output_dir: str | None = None, top_losses: int = 9):
        if top_losses < 0:
            raise ValueError(f"top_losses={top_losses}: must be 0 or more")
        self.output_dir, self.k = output_dir, top_losses
        self.result: dict = {}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confusion = MulticlassConfusionMatrix(pl_module.num_classes).to(pl_module.device)
        self.top: tuple[torch.Tensor, ...] | None = None  # (loss, logits, label, image), best k so far

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, torch.Tensor):  # a test_step that returns no logits
            return
        x, y = batch
        logits = outputs.detach().float()
        self.confusion.update(logits, y)
        batch_top = (F.cross_entropy(logits, y, reduction="none"), logits, y, x[:, 0].float())
        self.top = self.keep_top(batch_top if self.top is None else tuple(torch.cat(p) for p in zip(self.top, batch_top)))

    def keep_top(self, parts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        order = parts[0].argsort(descending=True)[: self.k]
        return tuple(p[order] for p in parts)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (top := self.top) is None:
            return
        confusion = self.confusion.compute().cpu()  # summed over DDP ranks
        if trainer.world_size > 1:  # each rank's best k, padded to k so that all_gather can stack them
            pad = self.k - len(top[0])
            filler = (top[0].new_full((pad,), -math.inf), *(p.new_zeros((pad, *p.shape[1:])) for p in top[1:]))
            top = tuple(torch.cat(pair) for pair in zip(top, filler))
            top = self.keep_top(tuple(pl_module.all_gather(p).flatten(0, 1) for p in top))
            top = tuple(p[top[0] > -math.inf] for p in top)
        if trainer.is_global_zero:
            self.report(trainer, confusion, tuple(p.cpu() for p in top))

    def report(self, trainer: L.Trainer, confusion: torch.Tensor, top: tuple[torch.Tensor, ...]) -> None:
        classes = [str(c) for c in getattr(trainer.datamodule, "classes", None) or range(len(confusion))]
        loss, logits, label, images = top
        rows = [{"predicted": classes[int(p.argmax())], "actual": classes[int(t)], "loss": float(l), "probability": float(p.max())}
                for l, p, t in zip(loss, logits.softmax(1), label)]
        per_class = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
        self.result = {"per_class_acc": dict(zip(classes, per_class)), "confusion_matrix": confusion.tolist(), "top_losses": rows}
        out = Path(self.output_dir) if self.output_dir else None
        for name, fig in (("confusion_matrix", confusion_figure(confusion, classes)),
                          ("top_losses", top_losses_figure(images, rows))):
            rgb = pixels(fig)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(f"test/{name}", rgb, global_step=trainer.global_step, dataformats="HWC")
            if out:
                from PIL import Image

                out.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(out / f"{name}.png")


class UnevenTestSplit(L.Callback):
    """A test on several devices whose test set does not split evenly: Lightning's DistributedSampler then repeats a few
    images to give each device as many, and they count twice in test/acc. Said once, when it happens, with the way to
    the exact figure (Lightning's own warning, given for every test on several devices, is silenced)."""

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = getattr(trainer.datamodule, "data_test", None)
        world = trainer.world_size
        if world <= 1 or data is None or not trainer.is_global_zero:
            return
        if (n := len(data)) % world:
            log.warning("Testing on %d devices: the %d test images do not split evenly, so %d of them are tested twice "
                        "and test/acc is off by up to %.2g points. For the exact figure, test the run again on one device: "
                        "python eval.py ckpt_path=<the run folder>", world, n, world - n % world, 100 * (world - n % world) / n)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files and TensorBoard only: never a window
    import matplotlib.pyplot as plt
    return plt


def confusion_figure(confusion: torch.Tensor, classes: Sequence[str]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.4), dpi=100)
    ax.imshow(confusion.float().log1p(), cmap="Blues")  # log: the few errors stay visible beside the diagonal
    n = len(classes)
    for (i, j), v in zip(((i, j) for i in range(n) for j in range(n)), confusion.flatten().tolist()):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if i == j else "black")
    ax.set_xticks(range(n), classes)
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="actual", title="confusion matrix (test)")
    fig.tight_layout()
    return fig


def top_losses_figure(images: torch.Tensor, rows: list[dict]):
    """fastai's plot_top_losses: each image titled predicted / actual / loss / probability."""
    plt, cols = pyplot(), 3
    lines = max(1, -(-len(rows) // cols))
    fig, axes = plt.subplots(lines, cols, figsize=(cols * 2.4, lines * 2.6), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, r in zip(axes.flat, images, rows):
        ax.imshow(img.float(), cmap="gray")
        ax.set_title(f"{r['predicted']} / {r['actual']} / {r['loss']:.2f} / {r['probability']:.2f}", fontsize=8)
    fig.suptitle("predicted / actual / loss / probability", fontsize=9)
    fig.tight_layout()
    return fig


def pixels(fig) -> np.ndarray:
    """The figure drawn once, as (height, width, 3) uint8, for TensorBoard and a PNG alike (each would draw it again:
    a quarter of a second a figure on a small CPU); the figure is closed."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    pyplot().close(fig)
    return rgb
