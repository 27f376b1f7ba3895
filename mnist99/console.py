"""What a training run prints: Lightning's notices off, and no warning about a log interval longer
than the epoch. build_trainer applies both to every trainer it builds."""

from __future__ import annotations

import logging
import math
import warnings

import lightning as L

# rank_zero_info's loggers (and every other of Lightning's) are children of these.
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")

log = logging.getLogger(__name__)

# Lightning's (and torch's) warnings that say nothing to a user of mnist99 (the rest are kept):
QUIET_WARNINGS = (
    # a resumed run writes into its own checkpoints/ folder, which is not empty by design
    r"Checkpoint directory .* exists and is not empty",
    # debug=overfit trains on the same first batches every epoch, which is what it asks for
    r"You requested to overfit but enabled train dataloader shuffling",
    # DDP: the logged accuracies and losses are torchmetrics' values, already reduced across the ranks
    r"It is recommended to use `self.log\(.*sync_dist=True\)`",
    # DDP: said in mnist99's words, and only when it happens (UnevenTestSplit)
    r"Using `DistributedSampler` with the dataloaders. During `trainer.test\(\)`",
    # DDP: inside Lightning's all_gather (ErrorAnalysis's top losses)
    r"torch.distributed.nn.functional.all_gather is deprecated",
)


def quiet_lightning() -> None:
    """Lightning's notices off, its warnings kept: "GPU available: False, used: False", "TPU
    available", its tips and adverts (litlogger), "Loading `train_dataloader` to estimate number of
    stepping batches", "Restoring states from the checkpoint path at <absolute path>", "Loaded model
    weights from the checkpoint at ...", "`Trainer.fit` stopped: `max_epochs=1` reached". mnist99
    says what a user needs in its own words (the data, the model summary, a resumed schedule).

    Its warnings that say nothing to a user (QUIET_WARNINGS) go too.

    Called when each trainer is built, not once per process: importing lightning.pytorch sets its
    logger back to INFO, and a command may import it after its start-up."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def training_batches(trainer: L.Trainer) -> int | None:
    """The training batches of one epoch on each device, counted as Lightning will count them
    (the datamodule's training set and batch size, split across devices, then limit_train_batches
    or overfit_batches); None for a datamodule that does not say its training set and batch size."""
    dm = trainer.datamodule
    data, batch_size = getattr(dm, "data_train", None), getattr(dm, "batch_size", None)
    if data is None or not batch_size:
        return None
    try:
        n = math.ceil(len(data) / max(trainer.world_size, 1))  # DistributedSampler pads to a whole share
    except TypeError:  # a dataset without a length
        return None
    batches = n // batch_size if getattr(dm, "drop_last", False) else math.ceil(n / batch_size)
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        return min(batches, limit)
    return int(batches * limit) if isinstance(limit, float) else batches


class LogIntervalWithinEpoch(L.Callback):
    """trainer.log_every_n_steps brought down to the number of training batches of an epoch that is
    shorter (a small data set, limit_train_batches, debug=limit): train/loss is then logged once an
    epoch instead of never, and Lightning has nothing to warn about ("The number of training batches
    (5) is smaller than the logging interval Trainer(log_every_n_steps=50)"). Set before Lightning
    reads the data (setup), so the model's own check (is_logging_step) agrees."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.fast_dev_run or trainer.log_every_n_steps <= 0:
            return
        batches = training_batches(trainer)
        if batches and batches < trainer.log_every_n_steps:
            trainer.log_every_n_steps = batches


class UnevenTestSplit(L.Callback):
    """A test on several devices whose test set does not split evenly: Lightning's DistributedSampler
    then repeats a few images to give each device as many, and they count twice in test/acc.
    Said once, when it happens, with the way to the exact figure (Lightning's own warning, given
    for every test on several devices, is silenced)."""

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = getattr(trainer.datamodule, "data_test", None)
        world = trainer.world_size
        if world <= 1 or data is None or not trainer.is_global_zero:
            return
        n = len(data)
        if n % world:
            log.warning("Testing on %d devices: the %d test images do not split evenly, so %d of them are tested twice "
                        "and test/acc is off by up to %.2g points. For the exact figure, test the run again on one device: "
                        "python eval.py ckpt_path=<the run folder>", world, n, world - n % world, 100 * (world - n % world) / n)
