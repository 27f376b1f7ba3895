"""Experiment trackers beside TensorBoard (`logger=mlflow`, `logger=wandb`, `logger=[tensorboard,mlflow]`): each an
optional extra, refused at start-up when missing; a run's params (its config.yaml, flattened), tags
and artifacts; and where each logger wrote, for run.yaml. Credentials stay in the environment, where
the trackers read them (MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN)."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist99.errors import ConfigError

log = logging.getLogger("mnist99")

# a logger's _target_ -> (the module it needs, the extra that installs it)
EXTRAS = {"lightning.pytorch.loggers.MLFlowLogger": ("mlflow", "mlflow"), "lightning.pytorch.loggers.WandbLogger": ("wandb", "wandb")}
# what a run hands a tracker as artifacts, when present in the run folder
ARTIFACTS = ("config.yaml", "run.yaml", "confusion_matrix.png", "top_losses.png")
MAX_PARAM = 6000  # characters of an MLflow param value


def check_installed(cfg: DictConfig) -> None:
    """Refuse a logger whose package is missing, before anything loads (no torch here)."""
    for name, logger in (cfg.get("logger") or {}).items():
        target = logger.get("_target_") if isinstance(logger, DictConfig) else None
        if target in EXTRAS and importlib.util.find_spec(EXTRAS[target][0]) is None:
            module, extra = EXTRAS[target]
            raise ConfigError(f"logger={name} needs the {module} package, which is not installed in this environment. Install "
                              f"mnist99's {extra} extra (pip install -e \".[{extra}]\", or pip install {module}), or pick another "
                              "logger: logger=tensorboard, logger=csv.")


# MLFLOW_TRACKING_URI as the user set it: MLflow's set_tracking_uri (which Lightning calls) rewrites the
# variable, and a second run in the same process (a sweep, a notebook) must not take the first's store.
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri(log_dir: str) -> str:
    """Resolver: the user's MLFLOW_TRACKING_URI, else a local store under `log_dir`."""
    return USER_TRACKING_URI or f"sqlite:///{Path(log_dir).resolve()}/mlflow/mlflow.db"


def local_artifacts(tracking_uri: str, folder: str) -> str | None:
    """Resolver: the artifact folder of a local store (sqlite:// or a path), None for a server's own."""
    return None if str(tracking_uri).startswith(("http://", "https://", "databricks")) else str(Path(folder).resolve())


def experiment_name() -> str:
    """Resolver: one MLflow experiment per sweep (`sweep <its folder>`), so its jobs compare side by
    side; `mnist99` for single runs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"sweep {Path(HydraConfig.get().sweep.dir).name}"
    return "mnist99"


def is_mlflow(logger: Any) -> bool:
    return type(logger).__name__ == "MLFlowLogger"


def is_wandb(logger: Any) -> bool:
    return type(logger).__name__ == "WandbLogger"


def is_tracker(logger: Any) -> bool:
    """Loggers that take the whole config as params, not TensorBoard's handful (mnist99.tensorboard)."""
    return is_mlflow(logger) or is_wandb(logger)


def prepare(logger: Any, logger_cfg: DictConfig, cfg: DictConfig, choices: dict[str, str]) -> None:
    """Before the run is created: a local store's folder, and the run's tags."""
    if not is_mlflow(logger):
        return
    import mlflow  # noqa: F401 - imported now, so that its own logging set-up comes before the level below

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
    logging.getLogger("lightning.pytorch.loggers.mlflow").setLevel(logging.ERROR)  # "Experiment ... not found. Creating it."
    uri = str(logger_cfg.get("tracking_uri") or "")
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    logger.tags = {**(logger.tags or {}), **run_tags(cfg, choices)}
    logger.mnist99_where = f"{uri} experiment {logger_cfg.get('experiment_name')!r}"  # for run.yaml


def run_tags(cfg: DictConfig, choices: dict[str, str]) -> dict[str, str]:
    from mnist99 import run_info

    versions = run_info.versions()
    tags = {"model": choices.get("model", str(OmegaConf.select(cfg, "model._target_"))),
            "experiment": choices.get("experiment", "none"), "task": str(cfg.get("task_name")),
            "git_commit": str(versions.get("git_commit", "unknown")), "machine": run_info.machine(),
            "tags": ",".join(cfg.get("tags") or [])}
    return tags | {str(t): "true" for t in cfg.get("tags") or []}  # each tag its own key too, to filter by


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """config.yaml's keys, dotted (optimizer.lr), each value as text."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = str(node)[:MAX_PARAM]

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def log_params(loggers: list, cfg: DictConfig) -> None:
    for logger in loggers:
        if is_tracker(logger):
            logger.log_hyperparams(flat_params(cfg))


def log_artifacts(loggers: list, run_dir: Path) -> None:
    """The run's record and pictures, once run.yaml is final; the checkpoints only with log_model."""
    present = [Path(run_dir) / name for name in ARTIFACTS if (Path(run_dir) / name).is_file()]
    for logger in loggers:
        try:
            if is_mlflow(logger) and logger.run_id:
                for path in present:
                    logger.experiment.log_artifact(logger.run_id, str(path))
            elif is_wandb(logger):
                for path in (p for p in present if p.suffix == ".png"):
                    logger.log_image(key=f"test/{path.stem}", images=[str(path)])
                logger.experiment.finish()  # the next run of this process (a sweep's next job) gets a run of its own
        except Exception as e:  # noqa: BLE001 - a server gone away: the run itself is finished and kept
            from mnist99.study_storage import masked

            log.warning("The run's files could not be sent to %s (%s); they are in %s.", type(logger).__name__,
                        masked(str(e).splitlines()[0] if str(e) else type(e).__name__), run_dir)


def where(loggers: list) -> dict[str, str]:
    """Where each logger wrote, for run.yaml."""
    from mnist99.study_storage import masked

    out = {}
    for logger in loggers:
        name = type(logger).__name__.removesuffix("Logger").lower()
        if is_mlflow(logger):
            out[name] = masked(f"{getattr(logger, 'mnist99_where', '')} run {logger.run_id}".strip())
        elif is_wandb(logger):
            out[name] = str(Path(logger.experiment.dir).parent)  # wandb/offline-run-<time>-<id>
        else:
            out[name] = str(logger.log_dir)
    return out
