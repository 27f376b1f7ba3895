"""The LightningDataModule: a folder of images (MNIST's PNGs by default), decoded once into uint8
tensors, its batches indexed whole and made into model input on the model's device."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from mnist99 import schema
from mnist99.data.batches import TensorBatchDataset, batch_as_is
from mnist99.data.cache import load_split
from mnist99.data.model_input import channel_stats, to_model_input
from mnist99.data.sampler import EpochShuffle
from mnist99.data.splits import class_folders, find_splits, usable_splits
from mnist99.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class MNISTDataModule(L.LightningDataModule):
    """A folder of images: a training split and a test split found by name (training/ + testing/,
    train/ + test/, train/ + valid/, train/ + val/, or data.train_dir / data.test_dir), each with
    one sub-folder per class. MNIST's own PNG tree is built first where `build_mnist` is set and the
    folder is missing or empty; a folder that holds anything else is never written into.

    train = the training split minus a seeded hold-out of `val_size` images, val = that hold-out
    (or the test split when val_size is 0), test = the test split. Every image is brought to
    `channels` x `image_size` x `image_size` and every split decoded once into a uint8 tensor
    (cached in `cache_dir`); batches are indexed whole, travel as uint8 and become floats on the
    model's device (`on_after_batch_transfer`), where training batches are also augmented. With
    `on_device=True` the tensors move to the accelerator once (~55 MB for MNIST) and a batch never
    crosses the bus. (torchvision's per-image ImageFolder path, for comparison: scripts/benchmark.py.)
    """

    def __init__(
        self,
        data_dir: str | Path,
        source: str | None = None,
        mirrors: Sequence[str] | None = None,
        pypi: bool = True,
        build_mnist: bool = True,
        train_dir: str | None = None,
        test_dir: str | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 128,
        val_size: int = 5000,
        split_seed: int = 0,
        image_size: int = 28,
        channels: int = 1,
        model_channels: int | None = None,
        normalize: bool = True,
        mean: float | Sequence[float] | None = 0.1307,
        std: float | Sequence[float] | None = 0.3081,
        num_workers: int = 0,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        loader: str = "tensor",  # only in the configs of earlier runs, which still build
        on_device: bool = True,
        on_bad_image: str = "error",
        drop_last: bool = False,
    ):
        super().__init__()
        # The start-up checks of these keys (mnist99.schema), for a datamodule built from Python too.
        model_channels = channels if model_channels is None else model_channels
        schema.check_values({"data.channels": channels, "data.model_channels": model_channels, "data.image_size": image_size,
                             "data.val_size": val_size, "data.batch_size": batch_size, "data.on_bad_image": on_bad_image})
        if loader != "tensor":
            raise ConfigError(f"data.loader={loader!r} is not a loader: mnist99 decodes every split once into tensors "
                              "(data.loader=tensor); torchvision's per-image ImageFolder path is in scripts/benchmark.py.")
        self.data_dir = Path(data_dir).expanduser()
        self.source, self.pypi, self.build_mnist = source, pypi, build_mnist
        self.mirrors = None if mirrors is None else list(mirrors)  # None: torchvision's MNIST mirrors
        self.train_dir, self.test_dir = train_dir, test_dir
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        self.batch_size, self.val_size, self.split_seed = batch_size, val_size, split_seed
        self.image_size, self.channels, self.model_channels = image_size, channels, model_channels
        self.normalize, self.mean, self.std = normalize, mean, std
        self.augment = augment or None  # an empty config ({}) means none
        self.num_workers, self.on_device, self.on_bad_image, self.drop_last = num_workers, on_device, on_bad_image, drop_last
        self.skipped: tuple[str, ...] = ()  # unusable images left out (on_bad_image=skip)
        self.classes: tuple[str, ...] = ()
        self.splits: tuple[Path, Path] | None = None  # (training split, test split) folders
        self.data_train = self.data_val = self.data_test = None
        # Mid-epoch resume is kept here, not left to Lightning: Lightning 2.6 saves the state of a
        # DataLoader that has state_dict itself (never its sampler's), and never restores it where
        # configure_optimizers asked for trainer.estimated_stepping_batches first, as the one-cycle
        # and cosine schedules do (Lightning issue #20550). The datamodule's state is restored before.
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches trained) of a mid-epoch checkpoint
        self.position = (-1, 0)  # (epoch, training batches handed out in it), for mid-epoch checkpoints

    def find_classes(self) -> tuple[str, ...]:
        """The class names the data will have, found without reading an image or writing anything,
        so that the model is sized before the Trainer prepares the data (prepare_data, on one
        process per node) and sets it up (setup, on every process): the class folders of the
        training split, or MNIST's ten where prepare_data is to build MNIST. A folder it cannot
        use is refused here, on every process alike, in the words prepare_data would use."""
        splits = usable_splits(self.data_dir, self.train_dir, self.test_dir, self.build_mnist)
        if splits is not None:
            return class_folders(splits[0])
        from mnist99.data.prepare import MNIST_CLASSES

        return MNIST_CLASSES

    def prepare_data(self) -> None:
        """Build MNIST's PNG tree where that is meant (`build_mnist` set and the folder missing or
        empty); refuse, listing what is there, any other folder without splits. Sets no state:
        Lightning runs it on one process per node, and `setup` finds the splits on every process.
        (A file lock in prepare_mnist_png still makes separate commands sharing a folder build it once.)"""
        if usable_splits(self.data_dir, self.train_dir, self.test_dir, self.build_mnist) is not None:
            return
        from mnist99.data.prepare import prepare_mnist_png

        prepare_mnist_png(self.data_dir, source=self.source, mirrors=self.mirrors, pypi=self.pypi, cache_dir=self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        if find_splits(self.data_dir, self.train_dir, self.test_dir) is None:
            self.prepare_data()  # called alone: builds MNIST where meant, or refuses, naming what the folder holds
        self.splits = train_root, test_root = find_splits(self.data_dir, self.train_dir, self.test_dir)
        read = dict(size=self.image_size, channels=self.channels, on_bad_image=self.on_bad_image, cache_dir=self.cache_dir)
        train_x, train_y, classes, train_skipped = load_split(train_root, **read)
        test_x, test_y, test_classes, test_skipped = load_split(test_root, **read)
        self.skipped = train_skipped + test_skipped
        if classes != test_classes:
            raise DataError(f"The class folders differ between {train_root} {list(classes)} and "
                            f"{test_root} {list(test_classes)}; both splits need the same classes.")
        if self.val_size >= len(train_y):  # its lower bound is the schema's (checked in __init__)
            raise ConfigError(f"data.val_size={self.val_size} is impossible: {train_root} holds {len(train_y)} images, and "
                              f"val_size must be less than that (0 validates on the test split, {test_root.name}/).")
        self.classes = classes
        if self.normalize and (self.mean is None or self.std is None):  # the training split's own, saved in checkpoints
            mean, std = channel_stats(train_x)
            self.mean, self.std = mean if self.mean is None else self.mean, std if self.std is None else self.std
            log.info("Normalising with the training images' own mean %s and std %s", self.mean, self.std)
        self.data_test = TensorBatchDataset(test_x, test_y)
        if self.val_size == 0:
            self.data_train, self.data_val = TensorBatchDataset(train_x, train_y), self.data_test
        else:  # a seeded random val_size of the training split, held out; both sorted
            perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(self.split_seed))
            val_idx, train_idx = perm[: self.val_size].sort().values, perm[self.val_size :].sort().values
            self.data_train = TensorBatchDataset(train_x[train_idx], train_y[train_idx])
            self.data_val = TensorBatchDataset(train_x[val_idx], train_y[val_idx])
        val = f"{len(self.data_val)} held out for validation" if self.val_size else f"validation on the {len(self.data_test)} test images"
        log.info(
            "Data: %d training images (%s), %d test images, %d classes, %dx%d %s, from %s (train: %s/, test: %s/)",
            len(self.data_train), val, len(self.data_test), len(self.classes), self.image_size,
            self.image_size, "grey" if self.channels == 1 else "colour", self.data_dir, train_root.name, test_root.name,
        )

    def _loader(self, dataset: TensorBatchDataset, shuffle: bool) -> DataLoader:
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if self.on_device and device is not None and device.type != "cpu" and dataset.images.device != device:
            dataset.images, dataset.labels = dataset.images.to(device), dataset.labels.to(device)  # once (each DDP rank its own)
        sampler = None
        if shuffle and (self.trainer is None or self.trainer.world_size == 1):
            # one process: an order a mid-epoch resume can reproduce. Under DDP, Lightning puts in
            # its DistributedSampler (also seeded by epoch), and a resume restarts the epoch.
            sampler, shuffle = EpochShuffle(len(dataset), torch.initial_seed()), False
            self.position = (-1, 0)  # a new fit (an lr_find's batches do not count)
            if self.resume_at is not None:
                epoch, batches = self.resume_at
                sampler.skip, self.resume_at = (epoch, batches * self.batch_size), None
                self.position = (epoch, batches)
        workers = self.num_workers if dataset.images.device.type == "cpu" else 0  # workers cannot index a GPU's tensors
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=self.drop_last and dataset is self.data_train,  # every val/test image counts
            num_workers=workers,
            collate_fn=batch_as_is,
            # its own generator for the per-iterator seed, which would otherwise be drawn from torch's
            # global one: a resumed run then draws dropout and augmentation as an unstopped one does
            generator=torch.Generator().manual_seed(0),
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def state_dict(self) -> dict:
        """Saved in every checkpoint: the classes (predict.py names its answers by them, a resume
        checks them) and how far into its epoch training was, for a checkpoint written mid-epoch."""
        state: dict = {"classes": list(self.classes), "image_size": self.image_size, "channels": self.channels,
                       "mean": self.mean, "std": self.std}
        if self.trainer is not None and self.trainer.training and self.position[0] == self.trainer.current_epoch:
            state["epoch"], state["batches_done"] = self.position
        return state

    def load_state_dict(self, state: dict) -> None:
        saved = tuple(state.get("classes", ()))
        if saved and self.classes and saved != tuple(self.classes):
            raise DataError(
                f"The checkpoint was trained on the classes {list(saved)}, but {self.data_dir} holds "
                f"{list(self.classes)}. Resume with the data the run was trained on (data.data_dir=...)."
            )
        if state.get("batches_done"):
            self.resume_at = (state["epoch"], state["batches_done"])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        training = self.trainer is not None and self.trainer.training
        if training:  # Lightning moves each training batch just before its step: count it
            epoch, done = self.position
            self.position = (self.trainer.current_epoch, done + 1 if epoch == self.trainer.current_epoch else 1)
        augment = self.augment if training else None
        return to_model_input(x, self.model_channels, self.normalize, self.mean, self.std, augment), y
