"""One run, as a library: checks, then build → fit → test → record. The commands (mnist99.cli)
turn what these return into printed lines and exit codes; nothing here exits the process."""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mnist99 import ensemble, machine
from mnist99.build import build_callbacks, build_datamodule, build_loggers, build_model, build_trainer, choices, with_found
from mnist99.callbacks import FitStart
from mnist99.checkpoints import check_fits, read_checkpoint
from mnist99.config import validate
from mnist99.errors import DivergedError, Interrupted, Mnist99Error
from mnist99.run_info import RunRecord, keep_earlier_metrics, save_config
from mnist99.standalone import StandaloneCheckpoint
from mnist99.stopping import stops_become_interrupted
from mnist99.tensorboard import log_hparams

log = logging.getLogger("mnist99")


def prepare(cfg: DictConfig) -> None:
    """Start-up checks and settings a run needs before any work (idempotent); cfg is left as it is."""
    validate(cfg)
    machine.share_cpu()
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Train and (with cfg.test) test one model, or an ensemble (cfg.ensemble.members > 1); returns
    the final metrics (floats), epochs and what was tested."""
    prepare(cfg)
    if cfg.get("ensemble") and cfg.ensemble.members != 1:
        return train_ensemble(cfg)
    return fit_and_test(cfg, extra_callbacks)[0]


def fit_and_test(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> tuple[dict[str, Any], L.LightningModule, L.LightningDataModule]:
    """Fit one model and (with cfg.test) test it: (metrics, the trained model, its datamodule)."""
    prepare(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # what the model needs from the data, found without touching it: the Trainer prepares and sets
    # the data up when it runs (prepare_data on one process per node), as Lightning means it
    datamodule, num_classes = build_datamodule(cfg)
    cfg = with_found(cfg, num_classes)  # the config of what runs, a copy
    model = build_model(cfg)
    loggers = build_loggers(cfg)
    keep_earlier_metrics(loggers)  # a resumed run's metrics.csv, which Lightning's CSVLogger would delete
    clock = FitStart()
    # every checkpoint carries the run's config and data settings: eval.py and predict.py take it alone
    callbacks = build_callbacks(cfg, [*extra_callbacks, StandaloneCheckpoint(cfg), clock], with_logger=bool(loggers))
    suggested = None
    if OmegaConf.select(cfg, "tune.lr_find"):
        from mnist99.tune import find_lr

        # a trainer of its own, without logs or checkpoints: the search is not part of the run's curves
        finder = build_trainer(cfg, logger=False, callbacks=[], enable_checkpointing=False)
        suggested = find_lr(cfg, finder, model, datamodule)
        if suggested and cfg.tune.use_suggested_lr:
            cfg = with_found(cfg, lr=suggested)
            model = build_model(cfg)  # the optimizer partial holds the rate: build it again
    save_config(cfg, Path(cfg.paths.output_dir), choices(cfg))  # once, before training: what runs
    trainer = build_trainer(cfg, logger=loggers or False, callbacks=callbacks)
    log_hparams(trainer, cfg, choices(cfg))

    resume, start_step = cfg.get("resume_ckpt"), 0
    if resume:  # a clear refusal now, instead of a deep error inside Lightning's restore
        ckpt = read_checkpoint(resume)
        check_fits(ckpt, model, resume)
        start_step = ckpt.get("global_step", 0)
    with stops_become_interrupted(Path(cfg.paths.output_dir), trained=lambda: trainer.global_step > start_step):
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True if resume else None)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics["fit_seconds"] = time.perf_counter() - clock.start if clock.start else 0.0
        skipped = len(datamodule.skipped)
        if skipped:  # data.on_bad_image=skip: in run.yaml too, not only on the console and in the logs (FitStart)
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


def train_ensemble(cfg: DictConfig) -> dict:
    """Train `ensemble.members` models (seeds seed, seed+1, ...) into member<i>/ folders, then test
    their averaged predictions; returns the ensemble's metrics plus each member's test/acc."""
    members, shifts = ensemble.check(cfg)
    run_dir = Path(cfg.paths.output_dir)
    cfg = with_found(cfg, build_datamodule(cfg)[1])  # the members' class count, for their configs and this one
    save_config(cfg, run_dir, choices(cfg))
    probs, labels, best, fit_seconds = [], None, [], 0.0
    for i in range(members):
        member = OmegaConf.merge(cfg, {"seed": cfg.seed + i, "paths": {"output_dir": str(run_dir / f"member{i}")},
                                       "ensemble": {"members": 1}})
        log.info("Ensemble member %d of %d (seed %d) in %s", i + 1, members, member.seed, member.paths.output_dir)
        # each member a run folder of its own (fit_and_test saves its config.yaml), so eval.py,
        # predict.py and scripts/ensemble.py take it
        metrics, model, datamodule = fit_and_test(member)
        if "test/acc" not in metrics:  # interrupted: report what is finished
            break
        best.append(metrics.get("val/acc_best", math.nan))
        fit_seconds += metrics["fit_seconds"]
        p, labels = ensemble.test_probs(model, datamodule, shifts, dict(cfg.trainer))
        probs.append(p)
    out = {"fit_seconds": fit_seconds, "epochs": cfg.trainer.max_epochs, "val/acc_best": statistics.fmean(best) if best else math.nan}
    if probs:
        out.update(ensemble.combine(probs, labels, shifts))
        out["tested_weights"] = f"softmax of {len(probs)} models (final weights) averaged over {len(shifts)} test-time shifts"
    ensemble.log_scalars(run_dir, {k: v for k, v in out.items() if k.startswith(("test/", "val/"))})
    return out


def friendly(e: BaseException) -> str | None:
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


@dataclass
class Outcome:
    """How a recorded run ended: status is completed, interrupted, failed, diverged or crashed;
    `message` the one paragraph for the user (None when completed or crashed)."""

    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    signum: int | None = None
    error: BaseException | None = None  # a crash's exception, for the caller to re-raise or log


def run_recorded(cfg: DictConfig, run_dir: Path, overrides: list[str], discard_refused: bool = False) -> Outcome:
    """train(cfg), with run.yaml in run_dir saying how it went (written on rank 0 only). With
    discard_refused, a run refused before it trained (bad data, a checkpoint that does not fit)
    leaves no run folder behind (RunRecord.discard); a sweep keeps its failed jobs' records."""
    record = RunRecord(run_dir, cfg, overrides, choices(cfg)) if rank_zero_only.rank == 0 else None
    try:
        with stops_become_interrupted(run_dir, trained=lambda: False):  # a stop before the Trainer ran (inside it: fit_and_test)
            metrics = train(cfg)
    except Exception as e:  # noqa: BLE001 - user errors become one paragraph, bugs keep their traceback
        message = friendly(e)
        if message is None:
            outcome = Outcome("crashed", error=e)
            error = f"{type(e).__name__}: {e}"
        elif isinstance(e, Interrupted):  # the user asked the whole command to stop, sweep included
            outcome, error = Outcome("interrupted", message=message, signum=e.signum), message
        else:
            outcome, error = Outcome("diverged" if isinstance(e, DivergedError) else "failed", message=message), message
        if not record:
            return outcome
        # "failed" is a refusal at build time (data, checkpoint, trainer settings), and a Ctrl-C before
        # the first training step trained nothing: a new run that wrote no checkpoint, or a resumed
        # one, has nothing worth a record
        untrained = outcome.status == "failed" or (isinstance(e, Interrupted) and not e.trained)
        if discard_refused and untrained and (record.earlier_text or not any(run_dir.rglob("*.ckpt"))):
            record.discard()
        else:
            record.finish(outcome.status, error=error)
        return outcome
    status = "interrupted" if "test/acc" not in metrics and cfg.get("test") else "completed"
    if record:
        record.finish(
            status,
            metrics={k: v for k, v in metrics.items() if isinstance(v, float)},
            epochs=metrics.get("epochs"),
            tested_weights=metrics.get("tested_weights", "none"),
        )
    return Outcome(status, metrics=metrics | {"wall_seconds": record.seconds if record else math.nan})


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The run's `optimized_metric`, for a sweeper; None when missing or not finite."""
    value = metrics.get(cfg.get("optimized_metric", "val/acc_best"))
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
