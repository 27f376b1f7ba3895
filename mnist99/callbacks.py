"""Callbacks of mnist99's own."""

from __future__ import annotations

import math
import time
from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from mnist99.errors import DivergedError


class TimeToAccuracy(L.Callback):
    """The training seconds (since fit started, validation included) at which `val/acc` first
    reached each threshold; checked at every validation."""

    def __init__(self, thresholds: Sequence[float] = (0.99, 0.995)):
        self.thresholds = tuple(thresholds)
        self.reached: dict[float, float] = {}
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.reached = time.perf_counter(), {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if trainer.sanity_checking or acc is None:
            return
        for t in self.thresholds:
            if t not in self.reached and float(acc) >= t:
                self.reached[t] = time.perf_counter() - self.start


class EMA(WeightAveraging):
    """An exponential moving average of the weights (and BatchNorm buffers), validated, saved and
    tested in place of the raw weights: Lightning's WeightAveraging with torch's foreach EMA update.

    Lightning's own EMAWeightAveraging updates tensor by tensor in a Python loop (~140 small
    operations a step for model=stack_cnn); the foreach version does the same in a handful.
    Averaging starts at `start_step`, before which the weights are far from their final values.
    """

    def __init__(self, decay: float = 0.999, start_step: int = 0, every_n_steps: int = 1):
        if not 0 < decay < 1 or start_step < 0 or every_n_steps < 1:
            raise ValueError(f"impossible EMA settings: decay={decay}, start_step={start_step}, every_n_steps={every_n_steps}")
        super().__init__(use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay, self.start_step, self.every_n_steps = decay, start_step, every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx >= self.start_step and step_idx % self.every_n_steps == 0

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Resuming a fit restores both the raw and the averaged weights. Testing a checkpoint must
        # evaluate its averaged weights (its state_dict), but Lightning's version would put the raw
        # training weights back into the model whenever this callback is attached.
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class StopOnDivergence(L.Callback):
    """Stops a run whose training loss diverged, naming the step and the likely cause.

    Diverged means a loss that is not a finite number (stopped at that step), or a running mean of
    the loss (about the last 10 steps) above `explode_factor` times a random guess's loss,
    ln(num_classes): 115 for MNIST, where a sane run stays below 3 after its first steps.

    Checked every step when the loss is on the CPU; on a GPU every `gpu_every_n_steps` steps, since
    reading the loss makes the CPU wait for the GPU. Checkpoints already written stay as they are.
    """

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
            guess = limit / self.explode_factor
            raise DivergedError(self.message(trainer, f"averaged {float(self.mean):.4g} over the last steps (a random "
                                                      f"guess scores {guess:.2f}; the limit is {limit:.0f})"))

    def message(self, trainer: L.Trainer, what: str) -> str:
        lr = f"optimizer.lr={self.lr:g}" if self.lr else "the learning rate"
        hint = f" (try optimizer.lr={self.lr / 10:g})" if self.lr else ""
        cb = trainer.checkpoint_callback
        kept = (getattr(cb, "last_model_path", "") or getattr(cb, "best_model_path", "")) if cb else ""
        saved = (f"The last good checkpoint is kept: {kept}." if kept else
                 "No checkpoint had been written yet (checkpoints are written at the end of each epoch).")
        return (f"The training loss {what} at step {trainer.global_step} (epoch {trainer.current_epoch}), "
                f"so the run was stopped: it diverged. The usual cause is {lr} being too high for this model{hint}. {saved}")
