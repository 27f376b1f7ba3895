"""trainer.strategy=ddp_spawn (and ddp_notebook): Lightning pickles the trainer into new processes and runs the
whole fit there. This callback gives those processes the quiet console of the one Hydra runs in, and carries
back what the run's record reads from the trainer (fit seconds, epochs) through trainer.callback_metrics,
the one thing Lightning sends back to the main process besides the weights."""

from __future__ import annotations

import time

import lightning as L
import torch

from mnist99.console import quiet_lightning

PREFIX = "spawned/"  # callback_metrics' keys of the values carried back (never logged: loggers get what self.log gives)


def spawned(trainer: L.Trainer) -> bool:
    """Does this trainer run its fit in processes of its own (a multiprocessing launcher)?"""
    return type(getattr(trainer.strategy, "launcher", None)).__name__ == "_MultiProcessingLauncher"


class SpawnedProcesses(L.Callback):
    def __init__(self):
        self.start = 0.0  # a state to pickle: pickle calls no __setstate__ for an empty one

    def __setstate__(self, state: dict) -> None:
        # unpickled in a spawned process: its logging and warning filters start from Python's defaults
        self.__dict__.update(state)
        quiet_lightning()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if spawned(trainer):
            trainer.callback_metrics.update({
                f"{PREFIX}fit_seconds": torch.tensor(time.perf_counter() - self.start, dtype=torch.float64),
                f"{PREFIX}epochs": torch.tensor(trainer.current_epoch)})


def carried_back(trainer: L.Trainer) -> dict[str, float]:
    """What a spawned fit sent back ({} for a fit in this process), its keys without the prefix; taken out of
    callback_metrics so that no metric of the run's shows them."""
    keys = [k for k in trainer.callback_metrics if k.startswith(PREFIX)]
    return {k[len(PREFIX):]: float(trainer.callback_metrics.pop(k)) for k in keys}
