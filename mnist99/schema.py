"""The keys each part of a run needs and the values they may take, checked once, at start-up: each
section (data, model, optimizer, scheduler, trainer) by the rules of the part its `_target_` names,
whatever option, experiment or saved config (resume=) the keys came from. A key of mnist99's or
torch's part that is missing is refused by name; a part of the user's own has no rules here. No
torch here but the GPU check."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist99.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """kind: number | integer (at least `low`, or above it), fractions (in [0, 1), or `count` of them),
    positive (> 0, or one per channel), switch, choice (of `options`), given (not null), accelerator,
    words (a list of non-empty strings)."""

    kind: str
    low: float = 0
    above: bool = False
    null: bool = False
    count: int | None = None
    hint: str = ""
    missing: str = ""  # the refusal when it is missing or null, for `given`
    options: tuple = ()  # for `choice`


NO_FOLDER = ("data=folder trains on your own image folder, and none was given: add data.data_dir=/path/to/folder (holding "
             "train/ and test/ or valid/, one sub-folder of images per class). Without data=folder, mnist99 trains on MNIST.")
NO_MODEL = "The model config has no _target_ (model._target_ is missing): pick one with model=<name> (see conf/model/)."
LIMIT = "A fraction (0.1), a batch count (20), or 0 to skip; null runs them all."
DATAMODULE = "mnist99.data.datamodule.ImageFolderDataModule"

LR = {"lr": Rule("number", 0, above=True, hint="Try e.g. optimizer.lr=0.001."),
      "weight_decay": Rule("number", 0, hint="0 turns weight decay off."),
      "decay_norm_and_bias": Rule("switch")}
ADAM = {**LR, "betas": Rule("fractions", count=2, hint="Adam's betas are two numbers in [0, 1), e.g. optimizer.betas=[0.9,0.99]."),
        "eps": Rule("number", 0, above=True, hint="torch's default is 1e-8, fastai's 1e-5.")}
CLASSES = {"num_classes": Rule("integer", 2, null=True, hint="null counts the class folders of the data (MNIST has 10)."),
           "in_channels": Rule("integer", 1, hint="1 (grey) or 3 (colour, or grey repeated as the blog).")}

# Each part's rules, by the `_target_` that names it.
PARTS: dict[str, dict[str, Rule]] = {
    DATAMODULE: {
        "data_dir": Rule("given", missing=NO_FOLDER),
        "batch_size": Rule("integer", 1, hint="Try e.g. data.batch_size=128."),
        "val_size": Rule("integer", 0, hint="0 validates on testing/."),
        "num_workers": Rule("integer", 0, hint="0 loads batches in the main process."),
        "image_size": Rule("integer", 1, hint="Every image is resized to it; MNIST's is 28."),
        "channels": Rule("choice", options=(1, 3), hint="1 reads every image as grey, 3 as colour (RGB)."),
        "on_bad_image": Rule("choice", options=("error", "skip"), hint="error stops at the first unreadable image, naming it; "
                             "skip leaves unreadable images out and reports how many."),
        "std": Rule("positive", null=True, hint="MNIST's is 0.3081; null takes the training images' own."),
        "normalize": Rule("switch"),
        "drop_last": Rule("switch"),
    },
    "mnist99.models.classifier.Classifier": CLASSES,
    "mnist99.models.classifier.ScratchLinear": CLASSES,
    "torch.optim.Adam": ADAM,
    "torch.optim.AdamW": ADAM,
    "torch.optim.SGD": {**LR, "momentum": Rule("fractions", hint="SGD's momentum is a number in [0, 1), e.g. 0.9 (0: plain SGD).")},
    "torch.optim.lr_scheduler.OneCycleLR": {
        "div_factor": Rule("number", 0, above=True, hint="fastai's one-cycle uses 25 and 4000."),
        "final_div_factor": Rule("number", 0, above=True, hint="fastai's one-cycle uses 25 and 4000."),
        "cycle_momentum": Rule("switch"),
        "base_momentum": Rule("fractions", hint="A momentum is a number in [0, 1), e.g. 0.85."),
        "max_momentum": Rule("fractions", hint="A momentum is a number in [0, 1), e.g. 0.95."),
    },
    "torch.optim.lr_scheduler.CosineAnnealingLR": {"eta_min": Rule("number", 0, hint="0 anneals the rate to zero.")},
    "lightning.pytorch.Trainer": {
        "max_epochs": Rule("integer", 1, hint="Try e.g. trainer.max_epochs=3."),
        "limit_train_batches": Rule("number", 0, null=True, hint=LIMIT),
        "limit_val_batches": Rule("number", 0, null=True, hint=LIMIT),
        "limit_test_batches": Rule("number", 0, null=True, hint=LIMIT),
        "accelerator": Rule("accelerator"),
    },
}
SECTIONS = ("data", "model", "optimizer", "scheduler", "trainer")
RUN = {"seed": Rule("integer", 0, hint="Any non-negative integer."),  # the run's own keys
       "tags": Rule("words", null=True, hint="Give a list of words: 'tags=[baseline,adam]'.")}
_ABSENT = object()


def check(cfg: DictConfig) -> None:
    """Refuse the first key a chosen part needs that is missing, or holds a value it cannot take,
    with one paragraph naming it. Reading a value may raise OmegaConf's errors (an interpolation to
    a key that does not exist): the caller words those."""
    if OmegaConf.select(cfg, "model._target_") is None:
        raise ConfigError(NO_MODEL)
    found = [(key, rule, cfg.get(key)) for key, rule in RUN.items()]
    for section in SECTIONS:
        target = OmegaConf.select(cfg, f"{section}._target_")
        for key, rule in PARTS.get(target, {}).items():
            value = OmegaConf.select(cfg, f"{section}.{key}", default=_ABSENT)  # absent, or ??? (OmegaConf's "missing")
            if value is _ABSENT:
                raise ConfigError(rule.missing or missing_message(f"{section}.{key}", target, rule))
            found.append((f"{section}.{key}", rule, value))
    refuse(found)
    if OmegaConf.select(cfg, "data._target_") == DATAMODULE:
        refuse_channels(cfg.data.channels, OmegaConf.select(cfg, "data.model_channels"))


def check_datamodule(values: Mapping[str, Any]) -> None:
    """The datamodule's arguments (<key> -> value) by the same rules and words: one built from Python too."""
    rules = PARTS[DATAMODULE]
    refuse([(f"data.{k}", rules[k], v) for k, v in values.items() if k in rules])
    refuse_channels(values.get("channels"), values.get("model_channels"))


def refuse(found: list[tuple[str, Rule, Any]]) -> None:
    for key, rule, value in found:
        message = refusal(key, rule, value)
        if message:
            raise ConfigError(message)


def refuse_channels(channels, model_channels) -> None:
    """Colour images need a model that takes as many channels; grey ones are repeated to fill any stem."""
    if channels not in (None, 1) and model_channels not in (None, channels):
        raise ConfigError(f"data.channels={channels} but the model takes {model_channels} channel(s) (model.in_channels): "
                          f"set model.in_channels={channels}, or data.channels=1 to read the images as grey.")


def missing_message(key: str, target: str, rule: Rule) -> str:
    return (f"{key} is missing from the composed config ({key.split('.')[0]}._target_ is {target}, which takes it): a config "
            f"file or an override removed or renamed it. Put it back, or add it with +{key}=<value>. {rule.hint}").rstrip()


def refusal(key: str, rule: Rule, value) -> str | None:
    """The refusal of `key=value` under `rule`, or None when the value can work."""
    shown = "null" if value is None else repr(OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value)
    if rule.kind == "given":
        return rule.missing if value is None else None
    if rule.kind == "accelerator":
        if value in ("gpu", "cuda") and not cuda_available():
            return no_gpu_message(f"{key}={value} (what trainer.gpus=N sets)")
        return None
    if value is None and rule.null:
        return None
    if rule.kind == "choice":
        ok = not isinstance(value, bool) and value in rule.options
        return None if ok else f"{key}={shown} is not one of {', '.join(map(str, rule.options))}: {rule.hint}"
    if rule.kind == "words":
        ok = isinstance(value, ListConfig) and all(isinstance(v, str) and v.strip() for v in value)
        return None if ok else f"{key}={shown} is not a list of words. {rule.hint}"
    if rule.kind == "switch":
        return None if isinstance(value, bool) else f"{key}={shown} is not a switch: use {key}=true or {key}=false."
    if rule.kind == "fractions":
        items = list(value) if rule.count is not None and isinstance(value, ListConfig) else [value]
        ok = (rule.count is None or len(items) == rule.count) and all(_real(v) and 0 <= v < 1 for v in items)
        return None if ok else f"{key}={shown} is impossible. {rule.hint}"
    if rule.kind == "positive":
        items = list(value) if isinstance(value, ListConfig) else [value]
        ok = items and all(_real(v) and v > 0 for v in items)
        return None if ok else (f"{key}={shown} is impossible: it must be a number greater than 0, or one per channel. "
                                f"{rule.hint}")
    integer = rule.kind == "integer"
    ok = _real(value) and (isinstance(value, numbers.Integral) or not integer)
    ok = ok and (value > rule.low if rule.above else value >= rule.low)
    if ok:
        return None
    need = "an integer" if integer else "a finite number" if isinstance(value, float) and not math.isfinite(value) else "a number"
    bound = f"greater than {rule.low:g}" if rule.above else f"at least {rule.low:g}"
    return f"{key}={shown} is impossible: it must be {need} {bound}. {rule.hint}"


def _real(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return isinstance(value, numbers.Integral) or math.isfinite(value)  # an int of any size; no inf, no nan


def cuda_available() -> bool:
    import torch  # only when a GPU is asked for: the other checks answer without torch

    return torch.cuda.is_available()


def no_gpu_message(asked: str) -> str:
    import torch

    return (
        f"{asked} asks for a GPU, but PyTorch sees no CUDA device on this machine "
        f"(torch {torch.__version__}, torch.cuda.is_available() is False). Run on the CPU with "
        "trainer.accelerator=cpu (or leave it at auto), or run on a machine with an NVIDIA GPU and a "
        "CUDA build of PyTorch.")
