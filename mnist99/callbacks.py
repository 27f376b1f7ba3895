"""Callbacks of mnist99's own."""

from __future__ import annotations

import time
from typing import Sequence

import lightning as L


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
