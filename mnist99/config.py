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
    message = keys_not_taken(overrides, config_name, config_dir) or unknown_group_options(overrides, config_dir)
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
        typed = o.input_line.split("=", 1)[1]  # as typed: `false`, not Python's False
        if len(parts) == 1:  # a bare name: `max_epochs=3` is trainer.max_epochs, `modle=cnn` the group model
            asked = [str(v) for v in o.sweep_string_iterator()] if o.is_sweep_override() else [typed.strip()]
            close = name_suggestions(parts[0], typed, asked, cfg, group_options(config_dir))
        else:
            close = [".".join([*path, c]) for c in _closest(parts[len(path)], present)]
            if not close and len(path) == len(parts) - 1:  # `trainer.lr=0.1`: a key of another section
                close = [f"{k}={typed}" for k in keys_named(parts[-1], leaf_keys(cfg))]
        advice = (f"Did you mean {' or '.join(close)}? " if close else
                  f"Check the spelling, or add a new key on purpose with +{o.input_line}. ")
        return f"Unknown config key '{o.key_or_group}' in the override '{o.input_line}'. {advice}The keys under {where} are: {valid}."
    return None


def leaf_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """The dotted keys of node's values (not of its sections), in config order; an interpolation or a
    ??? counts as a value (it is not read: it may need a running Hydra app)."""
    out = []
    for k in node.keys():
        key = f"{prefix}{k}"
        if OmegaConf.is_interpolation(node, k) or OmegaConf.is_missing(node, k):
            out.append(key)
            continue
        child = node[k]  # not an interpolation: reading it resolves nothing
        if isinstance(child, DictConfig) and len(child):
            out += leaf_keys(child, key + ".")
        else:
            out.append(key)
    return out


def keys_named(name: str, keys: list[str], close: bool = False) -> list[str]:
    """The keys whose last part is `name` (`lr`: optimizer.lr, callbacks.stop_on_divergence.lr), or with
    close, whose last part is close to it (`epochs`: trainer.max_epochs); the shallowest first, five at most.
    Hydra's own `_target_` and `_partial_` are never meant."""
    last = {k: k.rsplit(".", 1)[-1] for k in keys}
    names = [n for n in dict.fromkeys(last.values()) if not n.startswith("_")]
    wanted = _closest_names(name, names) if close else [name] if name in names else []
    return [k for w in wanted for k in sorted((k for k in keys if last[k] == w), key=lambda k: k.count("."))][:5]


def _closest_names(word: str, names: list[str]) -> list[str]:
    """The names close to word, as difflib's, a name that holds it counting closer (`epochs`: max_epochs,
    not eps), and only those near the closest (`train`: train_dir, not limit_train_batches)."""
    score = {n: difflib.SequenceMatcher(None, word, n).ratio() + (0.2 if word in n else 0) for n in names}
    close = sorted((n for n in names if score[n] >= 0.6), key=lambda n: -score[n])
    return [n for n in close if score[n] >= score[close[0]] - 0.1][:3]


def name_suggestions(name: str, typed: str, asked: list[str], cfg: DictConfig, options: dict[str, list[str]]) -> list[str]:
    """`key=value` overrides a bare `name=typed` may have meant: a key of that name anywhere (`max_epochs=3`:
    trainer.max_epochs=3); else a top-level key or group close to it (`modle=cnn`: model=cnn, a group only
    when every value `asked` is one of its options, so `train=false` is no trainer=false); else a key
    whose last part is close (`epochs=3`: trainer.max_epochs=3)."""
    leaves = leaf_keys(cfg)
    exact = keys_named(name, leaves)
    if exact:
        return [f"{k}={typed}" for k in exact]
    top = []
    for c in _closest(name, sorted({*map(str, cfg.keys()), *options})):
        if (c in options and all(a in options[c] for a in asked)) or (c not in options and c in leaves):
            top.append(f"{c}={typed}")
    close = keys_named(name, leaves, close=True)
    if typed.strip().lower() in ("true", "false"):  # `train=false` means a switch: not data.train_dir, a folder
        close = [k for k in close if _is_switch(cfg, k)]
    return top or [f"{k}={typed}" for k in close]


def own_keys(config_name: str, config_dir: str = CONFIG_DIR) -> list[str] | None:
    """The keys of a config that composes no config group (eval.yaml, predict.yaml), read from its file:
    its command reads these and nothing else. None for one that composes groups (train.yaml), whose
    `+key=` adds a key a part may read, for a run's saved config.yaml (resume=), and for a config that
    cannot be read (Hydra reports it)."""
    try:
        node = OmegaConf.load(Path(config_dir) / f"{config_name}.yaml")
    except Exception:  # noqa: BLE001 - not there (a package's config) or not YAML
        return None
    if not isinstance(node, DictConfig) or "defaults" not in node:  # a run's saved config.yaml (resume=) is composed already
        return None
    for entry in node.defaults or []:  # "_self_", {"override hydra/job_logging": "stdout"}, {"model": "lenet"}
        words = str(entry if isinstance(entry, str) else next(iter(entry), "")).split()
        if not words or words[-1].split("/")[0] not in ("_self_", "hydra"):
            return None
    return [k for k in leaf_keys(node) if k.split(".")[0] not in ("defaults", "hydra")]


def keys_not_taken(args: list[str], config_name: str = "train", config_dir: str = CONFIG_DIR) -> str | None:
    """A message for an override of a key that eval.py or predict.py does not read (`+data.data_dir=x`,
    `model=cnn`): Hydra would add it and the command ignore it. It names the keys the command takes;
    None when every override is one of them (or hydra's), or for a command that composes groups."""
    own = own_keys(config_name, config_dir)
    if own is None:
        return None
    for arg in args:
        if arg.startswith("-") or ("=" not in arg and not arg.startswith("~")):
            continue
        key, eq, typed = arg.partition("=")
        key = key.lstrip("+~").split("@")[0]
        if re.split(r"[./]", key)[0] == "hydra" or key in own or any(k.startswith(key + ".") for k in own):
            continue
        last = re.split(r"[./]", key)[-1]
        close = keys_named(last, own) or keys_named(last, own, close=True)
        advice = f"Did you mean {' or '.join(f'{k}={typed}' if eq else k for k in close)}? " if close else ""
        return (f"Unknown config key '{key}' in the override '{arg}': {config_name}.py reads only its own keys, so it would "
                f"never read this one. {advice}The keys it takes are: {', '.join(own)} (python {config_name}.py --help says "
                "what each does).")
    return None


def flag_suggestions(flag: str, value: str | None, config_name: str = "train", config_dir: str = CONFIG_DIR) -> list[str]:
    """The `key=value` overrides meant by a flag Hydra does not know, `--epochs 3` or `--lr=0.1`: its
    name as a group, a key, or a bare name (name_suggestions). `<value>` stands in for a missing value,
    `true` for a switch's."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    name = flag.lstrip("-").replace("-", "_")
    options = group_options(config_dir)
    if not name or GlobalHydra.instance().is_initialized():
        return []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir):
            cfg = compose(config_name)
    except Exception:  # noqa: BLE001 - a config that does not compose: Hydra says so once the flag is gone
        return []
    finally:
        GlobalHydra.instance().clear()
    if own_keys(config_name, config_dir) is not None:  # eval, predict: their keys, no groups
        options = {}
    leaves = leaf_keys(cfg)
    if value is None:  # `--test`: a switch is turned on, anything else needs its value
        named = [name] if name in leaves else keys_named(name.rsplit(".", 1)[-1], leaves)
        value = "true" if named and all(_is_switch(cfg, k) for k in named) else "<value>"
    if name in options or name in leaves:
        return [f"{name}={value}"]
    if "." in name:  # trainer.lr: the keys of that last name
        return [f"{k}={value}" for k in keys_named(name.rsplit(".", 1)[-1], leaves)]
    return name_suggestions(name, value, [value], cfg, options)


def _is_switch(cfg: DictConfig, key: str) -> bool:
    """Is key's value true or false, read without resolving it (a resolver may import torch)?"""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and isinstance(OmegaConf.to_container(node, resolve=False).get(leaf), bool)
