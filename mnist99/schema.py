"""The keys a run needs and the values they may take: one table (SCHEMA), checked at start-up.

Each row is a dotted key of the composed train config with its kind (a number, an integer, a
fraction, a switch, ...), its bound, whether null is a value, the hint a refusal ends with, and
`when`: the key is required only while another key holds one of the listed values, else always.
A required key that is missing (a config file or an override deleted or renamed it) is refused
by name, never skipped; a key that is there is checked whether or not it is required.

Why a table and not Hydra's structured configs (dataclasses in the ConfigStore): the keys of the
`optimizer`, `scheduler` and `model` groups depend on the option chosen (Adam has betas, SGD has
momentum, only one-cycle has div_factor, scheduler=none is empty), so a schema per option would
have to follow every `optimizer=`/`scheduler=`/`model=` swap and every experiment that merges keys
of one option into another; OmegaConf's typed nodes check types but not ranges, refuse with their
own multi-line errors and slow every compose down. A row is required by what the composed config
itself says (`optimizer._target_` is torch.optim.Adam: betas and eps are needed), not by which
option file it came from: that holds for any option, for an experiment's merged keys and for a
run's saved config (resume=), which has no group choices left. Nothing here imports torch but
the GPU check, and only when a GPU is asked for.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist99.errors import ConfigError

ADAM = ("optimizer._target_", ("torch.optim.Adam", "torch.optim.AdamW"))
SGD = ("optimizer._target_", ("torch.optim.SGD",))
ONE_CYCLE = ("scheduler._target_", ("torch.optim.lr_scheduler.OneCycleLR",))
COSINE = ("scheduler._target_", ("torch.optim.lr_scheduler.CosineAnnealingLR",))


@dataclass(frozen=True)
class Rule:
    """kind: number | integer (at least `low`, or greater than it with `above`), fractions (in
    [0, 1), or a list of `count` of them), positive (greater than 0, or one per channel), switch
    (true or false), choice (one of `options`), given (anything but null), accelerator (a GPU only
    where there is one)."""

    kind: str
    low: float = 0
    above: bool = False
    null: bool = False
    count: int | None = None
    hint: str = ""
    when: tuple[str, tuple[str, ...]] | None = None
    missing: str = ""  # the refusal when it is missing or null, for `given`
    options: tuple = ()  # for `choice`


NO_FOLDER = ("data=folder trains on your own image folder, and none was given: add data.data_dir=/path/to/folder (holding "
             "train/ and test/ or valid/, one sub-folder of images per class). Without data=folder, mnist99 trains on MNIST.")
NO_MODEL = "The model config has no _target_ (model._target_ is missing): pick one with model=<name> (see conf/model/)."
LIMIT = "A fraction (0.1), a batch count (20), or 0 to skip; null runs them all."

SCHEMA: dict[str, Rule] = {
    "data.data_dir": Rule("given", missing=NO_FOLDER),
    "model._target_": Rule("given", missing=NO_MODEL),
    "optimizer.lr": Rule("number", 0, above=True, hint="Try e.g. optimizer.lr=0.001."),
    "optimizer.weight_decay": Rule("number", 0, hint="0 turns weight decay off."),
    "optimizer.decay_norm_and_bias": Rule("switch"),
    "optimizer.betas": Rule("fractions", count=2, when=ADAM, hint="Adam's betas are two numbers in [0, 1), e.g. optimizer.betas=[0.9,0.99]."),
    "optimizer.eps": Rule("number", 0, above=True, when=ADAM, hint="torch's default is 1e-8, fastai's 1e-5."),
    "optimizer.momentum": Rule("fractions", when=SGD, hint="SGD's momentum is a number in [0, 1), e.g. 0.9 (0: plain SGD)."),
    "scheduler.div_factor": Rule("number", 0, above=True, when=ONE_CYCLE, hint="fastai's one-cycle uses 25 and 4000."),
    "scheduler.final_div_factor": Rule("number", 0, above=True, when=ONE_CYCLE, hint="fastai's one-cycle uses 25 and 4000."),
    "scheduler.cycle_momentum": Rule("switch", when=ONE_CYCLE),
    "scheduler.base_momentum": Rule("fractions", when=ONE_CYCLE, hint="A momentum is a number in [0, 1), e.g. 0.85."),
    "scheduler.max_momentum": Rule("fractions", when=ONE_CYCLE, hint="A momentum is a number in [0, 1), e.g. 0.95."),
    "scheduler.eta_min": Rule("number", 0, when=COSINE, hint="0 anneals the rate to zero."),
    "data.batch_size": Rule("integer", 1, hint="Try e.g. data.batch_size=128."),
    "data.val_size": Rule("integer", 0, hint="0 validates on testing/."),
    "data.num_workers": Rule("integer", 0, hint="0 loads batches in the main process."),
    "data.image_size": Rule("integer", 1, hint="Every image is resized to it; MNIST's is 28."),
    "data.channels": Rule("choice", options=(1, 3), hint="1 reads every image as grey, 3 as colour (RGB)."),
    "data.on_bad_image": Rule("choice", options=("error", "skip"), hint="error stops at the first unreadable image, "
                              "naming it; skip leaves unreadable images out and reports how many."),
    "data.std": Rule("positive", null=True, hint="MNIST's is 0.3081; null takes the training images' own."),
    "data.normalize": Rule("switch"),
    "data.drop_last": Rule("switch"),
    "model.num_classes": Rule("integer", 2, null=True, hint="null counts the class folders of the data (MNIST has 10)."),
    "model.in_channels": Rule("integer", 1, hint="1 (grey) or 3 (colour, or grey repeated as the blog)."),
    "trainer.max_epochs": Rule("integer", 1, hint="Try e.g. trainer.max_epochs=3."),
    "trainer.limit_train_batches": Rule("number", 0, null=True, hint=LIMIT),
    "trainer.limit_val_batches": Rule("number", 0, null=True, hint=LIMIT),
    "trainer.limit_test_batches": Rule("number", 0, null=True, hint=LIMIT),
    "trainer.accelerator": Rule("accelerator"),
    "seed": Rule("integer", 0, hint="Any non-negative integer."),
}

_ABSENT = object()


def check(cfg: DictConfig) -> None:
    """Refuse the first key of SCHEMA that is missing where it is required, or holds a value it
    cannot take, with one paragraph naming it. Reading a value may raise OmegaConf's errors (an
    interpolation to a key that does not exist): the caller words those."""
    present = {}
    for key, rule in SCHEMA.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)  # absent, or ??? (OmegaConf's "missing")
        if value is not _ABSENT:
            present[key] = value
        elif required(cfg, rule):
            raise ConfigError(rule.missing or missing_message(key, rule))
    check_values({**present, "data.model_channels": OmegaConf.select(cfg, "data.model_channels")})


def check_values(values: Mapping[str, Any]) -> None:
    """The refusal of the first value (dotted key -> value) its SCHEMA rule refuses, then of the
    channels cross-check: what check runs on a composed config, and the classes a script builds
    from Python run on their arguments. One rule, one message, however the value came."""
    for key, value in values.items():
        message = refusal(key, SCHEMA[key], value) if key in SCHEMA else None
        if message:
            raise ConfigError(message)
    message = channels_refusal(values.get("data.channels"), values.get("data.model_channels"))
    if message:
        raise ConfigError(message)


def channels_refusal(channels, model_channels) -> str | None:
    """Colour images need a model that takes as many channels; grey ones are repeated to fill any stem."""
    if channels in (None, 1) or model_channels in (None, channels):
        return None
    return (f"data.channels={channels} but the model takes {model_channels} channel(s) (model.in_channels): "
            f"set model.in_channels={channels}, or data.channels=1 to read the images as grey.")


def required(cfg: DictConfig, rule: Rule) -> bool:
    return rule.when is None or OmegaConf.select(cfg, rule.when[0]) in rule.when[1]


def missing_message(key: str, rule: Rule) -> str:
    needs = f" ({rule.when[0]} is {' or '.join(rule.when[1])}, which takes it)" if rule.when else ""
    return (f"{key} is missing from the composed config{needs}: a config file or an override removed or renamed it. "
            f"Put it back, or add it with +{key}=<value>. {rule.hint}").rstrip()


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
        "CUDA build of PyTorch."
    )
