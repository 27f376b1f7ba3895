"""What eval and predict were pointed at: the run and checkpoint a `ckpt_path=` names, the files and
folders of `inputs=`, where eval writes. Found (or refused) before the command imports torch, so a
wrong path is answered at once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import yaml

from mnist99.config import new_folder
from mnist99.errors import ConfigError

# How a file torch.save wrote begins: a zip archive (torch >= 1.6), or a pickle (torch's legacy format)
# whose first value is torch's magic number.
ZIP_MAGIC, PICKLE_MAGIC = b"PK\x03\x04", b"\x80"
LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def torch_file_start(path: Path) -> str | None:
    """Why `path` cannot be a file torch.save wrote, read from its first bytes: None where it begins as
    one does (an empty file too: read_checkpoint calls it truncated)."""
    with open(path, "rb") as f:
        head = f.read(32)
    if not head or head.startswith(ZIP_MAGIC) or (head.startswith(PICKLE_MAGIC) and (LEGACY_MAGIC in head or len(head) < 32)):
        return None
    if head.startswith(PICKLE_MAGIC):
        return "it is a Python pickle, but not one torch.save wrote"
    start = head[:4]
    shown = repr(start.decode("ascii")) if all(32 <= b < 127 for b in start) else start.hex(" ")
    return f"it begins with {shown}, where a checkpoint (a file torch.save wrote, as train.py's .ckpt files are) begins with PK, a zip header"


def run_of(ckpt: Path) -> Path | None:
    """The run folder a .ckpt lies in (config.yaml two levels up, as in <run>/checkpoints/), else None:
    a checkpoint copied alone."""
    return ckpt.parent.parent if (ckpt.parent.parent / "config.yaml").is_file() else None


def locate(target: str | Path) -> tuple[Path, Path]:
    """(folder, checkpoint). A run folder means the weights its own test used (run.yaml), else its
    checkpoints/last.ckpt. A .ckpt means its run folder where it lies in one (config.yaml two levels
    up), else the folder it lies in: a checkpoint copied alone."""
    path = Path(target).expanduser().resolve()
    if path.is_file():
        ckpt = path
        run_dir = run_of(path) or path.parent
        why = torch_file_start(path)
        if why:
            raise ConfigError(f"ckpt_path={target}: {path} is neither a run folder nor a checkpoint: {why}. Pass the folder "
                              "of a run made by train.py (it holds config.yaml and checkpoints/), or a .ckpt file it wrote.")
    else:
        run_dir = path
        tested = (yaml.safe_load((path / "run.yaml").read_text()) or {}).get("tested_weights", "") if (path / "run.yaml").is_file() else ""
        ckpt = tested_here(path, tested) if tested.endswith(".ckpt") else path / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        missing = ckpt if path.is_dir() else path
        raise ConfigError(f"ckpt_path={target}: {missing} does not exist. Pass the folder of a run made by train.py "
                          "(it holds config.yaml and checkpoints/), or a .ckpt file it wrote, from any folder.")
    return run_dir, ckpt


def tested_here(run_dir: Path, tested: str) -> Path:
    """The tested checkpoint run.yaml names, in this folder: run.yaml holds the path it had when the run
    was written, and a copied or moved run folder must use its own file, not the original's."""
    own = run_dir / "checkpoints" / Path(tested).name
    return own if own.is_file() or not Path(tested).is_file() else Path(tested)


def eval_folder(run_dir: Path, ckpt: Path, default_outputs: Path) -> Path:
    """Where eval writes unless told: a new folder evals/<time>_<run folder name> beside the runs/ (or
    multirun/) folder that holds the run, so that the run's own folder is never written into; for a
    checkpoint copied alone (locate gives the folder it lies in), in `default_outputs`, named by its file."""
    lone = ckpt.parent == run_dir
    name, outputs = (ckpt.stem, None) if lone else (run_dir.name, outputs_of(run_dir))
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return Path(new_folder(str((outputs or default_outputs) / "evals" / f"{stamp}_{name}")))


def outputs_of(run_dir: Path) -> Path | None:
    """The outputs folder (paths.log_dir) a run folder lies in: outputs/runs/<run>, outputs/multirun/<time>/<job>."""
    for up in (run_dir.parent, run_dir.parent.parent):
        if up.name in ("runs", "multirun"):
            return up.parent
    return None


def input_items(inputs: str | Sequence[str]) -> list[Path]:
    """The files and folders named in `inputs`: a list, or one string of them, comma-separated."""
    items = inputs.split(",") if isinstance(inputs, str) else [str(i) for i in inputs]
    paths = [Path(item).expanduser() for item in (s.strip() for s in items) if item]
    for p in paths:
        if not (p.is_file() or p.is_dir()):  # a device or a pipe would be read forever
            what = "is not a file or a folder" if p.exists() else "does not exist"
            raise ConfigError(f"inputs: {p} {what}. Pass image files or folders, comma-separated.")
    return paths
