"""Label-safe clip augmentation for training: what it changes never changes what an action means.

One random resized crop per clip (the same box in every frame, so motion stays motion) and a brightness/contrast
jitter. No horizontal flip by default: it turns `walk_left` into `walk_right`, and no temporal reversal (it turns
sitting down into standing up). `hflip=True` is for label sets without direction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_clips(clips: torch.Tensor, gen: torch.Generator, scale: tuple[float, float] = (0.6, 1.0),
                  jitter: float = 0.2, hflip: bool = False) -> torch.Tensor:  # fmt: skip
    """(B, T, H, W, 3) uint8 -> (B, T, H, W, 3) float in [0, 255]; randomness from `gen` only (reproducible)."""
    B, T, H, W, _ = clips.shape
    x = clips.permute(0, 1, 4, 2, 3).float()  # (B, T, 3, H, W)
    out = torch.empty_like(x)
    u = torch.rand(B, 7, generator=gen)
    for i in range(B):
        area = scale[0] + (scale[1] - scale[0]) * float(u[i, 0])
        aspect = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(u[i, 1]))
        w = min(W, max(8, round(W * math.sqrt(area * aspect))))
        h = min(H, max(8, round(H * math.sqrt(area / aspect))))
        top, left = int(float(u[i, 2]) * (H - h + 1)), int(float(u[i, 3]) * (W - w + 1))
        crop = x[i, :, :, top : top + h, left : left + w]  # (T, 3, h, w): one box for every frame
        crop = F.interpolate(crop, size=(H, W), mode="bilinear", align_corners=False, antialias=True)
        if hflip and float(u[i, 6]) < 0.5:
            crop = crop.flip(-1)
        contrast = 1 + jitter * (2 * float(u[i, 4]) - 1)
        brightness = 1 + jitter * (2 * float(u[i, 5]) - 1)
        mean = crop.mean()
        out[i] = ((crop - mean) * contrast + mean) * brightness
    return out.clamp_(0, 255).permute(0, 1, 3, 4, 2)  # (B, T, H, W, 3)
