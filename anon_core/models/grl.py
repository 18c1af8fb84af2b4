"""Gradient reversal and the DANN coefficient schedule (Ganin & Lempitsky, arXiv 1409.7495).

The privacy head sits behind a gradient reversal layer: the head itself learns to predict privacy attributes,
while everything before the layer receives the negated gradient and learns to make them unpredictable.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GradientReversal", "GradientReversalLayer", "dann_coefficient", "grad_reverse"]


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by -coeff."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = float(coeff)
        return x.view_as(x)  # a view, so autograd records this node instead of passing x through untouched

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output * -ctx.coeff, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, coeff)


class GradientReversalLayer(nn.Module):
    """Module form; set `coeff` each step from `dann_coefficient(progress)`."""

    def __init__(self, coeff: float = 1.0):
        super().__init__()
        self.coeff = coeff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.coeff)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}"


def dann_coefficient(progress: float) -> float:
    """2 / (1 + exp(-10 p)) - 1 for training progress p in [0, 1]: 0 at the start, ~1 at the end.

    Starting at 0 lets the privacy head learn something before the backbone is pushed against it.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must lie in [0, 1] (step / total_steps), got {progress}")
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0
