"""What the console shows: mnist99's log lines without Hydra's prefix, Lightning's notices off,
and no warning that says nothing to a user. Light (no torch, no Lightning): the commands use it
before a run starts, build_trainer for every trainer it builds."""

from __future__ import annotations

import logging
import warnings

# rank_zero_info's loggers (and every other of Lightning's) are children of these.
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")

# Library warnings that say nothing to a user of mnist99 (the rest are kept):
QUIET_WARNINGS = (
    # batches come from in-memory tensors: worker processes would only add start-up time
    ".*does not have many workers.*",
    ".*`configure_optimizers` returned `None`.*",
    ".*treespec.*LeafSpec.*",  # lightning 2.6 on torch >= 2.10
    ".*is not supported by the model summary.*",  # its size estimate; the counts are right
    # the datamodule resumes mid-epoch itself (same order, the trained batches skipped): see EpochShuffle
    ".*resuming from a checkpoint that ended before the epoch ended.*",
    # a resumed run writes into its own checkpoints/ folder, which is not empty by design
    r"Checkpoint directory .* exists and is not empty",
    # the CSV logger writes into the run folder, which holds config.yaml already; an earlier
    # attempt's metrics.csv, which it would delete, is kept first (run_info.keep_earlier_metrics)
    r"Experiment logs directory .* exists and is not empty",
    # debug=overfit trains on the same first batches every epoch, which is what it asks for
    r"You requested to overfit but enabled train dataloader shuffling",
    # DDP: the logged accuracies and losses are torchmetrics' values, already reduced across the ranks
    r"It is recommended to use `self.log\(.*sync_dist=True\)`",
    # DDP: said in mnist99's words, and only when it happens (callbacks.UnevenTestSplit)
    r"Using `DistributedSampler` with the dataloaders. During `trainer.test\(\)`",
    # DDP: inside Lightning's all_gather (ErrorAnalysis's top losses)
    r"torch.distributed.nn.functional.all_gather is deprecated",
)


def quiet_warnings() -> None:
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def quiet_lightning() -> None:
    """Lightning's notices off, its warnings kept: "GPU available: False, used: False", "TPU
    available", its tips and adverts (litlogger), "Loading `train_dataloader` to estimate number of
    stepping batches", "Restoring states from the checkpoint path at <absolute path>", "Loaded model
    weights from the checkpoint at ...", "`Trainer.fit` stopped: `max_epochs=1` reached". mnist99
    says what a user needs in its own words (the data, the model summary, a resumed schedule).
    QUIET_WARNINGS go too.

    Called when each trainer is built, not once per process: importing lightning.pytorch sets its
    logger back to INFO, and a command may import it after its start-up."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_warnings()


class ConsoleFormatter(logging.Formatter):
    """The console's log lines (conf/hydra/default.yaml, job_logging): the message alone, and
    "warning:" before a warning or an error; train.log in the run folder keeps time and module."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"
