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
    optional: bool = False  # may be absent (the part has a default of its own)
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
        "max_epochs": Rule("integer", 1, null=True, hint="Try e.g. trainer.max_epochs=3 (null: epochs for train_images images)."),
        "limit_train_batches": Rule("number", 0, null=True, hint=LIMIT),
        "limit_val_batches": Rule("number", 0, null=True, hint=LIMIT),
        "limit_test_batches": Rule("number", 0, null=True, hint=LIMIT),
        "accelerator": Rule("accelerator"),
        "strategy": Rule("strategy", optional=True),
        "precision": Rule("precision", optional=True),
        "devices": Rule("devices", optional=True),
        "num_nodes": Rule("integer", 1, optional=True, hint="1 for one machine; N machines run trainer.devices processes each."),
    },
}
# What lightning.pytorch.Trainer takes (tests/test_schema.py checks these against Lightning's registries).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true", "ddp_fork",
              "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true", "ddp_notebook",
              "ddp_notebook_find_unused_parameters_false", "ddp_notebook_find_unused_parameters_true", "ddp_spawn",
              "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true", "deepspeed", "deepspeed_stage_1",
              "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload",
              "deepspeed_stage_3_offload_nvme", "fsdp", "fsdp_cpu_offload", "single_device", "single_tpu", "single_xla", "xla",
              "xla_debug")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "64", "32", "16", "bf16", 64, 32, 16)
# What a strategy or precision needs beyond torch and Lightning: (its name starts with, the package, what it is).
NEEDS = (("deepspeed", "deepspeed", "DeepSpeed"), ("fsdp", None, "a GPU"), ("xla", "torch_xla", "PyTorch/XLA (TPUs)"),
         ("single_xla", "torch_xla", "PyTorch/XLA (TPUs)"), ("single_tpu", "torch_xla", "PyTorch/XLA (TPUs)"),
         ("transformer-engine", "transformer_engine", "NVIDIA's Transformer Engine (a Hopper GPU)"))
SECTIONS = ("data", "model", "optimizer", "scheduler", "trainer")
RUN = {"seed": Rule("integer", 0, hint="Any non-negative integer."),  # the run's own keys
       "tags": Rule("words", null=True, hint="Give a list of words: 'tags=[baseline,adam]'."),
       "train_images": Rule("integer", 1, null=True, hint="The default recipe's 120000 is 2 epochs of MNIST.")}
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
            if rule.optional and OmegaConf.is_interpolation(cfg[section], key):  # (`key in` would resolve it)
                continue  # the recipe's own (precision: ${mnist99.fastest_precision:...}), whose resolver would import torch
            value = OmegaConf.select(cfg, f"{section}.{key}", default=_ABSENT)  # absent, or ??? (OmegaConf's "missing")
            if value is _ABSENT and rule.optional:
                continue
            if value is _ABSENT:
                raise ConfigError(rule.missing or missing_message(f"{section}.{key}", target, rule))
            found.append((f"{section}.{key}", rule, value))
    refuse(found)
    if OmegaConf.select(cfg, "data._target_") == DATAMODULE:
        refuse_channels(cfg.data.channels, OmegaConf.select(cfg, "data.model_channels"))
        refuse_small_images(cfg)
    if OmegaConf.select(cfg, "trainer._target_") == "lightning.pytorch.Trainer":
        refuse_cpu_devices(cfg.trainer)
        t = cfg.trainer
        if t.get("max_epochs", 0) is None and t.get("max_steps", -1) in (-1, None) and not t.get("max_time") and cfg.get("train_images") is None:
            raise ConfigError("trainer.max_epochs=null and train_images=null leave the run without a length (Lightning would train "
                              "1000 epochs): set trainer.max_epochs=N, or train_images=N to train as many epochs as N training "
                              "images take (the default recipe's 120000 is 2 epochs of MNIST).")


def refuse_small_images(cfg: DictConfig) -> None:
    """An image size below what the chosen net takes (mnist99.models.input_needs), by the net's own words."""
    from mnist99.models.input_needs import BATCHNORM, smallest_image

    net = OmegaConf.select(cfg, "model.net")
    target = OmegaConf.select(cfg, "model.net._target_") if isinstance(net, DictConfig) else None
    size, need = cfg.data.image_size, smallest_image(str(target), net) if target else None
    name = str(target).rsplit(".", 1)[-1]
    if target in BATCHNORM and cfg.data.batch_size < 2:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} cannot train the model's net, {name}: its BatchNorm layers need at "
                          "least 2 images a batch to normalise over. Use data.batch_size=2 or more (the default recipe's is 256), "
                          "or a net without BatchNorm: model=lenet, model=mlp.")
    if need is not None and size < need:
        raise ConfigError(f"data.image_size={size} is too small for the model's net, {name}: it takes images of at least {need} "
                          f"pixels (its convolutions and pools shrink a smaller one to nothing). Use data.image_size={need} or more "
                          "(MNIST's images are 28), or a model that takes any size: model=mlp or model=linear.")


def refuse_cpu_devices(trainer: DictConfig) -> None:
    """More CPU processes than the machine has cores: each DDP process would get a fraction of one, and the run
    would be slower than one process (and a list of devices means GPUs)."""
    import os

    devices, accelerator = trainer.get("devices", "auto"), str(trainer.get("accelerator", "auto"))
    cores = os.cpu_count() or 1
    count = int(devices) if isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit()) else None
    if not (isinstance(devices, ListConfig) or (count is not None and count > cores)):
        return  # nothing to refuse on any accelerator: torch is not imported to find out which
    if accelerator not in ("cpu", "auto") or (accelerator == "auto" and cuda_available()):
        return
    if isinstance(devices, ListConfig):
        raise ConfigError(f"trainer.devices={OmegaConf.to_container(devices)} picks devices by number, which means GPUs, and this run is "
                          f"on the CPU (trainer.accelerator={accelerator}{'' if accelerator == 'cpu' else ', and no GPU is visible'}). "
                          f"On the CPU give a count of processes: trainer.devices=1 (up to {cores}, this machine's cores).")
    if count is not None and count > cores:
        on = "" if accelerator == "cpu" else " (trainer.accelerator=auto, and PyTorch sees no GPU here)"
        raise ConfigError(f"trainer.devices={count} asks for {count} CPU processes{on}, and this machine has {cores} core"
                          f"{'s' if cores > 1 else ''}: the processes would share them and run slower than one. Use "
                          f"trainer.devices={cores} or fewer (trainer.devices=1 trains in this process), or run on GPUs with "
                          "trainer.accelerator=gpu.")


def check_datamodule(values: Mapping[str, Any]) -> None:
    """The datamodule's arguments (<key> -> value) by the same rules and words: one built from Python too."""
    rules = PARTS[DATAMODULE]
    refuse([(f"data.{k}", rules[k], v) for k, v in values.items() if k in rules])
    refuse_channels(values.get("channels"), values.get("model_channels"))


def refuse(found: list[tuple[str, Rule, Any]]) -> None:
    for key, rule, value in found:
        message = refusal(key, rule, value)
        if message and isinstance(value, str) and is_number(value):  # optimizer.lr='1e-3', in quotes on the command line
            message += f" The quotes made {value!r} a string, not a number: drop them, {key}={value.strip()}."
        if message:
            raise ConfigError(message)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return bool(text.strip())


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
        if isinstance(value, str) and value not in ACCELERATORS:
            return not_offered(key, value, ACCELERATORS, "accelerator")
        if value in ("gpu", "cuda") and not cuda_available():
            return no_gpu_message(f"{key}={value} (what trainer.gpus=N sets)")
        if value in ("mps", "tpu"):
            return unavailable(key, value)
        return None
    if rule.kind in ("strategy", "precision"):
        offered = STRATEGIES if rule.kind == "strategy" else PRECISIONS
        if isinstance(value, (DictConfig, ListConfig)) or value is None:
            return None  # a strategy or plugin built from its own config (_target_), or Lightning's default
        if value not in offered:
            return not_offered(key, value, offered, rule.kind)
        return unavailable(key, value)
    if rule.kind == "devices":
        ok = value == "auto" or (_real(value) and isinstance(value, numbers.Integral) and (value >= 1 or value == -1)) or (
            isinstance(value, str) and (value.isdigit() and int(value) >= 1 or value == "-1")) or (
            isinstance(value, ListConfig) and len(value) > 0 and all(isinstance(v, int) and v >= 0 for v in value))
        return None if ok else (f"{key}={shown} is not a device count: use auto, a number of devices (1, 2, ...; -1 for all), "
                                "or a list of GPU indices ([0,1]).")
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


def not_offered(key: str, value, offered: tuple, what: str) -> str:
    """The refusal of a name Lightning does not know, with the closest ones it does."""
    import difflib

    names = [str(o) for o in offered if isinstance(o, str)]
    close = difflib.get_close_matches(str(value), names, n=2, cutoff=0.6)
    hint = f"Did you mean {' or '.join(f'{key}={c}' for c in close)}? " if close else ""
    common = {"strategy": "auto, ddp, ddp_spawn, ddp_notebook, fsdp, deepspeed", "precision": "32-true, bf16-mixed, 16-mixed, 64-true",
              "accelerator": ", ".join(ACCELERATORS)}[what]
    return f"{key}={value!r} is not {'an' if what[0] in 'aeiou' else 'a'} {what} Lightning offers. {hint}The common ones: {common}."


def unavailable(key: str, value) -> str | None:
    """A strategy, precision or accelerator this machine cannot run: a package missing, or no device for it."""
    import importlib.util

    if value == "mps":
        import torch

        return None if torch.backends.mps.is_available() else (f"{key}=mps asks for Apple's GPU (Metal), which this machine does not "
                                                               "have: use trainer.accelerator=cpu, or gpu on an NVIDIA machine.")
    for prefix, package, what in NEEDS:
        if isinstance(value, str) and ("xla" if value == "tpu" else value).startswith(prefix):
            if package is None:
                if cuda_available():
                    return None
                return f"{key}={value} runs on GPUs only, and PyTorch sees none here: use trainer.strategy=ddp (or ddp_spawn) on the CPU."
            if importlib.util.find_spec(package) is None:
                return (f"{key}={value} needs {what}, and its package `{package}` is not installed: install it (pip install {package}), "
                        "or pick another, e.g. trainer.strategy=ddp or trainer.precision=32-true.")
    return None


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
