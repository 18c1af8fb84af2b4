"""Models: the tubelet video ViT, the two-CLS tubelet pruner and the gradient reversal layer."""

from .grl import GradientReversal, GradientReversalLayer, dann_coefficient, grad_reverse
from .pruner import PrunerOutput, TubeletPruner, pruner_base, pruner_loss, pruner_small, pruner_tiny
from .video_vit import (
    VideoViT,
    checkpoint_filter_fn,
    load_pretrained,
    video_vit_base,
    video_vit_small,
    video_vit_tiny,
)

__all__ = [
    "GradientReversal",
    "GradientReversalLayer",
    "PrunerOutput",
    "TubeletPruner",
    "VideoViT",
    "checkpoint_filter_fn",
    "dann_coefficient",
    "grad_reverse",
    "load_pretrained",
    "pruner_base",
    "pruner_loss",
    "pruner_small",
    "pruner_tiny",
    "video_vit_base",
    "video_vit_small",
    "video_vit_tiny",
]
