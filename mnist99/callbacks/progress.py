"""The console while training: the progress bar with images per second, and a logging interval that fits a short epoch."""

from __future__ import annotations

import math
import time

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ImagesPerSecondBar(RichProgressBar):
    """Lightning's rich progress bar, with the training images per second of the epoch so far (time since the epoch
    began, so data loading and logging count too)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen, self.start = 0, 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen, self.start = 0, time.perf_counter()
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.seen += len(batch[1])
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the run is named by its folder
        elapsed = time.perf_counter() - self.start
        if trainer.training and self.seen and elapsed > 0:
            items["img/s"] = f"{self.seen / elapsed:,.0f}"
        return items


def training_batches(trainer: L.Trainer) -> int | None:
    """The training batches of one epoch on each device, counted as Lightning will count them (the datamodule's training
    set and batch size, split across devices, then limit_train_batches or overfit_batches); None for a datamodule that
    does not say its training set and batch size."""
    dm = trainer.datamodule
    data, batch_size = getattr(dm, "data_train", None), getattr(dm, "batch_size", None)
    if data is None or not batch_size:
        return None
    try:
        n = math.ceil(len(data) / max(trainer.world_size, 1))  # DistributedSampler pads to a whole share
    except TypeError:  # a dataset without a length
        return None
    batches = n // batch_size if getattr(dm, "drop_last", False) else math.ceil(n / batch_size)
    if isinstance(limit := trainer.limit_train_batches, int):
        return min(batches, limit)
    return int(batches * limit) if isinstance(limit, float) else batches


class LogIntervalWithinEpoch(L.Callback):
    """trainer.log_every_n_steps brought down to the training batches of a shorter epoch (a small data set,
    limit_train_batches, debug=limit): train/loss is then logged once an epoch instead of never, and Lightning has nothing
    to warn about ("The number of training batches (5) is smaller than the logging interval Trainer(log_every_n_steps=50)").
    Set in setup: before Lightning reads the data, where it checks the interval."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.fast_dev_run or trainer.log_every_n_steps <= 0:
            return
        batches = training_batches(trainer)
        if batches and batches < trainer.log_every_n_steps:
            trainer.log_every_n_steps = batches
