"""Pixel-domain anonymization baselines: the simple comparisons of arXiv 2511.08666 and arXiv 2603.26336 (Gaussian
blur, downsampling x2 and x4, blackening of the actor), written from the papers' description, not from their code.

Every baseline maps clips (N, T, H, W, 3) uint8 to clips of the same shape and dtype, and never writes into its
input (Ray hands read-only arrays).

- `gaussian_blur`: sigma is a fraction of the frame's short side, so the same setting removes the same detail
  (relative to a face or a body, which fill a fixed fraction of the frame) at 112 px as at 224 px; a fixed sigma in
  pixels would anonymize less the higher the resolution.
- `downsample`: area-average down by an integer factor, then nearest back up: what a low-resolution camera gives.
- `blacken`: the papers black out the actor found by a person detector. We have no detector weights (and cannot
  download any), so the actor is found as what moves: see `blacken_boxes` for the rule and its limits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F

_BLUR_FRAMES = 256  # frames blurred at once: bounds the float32 copy (256 x 112 x 112 x 3 x 4 B = 39 MB)
_MIN_THRESHOLD = 12.0  # grey levels: below this, a difference is sensor or compression noise
_MAD_FACTOR = 4.0
_MIN_CELL_FRACTION = 1 / 16  # of a patch's pixels that must move in one frame for the patch to count as moving


def _check_clips(clips: np.ndarray) -> np.ndarray:
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
        raise ValueError(
            f"clips must be (N, T, H, W, 3) uint8, got {clips.shape} {clips.dtype}; decode with ClipSpec to get them"
        )
    return clips


def gaussian_sigma(height: int, width: int, sigma_frac: float = 0.04) -> float:
    """The blur's sigma in pixels for frames of this size: sigma_frac of the short side."""
    return sigma_frac * min(height, width)


def _reflect(index: torch.Tensor, n: int) -> torch.Tensor:
    """Indices outside [0, n) mirrored back in, edge pixel not repeated (torch's "reflect" padding; repeated
    reflection, so a kernel wider than the frame still works)."""
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    index = index.remainder(period)
    return torch.where(index > n - 1, period - index, index)


def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """(n, n) M with `row @ M` = the row convolved with a Gaussian (radius ceil(3 sigma), 99.7% of its mass) under
    reflect padding: the padding is folded into the matrix."""
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1)
    k = torch.exp(-0.5 * (offsets / sigma) ** 2)
    k = k / k.sum()  # (K,)
    src = _reflect(torch.arange(n)[:, None] + offsets, n)  # (n, K): input pixel read by each output pixel
    dst = torch.arange(n)[:, None].expand_as(src)
    m = torch.zeros(n, n)
    m.index_put_((src.reshape(-1), dst.reshape(-1)), k.repeat(n), accumulate=True)
    return m


def gaussian_blur(clips: np.ndarray, sigma_frac: float = 0.04) -> np.ndarray:
    """Separable Gaussian blur of every frame: sigma = sigma_frac * min(H, W) px, radius ceil(3 sigma), reflect
    padding (edges keep their colour instead of fading to black)."""
    clips = _check_clips(clips)
    if not sigma_frac > 0:
        raise ValueError(f"sigma_frac must be > 0, got {sigma_frac}; use 0.04 (the default) for a standard blur")
    n, t, h, w, _ = clips.shape
    if clips.size == 0:
        return clips.copy()
    sigma = gaussian_sigma(h, w, sigma_frac)
    # Each axis's convolution is one matrix product with a banded (n, n) matrix: the same arithmetic as a grouped
    # conv2d, but PyTorch's CPU depthwise conv runs it about 3x slower than a GEMM at these sizes.
    mh, mw = _blur_matrix(h, sigma), _blur_matrix(w, sigma)
    flat = clips.reshape(n * t, h, w, 3)
    out = np.empty_like(flat)
    with torch.inference_mode():
        for a in range(0, n * t, _BLUR_FRAMES):
            x = torch.from_numpy(flat[a : a + _BLUR_FRAMES].astype(np.float32))  # (B, H, W, 3)
            b = len(x)
            x = torch.matmul(mh.T, x.view(b, h, w * 3))  # (B, H, W*3): along H
            x = torch.einsum("nwc,wv->nvc", x.view(b * h, w, 3), mw)  # (B*H, W, 3): along W
            out[a : a + b] = x.round_().clamp_(0, 255).to(torch.uint8).view(b, h, w, 3).numpy()
    return out.reshape(clips.shape)


def _nearest_exact(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel, sampled at the output pixel's centre (torch's "nearest-exact"): blocks
    sit symmetric when the sizes do not divide, where plain "nearest" shifts them all to one side."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def downsample(clips: np.ndarray, factor: int) -> np.ndarray:
    """Area-average every frame down to round(H / factor) x round(W / factor) (no crop: sizes need not divide), then
    nearest back up to H x W. `factor` is an int >= 2."""
    if isinstance(factor, bool) or not isinstance(factor, Integral) or factor < 2:
        raise ValueError(f"factor must be an int >= 2, got {factor!r}; use 2 or 4 (the 'down2' / 'down4' baselines)")
    clips = _check_clips(clips)
    n, t, h, w, _ = clips.shape
    if clips.size == 0:
        return clips.copy()
    small = (max(1, math.floor(h / factor + 0.5)), max(1, math.floor(w / factor + 0.5)))  # round half up
    with torch.inference_mode():
        x = torch.from_numpy(clips.reshape(n * t, h, w, 3).astype(np.float32))  # (B, H, W, 3)
        x = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), small)  # (B, 3, h', w'): area average
        # the low-resolution camera's own uint8 pixels, enlarged by copying (a uint8 gather: cheap)
        lo = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (B, h', w', 3)
        up = lo.index_select(1, torch.from_numpy(_nearest_exact(small[0], h)))  # (B, H, w', 3)
        up = up.index_select(2, torch.from_numpy(_nearest_exact(small[1], w)))  # (B, H, W, 3)
        return up.numpy().reshape(clips.shape)


def _auto_threshold(diff: np.ndarray) -> float:
    """max(12, median + 4 * MAD) of a clip's difference values: the bulk of the pixels are static background, so
    median and MAD describe its noise, and what lies 4 MADs above it is motion. The floor of 12 grey levels keeps a
    clean, noise-free background (MAD near 0) from turning compression ripple into motion."""
    med = float(np.median(diff))
    mad = float(np.median(np.abs(diff - med)))
    return max(_MIN_THRESHOLD, med + _MAD_FACTOR * mad)


def _moving_box(clip: np.ndarray, patch: int, threshold: float | None, margin: float) -> tuple[int, int, int, int]:
    t, h, w, _ = clip.shape
    if clip.size == 0:
        return (-1, -1, -1, -1)
    background = np.median(clip, axis=0).astype(np.float32)  # (H, W, 3)
    diff = np.abs(clip.astype(np.float32) - background).max(axis=-1)  # (T, H, W)
    thr = _auto_threshold(diff) if threshold is None else float(threshold)
    moving = diff > thr  # (T, H, W)
    # A lone pixel over the threshold is noise: a pixel counts only inside a patch where enough pixels move in the
    # same frame. Without this one hot pixel would stretch the box to the frame's corner.
    gh, gw = -(-h // patch), -(-w // patch)
    padded = np.zeros((t, gh * patch, gw * patch), dtype=np.float32)
    padded[:, :h, :w] = moving
    real = np.zeros((gh * patch, gw * patch), dtype=np.float32)
    real[:h, :w] = 1
    count = padded.reshape(t, gh, patch, gw, patch).sum(axis=(2, 4))  # (T, gh, gw)
    area = real.reshape(gh, patch, gw, patch).sum(axis=(1, 3))  # (gh, gw): a border patch may be partial
    cells = count >= _MIN_CELL_FRACTION * area  # (T, gh, gw)
    cell_pixels = cells.repeat(patch, axis=1).repeat(patch, axis=2)[:, :h, :w]  # (T, H, W)
    ys, xs = np.nonzero((moving & cell_pixels).any(axis=0))
    if len(ys) == 0:
        return (-1, -1, -1, -1)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    dy, dx = math.ceil(margin * (y1 - y0)), math.ceil(margin * (x1 - x0))
    return (max(0, y0 - dy), max(0, x0 - dx), min(h, y1 + dy), min(w, x1 + dx))


def blacken_boxes(
    clips: np.ndarray, patch: int = 16, threshold: float | None = None, margin: float = 0.25
) -> np.ndarray:
    """-> (N, 4) int64 (y0, x0, y1, x1), end-exclusive: the box `blacken` sets to black in each clip; -1 where
    nothing moved.

    The actor is what moves. Per clip: the background is the per-pixel temporal median (right wherever the actor
    covers a pixel for less than half the clip); a pixel moves in a frame where the largest of its three channel
    differences to the background exceeds `threshold` (None: max(12, median + 4 * MAD) of the clip's differences);
    only pixels in a `patch` x `patch` cell where at least 1/16 of the pixels move in that frame count, so isolated
    noise does not. The box bounds every counted pixel of every frame, grown by `margin` x its height / width on
    each side and clipped to the frame.

    Limits, all erring towards blacking out more: a moving camera or a lighting change moves everything, and the
    box becomes (nearly) the whole frame; several movers share one box. An actor standing still for more than half
    the clip is background, and only its moving parts are boxed.
    """
    clips = _check_clips(clips)
    if isinstance(patch, bool) or not isinstance(patch, Integral) or patch < 1:
        raise ValueError(f"patch must be an int >= 1, got {patch!r}; use 16 (the default)")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}; use 0.25 (the default)")
    boxes = np.full((len(clips), 4), -1, dtype=np.int64)
    for i, clip in enumerate(clips):
        boxes[i] = _moving_box(clip, int(patch), threshold, margin)
    return boxes


def blacken(clips: np.ndarray, patch: int = 16, threshold: float | None = None, margin: float = 0.25) -> np.ndarray:
    """Each clip with its `blacken_boxes` box set to 0 in every frame; a clip where nothing moved is unchanged."""
    boxes = blacken_boxes(clips, patch=patch, threshold=threshold, margin=margin)
    out = np.array(clips)
    for clip, (y0, x0, y1, x1) in zip(out, boxes, strict=True):
        if y0 >= 0:
            clip[:, y0:y1, x0:x1] = 0
    return out


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "blur": gaussian_blur,
    "down2": partial(downsample, factor=2),
    "down4": partial(downsample, factor=4),
    "blacken": blacken,
}


def apply_baseline(name: str, clips: np.ndarray) -> np.ndarray:
    """The baseline `name` (a key of BASELINES) applied to clips (N, T, H, W, 3) uint8."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name](clips)
