"""Augmentation of a whole batch at once, on whatever device the batch is on."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class BatchRandomAffine(nn.Module):
    """Random shift (whole pixels), rotation and scale per image, as one `grid_sample` over the batch.

    Input and output are float (B, C, H, W) images whose background is 0 (applied before
    normalisation, so the pixels moved in are background).
    """

    def __init__(self, shift: int = 0, degrees: float = 0.0, scale: tuple[float, float] = (1.0, 1.0)):
        super().__init__()
        if shift < 0 or degrees < 0 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"impossible augmentation: shift={shift}, degrees={degrees}, scale={scale}")
        self.shift, self.degrees, self.scale = int(shift), float(degrees), (float(scale[0]), float(scale[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        dev = x.device
        angle = (torch.rand(b, device=dev) * 2 - 1) * math.radians(self.degrees)
        lo, hi = self.scale
        zoom = lo + torch.rand(b, device=dev) * (hi - lo)
        dx = torch.randint(-self.shift, self.shift + 1, (b,), device=dev) * (2.0 / w)
        dy = torch.randint(-self.shift, self.shift + 1, (b,), device=dev) * (2.0 / h)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, dx], 1), torch.stack([sin, cos, dy], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def extra_repr(self) -> str:
        return f"shift={self.shift}, degrees={self.degrees}, scale={self.scale}"
