"""Runs that stop early and can go on: a diverging loss stopped at its step, Ctrl-C or SIGTERM while training saving
the whole state (random generators included) for resume=."""

from __future__ import annotations

import math
import random
import signal
import threading
from pathlib import Path

import lightning as L
import numpy as np
import torch

from mnist99.errors import DivergedError, Interrupted
from mnist99.stopping import stopped_by


class StopOnDivergence(L.Callback):
    """Stops a run whose training loss diverged, naming the step and the likely cause: a loss that is not
    finite, or a running mean (about 10 steps) above `explode_factor` times a random guess's, ln(classes).
    Checked every step on a CPU, every `gpu_every_n_steps` on a GPU (reading the loss waits for it)."""

    def __init__(self, lr: float | None = None, explode_factor: float = 50.0, gpu_every_n_steps: int = 10):
        self.lr, self.explode_factor, self.gpu_every_n_steps = lr, explode_factor, gpu_every_n_steps
        self.mean: torch.Tensor | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.mean = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        value = loss.detach().float().mean()
        self.mean = value if self.mean is None else self.mean.lerp(value, 0.1)
        if loss.device.type != "cpu" and batch_idx % self.gpu_every_n_steps:
            return
        limit = self.explode_factor * math.log(getattr(pl_module, "num_classes", 10))
        if not bool(torch.isfinite(value)):
            raise DivergedError(self.message(trainer, f"became {float(value)}"))
        if float(self.mean) > limit:
            raise DivergedError(self.message(trainer, f"averaged {float(self.mean):.4g} over the last steps (a random guess "
                                                      f"scores {limit / self.explode_factor:.2f}; the limit is {limit:.0f})"))

    def message(self, trainer: L.Trainer, what: str) -> str:
        lr = f"optimizer.lr={self.lr:g}" if self.lr else "the learning rate"
        hint = f" (try optimizer.lr={self.lr / 10:g})" if self.lr else ""
        written = [c.best_model_path for c in trainer.checkpoint_callbacks if c.best_model_path]
        kept = next((p for p in written if p.endswith("last.ckpt")), written[0] if written else "")
        saved = (f"The last good checkpoint is kept: {kept}." if kept else
                 "No checkpoint had been written yet (checkpoints are written at the end of each epoch).")
        return (f"The training loss {what} at step {trainer.global_step} (epoch {trainer.current_epoch}), "
                f"so the run was stopped: it diverged. The usual cause is {lr} being too high for this model{hint}. {saved}")


def rng_states() -> dict:
    """Every random generator a training step may draw from, as plain tensors and ints (so that a checkpoint still
    loads with torch.load(weights_only=True))."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RngState(L.Callback):
    """Every random generator's state in every checkpoint, restored on resume. With the epoch's order drawn from
    (seed, epoch) and the position in the epoch saved by the datamodule, a run resumed from any checkpoint, mid-epoch
    ones included, takes the same steps as one never stopped."""

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        if "rng" in state_dict:
            set_rng_states(state_dict["rng"])


class GracefulStop(L.Callback):
    """Ctrl-C (SIGINT) or SIGTERM while training: the current step finishes, the whole state goes to
    `<dirpath>/last.ckpt` (weights, optimizer, schedule, position in the epoch and, with RngState, the random
    generators), and the run stops with a message that says how to resume it. A second Ctrl-C stops at once, without
    saving (worded by mnist99.stopping, as a Ctrl-C outside training). Under DDP the ranks agree each step on whether to stop."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.signum: int | None = None
        self.previous: dict = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_train_start: after Lightning has put in its own SIGTERM handler, which this replaces
        self.signum = None
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self.previous = {s: signal.signal(s, self.handle) for s in self.SIGNALS}

    def handle(self, signum: int, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signum = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        stop = self.signum is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)
        signum = self.signum or signal.SIGTERM
        # resume= composes the run's config.yaml, written as this fit started: its length included
        raise Interrupted(f"{stopped_by(signum)} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
                          f"{batch_idx + 1} of {trainer.num_training_batches}). The run's whole state is saved in {path}. "
                          f"Continue it where it stopped with: python train.py resume={self.dirpath.parent}", int(signum))

    def restore_handlers(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.restore_handlers()
