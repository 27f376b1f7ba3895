"""A decoded split cached beside the PNGs, keyed by the file listing's fingerprint."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch
from filelock import FileLock

from mnist99.data.pngtree import decode_split, list_split

log = logging.getLogger(__name__)

CACHE_DIR = ".mnist99_cache"


def load_split(root: Path, size: int = 28, on_bad_image: str = "error") -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple[str, ...]]:
    """(images uint8 (N, size, size), labels int64 (N,), class names, skipped files) of
    `root/<class>/*.png`; with on_bad_image="skip", unusable files are left out and listed.

    The first call decodes every PNG and saves the tensors to `<data_dir>/.mnist99_cache/`; later
    calls load that file unless a file was added, removed or changed since. A file lock makes
    concurrent runs (a parallel sweep) decode once: the others wait, then load the cache.
    """
    listing = list_split(root)
    if listing.ignored:
        log.warning("Ignored %d file(s) in %s that are not .png (e.g. %s).", len(listing.ignored), root, listing.ignored[0])
    cache_dir = Path(root).parent / CACHE_DIR
    mode = "-skip" if on_bad_image == "skip" else ""  # a skipping run's cache is never an erroring run's
    cache = cache_dir / f"{Path(root).name}{mode}-{size}-{listing.fingerprint[:16]}.pt"
    cached = _load(cache, listing, size)
    if cached is None:
        with _exclusive(cache):  # another process may have built it while this one waited
            cached = _load(cache, listing, size) or _build(cache, listing, size, on_bad_image)
    images, labels, skipped = cached
    if skipped:
        log.warning("Skipped %d unusable image(s) in %s (data.on_bad_image=skip), e.g. %s", len(skipped), root, skipped[0])
    return images, labels, listing.classes, skipped


@contextlib.contextmanager
def _exclusive(cache: Path):
    """Held by the one process that decodes and writes `cache`; nothing to hold in a read-only
    data folder, where every run decodes (and trains) without a cache."""
    lock = FileLock(str(cache) + ".lock")
    try:
        cache.parent.mkdir(exist_ok=True)
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _load(cache: Path, listing, size: int):
    if not cache.is_file():
        return None
    try:
        data = torch.load(cache, weights_only=True)
        skipped = tuple(data.get("skipped", ()))
        if data["images"].shape == (len(listing.files) - len(skipped), size, size) and tuple(data["classes"]) == listing.classes:
            return data["images"], data["labels"], skipped
        log.warning("The cache %s does not match %s; decoding the PNGs again.", cache, listing.root)
    except Exception as e:  # noqa: BLE001 - a damaged cache is only a lost speed-up: rebuild it
        log.warning("Ignoring the unreadable cache %s (%s); decoding the PNGs again.", cache, e)
    return None


def _build(cache: Path, listing, size: int, on_bad_image: str):
    log.info("Decoding %d images in %s (cached for the next run)", len(listing.files), listing.root)
    decoded = decode_split(listing, size, on_bad_image=on_bad_image)
    if decoded.converted:
        log.warning("%d colour image(s) in %s were converted to grey.", decoded.converted, listing.root)
    images = torch.from_numpy(decoded.images)
    labels = torch.tensor(listing.labels, dtype=torch.int64)[torch.from_numpy(decoded.keep)]
    _save(cache, {"images": images, "labels": labels, "classes": list(listing.classes), "skipped": list(decoded.skipped)})
    return images, labels, decoded.skipped


def _save(cache: Path, data: dict) -> None:
    try:
        cache.parent.mkdir(exist_ok=True)
        for old in cache.parent.glob(cache.name.rsplit("-", 1)[0] + "-*.pt"):
            old.unlink(missing_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(data, tmp)
        os.replace(tmp, cache)  # atomic: a reader sees the old file or the whole new one
    except OSError as e:  # a read-only data folder still trains, only without the cache
        log.warning("Could not write the cache %s (%s); the next run decodes the PNGs again.", cache, e)
