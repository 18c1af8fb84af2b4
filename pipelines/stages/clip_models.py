"""Clip models: every stage that works on a clip's pixels, in one actor, so a clip never crosses the object store
between them: [decode] -> [prune] -> [pixel baseline] -> [keep pixels] -> encode f_E.

With `decode` set, the actor takes segment rows and decodes them itself (in its decoder child process, so a decoder
crash still costs one video), then runs the models on each block of clips as it comes: clips never enter the object
store at all. The pipeline does that when the models run on CPU (AnonymizeConfig.decode_in_model_actor): each actor is
then a busy single-thread loop, decoding or computing, and the cores go to the work instead of moving clips between
processes. With the models on a GPU, decode stays in its own tasks, so decoding never leaves the GPU waiting.

Each step is the stage of its own file (PruneClips, TransformClips, KeepPixels, EncodeClips), called in turn on the
same batch, so the outputs are those of the steps run one after another, bit for bit, and each step still adds its
own busy seconds (t_prune, t_transform, t_pixels, t_encode). Only features (and kept pixels) leave the actor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .decode import DecodeClips
from .encode import EncodeClips
from .pixels import KeepPixels
from .prune import PruneClips
from .transform import TransformClips
from .workers import ModelResources, decoder


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
    decode: DecodeClips | None = None  # set: segment rows in, decoded here first (see the module's docstring)

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
        return " -> ".join((["decode"] if self.decode is not None else []) + [names[type(s)] for s in self.steps()])

    def ray_args(self) -> dict:
        args = self.resources.ray_args()
        if self.decode is not None:
            # one segment per call (its clips come out in model batches), and the decode stage's memory on top
            args.update(batch_size=1, memory=self.decode.ray_args()["memory"])
        return args

    def setup(self) -> None:
        if getattr(self, "_steps", None) is not None:
            return
        if self.decode is not None:
            decoder().start()  # the decoder child's imports run while the models load, not at the first segment
        steps = self.steps()
        for s in steps:
            if hasattr(s, "setup"):
                s.setup()
        self._steps = steps

    def __call__(self, batch: dict[str, np.ndarray]):
        """Clip rows -> feature rows; with `decode`, segment rows -> an iterator of feature-row blocks."""
        self.setup()
        if self.decode is None:
            return self._models(batch)
        return (self._models(clips) for clips in self.decode(batch))

    def _models(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for step in self._steps:
            batch = step(batch)
        return batch
