"""Clip models: every stage that works on a clip's pixels, in one actor, so a clip never crosses the object store
between them: [prune] -> [pixel baseline] -> [keep pixels] -> encode f_E.

Each step is the stage of its own file (PruneClips, TransformClips, KeepPixels, EncodeClips), called in turn on the
same batch, so the outputs are those of the steps run one after another, bit for bit, and each step still adds its
own busy seconds (t_prune, t_transform, t_pixels, t_encode). Only features (and kept pixels) leave the actor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .encode import EncodeClips
from .pixels import KeepPixels
from .prune import PruneClips
from .transform import TransformClips
from .workers import ModelResources


@dataclass
class ClipModels:
    encoder_uri: str
    pruner_uri: str | None = None  # None: no pruning
    keep_ratio: float | list[float] | None = None  # the pruner's knobs (None: the bundle's own)
    lambda_priv: float | None = None
    baseline: str | None = None  # a pixel baseline (anon_core.baselines) applied before encoding
    keep_pixels: int = 0  # > 0: keep a copy of the clip as it leaves the pixel steps, at this size
    resources: ModelResources = field(default_factory=ModelResources)
    counter: object = None  # a ClipCounter actor: the clips encoded, for the progress line

    def steps(self) -> list:
        """The steps in the order they run (nothing loaded yet)."""
        res = self.resources
        steps: list = []
        if self.pruner_uri is not None:
            steps.append(PruneClips(self.pruner_uri, self.keep_ratio, self.lambda_priv, res))
        if self.baseline is not None:
            steps.append(TransformClips(self.baseline))
        if self.keep_pixels:
            steps.append(KeepPixels(self.keep_pixels))
        steps.append(EncodeClips(self.encoder_uri, res, self.pruner_uri, self.counter))
        return steps

    def describe(self) -> str:
        names = {PruneClips: "prune", TransformClips: f"pixel baseline {self.baseline}", KeepPixels: "keep pixels",
                 EncodeClips: "encode f_E"}  # fmt: skip
        return " -> ".join(names[type(s)] for s in self.steps())

    def ray_args(self) -> dict:
        return self.resources.ray_args()

    def setup(self) -> None:
        if getattr(self, "_steps", None) is not None:
            return
        steps = self.steps()
        for s in steps:
            if hasattr(s, "setup"):
                s.setup()
        self._steps = steps

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.setup()
        for step in self._steps:
            batch = step(batch)
        return batch
