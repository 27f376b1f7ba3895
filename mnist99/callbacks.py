"""Callbacks of mnist99's own."""

from __future__ import annotations

import time
from typing import Sequence

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import get_ema_multi_avg_fn


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
