"""Keep pixels: a small copy of the anonymized clip travels with its features, for the evaluation's pixel attacker
(a fresh video model trained on what the anonymizer lets through). Runs after prune / the pixel baselines, so it
keeps exactly the pixels that leave the job; `pixels` (T', S', S', 3) uint8 with T' frames spread evenly in time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .rows import add_seconds, clip_mask, mark_failed


def shrink_clips(clips: np.ndarray, size: int, frames: int) -> np.ndarray:
    """(N, T, H, W, 3) uint8 -> (N, frames, size, size, 3) uint8: frames evenly spaced, area-averaged pixels."""
    import torch

    n, t = clips.shape[:2]
    idx = np.linspace(0, t - 1, frames).round().astype(int)  # a clip shorter than `frames` repeats some
    x = torch.from_numpy(np.ascontiguousarray(clips[:, idx])).float()  # (N, T', H, W, 3)
    x = x.permute(0, 1, 4, 2, 3).reshape(-1, 3, *clips.shape[2:4])  # (N * T', 3, H, W)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    x = x.reshape(n, len(idx), 3, size, size).permute(0, 1, 3, 4, 2)  # (N, T', S, S, 3)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


@dataclass
class KeepPixels:
    size: int = 56
    frames: int = 8

    def __post_init__(self) -> None:
        if self.size < 8 or self.frames < 1:
            raise ValueError(f"--keep-pixels needs a size >= 8 and frames >= 1, got size={self.size} "
                             f"frames={self.frames}")  # fmt: skip

    def ray_args(self) -> dict:
        return {"num_cpus": 0.25, "batch_size": 16}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        n = len(batch["video_id"])
        pixels = np.zeros((n, self.frames, self.size, self.size, 3), np.uint8)
        rows = clip_mask(batch)
        if rows.any():
            try:
                pixels[rows] = shrink_clips(np.asarray(batch["clip"])[rows], self.size, self.frames)
            except Exception as e:
                mark_failed(batch, rows, "keep pixels", e)
        batch["pixels"] = pixels
        add_seconds(batch, "t_pixels", time.perf_counter() - t0)
        return batch
