"""What eval and predict were pointed at: the run and checkpoint a `ckpt_path=` names, the files and
folders of `inputs=`. Found (or refused) before the command imports torch, so a wrong path is
answered at once."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml

from mnist99.errors import ConfigError


def locate(target: str) -> tuple[Path, Path]:
    """(folder, checkpoint). A run folder means the weights its own test used (run.yaml), else its
    checkpoints/last.ckpt. A .ckpt means its run folder where it lies in one (config.yaml two levels
    up), else the folder it lies in: a checkpoint copied alone, whose results go beside it."""
    path = Path(target).expanduser().resolve()
    if path.is_file():
        ckpt = path
        run_dir = path.parent.parent if (path.parent.parent / "config.yaml").is_file() else path.parent
    else:
        run_dir = path
        tested = (yaml.safe_load((path / "run.yaml").read_text()) or {}).get("tested_weights", "") if (path / "run.yaml").is_file() else ""
        ckpt = Path(tested) if tested.endswith(".ckpt") else path / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        missing = ckpt if path.is_dir() else path
        raise ConfigError(f"ckpt_path={target}: {missing} does not exist. Pass the folder of a run made by train.py "
                          "(it holds config.yaml and checkpoints/), or a .ckpt file it wrote, from any folder.")
    return run_dir, ckpt


def input_items(inputs: str | Sequence[str]) -> list[Path]:
    """The files and folders named in `inputs`: a list, or one string of them, comma-separated."""
    items = inputs.split(",") if isinstance(inputs, str) else [str(i) for i in inputs]
    paths = [Path(item).expanduser() for item in (s.strip() for s in items) if item]
    for p in paths:
        if not (p.is_file() or p.is_dir()):  # a device or a pipe would be read forever
            what = "is not a file or a folder" if p.exists() else "does not exist"
            raise ConfigError(f"inputs: {p} {what}. Pass image files or folders, comma-separated.")
    return paths
