"""Models: the tubelet video ViT, the two-CLS tubelet pruner, the gradient reversal layer and the AAM."""

from .aam import (
    AnonymizingAdapter,
    aam_for_dim,
    aam_i3d,
    aam_tiny,
    aam_vit_base,
    pack_clips,
    unpack_clips,
    warm_start_identity,
)
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
    "AnonymizingAdapter",
    "aam_for_dim",
    "aam_i3d",
    "aam_tiny",
    "aam_vit_base",
    "pack_clips",
    "unpack_clips",
    "warm_start_identity",
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
