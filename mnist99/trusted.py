"""What a config may build. A config is data from elsewhere (a run folder, a checkpoint, an experiment
file) whose `_target_`s name callables; without a rule it could name one that writes files
(`torch.save`). Allowed: mnist99's parts, by a rule read from the source without importing it (a
class of the mnist99 package whose bases lead to a torch module, a LightningModule or DataModule, a
callback, a logger or a log formatter: its functions stay refused), the libraries' families below,
and what the user allows on purpose in MNIST99_ALLOW_TARGETS. No torch here."""

from __future__ import annotations

import ast
import functools
import os
import re
from pathlib import Path
from typing import Any

from mnist99.errors import ConfigError

ENV = "MNIST99_ALLOW_TARGETS"
PACKAGE = Path(__file__).resolve().parent

LIBRARIES = (
    "lightning.pytorch.Trainer",
    "torch.optim.*",  # optimizers and torch.optim.lr_scheduler
    "lightning.pytorch.callbacks.*",
    "lightning.pytorch.loggers.*",
    "lightning.pytorch.profilers.*",
    "optuna.samplers.*",  # hparams_search=optuna
    "optuna.pruners.*",
    "hydra_plugins.mnist99_search.GridSweeper",  # every -m
    "hydra_plugins.mnist99_search.StudySweeper",
)
# A part's class has one of these among its ancestors (names as mnist99's modules import them).
PART_BASES = ("torch.nn.", "lightning.LightningModule", "lightning.LightningDataModule", "lightning.Callback",
              "lightning.pytorch.LightningModule", "lightning.pytorch.LightningDataModule", "lightning.pytorch.Callback",
              "lightning.pytorch.callbacks.", "lightning.pytorch.loggers.", "hydra.experimental.callback.Callback",
              "logging.Formatter")
# Where Hydra's plugin registry, not a config, decides what may be built.
PLUGIN_KEYS = ("hydra.launcher", "hydra.sweeper")


def user_targets() -> tuple[str, ...]:
    """MNIST99_ALLOW_TARGETS (comma-separated; `pkg.*` allows a package). An environment variable,
    not a config key: a config must not widen its own limits."""
    return tuple(t.strip() for t in os.environ.get(ENV, "").split(",") if t.strip())


def allowed(cfg: Any = None) -> tuple[str, ...]:
    """An execution whitelist for Hydra: the libraries' families, the user's own, and the parts of mnist99
    `cfg` names (interpolations followed); Hydra refuses any other name, with its key."""
    return (*LIBRARIES, *user_targets(), *(t for _, t in named(cfg, follow=True) if t.startswith("mnist99.") and is_part(t)))


def matches(target: str, pattern: str) -> bool:
    return target.startswith(pattern[:-1]) if pattern.endswith(".*") else target == pattern


def is_allowed(target: str) -> bool:
    if any(matches(target, p) for p in (*LIBRARIES, *user_targets())):
        return True
    return target.startswith("mnist99.") and is_part(target)


@functools.cache
def _module(name: str) -> tuple[ast.Module, dict[str, str]] | None:
    """A module of mnist99 parsed, with what each name it imports stands for; None if there is none."""
    parts = name.split(".")[1:]
    for path in (PACKAGE.joinpath(*parts).with_suffix(".py") if parts else None, PACKAGE.joinpath(*parts, "__init__.py")):
        if path is not None and path.is_file():
            tree = ast.parse(path.read_text())
            names = {}
            for node in tree.body:
                if isinstance(node, ast.Import):
                    names.update({a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0] for a in node.names})
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
            return tree, names
    return None


def _dotted(expr: ast.expr, names: dict[str, str], module: str) -> str | None:
    if isinstance(expr, ast.Name):
        return names.get(expr.id, f"{module}.{expr.id}")
    if isinstance(expr, ast.Attribute):
        head = _dotted(expr.value, names, module)
        return f"{head}.{expr.attr}" if head else None
    return _dotted(expr.value, names, module) if isinstance(expr, ast.Subscript) else None  # Generic[T]


def is_part(target: str, seen: frozenset = frozenset()) -> bool:
    """Is `target` a class of mnist99 whose bases lead to PART_BASES (through mnist99's classes and re-exports)?"""
    module, _, name = target.rpartition(".")
    found = _module(module) if module.startswith("mnist99") and target not in seen else None
    if found is None:
        return False
    tree, names = found
    seen = seen | {target}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            bases = [_dotted(b, names, module) or "" for b in node.bases]
            return any(b.startswith(PART_BASES) or (b.startswith("mnist99.") and is_part(b, seen)) for b in bases)
    return names.get(name, "").startswith("mnist99.") and is_part(names[name], seen)


def named(cfg: Any, follow: bool = False) -> list[tuple[str, str]]:
    """(key, target) of each callable a config names: a `_target_`, or a `()` factory of Python
    logging (a `hydra.job_logging` section); Hydra's plugin keys left out. An interpolation is walked
    where it lives, or with `follow` where it points too (as instantiate will build it)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    found = []

    def walk(node: Any, key: str) -> None:
        if isinstance(node, DictConfig):
            for marker in () if key in PLUGIN_KEYS else ("_target_", "()"):
                target = OmegaConf.select(node, marker, throw_on_resolution_failure=False) if marker in node else None
                if isinstance(target, str):
                    found.append((key, target))
        for k in node.keys() if isinstance(node, DictConfig) else range(len(node)):
            if OmegaConf.is_missing(node, k) or (OmegaConf.is_interpolation(node, k) and not follow):
                continue  # a missing value holds nothing
            try:
                child = node[k]
            except OmegaConfBaseException:  # an interpolation that only a running Hydra app resolves
                continue
            if isinstance(child, (DictConfig, ListConfig)):
                walk(child, f"{key}[{k}]" if isinstance(node, ListConfig) else f"{key}.{k}" if key else str(k))

    if OmegaConf.is_config(cfg):
        walk(cfg, "")
    return found


def check_targets(cfg: Any) -> None:
    """Refuse, before anything is built, a config that names a callable outside the rule."""
    for key, target in named(cfg):
        if not is_allowed(target):
            raise ConfigError(paragraph(target, key))


def paragraph(target: str, key: str) -> str:
    """The one-paragraph refusal of `key`, which names `target`."""
    return (
        f"Refused to build {key}: it names {target}, which is not one of the parts mnist99 builds. "
        "A config read from a run folder, a checkpoint or an experiment file may name only mnist99's own classes (its nets, "
        "models, data, callbacks), torch's optimizers and schedulers, and Lightning's trainer, callbacks, loggers and "
        "profilers (mnist99/trusted.py). If the config is not yours, do not use it. If the target is code of your own that "
        f"you trust, allow it on purpose: {ENV}={target} (comma-separated; pkg.* allows a package) before the command.")


def instantiate(cfg: Any, *args: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, whitelisting the parts `cfg` names that the rule allows: anything else is
    refused before it is called, in one paragraph."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return picklable(hydra_instantiate(cfg, *args, _execution_whitelist_=allowed(cfg), **kwargs))
    except InstantiationException as e:
        found = re.search(r"Target '([^']+)'.*?not in the Hydra execution whitelist", str(e), re.S)
        if not found:
            raise
        key = re.search(r"full_key: (\S+)", str(e))
        raise ConfigError(paragraph(found.group(1), key.group(1) if key else "a _target_")) from None


def picklable(built: Any) -> Any:
    """`built`, with a `_partial_` factory (at any depth of its arguments) as a plain functools.partial of the
    same callable: Hydra 1.4's own refuses to be pickled, and trainer.strategy=ddp_spawn pickles the module
    holding the optimizer's. The target was authorised above, when Hydra resolved it."""
    if not isinstance(built, functools.partial):
        return built
    return functools.partial(built.func, *map(picklable, built.args), **{k: picklable(v) for k, v in (built.keywords or {}).items()})
