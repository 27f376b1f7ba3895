"""The LightningDataModule: a folder of images (MNIST's PNGs by default), decoded once into uint8 tensors."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset

from mnist99.data.cache import load_split
from mnist99.data.imagetree import MODES, decode_tensor, list_split
from mnist99.data.splits import LAYOUTS, describe, find_splits, is_empty
from mnist99.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class TensorBatchDataset(torch.utils.data.Dataset):
    """Images and labels as tensors, fetched a whole batch at a time (DataLoader's `__getitems__`),
    so a batch costs one indexing operation instead of one Python call per image."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: Sequence[int]):
        idx = torch.as_tensor(indices).to(self.images.device, non_blocking=True)
        return self.images[idx], self.labels[idx]


class EpochShuffle(torch.utils.data.Sampler):
    """A fresh permutation each epoch, drawn from (seed, epoch) alone, so that a run resumed in the
    middle of an epoch sees the same order as one never stopped; `skip` drops the first indices
    of one epoch, the ones a resumed run has already trained on. Lightning calls `set_epoch`."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0
        self.skip: tuple[int, int] | None = None  # (epoch, indices to drop)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) % 2**63))
        if self.skip and self.skip[0] == self.epoch:
            perm = perm[self.skip[1] :]
            self.skip = None
        return iter(perm.tolist())


def _batch_as_is(batch):
    return batch


def image_folder(root: Path, size: int = 28, channels: int = 1):
    """torchvision's ImageFolder on `root`, decoding one image per `__getitem__` (the classic path),
    its samples put in the tensor path's order so that both make the same hold-out split."""
    from torchvision.datasets import ImageFolder

    listing = list_split(root)  # the same checks and order as the tensor path
    ds = ImageFolder(str(root), loader=functools.partial(decode_tensor, size=size, channels=channels))
    ds.samples = ds.imgs = [(str(root / f), label) for f, label in zip(listing.files, listing.labels)]
    ds.targets = list(listing.labels)
    return ds, listing.classes


def _per_channel(value: float | Sequence[float], like: torch.Tensor) -> torch.Tensor | float:
    return value if isinstance(value, (int, float)) else torch.tensor(list(value), dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def to_model_input(
    images: torch.Tensor,
    channels: int = 1,
    normalize: bool = True,
    mean: float | Sequence[float] = 0.1307,
    std: float | Sequence[float] = 0.3081,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """uint8 (B, C, H, W) (or grey (B, H, W)) -> float (B, channels, H, W): scaled to [0, 1],
    augmented (training only), optionally standardised (one mean and std, or one per channel),
    a grey channel repeated when the model wants more than one."""
    x = (images.unsqueeze(1) if images.dim() == 3 else images).float().div_(255)
    if augment is not None:
        x = augment(x)
    if normalize:
        x = x.sub_(_per_channel(mean, x)).div_(_per_channel(std, x))
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


class MNISTDataModule(L.LightningDataModule):
    """A folder of images: a training split and a test split found by name (training/ + testing/,
    train/ + test/, train/ + valid/, train/ + val/, or data.train_dir / data.test_dir), each with
    one sub-folder per class. MNIST's own PNG tree is built first where `build_mnist` is set and the
    folder is missing or empty; a folder that holds anything else is never written into.

    train = the training split minus a seeded hold-out of `val_size` images, val = that hold-out
    (or the test split when val_size is 0), test = the test split. Every image is brought to
    `channels` x `image_size` x `image_size`. Batches travel as uint8 and become floats on the
    model's device (`on_after_batch_transfer`), where training batches are also augmented.

    `loader="tensor"` (default): every split decoded once into a uint8 tensor (cached in
    `cache_dir`), batches indexed whole; with `on_device=True` the tensors move to the accelerator
    once (~55 MB for MNIST) and a batch never crosses the bus. `loader="imagefolder"`:
    torchvision's ImageFolder + DataLoader with `num_workers`, one image decoded per image per
    epoch, for comparison.
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
        loader: str = "tensor",
        on_device: bool = True,
        on_bad_image: str = "error",
        drop_last: bool = False,
    ):
        super().__init__()
        self.data_dir = Path(data_dir).expanduser()
        self.source, self.pypi, self.build_mnist = source, pypi, build_mnist
        self.mirrors = None if mirrors is None else list(mirrors)  # None: torchvision's MNIST mirrors
        self.train_dir, self.test_dir = train_dir, test_dir
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        self.batch_size, self.val_size, self.split_seed = batch_size, val_size, split_seed
        if channels not in MODES:
            raise ConfigError(f"data.channels={channels!r} is impossible: use 1 (grey) or 3 (colour, RGB).")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ConfigError(f"data.image_size={image_size!r} is impossible: it must be a whole number of pixels, "
                              "1 or more (28 for MNIST); every image is resized to image_size x image_size.")
        model_channels = channels if model_channels is None else model_channels
        if channels != 1 and model_channels != channels:
            raise ConfigError(f"data.channels={channels} but the model takes {model_channels} channel(s) (model.in_channels): "
                              f"set model.in_channels={channels}, or data.channels=1 to read the images as grey.")
        self.image_size, self.channels, self.model_channels = image_size, channels, model_channels
        self.normalize, self.mean, self.std = normalize, mean, std
        self.num_workers = num_workers
        self.augment = augment or None  # an empty config ({}) means none
        if loader not in ("tensor", "imagefolder"):
            raise ConfigError(
                f"data.loader={loader!r} is not a loader: use data.loader=tensor (decoded once, the fast "
                "path) or data.loader=imagefolder (torchvision's classic per-image path)."
            )
        if on_bad_image not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_image={on_bad_image!r}: use error (stop at the first unreadable image, "
                              "naming it) or skip (leave unreadable images out and report how many).")
        if on_bad_image == "skip" and loader == "imagefolder":
            raise ConfigError("data.on_bad_image=skip needs data.loader=tensor: the imagefolder loader reads each "
                              "image while training and cannot leave one out beforehand.")
        self.loader, self.on_device, self.on_bad_image = loader, on_device, on_bad_image
        self.drop_last = drop_last
        self.skipped: tuple[str, ...] = ()  # unusable images left out (on_bad_image=skip)
        self.classes: tuple[str, ...] = ()
        self.splits: tuple[Path, Path] | None = None  # (training split, test split) folders
        self.data_train = self.data_val = self.data_test = None
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches trained) of a mid-epoch checkpoint
        self.position = (-1, 0)  # (epoch, training batches handed out in it), for mid-epoch checkpoints

    def prepare_data(self) -> None:
        """Find the splits; build MNIST's PNG tree first where that is meant (`build_mnist` set and the
        folder missing or empty); refuse, listing what is there, any other folder."""
        if self._find_splits() is not None:
            return
        if self.build_mnist and is_empty(self.data_dir):
            from mnist99.data.prepare import prepare_mnist_png

            prepare_mnist_png(self.data_dir, source=self.source, mirrors=self.mirrors, pypi=self.pypi, cache_dir=self.cache_dir)
            return
        if self.build_mnist:
            why = ("mnist99 builds MNIST only in a folder that is missing or empty, and never writes into one that "
                   "holds anything else. To train on this folder, arrange it so; to train on MNIST, point "
                   "data.data_dir at a new or empty folder")
        elif not self.data_dir.is_dir():
            why = "Point data.data_dir at your image folder"
        else:
            why = "Arrange it so, or name its splits with data.train_dir=... data.test_dir=..."
        raise DataError(
            f"{self.data_dir} holds {describe(self.data_dir)}, but no training and test split: expected {LAYOUTS}, "
            f"each with one sub-folder of images per class (data.train_dir / data.test_dir name other splits). {why}."
        )

    def _find_splits(self) -> tuple[Path, Path] | None:
        self.splits = find_splits(self.data_dir, self.train_dir, self.test_dir)
        return self.splits

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        if self.splits is None and self._find_splits() is None:
            self.prepare_data()  # a folder without splits: refused there, naming what it holds
        train_root, test_root = self.splits
        if self.loader == "imagefolder":
            return self._setup_image_folder(train_root, test_root)
        read = dict(size=self.image_size, channels=self.channels, on_bad_image=self.on_bad_image, cache_dir=self.cache_dir)
        train_x, train_y, classes, train_skipped = load_split(train_root, **read)
        test_x, test_y, test_classes, test_skipped = load_split(test_root, **read)
        self.skipped = train_skipped + test_skipped
        self._check(classes, test_classes, len(train_y))
        self.classes = classes
        self._fill_stats(train_x)
        self.data_test = TensorBatchDataset(test_x, test_y)
        if self.val_size == 0:
            self.data_train, self.data_val = TensorBatchDataset(train_x, train_y), self.data_test
        else:
            val_idx, train_idx = self._hold_out(len(train_y))
            self.data_train = TensorBatchDataset(train_x[train_idx], train_y[train_idx])
            self.data_val = TensorBatchDataset(train_x[val_idx], train_y[val_idx])
        self._log_sizes()

    def _setup_image_folder(self, train_root: Path, test_root: Path) -> None:
        train, classes = image_folder(train_root, self.image_size, self.channels)
        self.data_test, test_classes = image_folder(test_root, self.image_size, self.channels)
        self._check(classes, test_classes, len(train))
        self.classes = classes
        if self.normalize and (self.mean is None or self.std is None):
            self._fill_stats(torch.stack([train[i][0] for i in range(len(train))]))
        if self.val_size == 0:
            self.data_train, self.data_val = train, self.data_test
        else:
            val_idx, train_idx = self._hold_out(len(train))
            self.data_train, self.data_val = Subset(train, train_idx.tolist()), Subset(train, val_idx.tolist())
        self._log_sizes()

    def _fill_stats(self, train_images: torch.Tensor) -> None:
        """data.mean / data.std left null: the training split's own, per channel (saved in checkpoints)."""
        if self.normalize and (self.mean is None or self.std is None):
            mean, std = channel_stats(train_images)
            self.mean = mean if self.mean is None else self.mean
            self.std = std if self.std is None else self.std
            log.info("Normalising with the training images' own mean %s and std %s", self.mean, self.std)

    def _hold_out(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(val indices, train indices): a seeded random `val_size` of n, each sorted."""
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        return perm[: self.val_size].sort().values, perm[self.val_size :].sort().values

    def _check(self, classes, test_classes, n_train: int) -> None:
        train_root, test_root = self.splits
        if classes != test_classes:
            raise DataError(
                f"The class folders differ between {train_root} {list(classes)} and "
                f"{test_root} {list(test_classes)}; both splits need the same classes."
            )
        if not 0 <= self.val_size < n_train:
            raise ConfigError(
                f"data.val_size={self.val_size} is impossible: {train_root} holds "
                f"{n_train} images, and val_size must be at least 0 and less than that "
                f"(0 validates on the test split, {test_root.name}/)."
            )

    def _log_sizes(self) -> None:
        train_root, test_root = self.splits
        val = (f"{len(self.data_val)} held out for validation" if self.val_size else f"validation on the {len(self.data_test)} test images")
        log.info(
            "Data: %d training images (%s), %d test images, %d classes, %dx%d %s, from %s (train: %s/, test: %s/)",
            len(self.data_train), val, len(self.data_test), len(self.classes), self.image_size,
            self.image_size, "grey" if self.channels == 1 else "colour", self.data_dir, train_root.name, test_root.name,
        )

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        tensors = isinstance(dataset, TensorBatchDataset)
        if tensors:
            self._to_accelerator(dataset)
        # worker processes cannot index tensors that live on a GPU (and have nothing to do there)
        workers = 0 if tensors and dataset.images.device.type != "cpu" else self.num_workers
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
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=self.drop_last and dataset is self.data_train,  # every val/test image counts
            num_workers=workers,
            collate_fn=_batch_as_is if tensors else None,
            # its own generator for the per-iterator seed, which would otherwise be drawn from torch's
            # global one: a resumed run then draws dropout and augmentation as an unstopped one does
            generator=torch.Generator().manual_seed(0),
            persistent_workers=workers > 0,
        )

    def _to_accelerator(self, dataset: TensorBatchDataset) -> None:
        """With on_device, move a split's tensors to the trainer's device once (each DDP rank to its own)."""
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if self.on_device and device is not None and device.type != "cpu" and dataset.images.device != device:
            dataset.images, dataset.labels = dataset.images.to(device), dataset.labels.to(device)

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
