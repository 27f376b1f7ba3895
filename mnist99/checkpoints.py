"""Reading a checkpoint safely, and checking that it fits the model before anything trains on it."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from mnist99.errors import ConfigError


def read_checkpoint(path: str | Path) -> dict:
    """torch.load with weights_only=True: tensors and plain values only, so a file whose pickle
    would run code is refused instead of executed."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError(
            f"Refused to load {path}: it holds Python objects that loading would have to run "
            f"({str(e).splitlines()[0][:200]}). mnist99 loads checkpoints with torch.load(weights_only=True), "
            "which accepts tensors and plain values only. Use a checkpoint written by mnist99, or one you trust "
            "converted to plain tensors."
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated, empty, not a torch file: say which file
        raise ConfigError(
            f"Cannot read the checkpoint {path} ({type(e).__name__}: {str(e)[:200]}). It is truncated or not a "
            "checkpoint (was it copied completely?). Use another .ckpt of the run, e.g. one of its checkpoints/ files."
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ConfigError(f"{path} is not a Lightning checkpoint (it has no state_dict). Use a .ckpt written by train.py.")
    return ckpt


def check_fits(ckpt: dict, model: nn.Module, path: str | Path) -> None:
    """Refuse, in one paragraph, weights written by another model or for another number of classes."""
    theirs, ours = ckpt["state_dict"], model.state_dict()
    missing = [k for k in ours if k not in theirs]
    extra = [k for k in theirs if k not in ours]
    if missing or extra:
        raise ConfigError(
            f"The checkpoint {path} was written by a different model: it lacks {len(missing)} of this model's "
            f"tensors (e.g. {missing[:2]}) and has {len(extra)} it does not know (e.g. {extra[:2]}). Load it with the "
            "config of the run that wrote it: resume=<its run dir> or eval.py ckpt_path=<its run dir>."
        )
    shapes = [(k, tuple(theirs[k].shape), tuple(v.shape)) for k, v in ours.items() if tuple(theirs[k].shape) != tuple(v.shape)]
    if shapes:
        key, got, want = shapes[0]
        _, last_got, last_want = shapes[-1]  # the output layer is where a number of classes shows
        classes = getattr(model, "num_classes", None)
        other_classes = classes and last_got and last_want and last_want[0] == classes != last_got[0]
        hint = (f" It looks like a model for {last_got[0]} classes, and this one has {classes}: set "
                f"model.num_classes={last_got[0]} or use data with that many classes." if other_classes else "")
        raise ConfigError(
            f"The checkpoint {path} does not fit this model: {key} is {list(got)} there and {list(want)} here "
            f"({len(shapes)} tensor(s) differ).{hint} Otherwise load it with the config of the run that wrote it."
        )
