"""Frozen-encoder clip features f_E: the one feature space every mode stores, so every mode is comparable.

raw: f_E(clip); prune: f_E(masked clip) (the prune stage ran before this one). The clip pixels end here: only the
(B, D) features go on.
"""

from __future__ import annotations

import time

import numpy as np

from anon_core.models.bundle import normalize_clips

from .rows import add_seconds, clip_mask, mark_failed
from .workers import ModelResources, ModelRunner


class EncodeClips:
    """Actor: the encoder is loaded once; `clip` (B, T, S, S, 3) uint8 -> `features` (B, D) float32."""

    def __init__(self, encoder_uri: str, resources: ModelResources | None = None) -> None:
        self.runner = ModelRunner(resources)
        self.model, self.info = self.runner.load(encoder_uri, "encoder")

    @staticmethod
    def ray_args(resources: ModelResources) -> dict:
        return resources.ray_args()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        torch = self.runner.torch
        clips_np = batch.pop("clip")
        n = len(batch["video_id"])
        batch["features"] = np.zeros((n, self.model.embed_dim), dtype=np.float32)
        rows = clip_mask(batch)
        if rows.any():
            try:
                clips = torch.from_numpy(np.ascontiguousarray(clips_np[rows])).to(self.runner.device)
                x = normalize_clips(clips, self.info.input.get("mean"), self.info.input.get("std"))
                with torch.inference_mode(), self.runner.autocast():
                    h = self.model.forward_head(self.model.forward_features(x), pre_logits=True)  # (B, D)
                batch["features"][rows] = h.float().cpu().numpy()
            except Exception as e:
                mark_failed(batch, rows, "encode", e)
        add_seconds(batch, "t_encode", time.perf_counter() - t0)
        return batch
