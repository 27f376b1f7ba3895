"""What a config may build: the one allowlist of Python targets, enforced by Hydra's execution
whitelist (hydra-core 1.4) at every `instantiate` of mnist99 and in Hydra's own start-up (logging,
sweeper, launcher).

A config is data from elsewhere: a colleague's run folder, a checkpoint, an experiment file. Its
`_target_` names a Python callable that `instantiate` would call, so without a list any config
could name a function that writes files (`torch.save`, `numpy.savetxt`). Only the parts
mnist99's own configs name are allowed (tests/test_trusted.py checks every `_target_` under conf/
against this list), plus what a user allows on purpose in MNIST99_ALLOW_TARGETS. Light: no torch.
"""

from __future__ import annotations

import os
import re
from typing import Any

from mnist99.errors import ConfigError

ENV = "MNIST99_ALLOW_TARGETS"

# Exact names for mnist99's own parts (a prefix would also allow its plain functions, such as
# the one that writes a CSV); `package.*` for the libraries' families of classes its configs use.
TARGETS = (
    "mnist99.models.classifier.Classifier",
    "mnist99.models.classifier.ScratchLinear",
    "mnist99.models.nets.LinearNet",
    "mnist99.models.nets.MLP",
    "mnist99.models.nets.LeNet",
    "mnist99.models.nets.FastCNN",
    "mnist99.models.nets.StackCNN",
    "mnist99.models.nets.StridedCNN",
    "mnist99.models.nets.resnet",  # torchvision's ResNets by name (torchvision.models.get_model)
    # what it returns: Hydra checks a target's result too where it is callable (a module is)
    "torchvision.models.resnet.ResNet",
    "torch.nn.modules.container.Sequential",  # a ResNet body with fastai's head
    "mnist99.data.datamodule.MNISTDataModule",
    "mnist99.data.augment.BatchRandomAffine",
    "mnist99.callbacks.EMA",
    "mnist99.callbacks.EpochSeconds",
    "mnist99.callbacks.ErrorAnalysis",
    "mnist99.callbacks.GracefulStop",
    "mnist99.callbacks.ImagesPerSecondBar",
    "mnist99.callbacks.NetSummary",
    "mnist99.callbacks.RngState",
    "mnist99.callbacks.StopOnDivergence",
    "mnist99.sweep.SweepSummary",
    "mnist99.console.ConsoleFormatter",  # hydra/job_logging
    "hydra_plugins.mnist99_search.ResumableOptunaSweeper",
    "lightning.pytorch.Trainer",
    "torch.optim.*",  # optimizers and torch.optim.lr_scheduler
    "lightning.pytorch.callbacks.*",
    "lightning.pytorch.loggers.*",
    "lightning.pytorch.profilers.*",
    "optuna.samplers.*",  # hydra.sweeper.sampler of hparams_search=optuna
    "optuna.pruners.*",
)


# Where Hydra's plugin registry, not a config, decides what may be built.
PLUGIN_KEYS = ("hydra.launcher", "hydra.sweeper")


def allowed() -> tuple[str, ...]:
    """TARGETS and the user's own, from MNIST99_ALLOW_TARGETS (comma-separated; `pkg.*` allows a
    package). An environment variable, not a config key: a config must not widen its own limits."""
    extra = tuple(t.strip() for t in os.environ.get(ENV, "").split(",") if t.strip())
    return TARGETS + extra


def is_allowed(target: str) -> bool:
    """Hydra's rule for a name (exact, or under a `pkg.*`): the start-up check of a whole config,
    before anything runs. Hydra itself enforces the list at every instantiate, resolved names too."""
    return any(target.startswith(p[:-1]) if p.endswith(".*") else target == p for p in allowed())


def check_targets(cfg: Any) -> None:
    """Refuse, before anything is built, a config that names a callable outside the list: a
    `_target_`, or a `()` factory of Python logging (a `hydra.job_logging` section)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    def walk(node: Any, key: str) -> None:
        if isinstance(node, DictConfig):
            # Hydra builds its launcher and sweeper only from installed plugin classes
            for marker in () if key in PLUGIN_KEYS else ("_target_", "()"):
                target = OmegaConf.select(node, marker, throw_on_resolution_failure=False) if marker in node else None
                if isinstance(target, str) and not is_allowed(target):
                    raise ConfigError(paragraph(target, key))
        children = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for k in children:
            # a missing value holds nothing; an interpolation's target is walked where it lives
            if not (OmegaConf.is_missing(node, k) or OmegaConf.is_interpolation(node, k)):
                child = node[k]
                if isinstance(child, (DictConfig, ListConfig)):
                    walk(child, f"{key}[{k}]" if isinstance(node, ListConfig) else f"{key}.{k}" if key else str(k))

    walk(cfg, "")


def paragraph(target: str, key: str) -> str:
    """The one-paragraph refusal of `key`, which names `target`."""
    return (
        f"Refused to build {key}: it names {target}, which is not one of the parts mnist99 builds. "
        "A config read from a run folder, a checkpoint or an experiment file may name only mnist99's models, data, "
        "callbacks and sweeper, torchvision's ResNets, torch's optimizers and schedulers, and Lightning's trainer, "
        "callbacks, loggers and profilers (the list: mnist99/trusted.py). If the config is not yours, do not use it. "
        f"If the target is code of your own that you trust, allow it on purpose: {ENV}={target} (comma-separated; "
        "pkg.* allows a package) before the command."
    )


def refusal(message: str) -> str | None:
    """mnist99's paragraph for Hydra's "not in the Hydra execution whitelist" error, else None."""
    found = re.search(r"Target '([^']+)'.*?not in the Hydra execution whitelist", message, re.S)
    if not found:
        return None
    key = re.search(r"full_key: (\S+)", message)
    return paragraph(found.group(1), key.group(1) if key else "a _target_")


def instantiate(cfg: Any, *args: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate with mnist99's allowlist; a target outside it is a ConfigError
    before anything is called."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(cfg, *args, _execution_whitelist_=allowed(), **kwargs)
    except InstantiationException as e:
        message = refusal(str(e))
        if message is None:
            raise
        raise ConfigError(message) from None
