"""Classify pictures with a trained run, an answer per image named by its class folders, optionally a
CSV (`python predict.py`). A picture is framed as MNIST frames its digits (data/digit_image.py) for a
run on MNIST, else converted and resized as the run's training images were."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import torch

from mnist99.data.datamodule import to_model_input
from mnist99.data.digit_image import to_mnist
from mnist99.data.imagetree import IMAGE_SUFFIXES, to_array
from mnist99.data.safe_image import BadImage, open_image
from mnist99.errors import ConfigError
from mnist99.evaluate import load
from mnist99.locate import input_items, locate

SUFFIXES = {*IMAGE_SUFFIXES, ".gif"}  # what a run trains on, and GIFs


def image_paths(inputs: str | Sequence[str]) -> list[Path]:
    """The files named in `inputs`: a list of files or folders (folders searched recursively), or
    one string of them, comma-separated."""
    paths: list[Path] = []
    for p in input_items(inputs):
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.suffix.lower() in SUFFIXES and f.is_file())
        else:
            paths.append(p)
    if not paths:
        raise ConfigError(f"inputs={inputs}: no images found (looked for {', '.join(sorted(SUFFIXES))}).")
    return paths


def read_images(paths: list[Path], size: int, channels: int = 1, digits: bool = True) -> tuple[list[Path], torch.Tensor, list[str]]:
    """(readable paths, uint8 (N, channels, size, size), one line per unreadable file: not an
    image, truncated or over safe_image.MAX_PIXELS). digits: framed as MNIST digits (grey); else
    converted and resized as a data=folder run's images."""
    ok, arrays, bad = [], [], []
    for p in paths:
        try:
            with open_image(p) as img:
                arrays.append(torch.from_numpy(to_mnist(img, size)[None] if digits else to_array(img, size, channels)[0].copy()))
            ok.append(p)
        except BadImage as e:
            bad.append(f"{p}: {e}")
    return ok, torch.stack(arrays) if arrays else torch.empty(0, channels, size, size, dtype=torch.uint8), bad


@torch.no_grad()
def predict(target: str, inputs: str | Sequence[str], batch_size: int = 512) -> tuple[list[tuple[Path, str, float, list[float]]], list[str], list[str]]:
    """([(path, predicted class, probability, all probabilities)], class names, unreadable files)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} is impossible: it must be a whole number, 1 or more (try 512).")
    run_dir, ckpt = locate(target)
    cfg, model = load(run_dir, ckpt)
    data = cfg.data
    channels, model_channels = data.channels, data.get("model_channels") or data.channels
    digits = channels == 1 and data.get("build_mnist", True)
    paths, images, bad = read_images(image_paths(inputs), int(data.get("image_size", 28)), channels, digits)
    mean = data.mean if data.get("mean") is not None else model.data_stats["mean"]
    std = data.std if data.get("std") is not None else model.data_stats["std"]
    probs = torch.cat([
        model(to_model_input(chunk, model_channels, data.normalize, mean, std)).float().softmax(1)
        for chunk in images.split(batch_size)
    ]) if len(paths) else torch.empty(0, model.num_classes)
    names = model.trained_classes or [str(i) for i in range(probs.shape[1])]
    rows = [(p, names[int(q.argmax())], float(q.max()), q.tolist()) for p, q in zip(paths, probs)]
    return rows, names, bad


def write_csv(path: Path, rows, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "predicted", "probability", *(f"p_{n}" for n in names)])
        for p, label, prob, all_probs in rows:
            out.writerow([str(p), label, f"{prob:.6f}", *(f"{q:.6f}" for q in all_probs)])
