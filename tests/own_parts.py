"""A user's own parts, as a package of theirs would hold them: a LightningModule that takes only its own
keys, and a LightningDataModule without mnist99's keys (tests/test_extending.py builds runs of them)."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mnist99.models.classifier import ClassifierBase


class TinyModel(ClassifierBase):
    """Its own net and optimizer (no optimizer or schedule of the run's), mnist99's metrics."""

    def __init__(self, hidden: int = 32, lr: float = 0.1):
        super().__init__(num_classes=10)
        self.lr = lr
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class BlockDigits(L.LightningDataModule):
    """Ten classes of 28x28 noise, each with a bright block where its label says (conftest's
    synthetic digits, made in memory): no folders, no find_classes()."""

    def __init__(self, batch_size: int = 32, n: int = 400):
        super().__init__()
        self.batch_size, self.n = batch_size, n

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        y = torch.arange(self.n) % 10
        x = torch.rand(self.n, 1, 28, 28, generator=g) * 0.2
        for i, label in enumerate(y.tolist()):
            r, c = divmod(label, 4)
            x[i, 0, 2 + 8 * r : 8 + 8 * r, 2 + 6 * c : 8 + 6 * c] = 1.0
        self.train_set, self.test_set = TensorDataset(x[80:], y[80:]), TensorDataset(x[:80], y[:80])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.batch_size)
