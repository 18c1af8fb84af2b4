"""Clip sampling: which frames make each clip, and how a frame becomes an S x S square.

Clips are T frames at stride s, non-overlapping, laid over the video from its start. With `max_clips`, that many
clips are spread evenly over the whole video rather than taken from its beginning, so the clips still cover it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipSpec:
    num_frames: int = 16  # T
    stride: int = 2  # s: take every s-th frame
    size: int = 112  # S: output clips are (T, S, S, 3)
    max_clips: int | None = None  # None: every clip that fits

    def __post_init__(self) -> None:
        errors = []
        if self.num_frames < 1:
            errors.append(f"num_frames must be >= 1, got {self.num_frames}")
        if self.stride < 1:
            errors.append(f"stride must be >= 1, got {self.stride}")
        if self.size < 8:
            errors.append(f"size must be >= 8 pixels, got {self.size}")
        if self.max_clips is not None and self.max_clips < 1:
            errors.append(f"max_clips must be None or >= 1, got {self.max_clips}")
        if errors:
            raise ValueError("invalid ClipSpec: " + "; ".join(errors))

    @property
    def span(self) -> int:
        """Frames from a clip's first to its last sampled frame, inclusive."""
        return (self.num_frames - 1) * self.stride + 1

    @property
    def window(self) -> int:
        """Frames one clip owns; consecutive clips start this far apart, so they never overlap."""
        return self.num_frames * self.stride


def plan_clip_starts(num_frames: int, spec: ClipSpec) -> np.ndarray:
    """First frame of each clip, increasing. Empty when the video is shorter than one clip's span."""
    if num_frames < spec.span:
        return np.zeros(0, dtype=np.int64)
    n = (num_frames - spec.span) // spec.window + 1
    windows = np.arange(n, dtype=np.int64)
    if spec.max_clips is not None and spec.max_clips < n:
        # evenly spread window indices, first and last included: the clips still cover the whole video
        windows = np.unique(np.round(np.linspace(0, n - 1, spec.max_clips)).astype(np.int64))
    return windows * spec.window


def clip_frame_indices(starts: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """(n_clips, T) frame indices."""
    return starts[:, None] + np.arange(spec.num_frames, dtype=np.int64)[None, :] * spec.stride


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled to `short_side`, aspect kept, never below it."""
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) -> (size, size, 3) from the centre."""
    h, w = frame.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return frame[top : top + size, left : left + size]


def static_clip(frame: np.ndarray, num_frames: int) -> np.ndarray:
    """(H, W, 3) -> (T, H, W, 3): one frame repeated T times.

    The AAM privacy loss (arXiv 2511.08666) encodes such clips: with no motion in them, whatever two static clips of
    one video share is appearance.
    """
    if frame.ndim != 3:
        raise ValueError(f"static_clip expects one (H, W, C) frame, got shape {frame.shape}")
    return np.broadcast_to(frame[None], (num_frames, *frame.shape)).copy()


def panned_clip(frame: np.ndarray, num_frames: int, rng: np.random.Generator, travel: float = 0.1) -> np.ndarray:
    """(H, W, 3) -> (T, H, W, 3): one frame seen through a camera panning at constant speed in a random direction,
    `travel` of the frame side over the clip (edges repeated where the view leaves the frame).

    Still content with no action in it, like static_clip, but visible to an encoder that only sees motion (a model
    with motion_input subtracts each clip's temporal mean, so a repeated frame reaches it as zeros): the frame's
    edges and colours move, so what two such clips of one video share is again appearance.
    """
    if frame.ndim != 3:
        raise ValueError(f"panned_clip expects one (H, W, C) frame, got shape {frame.shape}")
    h, w = frame.shape[:2]
    reach = max(1, int(np.ceil(travel * max(h, w))))
    padded = np.pad(frame, ((reach, reach), (reach, reach), (0, 0)), mode="edge")  # (H + 2r, W + 2r, C)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.linspace(-0.5, 0.5, num_frames)  # centred: the middle frame is the frame itself
    dy = np.round(reach + t * reach * np.sin(angle)).astype(int)
    dx = np.round(reach + t * reach * np.cos(angle)).astype(int)
    return np.stack([padded[y : y + h, x : x + w] for y, x in zip(dy, dx, strict=True)])
