"""A sweep job's folder name, which is also its TensorBoard run name: the job's number, then only the
overrides that vary across the sweep, numbers to 4 significant digits (config.yaml keeps the full
values). The number keeps every name of a sweep folder its own."""

from __future__ import annotations

import math
import re

# Overrides that say where, not what (as conf/hydra/default.yaml's exclude_keys): in a job's name only
# when they vary, never in a sweep summary's job descriptions.
LOCATION_KEYS = ("hparams_search", "paths.", "data.data_dir", "data.source", "trainer.devices", "trainer.accelerator", "hydra.")
LIMIT = 200  # characters; filesystems allow 255 bytes a name
_INTEGER = re.compile(r"[+-]?\d+")


def short_value(value: str) -> str:
    """`0.0003754553966912878` -> `0.0003755`; integers, words and lists as they are."""
    if _INTEGER.fullmatch(value):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if math.isfinite(number) else value


def job_name(number: int, overrides: list[str] | tuple[str, ...], varying: set[str]) -> str:
    """`3_model=cnn,optimizer.lr=0.001235`. A sweep in which nothing varies (one job) shows the job's
    own overrides, the location keys left out."""
    pairs = [(key.lstrip("+~"), value) for key, _, value in (o.partition("=") for o in overrides)]
    shown = [p for p in pairs if p[0] in varying] or [p for p in pairs if not p[0].startswith(LOCATION_KEYS)]
    parts, length = [], 0
    for key, value in shown:
        part = f"{key}={short_value(value)}"
        if length + len(part) > LIMIT:
            parts.append("...")  # the whole values are in the job's config.yaml
            break
        parts.append(part)
        length += len(part) + 1
    text = re.sub(r"[/\\$'\"\s]", "_", ",".join(parts))
    return f"{number}_{text}" if text else str(number)


def subdir_override(name: str) -> str:
    """The job's folder as a Hydra override, which a sweeper appends to the job's overrides."""
    return f"hydra.sweep.subdir='{name}'"
