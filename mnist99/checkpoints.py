"""Checkpoints: what every one carries so that it stands alone, reading one safely, and checking
that it fits the model before anything trains on it.

The run's resolved config, its class names, image size, channels and normalisation go under
checkpoint["mnist99"] (as torchvision's reference scripts keep their arguments in each checkpoint):
eval.py and predict.py need the .ckpt alone, in any folder. The entry holds plain values only, so
torch.load(weights_only=True) reads it; read back, it is as untrusted as a run folder's config.yaml,
and built from only through the same functions (build_model, the data's instantiate)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mnist99.errors import ConfigError

KEY = "mnist99"
# The entry's format: raised when its meaning changes, so an older mnist99 refuses a newer entry.
FORMAT = 1
# The data settings a picture is prepared by (predict.py), beside the config's own copy of them.
DATA_KEYS = ("image_size", "channels", "model_channels", "normalize", "mean", "std")
# Keys of the data section that are paths: absolute in the entry, so it works from any folder.
DATA_PATHS = ("data_dir", "cache_dir", "source")


def plain(value: Any) -> Any:
    """`value` as dicts, lists, strings, numbers, booleans and None only: what weights_only loads.
    Anything else (a Path a resolver returned, a tuple) becomes a list or its string."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def resolved_config(cfg: DictConfig, cwd: Path) -> dict:
    """The run's config resolved, as a plain dict, without Hydra's own section; the data's paths
    made absolute against the folder the run was started in. `cfg` itself is left as it is."""
    out = {str(k): OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
           for k in cfg if k != "hydra"}
    data = out.get("data")
    if isinstance(data, dict):
        for key in DATA_PATHS:
            if isinstance(data.get(key), str) and data[key]:
                data[key] = str(cwd / Path(data[key]).expanduser())  # an absolute path stays as it is
    return plain(out)


def describe(cfg: DictConfig, datamodule: L.LightningDataModule | None) -> dict:
    """The checkpoint entry of a run: format, config, classes and the data settings. The
    datamodule's values win over the config's: it holds the mean and std it computed (data.mean=null)."""
    config = resolved_config(cfg, Path.cwd())
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    entry = {"format": FORMAT, "config": config, "classes": [str(c) for c in getattr(datamodule, "classes", ())]}
    for key in DATA_KEYS:
        entry[key] = plain(getattr(datamodule, key, data.get(key)))
    return entry


class StandaloneCheckpoint(L.Callback):
    """Adds `describe(cfg, datamodule)` to every checkpoint the trainer writes (ModelCheckpoint's,
    GracefulStop's). Added by the pipeline, not the callbacks group, so callbacks=none keeps it.
    The config is read at each save, so it holds what the build filled in (model.num_classes)."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if rank_zero_only.rank == 0:  # the one rank whose checkpoint is written
            checkpoint[KEY] = describe(self.cfg, trainer.datamodule)


def stored_run(state: dict, path: Path) -> dict | None:
    """The checkpoint's own entry, checked; None for a checkpoint written before there was one."""
    entry = state.get(KEY)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("format"), int):
        raise damaged(path, "no format number")
    if entry["format"] > FORMAT:
        raise ConfigError(f"The checkpoint {path} was written by a newer mnist99 (its '{KEY}' entry has format "
                          f"{entry['format']}; this version reads up to {FORMAT}). Update mnist99 to use it.")
    if not isinstance(entry.get("config"), dict) or not all(isinstance(k, str) for k in entry["config"]):
        raise damaged(path, "its config is not a mapping of names")
    classes = entry.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise damaged(path, "its classes are not a list of names")
    return entry


def damaged(path: Path, what: str) -> ConfigError:
    return ConfigError(f"The checkpoint {path} has a damaged '{KEY}' entry ({what}). Use another .ckpt of the run, "
                       "or pass its run folder (ckpt_path=<run dir>, which holds config.yaml and checkpoints/).")


def read_checkpoint(path: str | Path) -> dict:
    """torch.load with weights_only=True: tensors and plain values only, so a file whose pickle
    would run code is refused instead of executed."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError(f"Refused to load {path}: it holds Python objects that loading would have to run "
                          f"({str(e).splitlines()[0][:200]}). mnist99 loads checkpoints with torch.load(weights_only=True), "
                          "which accepts tensors and plain values only. Use a checkpoint written by mnist99, or one you trust "
                          "converted to plain tensors.") from None
    except Exception as e:  # noqa: BLE001 - truncated, empty, not a torch file: say which file
        raise ConfigError(f"Cannot read the checkpoint {path} ({type(e).__name__}: {str(e)[:200]}). It is truncated or not a "
                          "checkpoint (was it copied completely?). Use another .ckpt of the run, e.g. one of its "
                          "checkpoints/ files.") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ConfigError(f"{path} is not a Lightning checkpoint (it has no state_dict). Use a .ckpt written by train.py.")
    return ckpt


def check_fits(ckpt: dict, model: nn.Module, path: str | Path) -> None:
    """Refuse, in one paragraph, weights written by another model or for another number of classes."""
    theirs, ours = ckpt["state_dict"], model.state_dict()
    missing = [k for k in ours if k not in theirs]
    extra = [k for k in theirs if k not in ours]
    if missing or extra:
        raise ConfigError(f"The checkpoint {path} was written by a different model: it lacks {len(missing)} of this model's "
                          f"tensors (e.g. {missing[:2]}) and has {len(extra)} it does not know (e.g. {extra[:2]}). Load it with the "
                          "config of the run that wrote it: resume=<its run dir> or eval.py ckpt_path=<its run dir>.")
    shapes = [(k, tuple(theirs[k].shape), tuple(v.shape)) for k, v in ours.items() if tuple(theirs[k].shape) != tuple(v.shape)]
    if shapes:
        key, got, want = shapes[0]
        _, last_got, last_want = shapes[-1]  # the output layer is where a number of classes shows
        classes = getattr(model, "num_classes", None)
        other_classes = classes and last_got and last_want and last_want[0] == classes != last_got[0]
        hint = (f" It looks like a model for {last_got[0]} classes, and this one has {classes}: set "
                f"model.num_classes={last_got[0]} or use data with that many classes." if other_classes else "")
        raise ConfigError(f"The checkpoint {path} does not fit this model: {key} is {list(got)} there and {list(want)} here "
                          f"({len(shapes)} tensor(s) differ).{hint} Otherwise load it with the config of the run that wrote it.")
