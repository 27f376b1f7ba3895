"""The training order: a permutation per epoch that a run resumed mid-epoch can take up again."""

from __future__ import annotations

import torch


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
