"""Images and labels held as tensors, handed out a whole batch at a time."""

from __future__ import annotations

from typing import Sequence

import torch


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


def batch_as_is(batch):
    """The DataLoader's collate_fn: `__getitems__` already made the batch."""
    return batch
