"""How long training took: the seconds to each validation accuracy, and each epoch's seconds."""

from __future__ import annotations

import time
from typing import Sequence

import lightning as L


class TimeToAccuracy(L.Callback):
    """The training seconds (since fit started, validation included) at which `val/acc` first reached each threshold,
    checked at every validation; and `curve`, every validation's (seconds, val/acc)."""

    def __init__(self, thresholds: Sequence[float] = (0.99, 0.995)):
        self.thresholds = tuple(thresholds)
        self.reached: dict[float, float] = {}
        self.curve: list[tuple[float, float]] = []  # (seconds, val/acc) at every validation
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.reached, self.curve = time.perf_counter(), {}, []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if trainer.sanity_checking or acc is None:
            return
        seconds = time.perf_counter() - self.start
        self.curve.append((seconds, float(acc)))
        for t in self.thresholds:
            if t not in self.reached and float(acc) >= t:
                self.reached[t] = seconds


class EpochSeconds(L.Callback):
    """`time/epoch_seconds`: the wall time of each training epoch with its validation (what fastai's `time` column
    shows), in the logger beside the epoch's metrics."""

    def __init__(self):
        self.start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation at the epoch's end has run by now (Lightning validates before this hook)
        pl_module.log("time/epoch_seconds", time.perf_counter() - self.start)
