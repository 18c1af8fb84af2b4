"""Transform: a pixel-domain baseline (anon_core.baselines: blur, down2, down4, blacken) applied to every clip, in
place of the pruner, for the evaluation benchmark's comparisons. No model: it runs as Ray tasks, not actors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from anon_core.baselines import BASELINES, apply_baseline

from .rows import add_seconds, clip_mask, mark_failed


@dataclass
class TransformClips:
    """`clip` (B, T, S, S, 3) uint8 of each good clip row is replaced by the baseline's output; error and gap rows
    pass untouched."""

    baseline: str

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r}; known: {', '.join(BASELINES)}")

    def ray_args(self) -> dict:
        # Half a CPU, like decode: the baselines are a few vectorized passes, and on small machines a whole CPU per
        # task would leave none for the stages around it. 16 clips (the model stages' batch) is 10 MB at 112 px.
        return {"num_cpus": 0.5, "batch_size": 16}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        rows = clip_mask(batch)
        if rows.any():
            try:
                clip = np.array(batch["clip"])  # Ray hands read-only views; write into a copy
                clip[rows] = apply_baseline(self.baseline, clip[rows])
                batch["clip"] = clip
            except Exception as e:  # e.g. a malformed clip column: these clips' videos fail, the run goes on
                mark_failed(batch, rows, "transform", e)
        add_seconds(batch, "t_transform", time.perf_counter() - t0)
        return batch
