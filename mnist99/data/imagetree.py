"""Reading one split of an image folder (`<split>/<class>/**/<image>`) into one uint8 tensor: every
format torchvision's ImageFolder reads, any size (resized), grey or colour."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from mnist99.data.safe_image import BadImage, open_image
from mnist99.data.splits import class_folders
from mnist99.errors import DataError

IMAGE_SUFFIXES = tuple(IMG_EXTENSIONS)  # what ImageFolder reads: png, jpg/jpeg, bmp, webp, tif, pgm, ppm
MODES = {1: "L", 3: "RGB"}  # data.channels -> the PIL mode images are converted to


@dataclass(frozen=True)
class SplitListing:
    """The files of one split, in a fixed order, with their labels and a fingerprint."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]  # paths relative to root, in file-name order across classes
    labels: tuple[int, ...]
    fingerprint: str  # changes when any file is added, removed, resized or touched
    ignored: tuple[str, ...] = ()  # files in class folders that are not images (hidden ones left out)


@dataclass(frozen=True)
class DecodedSplit:
    images: np.ndarray  # (kept, channels, size, size) uint8
    keep: np.ndarray  # bool per listed file: False for those skipped
    skipped: tuple[str, ...]  # "<path>: why", with on_bad_image=skip
    converted: int  # images whose colour mode was changed (colour to grey, grey to colour)
    resized: int  # images of another size, resized


def _order(names: list[str], labels: list[int], rels: list[str]) -> list[int]:
    """Positions sorted by file name across classes, numbers by value (mnist_png's 0.png ... 59999.png),
    then by class; a plain integer key when every name is a number (the fast, common case)."""
    stems = [n.rsplit(".", 1)[0] for n in names]
    if all(stem.isdigit() for stem in stems):
        keys = [int(stem) * 1_000_003 + label for stem, label in zip(stems, labels)]
    else:
        keys = [((0, int(stem), name) if stem.isdigit() else (1, 0, name), label, rel)
                for stem, name, label, rel in zip(stems, names, labels, rels)]
    return sorted(range(len(stems)), key=keys.__getitem__)


def _class_files(folder: Path) -> list[tuple[str, os.DirEntry]]:
    """(path relative to the class folder, entry) of every non-hidden file below it, sub-folders included."""
    found, todo = [], [(folder, "")]
    while todo:
        path, prefix = todo.pop()
        for e in (e for e in os.scandir(path) if not e.name.startswith(".")):
            if e.is_dir():
                todo.append((Path(e.path), f"{prefix}{e.name}/"))
            elif e.is_file():
                found.append((prefix + e.name, e))
    return found


def list_split(root: Path) -> SplitListing:
    """List `root/<class>/**/<image>`; labels are the sorted class folder names' positions."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"The split folder {root} does not exist. Point data.data_dir at a folder holding a training "
                        "and a test split (training/ and testing/, train/ and test/, train/ and valid/ or train/ and val/), "
                        "each with one sub-folder per class.")
    classes = class_folders(root)
    rels, entries, labels, ignored = [], [], [], []
    for label, cls in enumerate(classes):
        n = len(entries)
        for rel, e in _class_files(root / cls):
            if e.name.lower().endswith(IMAGE_SUFFIXES):
                rels.append(f"{cls}/{rel}")
                entries.append(e)
            else:
                ignored.append(f"{cls}/{rel}")
        if len(entries) == n:
            raise DataError(f"The class folder {root / cls} holds no images (looked for {', '.join(IMAGE_SUFFIXES)}). "
                            "Remove the empty folder or add its images.")
        labels += [label] * (len(entries) - n)
    # mnist_png names files by their index in the IDX file: by name is MNIST's own order, classes interleaved
    order = _order([e.name for e in entries], labels, rels)
    files = [rels[i] for i in order]
    stats = [entries[i].stat() for i in order]
    # the fingerprint: every name, size and modification time (numbers hashed as one array: fast)
    h = hashlib.sha1("\n".join(files).encode())
    h.update(np.array([(st.st_size, st.st_mtime_ns) for st in stats], dtype=np.int64).tobytes())
    return SplitListing(root, tuple(classes), tuple(files), tuple(labels[i] for i in order), h.hexdigest(), tuple(sorted(ignored)))


def to_array(img: Image.Image, size: int, channels: int = 1) -> tuple[np.ndarray, bool, bool]:
    """(uint8 (channels, size, size) array, colour mode changed?, resized?). Another size is resized (PIL's bilinear,
    antialiased when shrinking; a non-square image squeezed to a square, as torchvision's Resize((size, size)))."""
    mode = MODES[channels]
    converted, resized = img.mode != mode, img.size != (size, size)
    if resized:
        img.draft(mode, (size, size))  # a JPEG not yet loaded decodes at 1/2, 1/4 or 1/8 scale when that is enough
    if converted:
        img = img.convert(mode)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return (arr[None] if channels == 1 else arr.transpose(2, 0, 1)), converted, resized


def _read(path: Path, size: int, channels: int) -> tuple[np.ndarray, bool, bool]:
    """`to_array` of the image file at `path`; BadImage when it is refused (safe_image)."""
    with open_image(path) as img:
        return to_array(img, size, channels)


def _unreadable(path: Path, why: BadImage) -> DataError:
    return DataError(f"Cannot read the image {path}: {why}. Replace or delete it (or shrink it, if it is too large), "
                     "or set data.on_bad_image=skip to leave out every such file.")


def decode(path: Path, size: int, channels: int = 1) -> tuple[np.ndarray, bool, bool]:
    """`to_array` of the image file at `path`; a file that cannot be read is a DataError naming it."""
    try:
        return _read(path, size, channels)
    except BadImage as e:
        raise _unreadable(path, e) from None


def decode_split(listing: SplitListing, size: int = 28, channels: int = 1, threads: int | None = None,
                 on_bad_image: str = "error") -> DecodedSplit:
    """Decode every image of a split into one (N, channels, size, size) uint8 array. A file that cannot be read
    (not an image, truncated, over safe_image.MAX_PIXELS) stops it (on_bad_image="error") or is left out and listed ("skip")."""
    n = len(listing.files)
    out = np.empty((n, channels, size, size), dtype=np.uint8)
    keep = np.ones(n, dtype=bool)
    converted, resized = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    problems: dict[int, str] = {}

    def work(i: int) -> None:
        path = listing.root / listing.files[i]
        try:
            out[i], converted[i], resized[i] = _read(path, size, channels)
        except BadImage as e:
            if on_bad_image != "skip":
                raise _unreadable(path, e) from None
            keep[i], problems[i] = False, f"{path}: {e}"

    # PIL releases the GIL while it decodes and resizes: threads use every core without worker processes' start-up
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 2) as pool:
        list(pool.map(work, range(n), chunksize=512))
    images = out if keep.all() else out[keep]
    return DecodedSplit(images, keep, tuple(problems[i] for i in sorted(problems)), int(converted[keep].sum()), int(resized[keep].sum()))
