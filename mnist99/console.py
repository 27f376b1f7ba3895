"""What the console shows: mnist99's log lines without Hydra's prefix, Lightning's notices off, and no warning that
says nothing to a user. Light (no torch, no Lightning): the commands use it before a run starts, build_trainer for
every trainer it builds."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

# rank_zero_info's loggers (and every other of Lightning's) are children of these.
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")

# Library warnings that say nothing to a user of mnist99 (the rest are kept):
QUIET_WARNINGS = (
    ".*does not have many workers.*",  # in-memory tensors: worker processes would only add start-up time
    ".*`configure_optimizers` returned `None`.*",
    ".*treespec.*LeafSpec.*",  # lightning 2.6 on torch >= 2.10
    ".*is not supported by the model summary.*",  # its size estimate; the counts are right
    ".*resuming from a checkpoint that ended before the epoch ended.*",  # the datamodule resumes mid-epoch: EpochShuffle
    r"Checkpoint directory .* exists and is not empty",  # a resumed run writes into its own checkpoints/ folder
    # resume= of a copied run folder or a lone .ckpt: its checkpoints go to its own folder, their best-k record afresh
    r"The dirpath has changed from .* won't be reloaded",
    # the CSV logger writes beside config.yaml (an earlier metrics.csv, which it would delete, is kept first: run_info)
    r"Experiment logs directory .* exists and is not empty",
    r"You requested to overfit but enabled train dataloader shuffling",  # debug=overfit: the same first batches, as asked
    r"It is recommended to use `self.log\(.*sync_dist=True\)`",  # DDP: torchmetrics' values, reduced across ranks already
    r"Using `DistributedSampler` with the dataloaders. During `trainer.test\(\)`",  # DDP: said by callbacks.UnevenTestSplit
    r"torch.distributed.nn.functional.all_gather is deprecated",  # DDP: in Lightning's all_gather (ErrorAnalysis)
    r"`max_epochs` was not set",  # trainer.max_epochs=null: mnist99 sets the epochs from the data (EpochsForData)
)


def shown(path: str | Path) -> str:
    """A path as the console prints it: relative to the working folder where it lies under it, else whole."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def quiet_warnings() -> None:
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def quiet_lightning() -> None:
    """Lightning's notices off ("GPU available: False, used: False", tips and adverts, "Restoring states from the
    checkpoint path at ...", "`Trainer.fit` stopped: ..."), its warnings kept but QUIET_WARNINGS; mnist99 says what a
    user needs in its own words. Called for each trainer built: importing lightning.pytorch sets its logger back to INFO."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_warnings()


class ConsoleFormatter(logging.Formatter):
    """The console's log lines (conf/hydra/default.yaml, job_logging): the message alone, and "warning:" before a
    warning or an error; train.log in the run folder keeps time and module."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"
