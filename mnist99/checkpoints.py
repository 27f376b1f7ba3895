"""Checkpoints: what every one carries so that it stands alone, reading one safely, and checking
that it fits the model before anything trains on it.

The run's resolved config, its class names, image size, channels and normalisation go under
checkpoint["mnist99"] (as torchvision's reference scripts keep their arguments in each checkpoint):
eval.py and predict.py need the .ckpt alone, in any folder. The entry holds plain values only, so
torch.load(weights_only=True) reads it; read back, it is as untrusted as a run folder's config.yaml,
and built from only through the same functions (build_model, the data's instantiate)."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mnist99.errors import ConfigError
from mnist99.locate import ZIP_MAGIC, torch_file_start

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


def describe(cfg: DictConfig | dict, datamodule: L.LightningDataModule | None) -> dict:
    """The checkpoint entry of a run: format, config (or its resolved_config), classes and the data settings.
    The datamodule's values win over the config's: it holds the mean and std it computed (data.mean=null)."""
    config = cfg if isinstance(cfg, dict) else resolved_config(cfg, Path.cwd())
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    entry = {"format": FORMAT, "config": config, "classes": [str(c) for c in getattr(datamodule, "classes", ())]}
    for key in DATA_KEYS:
        entry[key] = plain(getattr(datamodule, key, data.get(key)))
    return entry


class StandaloneCheckpoint(L.Callback):
    """Adds `describe(cfg, datamodule)` to every checkpoint the trainer writes (ModelCheckpoint's,
    GracefulStop's). Added by the pipeline, not the callbacks group, so callbacks=none keeps it.
    The config is resolved here, in the process Hydra runs in, once the build filled it in (model.num_classes):
    trainer.strategy=ddp_spawn's processes, which save the checkpoints, have no Hydra to resolve it."""

    def __init__(self, cfg: DictConfig):
        self.cfg = resolved_config(cfg, Path.cwd())

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if rank_zero_only.rank == 0:  # the one rank whose checkpoint is written
            # the epochs this fit was to train, as Lightning ran it: trainer.max_epochs=null is set from the data
            checkpoint[KEY] = describe(self.cfg, trainer.datamodule) | {"max_epochs": plain(trainer.max_epochs)}


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


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """torch.load with weights_only=True: tensors and plain values only, so a file whose pickle
    would run code is refused instead of executed. Each way a file can fail gets its own paragraph:
    not a checkpoint at all, truncated, holding Python objects, or a torch file of another program.
    mmap: a zip checkpoint's tensors stay on disk until used (to read its counters and entry only)."""
    path = Path(path)
    is_zip = zipfile.is_zipfile(path)  # its central directory read once: whole or cut, and what the archive holds
    why = torch_file_start(path) or (foreign_zip(path) if is_zip else None)
    if why:
        raise ConfigError(f"{path} is not a checkpoint: {why}. Use a .ckpt written by train.py (a run's checkpoints/ "
                          "holds them), or pass the run's folder.")
    cut = truncated(path, is_zip)
    if cut:
        raise ConfigError(f"Cannot read the checkpoint {path}: it is truncated ({cut}). Was it copied or saved completely? "
                          "Use another .ckpt of the run, e.g. one of its checkpoints/ files, or copy it again.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):  # the legacy format's pickle, cut short or damaged
            raise ConfigError(f"Cannot read the checkpoint {path}: it is truncated or damaged (its pickle stops: "
                              f"{first_line(e)}). Use another .ckpt of the run, or copy it again.") from None
        named = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" (it names {named.group(1)})" if named else ""
        raise ConfigError(f"Refused to load {path}: it holds Python objects that loading would have to run{what}. mnist99 "
                          "loads checkpoints with torch.load(weights_only=True), which accepts tensors and plain values only. "
                          "Use a checkpoint written by mnist99, or one you trust converted to plain tensors.") from None
    except EOFError:  # the legacy format, cut short
        raise ConfigError(f"Cannot read the checkpoint {path}: it is truncated (its data ends too soon). Was it copied or saved "
                          "completely? Use another .ckpt of the run, or copy it again.") from None
    except Exception as e:  # noqa: BLE001 - damaged in some other way: torch's own words, whole
        raise ConfigError(f"Cannot read the checkpoint {path}: torch could not load it ({type(e).__name__}: {first_line(e)}). "
                          "It is damaged: use another .ckpt of the run, e.g. one of its checkpoints/ files.") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ConfigError(f"{path} is a PyTorch file, but not a Lightning checkpoint: it holds {holds(ckpt)}, and no state_dict "
                          "(where a .ckpt keeps the weights), so another program wrote it. Use a .ckpt written by train.py.")
    return ckpt


def truncated(path: Path, is_zip: bool) -> str | None:
    """What is missing from a zip checkpoint cut short (torch's "failed finding central directory"), or
    from an empty file; None otherwise. Read from the file's ends, without loading it."""
    if path.stat().st_size == 0:
        return "it is empty: 0 bytes"
    with open(path, "rb") as f:
        begins_as_zip = f.read(4) == ZIP_MAGIC
    if begins_as_zip and not is_zip:
        return "its zip archive has no central directory, which is written last"
    return None


def foreign_zip(path: Path) -> str | None:
    """Why a whole zip archive is not one torch.save wrote (it holds no <name>/data.pkl); None otherwise."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("/data.pkl") for n in names):
        return None
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"it is a zip archive, but not one torch.save wrote (it holds {shown or 'nothing'}, and no data.pkl)"


def first_line(e: BaseException) -> str:
    """An exception's first line, whole (torch's run on for paragraphs): a message never cut mid-sentence."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def holds(value: Any) -> str:
    """What a torch file holds, in a few words: "a dict of 2 entries (w, b), all tensors: ...", "a Tensor"."""
    if not isinstance(value, dict):
        return f"a {type(value).__name__}"
    keys = ", ".join(map(str, list(value)[:4])) + (", ..." if len(value) > 4 else "")
    bare = value and all(isinstance(v, torch.Tensor) for v in value.values())
    return (f"a dict of {len(value)} {'entry' if len(value) == 1 else 'entries'} ({keys})"
            + (", all tensors, as torch.save(model.state_dict()) writes" if bare else ""))


def fit_progress(state: dict) -> tuple[int, int]:
    """(epochs whose training ended, optimizer steps taken) of a Lightning checkpoint: its fit loop's count,
    which a checkpoint saved at an epoch's end holds already (Lightning's `processed`)."""
    progress = ((state.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress", {}).get("current", {})
    return int(progress.get("processed", state.get("epoch") or 0)), int(state.get("global_step") or 0)


def nothing_left(state: dict, max_epochs: Any, max_steps: Any, record: dict | None = None) -> str | None:
    """Where a fit resumed from the checkpoint `state` would stop before its first step, as Lightning's fit
    loop decides it (FitLoop.done: the steps taken against max_steps, the epochs whose training ended against
    max_epochs; -1 is no limit), in a few words ("the end of epoch 2 of 2 (trainer.max_epochs=2)"); None where
    there is training left. A null max_epochs is a length the recipe sets from the data (train_images): the
    checkpoint's entry then says the one its fit ran to, or else the run's record, completed at this epoch."""
    number = lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None  # noqa: E731
    if isinstance(record, dict) and record.get("status") not in (None, "completed"):
        return None  # stopped (during its test, say) or failed: resuming finishes what it left
    (epochs, step), max_epochs, max_steps = fit_progress(state), number(max_epochs), number(max_steps)
    if max_steps is not None and max_steps != -1:
        if step >= max_steps:
            return f"step {step} of trainer.max_steps={max_steps}"
        if max_epochs is None:
            return None
    length = f"trainer.max_epochs={max_epochs}"
    if max_epochs is None:  # the length the fit that wrote the checkpoint ran to, else the run's record
        entry = state.get(KEY) if isinstance(state.get(KEY), dict) else {}
        max_epochs, length = number(entry.get("max_epochs")), "the epochs trainer.max_epochs=null set from the data"
        if max_epochs is None:
            ended = isinstance(record, dict) and record.get("status") == "completed" and record.get("epochs") == epochs
            return f"the end of epoch {epochs}, where the run completed" if ended else None
    return f"the end of epoch {epochs} of {max_epochs} ({length})" if max_epochs != -1 and epochs >= max_epochs else None


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
