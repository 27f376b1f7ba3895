"""The two figures for looking at a model's mistakes: the confusion matrix and the top losses."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch


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
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("confusion matrix (test)")
    fig.tight_layout()
    return fig


def top_losses_figure(images: torch.Tensor, rows: list[dict]):
    """fastai's plot_top_losses: each image titled predicted / actual / loss / probability."""
    plt = pyplot()
    cols = 3
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


def save(fig, path: Path) -> None:
    fig.savefig(path)
    pyplot().close(fig)


def pixels(fig) -> np.ndarray:
    """The figure drawn once, as (height, width, 3) uint8, for TensorBoard and a PNG alike (each
    would draw it again: a quarter of a second a figure on a small CPU); the figure is closed."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    pyplot().close(fig)
    return rgb


def save_pixels(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)
