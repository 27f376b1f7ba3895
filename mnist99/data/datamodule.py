"""The LightningDataModule of any image folder (MNIST's PNGs by default): every split decoded once
into a uint8 tensor, batches indexed whole and made into model input on the model's device."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from mnist99 import schema
from mnist99.data.cache import load_split
from mnist99.data.splits import find_splits, folder_classes, usable_splits
from mnist99.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class ImageFolderDataModule(L.LightningDataModule):
    """A training and a test split found by name (mnist99.data.splits), one sub-folder per class.
    MNIST's PNG tree is built first where `build_mnist` is set and the folder is missing or empty;
    a folder holding anything else is never written into. val is a seeded hold-out of `val_size`
    training images (the test split when 0). Each split is decoded once into a uint8 tensor of
    `channels` x `image_size`^2 (cached in `cache_dir`); batches become floats (and training ones
    augmented) on the model's device, where `on_device` moves the tensors once (~55 MB for MNIST)."""

    def __init__(self, data_dir: str | Path, source: str | None = None, mirrors: Sequence[str] | None = None, pypi: bool = True,
                 build_mnist: bool = True, train_dir: str | None = None, test_dir: str | None = None,
                 cache_dir: str | Path | None = None, batch_size: int = 128, val_size: int = 5000, split_seed: int = 0,
                 image_size: int = 28, channels: int = 1, model_channels: int | None = None, normalize: bool = True,
                 mean: float | Sequence[float] | None = 0.1307, std: float | Sequence[float] | None = 0.3081, num_workers: int = 0,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None, on_device: bool = True,
                 on_bad_image: str = "error", drop_last: bool = False):
        super().__init__()
        model_channels = channels if model_channels is None else model_channels
        schema.check_datamodule({"channels": channels, "model_channels": model_channels, "image_size": image_size,
                                 "val_size": val_size, "batch_size": batch_size, "on_bad_image": on_bad_image})
        self.data_dir = Path(str(data_dir)).expanduser()  # a folder named 5 is read as a number by Hydra
        self.source, self.pypi, self.build_mnist = source, pypi, build_mnist
        self.mirrors = None if mirrors is None else list(mirrors)  # None: torchvision's MNIST mirrors
        self.train_dir, self.test_dir = (None if d is None else str(d) for d in (train_dir, test_dir))
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
        # Mid-epoch resume is done here: Lightning 2.6 never restores a sampler's position where
        # configure_optimizers asked for trainer.estimated_stepping_batches first (issue #20550).
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches trained) of a mid-epoch checkpoint
        self.position = (-1, 0)  # (epoch, training batches handed out in it), for mid-epoch checkpoints

    def find_classes(self) -> tuple[str, ...]:
        """The class names, found without reading an image or writing anything (the model is sized before
        the Trainer prepares the data): the training split's class folders, or MNIST's ten to be built."""
        from mnist99.data.prepare import MNIST_CLASSES

        return folder_classes(self.data_dir, self.train_dir, self.test_dir, self.build_mnist) or MNIST_CLASSES

    def prepare_data(self) -> None:
        """Build MNIST's PNG tree where meant (`build_mnist`, the folder missing or empty), else refuse a
        folder without splits. No state: Lightning runs it on one process per node."""
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
        if self.val_size >= len(train_y):
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
            # one process: an order a mid-epoch resume can reproduce (under DDP, Lightning's
            # DistributedSampler, also seeded by epoch; a resume restarts the epoch)
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
            # every val/test image counts; a last training batch of one image is dropped: BatchNorm cannot train on it
            drop_last=dataset is self.data_train and (self.drop_last or self.one_image_left(len(dataset))),
            num_workers=workers,
            collate_fn=batch_as_is,
            # its own generator for the per-iterator seed, which would otherwise be drawn from torch's
            # global one: a resumed run then draws dropout and augmentation as an unstopped one does
            generator=torch.Generator().manual_seed(0),
            persistent_workers=workers > 0,
        )

    def one_image_left(self, images: int) -> bool:
        """Would an epoch end with a batch of one image (in each DDP process's share)?"""
        world = self.trainer.world_size if self.trainer is not None else 1
        return math.ceil(images / world) % self.batch_size == 1

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def state_dict(self) -> dict:
        """In every checkpoint: the classes (a resume checks them) and, mid-epoch, how far training was."""
        state: dict = {"classes": list(self.classes), "image_size": self.image_size, "channels": self.channels,
                       "mean": self.mean, "std": self.std}
        if self.trainer is not None and self.trainer.training and self.position[0] == self.trainer.current_epoch:
            state["epoch"], state["batches_done"] = self.position
        return state

    def load_state_dict(self, state: dict) -> None:
        saved = tuple(state.get("classes", ()))
        if saved and self.classes and saved != tuple(self.classes):
            raise DataError(f"The checkpoint was trained on the classes {list(saved)}, but {self.data_dir} holds "
                            f"{list(self.classes)}. Resume with the data the run was trained on (data.data_dir=...).")
        if state.get("batches_done"):
            self.resume_at = (state["epoch"], state["batches_done"])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        training = self.trainer is not None and self.trainer.training
        if training:  # Lightning moves each training batch just before its step: count it
            epoch, done = self.position
            self.position = (self.trainer.current_epoch, done + 1 if epoch == self.trainer.current_epoch else 1)
        augment = self.augment if training else None
        x = to_model_input(x, self.model_channels, self.normalize, self.mean, self.std, augment)
        # 64-true, 16-true, bf16-true: the model's own dtype (Lightning converts the batch before this hook, when it was uint8)
        return (self.trainer.precision_plugin.convert_input(x) if self.trainer is not None else x), y


class TensorBatchDataset(torch.utils.data.Dataset):
    """Images and labels as tensors, fetched a whole batch at a time (DataLoader's `__getitems__`):
    one indexing operation a batch instead of one Python call per image."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: Sequence[int]):
        idx = torch.as_tensor(indices).to(self.images.device, non_blocking=True)
        return self.images[idx], self.labels[idx]


def batch_as_is(batch):
    """The DataLoader's collate_fn: `__getitems__` made the batch already."""
    return batch


class EpochShuffle(torch.utils.data.Sampler):
    """A permutation per epoch drawn from (seed, epoch) alone, so that a run resumed mid-epoch sees
    the order an unstopped one does; `skip` drops the indices of one epoch it trained on already."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0
        self.skip: tuple[int, int] | None = None  # (epoch, indices to drop)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) % 2**63))
        if self.skip and self.skip[0] == self.epoch:
            perm = perm[self.skip[1] :]
            self.skip = None
        return iter(perm.tolist())


def to_model_input(images: torch.Tensor, channels: int = 1, normalize: bool = True, mean: float | Sequence[float] = 0.1307,
                   std: float | Sequence[float] = 0.3081, augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) (or (B, H, W)) -> float (B, channels, H, W): scaled to [0, 1], augmented,
    optionally standardised (one mean and std, or one per channel), a grey channel repeated as needed."""
    x = (images.unsqueeze(1) if images.dim() == 3 else images).float().div_(255)
    if augment is not None:
        x = augment(x)
    if normalize:
        per_channel = lambda v: v if isinstance(v, (int, float)) else torch.tensor(list(v), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)  # noqa: E731
        x = x.sub_(per_channel(mean)).div_(per_channel(std))
    return x.expand(-1, channels, -1, -1) if x.shape[1] == 1 and channels != 1 else x


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images scaled to [0, 1] (data.mean=null)."""
    sums = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(sums)
    for chunk in images.split(4096):  # float64 a chunk at a time: no copy of the whole split
        x = chunk.to(torch.float64).div_(255)
        sums += x.sum((0, 2, 3))
        squares += x.square().sum((0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = sums / n
    std = (squares / n - mean.square()).clamp_min(1e-12).sqrt()
    return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]
