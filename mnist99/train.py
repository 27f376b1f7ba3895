"""`python train.py` / `mnist99-train`: compose the config with Hydra, train, test, report."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import hydra
import lightning as L
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mnist99 import run_info
from mnist99.callbacks import GracefulStop, StopOnDivergence
from mnist99.checkpoints import check_fits, read_checkpoint
from mnist99.config import (
    CONFIG_DIR,
    apply_gpus_shorthand,
    drop_sync_batchnorm_on_cpu,
    register_resolvers,
    share_machine,
    unknown_override_keys,
    validate,
)
from mnist99.errors import ConfigError, DivergedError, Interrupted, Mnist99Error
from mnist99.models.optim import optimizer_from_config
from mnist99.run_info import RunRecord
from mnist99.sweep import LAST_SWEEP
from mnist99.tensorboard import log_hparams

log = logging.getLogger("mnist99")

register_resolvers()
# Batches come from in-memory tensors: worker processes would only add start-up time.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*`configure_optimizers` returned `None`.*")
warnings.filterwarnings("ignore", message=".*treespec.*LeafSpec.*")  # lightning 2.6 on torch >= 2.10
warnings.filterwarnings("ignore", message=".*is not supported by the model summary.*")  # its size estimate; the counts are right
# The datamodule resumes mid-epoch itself (same order, the trained batches skipped): see EpochShuffle.
warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")


def choices(cfg: DictConfig | None = None) -> dict[str, str]:
    """The config-group options this run was composed from (model=cnn, optimizer=adamw, ...); for
    a resumed run (composed from its saved config, without groups) those its run.yaml recorded."""
    if not HydraConfig.initialized():
        return {}
    found = {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra") and v is not None}
    if "model" not in found and cfg is not None and cfg.get("resume_ckpt"):
        record = Path(cfg.paths.output_dir) / "run.yaml"
        found = (yaml.safe_load(record.read_text()) or {}).get("choices", {}) if record.is_file() else {}
    return found


def build_model(cfg: DictConfig) -> L.LightningModule:
    optimizer, decay_norm_and_bias = optimizer_from_config(cfg.optimizer)
    extra = {"scheduler": instantiate(cfg.scheduler)} if cfg.get("scheduler") else {}
    return instantiate(cfg.model, optimizer=optimizer, decay_norm_and_bias=decay_norm_and_bias, **extra)


def prepare(cfg: DictConfig) -> None:
    """Start-up checks and settings a run needs before any work (idempotent)."""
    validate(cfg)
    apply_gpus_shorthand(cfg)
    drop_sync_batchnorm_on_cpu(cfg)
    share_machine(cfg)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Train and (with cfg.test) test one model, or an ensemble (cfg.ensemble.members > 1); returns
    the final metrics (floats), epochs and what was tested."""
    prepare(cfg)
    if cfg.get("ensemble") and cfg.ensemble.members != 1:
        from mnist99.ensemble import train_ensemble

        return train_ensemble(cfg)
    return fit_and_test(cfg, extra_callbacks)[0]


# The launchers of this job's trainers: the ones that start DDP's extra processes hold them.
LAUNCHERS: list = []


def new_trainer(cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    trainer: L.Trainer = instantiate(cfg.trainer, **kwargs)
    LAUNCHERS.append(getattr(trainer.strategy, "launcher", None))
    return trainer


def fit_and_test(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> tuple[dict[str, Any], L.LightningModule, L.LightningDataModule]:
    """Fit one model and (with cfg.test) test it: (metrics, the trained model, its datamodule)."""
    prepare(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    if len(datamodule.classes) != cfg.model.num_classes:
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} but {cfg.data.data_dir} holds "
            f"{len(datamodule.classes)} classes {list(datamodule.classes)}; set model.num_classes to match."
        )
    model = build_model(cfg)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    # a callback set to null (`callbacks.model_checkpoint=null`) is switched off
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c] + list(extra_callbacks)
    callbacks.append(StopOnDivergence(lr=OmegaConf.select(cfg, "optimizer.lr")))  # always on: a NaN run is never wanted
    callbacks.append(GracefulStop(dirpath=str(Path(cfg.paths.output_dir) / "checkpoints")))  # Ctrl-C keeps the work
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it was told not to show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    suggested = None
    if OmegaConf.select(cfg, "tune.lr_find"):
        from mnist99.tune import find_lr

        # a trainer of its own, without logs or checkpoints: the search is not part of the run's curves
        finder = new_trainer(cfg, logger=False, callbacks=[], enable_checkpointing=False)
        suggested = find_lr(cfg, finder, model, datamodule)
        if suggested and cfg.tune.use_suggested_lr:
            cfg.optimizer.lr = suggested
            model = build_model(cfg)  # the optimizer partial holds the rate: build it again
    trainer = new_trainer(cfg, logger=loggers or False, callbacks=callbacks)
    log_hparams(trainer, cfg, choices(cfg))
    skipped = len(getattr(datamodule, "skipped", ()))
    if skipped:  # data.on_bad_image=skip: in the logs and run.yaml, not only on the console
        for logger in trainer.loggers:
            logger.log_metrics({"data/skipped_images": skipped}, step=0)

    start = time.perf_counter()
    resume = cfg.get("resume_ckpt")
    if resume:  # a clear refusal now, instead of a deep error inside Lightning's restore
        check_fits(read_checkpoint(resume), model, resume)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True if resume else None)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["fit_seconds"] = time.perf_counter() - start
    if skipped:
        metrics["data/skipped_images"] = float(skipped)
    if suggested:
        metrics["tune/suggested_lr"] = suggested
    if trainer.interrupted:
        return metrics, model, datamodule
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if cfg.data.val_size == 0:
            # Validation ran on testing/: picking the best epoch by it would select on the test
            # set, so report the final weights, as the blog's last-epoch figures do.
            best = ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        metrics["tested_weights"] = best or "final weights"
    metrics["epochs"] = trainer.current_epoch
    return metrics, model, datamodule


def friendly(e: Exception) -> str | None:
    """The one-paragraph message for an error the user can fix, or None for a real bug."""
    if isinstance(e, Mnist99Error):
        return str(e)
    if isinstance(e, MisconfigurationException):
        return f"Lightning refused the trainer settings: {e} Check the trainer.* overrides (see conf/trainer/default.yaml)."
    if isinstance(e, InstantiationException):
        cause = e.__cause__
        if isinstance(cause, Mnist99Error):
            return str(cause)
        return f"A config entry could not be built: {e}. Check the overrides of that group's keys (python train.py --cfg job prints the composed config)."
    return None


# Set by Lightning in the process that starts DDP's other processes, and never unset: the next
# job of a sweep would take LOCAL_RANK as a sign that someone else starts them, and wait forever.
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def drop_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def end_ddp(saved: dict[str, str | None]) -> None:
    """After a DDP job of a sweep, leave the process as the next job expects it: the job's other
    processes exited, no process group (Lightning keeps its own) and the environment as before.

    Lightning's child-process observer kills this process (and with it the rest of the sweep)
    when one of the job's processes exits with an error, even after the job is over. So: wait for
    them, read their exit codes here (a warning, not a kill), leave the observer nothing to watch,
    then drop the process group. (An exit error was seen about once in 40 sweeps; its likely
    source, a process exiting with its group alive, is what drop_process_group() in main() avoids.)
    """
    children = [p for launcher in LAUNCHERS for p in getattr(launcher, "procs", None) or []]
    LAUNCHERS.clear()
    for proc in children:
        try:
            code = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code:
            log.warning("DDP process %d of this job exited with code %s after the job ended.", proc.pid, code)
    # The job is over and its exit codes are read: Lightning's observer (which kills this process
    # when a child's code is not 0) gets nothing left to watch, and ends at its next look.
    for thread in threading.enumerate():
        watched = getattr(thread, "_child_processes", None)
        if type(thread).__name__ == "_ChildProcessObserver" and watched and set(map(id, watched)) <= set(map(id, children)):
            thread._child_processes = []
    drop_process_group()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def run(cfg: DictConfig) -> float | None:
    """One job: train, record the outcome in run.yaml, print a summary line; returns the optimized metric."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    record = RunRecord(run_dir, cfg, list(hc.overrides.task), choices(cfg)) if rank_zero_only.rank == 0 else None
    multirun = hc.mode == RunMode.MULTIRUN
    if multirun:  # for DDP's extra processes: see ddp_child_argv()
        os.environ["MNIST99_JOB_DIR"] = str(run_dir)
        os.environ["MNIST99_JOB_OVERRIDES"] = json.dumps(list(hc.overrides.task))
    ddp_env = {k: os.environ.get(k) for k in DDP_ENV}
    try:
        metrics = train(cfg)
    except Exception as e:  # noqa: BLE001 - user errors become one paragraph, bugs keep their traceback
        message = friendly(e)
        if message is None:
            if record:
                record.finish("crashed", error=f"{type(e).__name__}: {e}")
            if not multirun:
                raise
            log.exception("The job crashed (a bug in mnist99 or a library, not in the config); the sweep goes on.")
            return cfg.get("failed_value")
        if isinstance(e, Interrupted):  # the user asked the whole command to stop, sweep included
            if record:
                record.finish("interrupted", error=message)
            print(f"\nmnist99: {message}\n", file=sys.stderr)
            sys.exit(128 + e.signum)  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
        if record:
            record.finish("diverged" if isinstance(e, DivergedError) else "failed", error=message)
        print(f"\nmnist99: error: {message}\n", file=sys.stderr)
        if multirun:
            return cfg.get("failed_value")  # the sweep goes on with its next job
        sys.exit(2)
    finally:
        if multirun and ddp_env["LOCAL_RANK"] is None:
            end_ddp(ddp_env)
    status = "interrupted" if "test/acc" not in metrics and cfg.get("test") else "completed"
    if record:
        record.finish(
            status,
            metrics={k: v for k, v in metrics.items() if isinstance(v, float)},
            epochs=metrics.get("epochs"),
            tested_weights=metrics.get("tested_weights", "none"),
        )
        summary(cfg, metrics, record.seconds, run_dir)
    value = metrics.get(cfg.get("optimized_metric", "val/acc_best"))
    return value if value is not None and math.isfinite(value) else None


@rank_zero_only
def summary(cfg: DictConfig, metrics: dict, seconds: float, run_dir: Path) -> None:
    model = choices(cfg).get("model", OmegaConf.select(cfg, "model._target_"))
    acc = metrics.get("test/acc")
    acc_txt = f"test/acc={acc:.4f}" if acc is not None else "test/acc=n/a"
    try:
        shown = run_dir.relative_to(Path.cwd())
    except ValueError:
        shown = run_dir
    print(f"\nmnist99: model={model} {acc_txt} val/acc_best={metrics.get('val/acc_best', float('nan')):.4f} "
          f"epochs={metrics.get('epochs', 0)} fit={metrics.get('fit_seconds', 0):.1f}s wall={seconds:.1f}s run_dir={shown}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    return run(cfg)


def ddp_child_argv(argv: list[str]) -> list[str]:
    """Lightning starts each extra DDP process with the parent's own command line. Inside a
    multirun that is the whole sweep (`-m model=a,b ...`), which would run every job again into a
    new sweep folder; the child gets this job's overrides and this job's folder instead."""
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 or "MNIST99_JOB_OVERRIDES" not in os.environ:
        return argv
    if not any(a in ("-m", "--multirun") for a in argv):
        return argv
    name = [a for a in argv if a.startswith("hydra.job.name=")]
    job_dir = os.environ["MNIST99_JOB_DIR"].replace('"', '\\"')
    return [argv[0], *json.loads(os.environ["MNIST99_JOB_OVERRIDES"]), f'hydra.run.dir="{job_dir}"', "hydra.output_subdir=null", *name[-1:]]


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=<run dir or .ckpt>`: compose the run's own saved config (its .hydra/config.yaml,
    so no override needs repeating), write into the same folder and continue from last.ckpt.
    Other overrides on the line still apply (e.g. trainer.max_epochs=5 to train longer)."""
    asked = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("resume=")]
    if not asked:
        return argv
    target = Path(asked[-1]).expanduser().resolve()
    ckpt = target if target.is_file() else target / "checkpoints" / "last.ckpt"
    run_dir = ckpt.parent.parent
    for needed in (run_dir / ".hydra" / "config.yaml", ckpt):
        if not needed.is_file():
            raise ConfigError(
                f"resume={asked[-1]}: {needed} does not exist. Pass the folder of a run made by train.py "
                "(outputs/runs/<time>_<model>), which holds .hydra/config.yaml and checkpoints/last.ckpt, "
                "or one of its .ckpt files."
            )
    rest = [a for a in argv[1:] if not a.startswith("resume=")]
    quoted = lambda p: str(p).replace('"', '\\"')  # noqa: E731
    return [argv[0], "--config-path", str(run_dir / ".hydra"), "--config-name", "config",
            f'hydra.run.dir="{quoted(run_dir)}"', "hydra.output_subdir=null", f'++resume_ckpt="{quoted(ckpt)}"', *rest]


def occupied_run_dir(overrides: list[str]) -> str | None:
    """A `hydra.run.dir=` that names a finished run's folder would have Hydra write over its saved
    config before any check of ours: refuse it (resume= is the way back into a run's folder)."""
    if (int(os.environ.get("LOCAL_RANK", "0")) > 0 or os.environ.get("SLURM_RESTART_COUNT", "0") != "0"
            or any(a.lstrip("+").startswith("resume_ckpt=") for a in overrides)):
        return None  # DDP's extra processes join their run's folder; resume and a requeued SLURM job continue in it
    for a in overrides:
        if a.startswith("hydra.run.dir="):
            folder = Path(a.split("=", 1)[1].strip('"')).expanduser()
            if (folder / "run.yaml").is_file():
                return (f"hydra.run.dir={folder} holds a finished run (run.yaml), and a new run would write over it. "
                        f"Pick a new folder, or continue that run with: python train.py resume={folder}")
    return None


def main() -> None:
    """The command line: refuse misspelt keys with the list of valid ones, then let Hydra run."""
    sys.argv = ddp_child_argv(sys.argv)
    run_info.COMMAND = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])  # as typed, before resume_argv
    try:
        sys.argv = resume_argv(sys.argv)
    except ConfigError as e:
        print(f"\nmnist99: error: {e}\n", file=sys.stderr)
        sys.exit(2)
    message = unknown_override_keys(sys.argv[1:]) or occupied_run_dir(sys.argv[1:])
    if message:
        print(f"\nmnist99: error: {message}\n", file=sys.stderr)
        sys.exit(2)
    hydra_main()
    # Every DDP process leaves with its group closed: exiting with it alive can fail on the way out.
    drop_process_group()
    if LAST_SWEEP.failed:  # a sweep's exit status is the number of its failed jobs
        sys.exit(min(LAST_SWEEP.failed, 125))


if __name__ == "__main__":
    main()
