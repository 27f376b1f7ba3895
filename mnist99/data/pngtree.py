"""Reading a folder-of-PNGs split (`<split>/<class>/*.png`) into one uint8 tensor."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnist99.errors import DataError

IMAGE_SUFFIXES = (".png",)


@dataclass(frozen=True)
class SplitListing:
    """The files of one split, in a fixed order, with their labels and a fingerprint."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]  # paths relative to root, in file-name order across classes
    labels: tuple[int, ...]
    fingerprint: str  # changes when any file is added, removed, resized or touched
    ignored: tuple[str, ...] = ()  # files in class folders that are not .png (hidden ones left out)


@dataclass(frozen=True)
class DecodedSplit:
    images: np.ndarray  # (kept, size, size) uint8
    keep: np.ndarray  # bool per listed file: False for those skipped
    skipped: tuple[str, ...]  # "<path>: why", with on_bad_image=skip
    converted: int  # colour images made grey


def _natural_key(name: str):
    stem = name.rsplit(".", 1)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def list_split(root: Path) -> SplitListing:
    """List `root/<class>/*.png`; labels are the sorted class folder names' positions."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"The split folder {root} does not exist. A data folder needs training/<class>/*.png and "
            "testing/<class>/*.png (fastai's mnist_png layout); point data.data_dir at such a folder, "
            "or at an empty/missing one to have MNIST built there."
        )
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(
            f"{root} holds no class folders: expected one sub-folder per class (0, 1, ..., 9) with PNG "
            "files in each. Check data.data_dir, or delete the folder to have MNIST built again."
        )
    found, ignored = [], []
    for label, cls in enumerate(classes):
        files = [e for e in os.scandir(root / cls) if e.is_file() and not e.name.startswith(".")]
        entries = [e for e in files if e.name.lower().endswith(IMAGE_SUFFIXES)]
        ignored += [f"{cls}/{e.name}" for e in files if not e.name.lower().endswith(IMAGE_SUFFIXES)]
        if not entries:
            raise DataError(
                f"The class folder {root / cls} holds no .png files. Remove the empty folder or add its images."
            )
        found += [(_natural_key(e.name), label, e) for e in entries]
    # Ordered by file name across classes: mnist_png names files by their index in the IDX file, so
    # this is MNIST's own order, classes interleaved, and a few batches are a fair sample.
    found.sort(key=lambda t: (t[0], t[1]))
    files, labels, h = [], [], hashlib.sha1()
    for _, label, e in found:
        st = e.stat()
        rel = f"{classes[label]}/{e.name}"
        files.append(rel)
        labels.append(label)
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return SplitListing(root, tuple(classes), tuple(files), tuple(labels), h.hexdigest(), tuple(sorted(ignored)))


def _decode(path: Path, size: int) -> tuple[np.ndarray, bool]:
    """(uint8 (size, size) grey image, whether it was in colour and converted)."""
    try:
        with Image.open(path) as img:
            converted = img.mode != "L"
            arr = np.asarray(img if img.mode == "L" else img.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(
            f"Cannot read the image {path}: {e}. The file is truncated or not a PNG; replace or delete it "
            "(delete the whole data folder to have MNIST built again), or set data.on_bad_image=skip to leave "
            "out every such file."
        ) from None
    if arr.shape != (size, size):
        raise DataError(
            f"The image {path} is {arr.shape[1]}x{arr.shape[0]} pixels, but every image must be {size}x{size}. "
            "Resize it or remove it from the data folder (or set data.on_bad_image=skip to leave such files out)."
        )
    return arr, converted


def decode_split(listing: SplitListing, size: int = 28, threads: int = 2, on_bad_image: str = "error") -> DecodedSplit:
    """Decode every image of a split into one (N, size, size) uint8 array (greyscale). A file that
    cannot be used stops it (on_bad_image="error") or is left out and listed ("skip")."""
    out = np.empty((len(listing.files), size, size), dtype=np.uint8)
    keep = np.ones(len(listing.files), dtype=bool)
    converted = np.zeros(len(listing.files), dtype=bool)
    problems: dict[int, str] = {}

    def work(i: int) -> None:
        try:
            out[i], converted[i] = _decode(listing.root / listing.files[i], size)
        except DataError as e:
            if on_bad_image != "skip":
                raise
            keep[i], problems[i] = False, str(e).split(". ")[0]

    # PIL's zlib inflate releases the GIL, so two threads use both cores.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(work, range(len(listing.files)), chunksize=512):
            pass
    images = out if keep.all() else out[keep]
    return DecodedSplit(images, keep, tuple(problems[i] for i in sorted(problems)), int(converted.sum()))
