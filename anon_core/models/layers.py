"""The few ViT building blocks the models need, with timm's module names (so timm / VideoMAE checkpoints map onto
them key for key) but without importing timm at run time: `import timm` pulls in torchvision and torch._dynamo,
about 1.5 CPU-seconds in every process that loads a model, and each Ray actor is a new process."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DropPath", "Mlp", "resample_abs_pos_embed", "trunc_normal_"]

trunc_normal_ = nn.init.trunc_normal_  # truncated at mean +- 2 (absolute), as timm's


class DropPath(nn.Module):
    """Stochastic depth (arXiv 1603.09382): in training, drop a sample's whole residual branch with probability p
    and scale the survivors by 1 / (1 - p); the identity at inference."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, ..., 1)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout: the transformer block's feed-forward (keys fc1.*, fc2.*)."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: type[nn.Module] = nn.GELU,
                 drop: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


def resample_abs_pos_embed(posemb: torch.Tensor, new_size: list[int], old_size: list[int],
                           num_prefix_tokens: int = 0) -> torch.Tensor:  # fmt: skip
    """(1, P + h0*w0, D) -> (1, P + h1*w1, D): a 2-D position grid resized bicubically (antialiased when shrinking,
    as timm resizes image-ViT checkpoints), the P prefix tokens kept as they are."""
    if list(new_size) == list(old_size):
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim, dtype = grid.shape[-1], grid.dtype
    grid = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)  # (1, D, h0, w0)
    grid = F.interpolate(grid, size=list(new_size), mode="bicubic", antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(dtype)  # (1, h1*w1, D)
    return torch.cat([prefix, grid], dim=1)
