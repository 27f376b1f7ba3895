"""A decoded split cached in a folder of mnist99's own (never in the data folder), keyed by the
split's path, the file listing's fingerprint, the image size and the channels."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from mnist99.data.imagetree import decode_split, list_split

log = logging.getLogger(__name__)


def cache_file(cache_dir: Path, root: Path, fingerprint: str, size: int, channels: int, on_bad_image: str) -> Path:
    """<cache_dir>/<split>-<path hash>-<size>x<size>x<channels>[-skip]-<fingerprint>.pt: one file
    per split folder and decoding; a changed listing gets a new name (and the old file is removed)."""
    where = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:8]
    mode = "-skip" if on_bad_image == "skip" else ""  # a skipping run's cache is never an erroring run's
    return Path(cache_dir) / f"{Path(root).name}-{where}-{size}x{size}x{channels}{mode}-{fingerprint[:16]}.pt"


def load_split(root: Path, size: int = 28, channels: int = 1, on_bad_image: str = "error", cache_dir: Path | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple[str, ...]]:
    """(images uint8 (N, channels, size, size), labels int64 (N,), class names, skipped files) of
    `root/<class>/**/<image>`; with on_bad_image="skip", unreadable files are left out and listed.
    The first call decodes and caches in `cache_dir` (None: no cache) until a file is added, removed or
    changed; a file lock makes concurrent runs (a parallel sweep) decode once, the others then load it."""
    listing = list_split(root)
    if listing.ignored:
        log.warning("Ignored %d file(s) in %s that are not images (e.g. %s).", len(listing.ignored), root, listing.ignored[0])
    cache = None if cache_dir is None else cache_file(cache_dir, root, listing.fingerprint, size, channels, on_bad_image)
    cached = _load(cache, listing, size, channels)
    if cached is None:
        with _exclusive(cache):  # another process may have built it while this one waited
            cached = _load(cache, listing, size, channels) or _build(cache, listing, size, channels, on_bad_image)
    images, labels, skipped = cached
    if skipped:
        log.warning("Skipped %d unusable image(s) in %s (data.on_bad_image=skip), e.g. %s", len(skipped), root, skipped[0])
    return images, labels, listing.classes, skipped


def seed_split(root: Path, images, cache_dir: Path) -> None:
    """Cache the grey split just written to `root` from `images` (uint8 (N, H, W); the file
    `<class>/<index>.png` holds images[index]) exactly as decoding it would: a first run does
    not read back the PNGs it has just written (PNG is lossless, so the pixels are the same)."""
    listing = list_split(root)
    index = np.array([int(Path(f).stem) for f in listing.files])
    cache = cache_file(cache_dir, root, listing.fingerprint, images.shape[-1], 1, "error")
    with _exclusive(cache):
        _save(cache, {"images": torch.from_numpy(np.ascontiguousarray(images[index][:, None])),
                      "labels": torch.tensor(listing.labels, dtype=torch.int64), "classes": list(listing.classes), "skipped": []})


@contextlib.contextmanager
def _exclusive(cache: Path | None):
    """Held by the one process that decodes and writes `cache`; nothing to hold without a cache
    or where its folder cannot be written (every run then decodes)."""
    with contextlib.ExitStack() as held:
        if cache is not None:
            lock = FileLock(str(cache) + ".lock")
            with contextlib.suppress(OSError):
                cache.parent.mkdir(parents=True, exist_ok=True)
                lock.acquire()
                held.callback(lock.release)
        yield


def _load(cache: Path | None, listing, size: int, channels: int):
    if cache is None or not cache.is_file():
        return None
    try:
        data = torch.load(cache, weights_only=True)
        skipped = tuple(data.get("skipped", ()))
        if data["images"].shape == (len(listing.files) - len(skipped), channels, size, size) and tuple(data["classes"]) == listing.classes:
            return data["images"], data["labels"], skipped
        log.warning("The cache %s does not match %s; decoding the images again.", cache, listing.root)
    except Exception as e:  # noqa: BLE001 - a damaged cache is only a lost speed-up: rebuild it
        log.warning("Ignoring the unreadable cache %s (%s); decoding the images again.", cache, e)
    return None


def _build(cache: Path | None, listing, size: int, channels: int, on_bad_image: str):
    log.info("Decoding %d images in %s%s", len(listing.files), listing.root, f" (cached in {cache.parent})" if cache else "")
    decoded = decode_split(listing, size, channels, on_bad_image=on_bad_image)
    if decoded.resized:
        log.info("%d image(s) in %s were not %dx%d and were resized.", decoded.resized, listing.root, size, size)
    if decoded.converted:
        log.info("%d image(s) in %s were converted to %s.", decoded.converted, listing.root, "grey" if channels == 1 else "colour (RGB)")
    images = torch.from_numpy(decoded.images)
    labels = torch.tensor(listing.labels, dtype=torch.int64)[torch.from_numpy(decoded.keep)]
    if cache is not None:
        _save(cache, {"images": images, "labels": labels, "classes": list(listing.classes), "skipped": list(decoded.skipped)})
    return images, labels, decoded.skipped


def _save(cache: Path, data: dict) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        for old in cache.parent.glob(cache.name.rsplit("-", 1)[0] + "-*.pt"):
            old.unlink(missing_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(data, tmp)
        os.replace(tmp, cache)  # atomic: a reader sees the old file or the whole new one
    except OSError as e:  # a read-only cache folder still trains, only without the cache
        log.warning("Could not write the cache %s (%s); the next run decodes the images again.", cache, e)
