"""The LightningDataModule: MNIST as folders of PNGs, decoded once into uint8 tensors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from mnist99.data.cache import load_split
from mnist99.data.pngtree import list_split
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


def _grey_uint8(img) -> torch.Tensor:
    """PIL image -> uint8 (H, W): the classic path yields exactly what the tensor path indexes."""
    return torch.from_numpy(np.asarray(img.convert("L"), dtype=np.uint8).copy())


def image_folder(root: Path):
    """torchvision's ImageFolder on `root`, decoding one PNG per `__getitem__` (the classic path),
    its samples put in the tensor path's order so that both make the same hold-out split."""
    from torchvision.datasets import ImageFolder

    listing = list_split(root)  # the same checks and order as the tensor path
    ds = ImageFolder(str(root), transform=_grey_uint8)
    ds.samples = ds.imgs = [(str(root / f), label) for f, label in zip(listing.files, listing.labels)]
    ds.targets = list(listing.labels)
    return ds, listing.classes


def to_model_input(
    images: torch.Tensor,
    channels: int = 1,
    normalize: bool = True,
    mean: float = 0.1307,
    std: float = 0.3081,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """uint8 (B, H, W) -> float (B, channels, H, W): scaled to [0, 1], augmented (training only),
    optionally standardised, the grey channel repeated when the model wants more than one."""
    x = images.unsqueeze(1).float().div_(255)
    if augment is not None:
        x = augment(x)
    if normalize:
        x = x.sub_(mean).div_(std)
    return x.expand(-1, channels, -1, -1) if channels != 1 else x


class MNISTDataModule(L.LightningDataModule):
    """`data_dir/training/<class>/*.png` and `data_dir/testing/<class>/*.png`.

    train = training minus a seeded hold-out of `val_size` images, val = that hold-out (or
    testing when val_size is 0), test = testing. Batches travel as uint8 and become floats on the
    model's device (`on_after_batch_transfer`), where training batches are also augmented.

    `loader="tensor"` (default): every split decoded once into a uint8 tensor (cached), batches
    indexed whole; with `on_device=True` the tensors move to the accelerator once (~55 MB) and a
    batch never crosses the bus. `loader="imagefolder"`: torchvision's ImageFolder + DataLoader
    with `num_workers`, one PNG decoded per image per epoch, for comparison.
    """

    def __init__(
        self,
        data_dir: str | Path,
        source: str | None = None,
        mirrors: Sequence[str] | None = None,
        pypi: bool = True,
        batch_size: int = 128,
        val_size: int = 5000,
        split_seed: int = 0,
        channels: int = 1,
        normalize: bool = True,
        mean: float = 0.1307,
        std: float = 0.3081,
        num_workers: int = 0,
        image_size: int = 28,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        loader: str = "tensor",
        on_device: bool = True,
        on_bad_image: str = "error",
        drop_last: bool = False,
    ):
        super().__init__()
        self.data_dir = Path(data_dir).expanduser()
        self.source, self.pypi = source, pypi
        self.mirrors = None if mirrors is None else list(mirrors)  # None: torchvision's MNIST mirrors
        self.batch_size, self.val_size, self.split_seed = batch_size, val_size, split_seed
        self.channels, self.normalize, self.mean, self.std = channels, normalize, mean, std
        self.num_workers, self.image_size = num_workers, image_size
        self.augment = augment or None  # an empty config ({}) means none
        if loader not in ("tensor", "imagefolder"):
            raise ConfigError(
                f"data.loader={loader!r} is not a loader: use data.loader=tensor (decoded once, the fast "
                "path) or data.loader=imagefolder (torchvision's classic per-image path)."
            )
        if on_bad_image not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_image={on_bad_image!r}: use error (stop at the first unusable image, "
                              "naming it) or skip (leave unusable images out and report how many).")
        if on_bad_image == "skip" and loader == "imagefolder":
            raise ConfigError("data.on_bad_image=skip needs data.loader=tensor: the imagefolder loader reads each "
                              "image while training and cannot leave one out beforehand.")
        self.loader, self.on_device, self.on_bad_image = loader, on_device, on_bad_image
        self.drop_last = drop_last
        self.skipped: tuple[str, ...] = ()  # unusable images left out (on_bad_image=skip)
        self.classes: tuple[str, ...] = ()
        self.data_train = self.data_val = self.data_test = None
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches trained) of a mid-epoch checkpoint
        self.position = (-1, 0)  # (epoch, training batches handed out in it), for mid-epoch checkpoints

    def prepare_data(self) -> None:
        if (self.data_dir / "training").is_dir() and (self.data_dir / "testing").is_dir():
            return
        from mnist99.data.prepare import prepare_mnist_png

        prepare_mnist_png(self.data_dir, source=self.source, mirrors=self.mirrors, pypi=self.pypi)

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        if self.loader == "imagefolder":
            return self._setup_image_folder()
        train_x, train_y, classes, train_skipped = load_split(self.data_dir / "training", self.image_size, self.on_bad_image)
        test_x, test_y, test_classes, test_skipped = load_split(self.data_dir / "testing", self.image_size, self.on_bad_image)
        self.skipped = train_skipped + test_skipped
        self._check(classes, test_classes, len(train_y))
        self.classes = classes
        self.data_test = TensorBatchDataset(test_x, test_y)
        if self.val_size == 0:
            self.data_train, self.data_val = TensorBatchDataset(train_x, train_y), self.data_test
        else:
            val_idx, train_idx = self._hold_out(len(train_y))
            self.data_train = TensorBatchDataset(train_x[train_idx], train_y[train_idx])
            self.data_val = TensorBatchDataset(train_x[val_idx], train_y[val_idx])
        self._log_sizes()

    def _setup_image_folder(self) -> None:
        train, classes = image_folder(self.data_dir / "training")
        self.data_test, test_classes = image_folder(self.data_dir / "testing")
        self._check(classes, test_classes, len(train))
        self.classes = classes
        if self.val_size == 0:
            self.data_train, self.data_val = train, self.data_test
        else:
            val_idx, train_idx = self._hold_out(len(train))
            self.data_train, self.data_val = Subset(train, train_idx.tolist()), Subset(train, val_idx.tolist())
        self._log_sizes()

    def _hold_out(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(val indices, train indices): a seeded random `val_size` of n, each sorted."""
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        return perm[: self.val_size].sort().values, perm[self.val_size :].sort().values

    def _check(self, classes, test_classes, n_train: int) -> None:
        if classes != test_classes:
            raise DataError(
                f"The class folders differ between {self.data_dir / 'training'} {list(classes)} and "
                f"{self.data_dir / 'testing'} {list(test_classes)}; both splits need the same classes."
            )
        if not 0 <= self.val_size < n_train:
            raise ConfigError(
                f"data.val_size={self.val_size} is impossible: {self.data_dir / 'training'} holds "
                f"{n_train} images, and val_size must be at least 0 and less than that "
                "(0 validates on testing/)."
            )

    def _log_sizes(self) -> None:
        log.info(
            "Data: %d train, %d val, %d test images, %d classes from %s",
            len(self.data_train), len(self.data_val), len(self.data_test), len(self.classes), self.data_dir,
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
        state: dict = {"classes": list(self.classes)}
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
        return to_model_input(x, self.channels, self.normalize, self.mean, self.std, augment), y
