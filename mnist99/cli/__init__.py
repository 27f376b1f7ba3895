"""The commands `train`, `eval` and `predict` (python train.py / eval.py / predict.py, or the
mnist99-train / mnist99-eval / mnist99-predict entry points): argv, Hydra's main, exit codes.
What they run is the library (mnist99.pipeline, mnist99.evaluate, mnist99.predict)."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import NoReturn

from mnist99.config import expand_shorthands, register_resolvers, unknown_override_keys

# Batches come from in-memory tensors: worker processes would only add start-up time.
QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*`configure_optimizers` returned `None`.*",
    ".*treespec.*LeafSpec.*",  # lightning 2.6 on torch >= 2.10
    ".*is not supported by the model summary.*",  # its size estimate; the counts are right
    # The datamodule resumes mid-epoch itself (same order, the trained batches skipped): see EpochShuffle.
    ".*resuming from a checkpoint that ended before the epoch ended.*",
)


def setup_process(quiet_lightning: bool = False) -> None:
    """What every command does once before Hydra starts: mnist99's resolvers, and silence for
    warnings that say nothing to a user of this project (and, for eval and predict, for
    Lightning's start-up notices)."""
    register_resolvers()
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    if quiet_lightning:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)


def fail(message: str, code: int = 2) -> NoReturn:
    """The one-paragraph error every command ends with when the user can fix the problem."""
    print(f"\nmnist99: error: {message}\n", file=sys.stderr)
    sys.exit(code)


def checked_argv(argv: list[str], config_name: str) -> list[str]:
    """argv with the shorthands expanded (trainer.gpus=N), or a one-paragraph exit for a
    misspelt key, listing the keys that are there."""
    argv = [argv[0], *expand_shorthands(argv[1:])]
    message = unknown_override_keys(argv[1:], config_name)
    if message:
        fail(message)
    return argv
