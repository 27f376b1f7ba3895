"""The default recipe's length, from the data: with trainer.max_epochs null, as many epochs as it takes to show
the model `train_images` training images. MNIST's 60,000 take 2 epochs of 235 steps; a folder of 3,000 takes 40
epochs of 12: the same optimizer steps, where a fixed 2 epochs would give it 24. Set when the data is known
(the datamodule's setup) and before the optimizers are (a one-cycle schedule is sized by these epochs)."""

from __future__ import annotations

import logging
import math

import lightning as L

from mnist99.errors import ConfigError

log = logging.getLogger("mnist99")


def epochs_for(train_images: int, images: int) -> int:
    return max(1, math.ceil(train_images / images))


class EpochsForData(L.Callback):
    def __init__(self, train_images: int):
        self.train_images = int(train_images)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        images = training_images(trainer.datamodule)
        trainer.fit_loop.max_epochs = epochs_for(self.train_images, images)
        log.info("%d epochs of %s training images: the recipe's train_images=%s, in whole epochs "
                 "(trainer.max_epochs=N trains N).", trainer.fit_loop.max_epochs, f"{images:,}", f"{self.train_images:,}")


def training_images(datamodule: L.LightningDataModule | None) -> int:
    """How many images the datamodule trains on (after its setup): mnist99's holds them in data_train, another's
    training dataloader has a dataset with a length."""
    dataset = getattr(datamodule, "data_train", None)
    if dataset is None and datamodule is not None:
        dataset = getattr(datamodule.train_dataloader(), "dataset", None)
    try:
        return len(dataset)
    except TypeError:
        raise ConfigError("trainer.max_epochs=null sizes the run by its number of training images, and this datamodule's "
                          "training set has no length (an iterable dataset): set trainer.max_epochs=N, or trainer.max_steps=N.") from None
