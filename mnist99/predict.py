"""Classify your own digit pictures with a trained run: one answer per image, optionally a CSV
(the library of `python predict.py`, mnist99.cli.predict).

Any size and colour mode is brought to the training format (mnist99/data/digit_image.py)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, UnidentifiedImageError

from mnist99.data.datamodule import to_model_input
from mnist99.data.digit_image import to_mnist
from mnist99.errors import ConfigError
from mnist99.evaluate import load, locate

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def image_paths(inputs: str | Sequence[str]) -> list[Path]:
    """The files named in `inputs`: a list of files or folders (folders searched recursively), or
    one string of them, comma-separated."""
    items = inputs.split(",") if isinstance(inputs, str) else [str(i) for i in inputs]
    paths: list[Path] = []
    for item in (s.strip() for s in items if s.strip()):
        p = Path(item).expanduser()
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            paths.append(p)
        else:
            raise ConfigError(f"inputs: {p} does not exist. Pass image files or folders, comma-separated.")
    if not paths:
        raise ConfigError(f"inputs={inputs}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
    return paths


def read_images(paths: list[Path], size: int) -> tuple[list[Path], torch.Tensor, list[str]]:
    """(readable paths, uint8 (N, size, size), one line per unreadable file)."""
    ok, arrays, bad = [], [], []
    for p in paths:
        try:
            with Image.open(p) as img:
                img.load()
                arrays.append(torch.from_numpy(to_mnist(img, size)))
            ok.append(p)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            bad.append(f"{p}: not a readable image ({type(e).__name__}: {e})")
    return ok, torch.stack(arrays) if arrays else torch.empty(0, size, size, dtype=torch.uint8), bad


@torch.no_grad()
def predict(target: str, inputs: str | Sequence[str], batch_size: int = 512) -> tuple[list[tuple[Path, str, float, list[float]]], list[str], list[str]]:
    """([(path, predicted class, probability, all probabilities)], class names, unreadable files)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} is impossible: it must be a whole number, 1 or more (try 512).")
    run_dir, ckpt = locate(target)
    cfg, model = load(run_dir, ckpt)
    data = cfg.data
    paths, images, bad = read_images(image_paths(inputs), int(data.get("image_size", 28)))
    probs = torch.cat([
        model(to_model_input(chunk, data.channels, data.normalize, data.mean, data.std)).float().softmax(1)
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
