"""`python predict.py ckpt_path=<run dir or .ckpt> inputs=<images or folders>` / `mnist99-predict`:
classify your own digit pictures with a trained run, one line per image, optionally a CSV."""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from mnist99.config import register_resolvers
from mnist99.data.datamodule import to_model_input
from mnist99.data.digit_image import to_mnist
from mnist99.errors import ConfigError, Mnist99Error

USAGE = """usage: python predict.py ckpt_path=<run dir or .ckpt> inputs=<image files or folders, comma-separated> [csv=<file>]

Prints one line per image: path, predicted class, its probability. Folders are searched
recursively for .png .jpg .jpeg .bmp .gif .tif .tiff .webp. Any size and colour mode is brought
to the training format (see mnist99/data/digit_image.py): the alpha channel as ink when it varies,
else grey; inverted when the picture is dark-on-light; pictures of another size cropped to their
ink, scaled into a 20x20 box and centred by centre of mass in 28x28, as MNIST was made."""

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def image_paths(inputs: str) -> list[Path]:
    """The files named in `inputs` (comma-separated files or folders, Hydra's [a,b] accepted)."""
    paths: list[Path] = []
    for item in (s.strip() for s in inputs.strip("[]").split(",") if s.strip()):
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
def predict(target: str, inputs: str, batch_size: int = 512) -> tuple[list[tuple[Path, str, float, list[float]]], list[str], list[str]]:
    """([(path, predicted class, probability, all probabilities)], class names, unreadable files)."""
    from mnist99.evaluate import load, locate

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


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    asked_help = any(a in ("-h", "--help") for a in sys.argv[1:])
    unknown = (set(args) - {"ckpt_path", "inputs", "csv"}) | {a for a in sys.argv[1:] if "=" not in a and a not in ("-h", "--help")}
    if asked_help or unknown or not {"ckpt_path", "inputs"} <= set(args):
        print(USAGE + (f"\n\nmnist99: error: unknown argument(s) {sorted(unknown)}" if unknown else ""), file=sys.stderr)
        sys.exit(0 if asked_help else 2)
    register_resolvers()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        rows, names, bad = predict(args["ckpt_path"], args["inputs"])
    except Mnist99Error as e:
        sys.exit(f"\nmnist99: error: {e}\n")
    width = max((len(str(p)) for p, *_ in rows), default=0)
    for p, label, prob, _ in rows:
        print(f"{str(p):<{width}}  {label}  {prob:.4f}")
    if "csv" in args:
        write_csv(Path(args["csv"]), rows, names)
        print(f"wrote {args['csv']} ({len(rows)} rows)")
    if bad:
        print("\nmnist99: skipped files that are not readable images (fix or remove them):\n  " + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)
