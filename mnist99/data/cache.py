"""A decoded split cached beside the PNGs, keyed by the file listing's fingerprint."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from mnist99.data.pngtree import decode_split, list_split

log = logging.getLogger(__name__)

CACHE_DIR = ".mnist99_cache"


def load_split(root: Path, size: int = 28) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """(images uint8 (N, size, size), labels int64 (N,), class names) of `root/<class>/*.png`.

    The first call decodes every PNG and saves the tensors to `<data_dir>/.mnist99_cache/`; later
    calls load that file unless a file was added, removed or changed since.
    """
    listing = list_split(root)
    cache_dir = Path(root).parent / CACHE_DIR
    cache = cache_dir / f"{Path(root).name}-{size}-{listing.fingerprint[:16]}.pt"
    if cache.is_file():
        try:
            data = torch.load(cache, weights_only=True)
            if data["images"].shape == (len(listing.files), size, size) and tuple(data["classes"]) == listing.classes:
                return data["images"], data["labels"], listing.classes
        except Exception as e:  # a damaged cache is only a lost speed-up: rebuild it
            log.warning("Ignoring the unreadable cache %s (%s); decoding the PNGs again.", cache, e)
    log.info("Decoding %d images in %s (cached for the next run)", len(listing.files), root)
    images = torch.from_numpy(decode_split(listing, size))
    labels = torch.tensor(listing.labels, dtype=torch.int64)
    _save(cache, {"images": images, "labels": labels, "classes": list(listing.classes)})
    return images, labels, listing.classes


def _save(cache: Path, data: dict) -> None:
    try:
        cache.parent.mkdir(exist_ok=True)
        for old in cache.parent.glob(cache.name.rsplit("-", 1)[0] + "-*.pt"):
            old.unlink(missing_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(data, tmp)
        os.replace(tmp, cache)
    except OSError as e:  # a read-only data folder still trains, only without the cache
        log.warning("Could not write the cache %s (%s); the next run decodes the PNGs again.", cache, e)
