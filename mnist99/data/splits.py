"""Finding the training and test splits of a data folder by their names and a split's class
folders, and saying what a folder holds when it has none."""

from __future__ import annotations

import os
from pathlib import Path

from mnist99.errors import ConfigError, DataError

# Looked for in this order: mnist_png's names, then the usual ones (fastai: train/valid, torchvision: train/val).
TRAIN_NAMES = ("training", "train")
TEST_NAMES = ("testing", "test", "valid", "val")
LAYOUTS = "training/ + testing/ (mnist_png), train/ + test/, train/ + valid/ (fastai) or train/ + val/ (torchvision)"


def _first_dir(data_dir: Path, names) -> Path | None:
    return next((data_dir / n for n in names if (data_dir / n).is_dir()), None)


def find_splits(data_dir: Path, train_dir: str | None = None, test_dir: str | None = None) -> tuple[Path, Path] | None:
    """(training split, test split) of `data_dir`, found by name, or None when it has no such pair.
    A name given in data.train_dir / data.test_dir (relative to data_dir, or absolute) must exist."""
    for key, given in (("data.train_dir", train_dir), ("data.test_dir", test_dir)):
        if given is not None and not (data_dir / given).is_dir():
            raise ConfigError(f"{key}={given}: {data_dir / given} is not a folder. Name a split folder of {data_dir} "
                              f"(it holds {describe(data_dir)}), or leave {key} unset to find {LAYOUTS}.")
    train = data_dir / train_dir if train_dir is not None else _first_dir(data_dir, TRAIN_NAMES)
    test = data_dir / test_dir if test_dir is not None else _first_dir(data_dir, TEST_NAMES)
    return (train, test) if train is not None and test is not None else None


def class_folders(split: Path) -> tuple[str, ...]:
    """A split's class names: its sub-folders, sorted, hidden ones left out; a label is a name's position."""
    classes = tuple(sorted(e.name for e in os.scandir(split) if e.is_dir() and not e.name.startswith(".")))
    if not classes:
        raise DataError(f"{split} holds no class folders: expected one sub-folder per class (0, 1, ..., 9 for MNIST; any names) "
                        "with the images of that class in it. Check data.data_dir.")
    return classes


def is_empty(folder: Path) -> bool:
    """True for a folder that does not exist or holds nothing but hidden entries (.gitkeep)."""
    return not folder.exists() or (folder.is_dir() and not any(not e.name.startswith(".") for e in os.scandir(folder)))


def _count(folder: str) -> str:
    n = sum(1 for _ in os.scandir(folder))
    return f"{n} entry" if n == 1 else f"{n} entries"


def describe(folder: Path, limit: int = 8) -> str:
    """What a folder holds, for an error message: 'train/ (3 entries), notes.txt'."""
    if not folder.exists():
        return "nothing (it does not exist)"
    if not folder.is_dir():
        return "nothing: it is a file, not a folder"
    entries = sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)
    shown = [f"{e.name}/ ({_count(e.path)})" if e.is_dir() else e.name for e in entries[:limit]]
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return (", ".join(shown) + more) if shown else "nothing but hidden files"


def usable_splits(data_dir: Path, train_dir: str | None = None, test_dir: str | None = None,
                  build_mnist: bool = False) -> tuple[Path, Path] | None:
    """(training split, test split) of `data_dir`; None where MNIST is to be built there (`build_mnist`
    and the folder missing or empty). Any other folder is refused, saying what it holds. Reads no
    image and imports nothing heavy: the command line asks it before the training stack loads."""
    data_dir = Path(str(data_dir)).expanduser()  # a folder named 5 comes from Hydra as a number
    train_dir, test_dir = (None if d is None else str(d) for d in (train_dir, test_dir))
    splits = find_splits(data_dir, train_dir, test_dir)
    if splits is not None or (build_mnist and is_empty(data_dir)):
        return splits
    if build_mnist:
        why = ("mnist99 builds MNIST only in a folder that is missing or empty, and never writes into one that holds anything "
               "else. To train on this folder, arrange it so; to train on MNIST, point data.data_dir at a new or empty folder")
    elif not data_dir.is_dir():
        why = "Point data.data_dir at your image folder"
    else:
        why = "Arrange it so, or name its splits with data.train_dir=... data.test_dir=..."
    raise DataError(f"{data_dir} holds {describe(data_dir)}, but no training and test split: expected {LAYOUTS}, "
                    f"each with one sub-folder of images per class (data.train_dir / data.test_dir name other splits). {why}.")


def folder_classes(data_dir: Path, train_dir: str | None = None, test_dir: str | None = None,
                   build_mnist: bool = False) -> tuple[str, ...] | None:
    """The class folders of `data_dir`'s training split, None where MNIST is to be built there; a folder
    it cannot use is refused (usable_splits). The datamodule and the start-up check ask it alike."""
    splits = usable_splits(data_dir, train_dir, test_dir, build_mnist)
    return None if splits is None else class_folders(splits[0])
