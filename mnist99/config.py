"""Start-up checks of the command line and the composed config (unknown group options, misspelt
keys, the values of mnist99.schema), the trainer.gpus shorthand, the resolvers, where conf/ is."""

from __future__ import annotations

import difflib
import functools
import hashlib
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist99 import schema, trackers, trusted
from mnist99.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# conf/ of a checkout (or an editable install), else the wheel's copy, mnist99/conf; absolute (Hydra
# would read a relative path as a module path).
_IN_TREE = PROJECT_ROOT / "conf"
CONFIG_DIR = str(_IN_TREE if (_IN_TREE / "train.yaml").is_file() else Path(__file__).resolve().parent / "conf")


def project_root() -> str:
    """The repository root (the folder holding conf/), or the current folder for a non-editable install."""
    return str(PROJECT_ROOT if (_IN_TREE / "train.yaml").is_file() else Path.cwd())


def folder_name(text: str, limit: int = 150) -> str:
    """An override list made safe as one folder name: no '/', not too long for the filesystem."""
    text = str(text).replace("/", "_").replace("\\", "_") or "default"
    return text if len(text) <= limit else text[: limit - 9] + "~" + hashlib.sha1(text.encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=None)  # Hydra resolves the run dir more than once: the same answer each time
def new_folder(path: str) -> str:
    """`path`, or `path-2`, `path-3`, ... if a run already wrote there (two runs started in the
    same second): a new run never writes into a finished run's folder."""
    candidate, n = Path(path), 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = Path(f"{path}-{n}")
    return str(candidate)


def mode(metric: str) -> str:
    """How a metric improves: `min` for a loss, `max` for anything else (accuracies)."""
    return "min" if "loss" in str(metric) else "max"


def fastest_precision(accelerator: str = "auto") -> str:
    """`bf16-mixed` where the hardware computes bfloat16 natively (a GPU from Ampere on, a CPU with
    AVX-512 or AMX), else `32-true`: emulated on an AVX2 CPU, an epoch takes about 5x longer."""
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def cpu_has_native_bf16() -> bool:
    """Does PyTorch run this CPU's kernels with AVX-512 (AMX CPUs have it too), which oneDNN's bf16 needs?"""
    import torch

    return torch.backends.cpu.get_cpu_capability() == "AVX512"


def register_resolvers() -> None:
    resolvers = {"mnist99.new_folder": new_folder, "mnist99.root": project_root, "mnist99.folder_name": folder_name,
                 "mnist99.mode": mode, "mnist99.direction": lambda metric: mode(metric) + "imize",
                 "mnist99.fastest_precision": fastest_precision, "mnist99.basename": lambda path: Path(str(path)).name,
                 "mnist99.experiment_name": trackers.experiment_name, "mnist99.local_artifacts": trackers.local_artifacts,
                 "mnist99.tracking_uri": trackers.tracking_uri}
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_resolver(name, resolver)


def validate(cfg: DictConfig, data: bool = True) -> None:
    """Refuse what cannot work, once per run, before any work starts: a key a chosen part needs that
    is missing, a value it cannot take (mnist99.schema), a target outside the rule (mnist99.trusted),
    a DDP job inside a sweep on an untested Lightning, and (`data`) a data folder mnist99's
    datamodule cannot use."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mnist99 import ddp_sweep
    from mnist99.data.splits import folder_classes

    try:
        schema.check(cfg)
        trusted.check_targets(cfg)
        trackers.check_installed(cfg)
        folder = cfg.data
        if data and folder.get("_target_") == schema.DATAMODULE:  # as the datamodule would, seconds later
            folder_classes(folder.data_dir, folder.get("train_dir"), folder.get("test_dir"), bool(folder.get("build_mnist", True)))
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            ddp_sweep.check_supported(cfg)
    except OmegaConfBaseException as e:  # e.g. an interpolation to a key that does not exist
        raise ConfigError(f"The composed config cannot be read: {str(e).splitlines()[0]}. Check the overrides "
                          "(python train.py --cfg job <overrides> prints the composed config).") from None


def compose_checked(overrides: list[str], config_dir: str = CONFIG_DIR, config_name: str = "train",
                    check_values: bool = True, check_data: bool = True) -> DictConfig:
    """The start-up checks of `python train.py <overrides>`, in-process and without torch or
    Lightning: shorthands, unknown group options, misspelt keys, Hydra's composition (syntax),
    impossible values. Every refusal is a ConfigError; what passes is the composed config."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    overrides = expand_shorthands(overrides)
    message = unknown_group_options(overrides, config_dir)
    if message:
        raise ConfigError(message)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir):
            cfg = compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError, TypeError, KeyError) as e:  # Hydra raises all of these for bad overrides
        GlobalHydra.instance().clear()
        said = " ".join(str(e).split("Config search path")[0].split())  # Hydra's lists and hints, on one line
        # a misspelt key is the usual cause: named with the keys beside it, where Hydra says "not in struct"
        message = unknown_override_keys(overrides, config_name, config_dir)
        raise ConfigError(message or f"The overrides {' '.join(overrides)} cannot be composed: {said}") from None
    finally:
        GlobalHydra.instance().clear()
    if check_values:
        validate(cfg, data=check_data)
    return cfg


def group_options(config_dir: str = CONFIG_DIR) -> dict[str, list[str]]:
    """The config groups of config_dir and their options: {"model": ["cnn", "lenet", ...], ...}."""
    root = Path(config_dir)
    return {group.name: sorted(p.stem for p in group.glob("*.yaml")) for group in sorted(root.iterdir())
            if group.is_dir() and group.name != "hydra" and any(group.glob("*.yaml"))} if root.is_dir() else {}


def _closest(word: str, candidates: list[str]) -> list[str]:
    return difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)


def unknown_group_options(args: list[str], config_dir: str = CONFIG_DIR) -> str | None:
    """A message for `group=option` whose option has no file in the group (every value of a
    sweep, `model=cnn,resnet81`, is checked), naming the closest options; None when all exist.
    Checked on the command line, before composing: Hydra would answer with its search path, and
    an `optional` group would silently run without the misspelt option."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra reports it with its own message
        return None
    groups = group_options(config_dir)
    for o in overrides:  # config folders added on the command line (hydra.searchpath=[file://...]) add options
        if o.key_or_group == "hydra.searchpath" and isinstance(o.value(), list):
            for entry in map(str, o.value()):
                if not entry.startswith("file://"):
                    return None  # a package's configs: left to Hydra
                for group, options in group_options(entry[len("file://"):]).items():
                    groups[group] = sorted({*groups.get(group, []), *options})
    for o in overrides:
        group = o.key_or_group
        if group not in groups or o.is_delete():
            continue
        try:
            asked = [str(v) for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.value()]
        except Exception:  # noqa: BLE001 - glob(...) and other sweeps that need Hydra's loader
            continue
        asked = [v for a in asked for v in (a if isinstance(a, list) else [a])]  # callbacks=[default,mine]: each option
        for option in asked:
            if option is None or option in groups[group]:
                continue
            close = _closest(str(option), groups[group])
            hint = f"Did you mean {' or '.join(f'{group}={c}' for c in close)}? " if close else ""
            return (f"{group}={option}: there is no option '{option}' in the config group '{group}'. {hint}"
                    f"The options are: {', '.join(groups[group])} (one file each in conf/{group}/).")
    return None


def expand_shorthands(overrides: list[str]) -> list[str]:
    """Overrides with Lightning 1.x's `trainer.gpus=N` written out as what it means in Lightning 2:
    `trainer.accelerator=gpu trainer.devices=N` (N=0: `trainer.accelerator=cpu`). Done on the
    command line, before composition, so the composed `trainer` node holds only Trainer arguments."""
    out = []
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key.lstrip("+") != "trainer.gpus" or not _:
            out.append(arg)
            continue
        value = value.strip().strip("'\"")
        if value == "0":
            out.append("trainer.accelerator=cpu")
        elif re.fullmatch(r"-?\d+(,-?\d+)*|\[\d+(,\d+)*\]", value.replace(" ", "")):
            out += ["trainer.accelerator=gpu", f"trainer.devices={value.replace(' ', '')}"]
        else:
            raise ConfigError(f"trainer.gpus={value!r} is not a GPU count: use e.g. trainer.gpus=1 (or 2, or [0,1] for "
                              "those devices), or trainer.accelerator=cpu.")
    return out


def unknown_override_keys(args: list[str], config_name: str = "train", config_dir: str = CONFIG_DIR) -> str | None:
    """A message for `key=value` overrides whose key is not in the composed config, listing the keys
    there (Hydra says only 'not in struct'); None when all exist. The group choices are composed first
    (`model.net.hidden_size` is checked against the chosen model); `+key=` and `~key` are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    candidates = [a for a in args if "=" in a and not a.startswith(("-", "+", "~"))]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra reports it with its own message
        return None
    groups = {p.name for p in Path(config_dir).iterdir() if p.is_dir()}
    choices = [o for o in overrides if o.key_or_group.split("/")[0] in groups and "." not in o.key_or_group]
    keys = [o for o in overrides if o not in choices and not o.key_or_group.startswith("hydra")]
    if not keys or GlobalHydra.instance().is_initialized():
        return None  # nothing to check, or composed by a caller (tests, another app)
    try:
        # a sweep over options (model=cnn,mlp) is checked with its first option
        chosen = [f"{o.key_or_group}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else o.input_line
                  for o in choices]
        with initialize_config_dir(config_dir=config_dir):
            cfg = compose(config_name, overrides=chosen)
    except Exception:  # noqa: BLE001 - an unknown group option or a glob: refused elsewhere with its own message
        return None
    finally:
        GlobalHydra.instance().clear()
    for o in keys:
        parts = o.key_or_group.split(".")
        node, path = cfg, []
        while len(path) < len(parts) and isinstance(node, DictConfig) and parts[len(path)] in node.keys():
            part = parts[len(path)]
            if len(path) == len(parts) - 1 or OmegaConf.is_interpolation(node, part) or OmegaConf.is_missing(node, part):
                path = parts  # it exists; its value is not read (it may need a running Hydra app, ${hydra:...}, or be ???)
                break
            node, path = node[part], [*path, part]
        if len(path) == len(parts):
            continue
        where = ".".join(path) or "the top level"
        present = sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []
        valid = ", ".join(present) or "(none: it is not a section)"
        close = [".".join([*path, c]) for c in _closest(parts[len(path)], present)]
        if not path and len(parts) == 1:  # `modle=cnn`: a misspelt group reads best as the choice
            close = [f"{c}={o.value()}" if c in groups else c for c in close]
        advice = (f"Did you mean {' or '.join(close)}? " if close else
                  f"Check the spelling, or add a new key on purpose with +{o.input_line}. ")
        return f"Unknown config key '{o.key_or_group}' in the override '{o.input_line}'. {advice}The keys under {where} are: {valid}."
    return None
