"""uint8 images -> the model's float input: scaled, augmented, standardised; the statistics to
standardise a folder of one's own with."""

from __future__ import annotations

from typing import Callable, Sequence

import torch


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
