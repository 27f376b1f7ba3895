"""One run, in one pass: check the config, build the parts, fit, test, record. The commands
(mnist99.cli) print what `run` returns; nothing here exits the process."""

from __future__ import annotations

import dataclasses
import math
import re
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from mnist99 import ensemble, errors, machine, trackers
from mnist99.build import Parts, build, with_found
from mnist99.callbacks.spawned import carried_back
from mnist99.checkpoints import check_fits, read_checkpoint
from mnist99.config import validate
from mnist99.errors import DivergedError, Interrupted, Mnist99Error
from mnist99.record import RunRecord, save_config
from mnist99.stopping import stop_signal, stopped_at_once
from mnist99.tensorboard import log_hparams


@dataclass
class Outcome:
    """How a run ended: status is completed, interrupted, failed, diverged or crashed; `message` the
    one paragraph for the user; `parts` the last model's (its trainer, model and datamodule)."""

    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    signum: int | None = None
    error: BaseException | None = None  # a crash's exception, for the caller to raise or log
    trained: bool = True  # False for a stop before the first training step
    parts: Parts | None = None
    choices: dict[str, str] = field(default_factory=dict)


def run(cfg: DictConfig, overrides: Sequence[str] = (), callbacks: Sequence[L.Callback] = (), checked: bool = False,
        discard_refused: bool = False) -> Outcome:
    """Train and (cfg.test) test one model, or ensemble.members of them (seeds seed, seed+1, ...,
    in member<i>/ folders, their averaged softmax tested), in cfg.paths.output_dir with run.yaml
    saying how it went. `checked`: the command line validated the config already. With
    discard_refused, a run refused before it trained leaves no folder (a sweep keeps its jobs')."""
    run_dir = Path(cfg.paths.output_dir)
    record = RunRecord(run_dir, cfg, overrides)
    sigint = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    parts, metrics, probs = None, {}, []
    try:
        if not checked:
            validate(cfg)
        members, shifts = ensemble.check(cfg)
        machine.share_cpu()
        torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))
        for member in [cfg] if members == 1 else ensemble.member_configs(cfg, members):
            L.seed_everything(member.seed, workers=True, verbose=False)
            parts = build(member, [*callbacks, record])
            trainer, model, datamodule = parts.trainer, parts.model, parts.datamodule
            save_config(parts.cfg, Path(member.paths.output_dir), record.choices)  # once, before training: what runs
            log_hparams(trainer, parts.cfg, record.choices)
            trackers.log_params(trainer.loggers, parts.cfg)
            resume = member.get("resume_ckpt")
            if resume:  # a clear refusal now, instead of a deep error inside Lightning's restore
                check_fits(read_checkpoint(resume), model, resume)
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True if resume else None)
            spawned = carried_back(trainer)  # trainer.strategy=ddp_spawn: the fit ran in processes of its own
            record.fit_seconds += spawned.get("fit_seconds", 0.0)
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            metrics["epochs"] = int(spawned.get("epochs", trainer.current_epoch))
            # callbacks=[default,early_stopping]: why fit ended before max_epochs (read now: testing a checkpoint restores its state)
            reasons = [c.stopping_reason_message for c in trainer.early_stopping_callbacks if c.stopping_reason_message]
            metrics |= {"stopped_early": reasons[0]} if reasons else {}
            if trainer.interrupted or not member.test:
                break
            # the best epoch's checkpoint, unless validation ran on testing/ (picking by it would select
            # on the test set): the final weights then, as the blog's figures are
            held_out = member.data.get("val_size", 1) != 0
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback and held_out else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
            metrics |= {k: float(v) for k, v in trainer.callback_metrics.items()} | {"tested_weights": best or "final weights"}
            if members > 1:
                probs.append((*ensemble.test_probs(model, datamodule, shifts, dict(cfg.trainer)), metrics.get("val/acc_best", math.nan)))
    except BaseException as e:  # noqa: BLE001 - every ending becomes an outcome here, a bug's with its exception
        if sigint is not None:
            signal.signal(signal.SIGINT, sigint)  # Lightning leaves Ctrl-C ignored after one
        outcome = ending(e, run_dir, record.trained)
        untrained = outcome.status == "failed" or not outcome.trained
        if discard_refused and untrained and (record.earlier_text or not any(run_dir.rglob("*.ckpt"))):
            record.discard()
        else:
            record.finish(outcome.status, error=outcome.message or f"{type(e).__name__}: {e}", **logged(parts))
            trackers.log_artifacts(parts.trainer.loggers if parts else [], run_dir)
        return dataclasses.replace(outcome, choices=record.choices, parts=parts)
    metrics["fit_seconds"] = record.fit_seconds
    if members > 1:
        save_config(with_found(cfg, parts.cfg.model.get("num_classes")), run_dir, record.choices)
        metrics = ensemble.results(run_dir, probs, shifts) | {"fit_seconds": record.fit_seconds, "epochs": parts.trainer.max_epochs}
    if skipped := len(getattr(parts.datamodule, "skipped", ())):  # data.on_bad_image=skip: in run.yaml too
        metrics["data/skipped_images"] = float(skipped)
    if parts.suggested_lr:
        metrics["tune/suggested_lr"] = parts.suggested_lr
    status = "interrupted" if "test/acc" not in metrics and cfg.get("test") else "completed"
    stopped = {k: metrics[k] for k in ("stopped_early",) if k in metrics}
    record.finish(status, metrics={k: v for k, v in metrics.items() if isinstance(v, float)}, epochs=metrics.get("epochs"),
                  tested_weights=metrics.get("tested_weights", "none"), **stopped, **logged(parts))
    trackers.log_artifacts(parts.trainer.loggers, run_dir)  # run.yaml final now
    return Outcome(status, metrics | {"wall_seconds": record.seconds}, parts=parts, choices=record.choices)


def logged(parts: Parts | None) -> dict[str, Any]:
    """run.yaml's `loggers`: where each logger of the run wrote."""
    where = trackers.where(parts.trainer.loggers) if parts is not None else {}
    return {"loggers": where} if where else {}


def ending(e: BaseException, run_dir: Path, trained: bool) -> Outcome:
    """How a run that raised `e` ended: stopped (Ctrl-C, SIGTERM, or Lightning's exit after one),
    refused or diverged in one paragraph for the user, or crashed (a bug: its exception kept)."""
    signum = stop_signal(e)
    if signum is not None:
        e = stopped_at_once(run_dir, trained, signum)
    if isinstance(e, Interrupted):
        return Outcome("interrupted", message=str(e), signum=e.signum, trained=e.trained)
    e = raised_in_spawned_process(e)
    message = friendly(e)
    if message is not None:
        return Outcome("diverged" if isinstance(e, DivergedError) else "failed", message=message)
    if not isinstance(e, Exception):
        raise e  # SystemExit, GeneratorExit: not the run's to answer
    return Outcome("crashed", error=e)


def raised_in_spawned_process(e: BaseException) -> BaseException:
    """trainer.strategy=ddp_spawn: an error of mnist99's raised in a spawned process reaches this one as torch's
    ProcessRaisedException holding the traceback's text; the error again, from its last line (else `e`)."""
    if type(e).__name__ != "ProcessRaisedException":
        return e
    found = re.search(r"^mnist99\.errors\.(\w+): (.+)\Z", str(e).strip(), re.M | re.S)
    kind = getattr(errors, found.group(1), None) if found else None
    return kind(found.group(2)) if isinstance(kind, type) and issubclass(kind, Mnist99Error) and kind is not Interrupted else e


def friendly(e: BaseException) -> str | None:
    """The one-paragraph message for an error the user can fix, or None for a real bug."""
    if isinstance(e, Mnist99Error):
        return str(e)
    if isinstance(e, MisconfigurationException):
        return f"Lightning refused the trainer settings: {e} Check the trainer.* overrides (see conf/trainer/default.yaml)."
    if isinstance(e, InstantiationException):
        if isinstance(e.__cause__, Mnist99Error):
            return str(e.__cause__)
        return (f"A config entry could not be built: {e}. Check the overrides of that group's keys (python train.py --cfg job "
                "prints the composed config).")
    return None


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The run's `optimized_metric`, for a sweeper; None when missing or not finite."""
    value = metrics.get(cfg.get("optimized_metric", "val/acc_best"))
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
