"""Anonymizing Adapter Module (AAM): latent anonymization of frozen video-encoder features (arXiv 2511.08666).

"Privacy Beyond Pixels: Latent Anonymization for Privacy-Preserving Video Understanding" (Fioresi, Dave, Shah).
A frozen encoder f_E turns each 16-frame clip into one pooled d-dim vector h; the adapter f_A maps the clips of a
video to anonymized vectors of the same shape. f_A is a stack of residual multi-head self-attention layers,
x = MHA(x, x, x) + x [3 layers, 8 heads, width d], trained with `anon_core.losses.aam_objective`.

Choices made here (each a knob):
- Attention runs over the clips of ONE video, never across videos: input is (videos, clips, d) with a padding mask
  (videos, clips), True = real clip. Padded keys are masked out, so a clip's output does not depend on which other
  videos share its batch or on how far they are padded. (The published code attends across whatever the batch
  holds.) Outputs at padded positions are set to exactly zero, and padded inputs are zeroed before use, so even
  NaN padding cannot leak into real clips. A video with no real clip at all gives an all-zero row, not NaN.
- Static clips (for L_B) go through `forward_static`: each is its own one-clip video, so attention reduces to a
  per-clip map and the two views of a video never see each other or other videos.
- Normalisation: the published module is plain residual MHA with no LayerNorm, and that is the default
  (`norm="none"`). `norm="pre"` gives the pre-norm variant x = MHA(LN(x)) + x for encoders with large feature scale.
- Private-attribute erasure (`erase=True`, not in the paper): a closed-form linear eraser
  (`anon_core.models.erasure`) after the last layer, fitted on the trained adapter's outputs of the training videos
  and their private labels; the loop trains with it off (`forward(..., erase=False)`), anonymize runs with it on.
- Identity start: the paper warm-starts f_A by training it to reconstruct its input (`warm_start_identity`).
  `init="zero_out"` instead zeroes each layer's output projection, which makes f_A exactly the identity at step 0;
  it is an option, not the published recipe.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anon_core.losses import latent_consistency

from .erasure import LinearEraser

Norm = Literal["none", "pre"]
Init = Literal["xavier", "zero_out"]


class AdapterAttention(nn.Module):
    """Multi-head self-attention over the clips of each video; padded keys get zero weight."""

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}; pick num_heads dividing {dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        v_, c_, d_ = x.shape
        qkv = self.qkv(x).reshape(v_, c_, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, V, H, C, hd)
        q, k, v = qkv.unbind(0)  # each (V, H, C, hd)
        attn_mask = key_valid[:, None, None, :]  # (V, 1, 1, C): True = this key may be attended
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (V, H, C, hd)
        out = out.transpose(1, 2).reshape(v_, c_, d_)  # (V, C, D)
        return self.proj(out)


class AdapterBlock(nn.Module):
    """One residual attention layer: x + MHA(x) (published), or x + MHA(LN(x)) with norm="pre"."""

    def __init__(self, *, dim: int, num_heads: int, norm: Norm = "none") -> None:
        super().__init__()
        if norm not in ("none", "pre"):
            raise ValueError(f"norm must be 'none' (published) or 'pre', got {norm!r}")
        self.norm = nn.LayerNorm(dim) if norm == "pre" else nn.Identity()
        self.attn = AdapterAttention(dim=dim, num_heads=num_heads)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x), key_valid)


class AnonymizingAdapter(nn.Module):
    """f_A: (videos, clips, d) features + (videos, clips) mask -> anonymized features of the same shape."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int = 3,
        num_heads: int = 8,
        norm: Norm = "none",
        init: Init = "xavier",
        erase: bool = False,
    ) -> None:
        super().__init__()
        if dim < 1 or depth < 1 or num_heads < 1:
            raise ValueError(f"dim, depth and num_heads must be >= 1, got dim={dim} depth={depth} heads={num_heads}")
        if init not in ("xavier", "zero_out"):
            raise ValueError(f"init must be 'xavier' or 'zero_out', got {init!r}")
        self.dim = dim
        self.blocks = nn.ModuleList(AdapterBlock(dim=dim, num_heads=num_heads, norm=norm) for _ in range(depth))
        for block in self.blocks:
            # like torch.nn.MultiheadAttention: xavier weights, zero biases
            nn.init.xavier_uniform_(block.attn.qkv.weight)
            nn.init.zeros_(block.attn.qkv.bias)
            nn.init.xavier_uniform_(block.attn.proj.weight)
            nn.init.zeros_(block.attn.proj.bias)
            if init == "zero_out":
                nn.init.zeros_(block.attn.proj.weight)
        self.eraser = LinearEraser(dim) if erase else None  # the identity until fitted

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, erase: bool = True) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(
                f"expected (videos, clips, {self.dim}) features, got {tuple(x.shape)}; "
                "group a flat (n_clips, d) array with pack_clips or call forward_flat"
            )
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if mask.shape != x.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool of shape {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
        real = mask[..., None]  # (V, C, 1)
        # padded values would reach real clips as 0 * NaN through the attention weights, so clear them first
        x = torch.where(real, x, torch.zeros((), dtype=x.dtype, device=x.device))
        # a video with no real clip would softmax over nothing; recent CPU kernels return 0 there but not every
        # backend does, so let it see its (zero) keys: no NaN anywhere, and its output is cleared below
        key_valid = mask | ~mask.any(dim=1, keepdim=True)
        for block in self.blocks:
            x = torch.where(real, block(x, key_valid), torch.zeros((), dtype=x.dtype, device=x.device))
        if erase and self.eraser is not None:
            x = torch.where(real, self.eraser(x), torch.zeros((), dtype=x.dtype, device=x.device))
        return x

    def forward_static(self, z: torch.Tensor, erase: bool = True) -> torch.Tensor:
        """(N, d) static-clip embeddings -> (N, d); each is its own one-clip video, so none sees another."""
        return self(z[:, None, :], erase=erase)[:, 0, :]  # (N, 1, D) -> (N, D)

    def forward_flat(self, h: torch.Tensor, video_ids: np.ndarray | list) -> torch.Tensor:
        """(n_clips, d) features with a video id per clip -> (n_clips, d), same row order."""
        x, mask, packing = pack_clips(h, video_ids)
        return unpack_clips(self(x, mask), packing)


@dataclass(frozen=True)
class ClipPacking:
    """Where each clip of a flat array sits in the packed (videos, max_clips, d) batch."""

    video_row: np.ndarray  # (n_clips,) row of its video in the packed batch
    slot: np.ndarray  # (n_clips,) position among its video's clips, in original order
    video_ids: np.ndarray  # (videos,) id of each packed row, in order of first appearance
    max_clips: int


def pack_clips(features, video_ids) -> tuple:
    """Flat (n_clips, d) features + per-clip video ids -> (videos, max_clips, d), (videos, max_clips) mask, packing.

    Videos are rows in order of first appearance; a video's clips keep their original relative order. Works on a
    torch tensor (returns tensors) or a NumPy array (returns arrays). Undo with `unpack_clips`.
    """
    ids = np.asarray(video_ids)
    n = len(ids)
    if features.ndim != 2 or features.shape[0] != n:
        raise ValueError(f"features must be (n_clips, d) with n_clips = len(video_ids) = {n}, got {features.shape}")
    if n == 0:
        raise ValueError("no clips to pack: features and video_ids are empty")
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # unique ids in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    video_row = rank[inverse.reshape(-1)]
    counts = np.bincount(video_row)
    by_video = np.argsort(video_row, kind="stable")
    slot = np.empty(n, dtype=np.int64)
    slot[by_video] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    packing = ClipPacking(video_row=video_row, slot=slot, video_ids=uniq[order], max_clips=int(counts.max()))
    shape = (len(order), packing.max_clips, features.shape[1])
    if isinstance(features, torch.Tensor):
        rows, slots = torch.as_tensor(video_row, device=features.device), torch.as_tensor(slot, device=features.device)
        packed = features.new_zeros(shape)
        mask = torch.zeros(shape[:2], dtype=torch.bool, device=features.device)
    else:
        rows, slots = video_row, slot
        packed = np.zeros(shape, dtype=features.dtype)
        mask = np.zeros(shape[:2], dtype=bool)
    packed[rows, slots] = features
    mask[rows, slots] = True
    return packed, mask, packing


def unpack_clips(packed, packing: ClipPacking):
    """(videos, max_clips, d) -> flat (n_clips, d) in the order `pack_clips` was given."""
    if isinstance(packed, torch.Tensor):
        rows = torch.as_tensor(packing.video_row, device=packed.device)
        return packed[rows, torch.as_tensor(packing.slot, device=packed.device)]
    return packed[packing.video_row, packing.slot]


FeatureSource = torch.Tensor | np.ndarray | Iterable


def _feature_batches(
    features: FeatureSource, mask, batch_videos: int | None, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    if isinstance(features, torch.Tensor | np.ndarray):
        x = torch.as_tensor(features)
        if x.dim() != 3:
            raise ValueError(f"warm start needs (videos, clips, d) features, got {tuple(x.shape)}; use pack_clips")
        m = None if mask is None else torch.as_tensor(mask)
        while True:
            if batch_videos is None or batch_videos >= x.shape[0]:
                yield x, m
            else:
                idx = torch.randperm(x.shape[0], generator=gen)[:batch_videos]
                yield x[idx], None if m is None else m[idx]
    if mask is not None:
        raise ValueError("mask= goes with a tensor of features; an iterable should yield (features, mask) pairs")
    reiterable = iter(features) is not features  # a list can be walked again, a generator only once
    while True:
        any_item = False
        for item in features:
            any_item = True
            if isinstance(item, tuple | list):
                yield torch.as_tensor(item[0]), torch.as_tensor(item[1])
            else:
                yield torch.as_tensor(item), None
        if not (reiterable and any_item):
            return


def warm_start_identity(
    adapter: AnonymizingAdapter,
    features: FeatureSource,
    steps: int = 300,
    lr: float = 1e-3,
    *,
    mask: torch.Tensor | np.ndarray | None = None,
    batch_videos: int | None = None,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> float:
    """Train f_A to reconstruct its input (MSE on real clips), as the paper warm-starts it; return the final loss.

    `features` is a (videos, clips, d) tensor/array (with `mask`, optionally sampled `batch_videos` at a time), or
    an iterable of such tensors or of (features, mask) pairs, walked repeatedly until `steps` steps are taken (a
    one-shot iterator stops early when exhausted). The returned loss is measured after the last update, on the
    last batch.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = next(adapter.parameters()).device
    dtype = next(adapter.parameters()).dtype
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=weight_decay)
    was_training = adapter.training
    adapter.train()
    last = None
    for _, (x, m) in zip(range(steps), _feature_batches(features, mask, batch_videos, gen), strict=False):
        x = x.to(device=device, dtype=dtype)
        m = None if m is None else m.to(device=device, dtype=torch.bool)
        loss = latent_consistency(x, adapter(x, m, erase=False), m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = (x, m)
    if last is None:
        raise ValueError("warm start got no features: the iterable was empty")
    adapter.train(was_training)
    with torch.no_grad():
        x, m = last
        return float(latent_consistency(x, adapter(x, m, erase=False), m))


# builders: each only fills in numbers


def aam_for_dim(dim: int, **kwargs) -> AnonymizingAdapter:
    """Published adapter (3 layers, 8 heads) for an encoder whose pooled feature is `dim` wide."""
    return AnonymizingAdapter(**{"dim": dim, "depth": 3, "num_heads": 8, **kwargs})


def aam_i3d(**kwargs) -> AnonymizingAdapter:
    """For I3D's 1024-d pooled feature, the paper's main encoder."""
    return aam_for_dim(1024, **kwargs)


def aam_vit_base(**kwargs) -> AnonymizingAdapter:
    """For a ViT-B video encoder's 768-d feature."""
    return aam_for_dim(768, **kwargs)


def aam_tiny(dim: int = 32, **kwargs) -> AnonymizingAdapter:
    """Small adapter for tests and CPU smoke runs."""
    return AnonymizingAdapter(**{"dim": dim, "depth": 2, "num_heads": 4, **kwargs})
