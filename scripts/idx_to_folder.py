#!/usr/bin/env python
"""Write a dataset of four IDX files (Fashion-MNIST, KMNIST, MNIST) as an image folder that
`data=folder` reads: <out>/train/<class name>/<index>.png and <out>/test/<class name>/<index>.png.

    apt-get install dataset-fashion-mnist           # Debian's package: /usr/share/datasets/fashion-mnist/
    python scripts/idx_to_folder.py /usr/share/datasets/fashion-mnist data/fashion_png --classes fashion
    python train.py data=folder data.data_dir=data/fashion_png data.channels=1
    python scripts/idx_to_folder.py ../shared/data/mnist data/mnist_300 --train-per-class 300 --test-per-class 100

The four files (gzip'd or raw) must have MNIST's names (train-images-idx3-ubyte, ...), as every
IDX dataset ships them. --classes names the class folders: `fashion` or `kmnist` (torchvision's
names for those datasets), `digits` (0..9), or ten comma-separated names. The folder is written
beside <out> and renamed into place at the end; an <out> that holds anything is refused.
Exits with status 2 and a one-paragraph message (no traceback) on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import mnist99  # noqa: F401
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, str(REPO_ROOT))


def class_names(choice: str) -> list[str]:
    """Folder names for the ten labels: torchvision's names made safe and short ('T-shirt/top' -> 't-shirt-top')."""
    from torchvision.datasets import KMNIST, FashionMNIST

    named = {"fashion": FashionMNIST.classes, "kmnist": KMNIST.classes, "digits": [str(i) for i in range(10)]}
    names = named.get(choice) or [n.strip() for n in choice.split(",")]
    names = [n.lower().replace("/", "-").replace(" ", "-") for n in names]
    if len(names) != 10 or len(set(names)) != 10 or not all(names):
        raise ValueError(f"--classes {choice!r}: give fashion, kmnist, digits or ten different comma-separated names")
    return names


def read_idx(folder: Path, staging: Path) -> dict:
    """The four IDX files of `folder` (raw, or .gz unpacked into staging), checked and read as
    {"training": (images, labels), "testing": ...}."""
    from mnist99.data.idx import IDX_FILES, check_idx, read_arrays
    from mnist99.data.prepare import _gunzip
    from mnist99.errors import DataError

    paths = {}
    staging.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        raw, gz = folder / name, folder / f"{name}.gz"
        if not raw.is_file() and not gz.is_file():
            raise DataError(f"{folder} has no {name} (nor {name}.gz): an IDX dataset is four files named as MNIST's "
                            f"({', '.join(IDX_FILES)}). Point the first argument at the folder that holds them.")
        paths[name] = raw if raw.is_file() else _gunzip(gz, staging, str(gz))
        check_idx(paths[name], name)
    return read_arrays(paths)


def first_per_class(images, labels, n: int | None) -> tuple:
    """The first `n` images of each label, in the file's order (all of them for None)."""
    import numpy as np

    if n is None:
        return images, labels
    if n < 1:
        raise ValueError(f"--train-per-class/--test-per-class {n}: give a number of images, 1 or more")
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:n] for c in np.unique(labels)]))
    return images[keep], labels[keep]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write four IDX files as an image folder (train/ and test/, a folder per class).")
    parser.add_argument("idx_dir", type=Path, help="folder holding the four IDX files (gzip'd or raw)")
    parser.add_argument("out", type=Path, help="the image folder to write (must be missing or empty)")
    parser.add_argument("--classes", default="digits", help="fashion, kmnist, digits, or ten comma-separated names (default: digits)")
    parser.add_argument("--train-per-class", type=int, default=None, metavar="N",
                        help="keep the first N training images of each class (a small folder, e.g. 300); default: all")
    parser.add_argument("--test-per-class", type=int, default=None, metavar="N", help="the same for the test images")
    args = parser.parse_args(argv)

    from mnist99.data.prepare import write_png_tree
    from mnist99.data.splits import describe, is_empty
    from mnist99.errors import DataError

    out = args.out.expanduser().absolute()
    try:
        names = class_names(args.classes)
        if not is_empty(out):
            raise DataError(f"{out} holds {describe(out)}: name a new or empty folder to write the images into.")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as tmp:
            arrays = read_idx(args.idx_dir.expanduser(), Path(tmp) / "idx")
            splits = {"train": first_per_class(*arrays["training"], args.train_per_class),
                      "test": first_per_class(*arrays["testing"], args.test_per_class)}
            tree = Path(tmp) / "tree"
            n = write_png_tree(tree, splits, class_names=names)
            out.mkdir(exist_ok=True)
            for split in ("train", "test"):
                os.replace(tree / split, out / split)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {n} images to {out} (train/ and test/, classes: {', '.join(sorted(names))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
