"""Score and prune (arXiv 2603.26336): the TubeletPruner keeps the top-k tubelets by s = a_act - lambda_priv * a_priv;
the clip leaves this stage with every pruned tubelet set to black, so nothing downstream can see what was removed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from anon_core.models.bundle import normalize_clips

from .rows import add_seconds, clip_mask, mark_failed
from .workers import ModelResources, load_model


@dataclass
class PruneClips:
    """`clip` (B, T, S, S, 3) uint8 is replaced by the masked clip, and `kept_tubelet_ids` (B, k) and
    `pruner_feature` (B, D) (the pruner's own surviving-token mean) are added. The pruner loads once (setup)."""

    pruner_uri: str
    keep_ratio: float | list[float] | None = None  # None: the bundle's own
    lambda_priv: float | None = None
    resources: ModelResources = field(default_factory=ModelResources)

    def ray_args(self) -> dict:
        return self.resources.ray_args()

    def setup(self) -> None:
        if load_model(self, self.pruner_uri, "pruner"):
            self.k = self._kept_count()

    def _kept_count(self) -> int:
        from anon_core.models.pruner import num_kept

        n = self.model.patch_embed.num_patches
        ratios = self.model.keep_ratios if self.keep_ratio is None else self.model._keep_ratios(self.keep_ratio)
        for r in ratios:
            n = num_kept(n, r)
        return n

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.setup()
        t0 = time.perf_counter()
        torch = self.runner.torch
        n, dim = len(batch["video_id"]), self.model.embed_dim
        batch["kept_tubelet_ids"] = np.full((n, self.k), -1, dtype=np.int32)
        batch["pruner_feature"] = np.zeros((n, dim), dtype=np.float32)
        rows = clip_mask(batch)
        if rows.any():
            try:
                clips = torch.from_numpy(np.ascontiguousarray(batch["clip"][rows])).to(self.runner.device)
                mean, std = self.info.input.get("mean"), self.info.input.get("std")
                with torch.inference_mode(), self.runner.autocast():
                    out = self.model(normalize_clips(clips, mean, std), self.keep_ratio, self.lambda_priv)
                keep = out.pixel_mask()[:, 0, ..., None]  # (B, 1, T, H, W) -> (B, T, H, W, 1)
                masked = torch.where(keep, clips, torch.zeros((), dtype=clips.dtype, device=clips.device))
                clip = np.array(batch["clip"])  # Ray hands read-only views; write into a copy
                clip[rows] = masked.cpu().numpy()
                batch["clip"] = clip
                batch["kept_tubelet_ids"][rows] = out.kept_ids.cpu().numpy().astype(np.int32)
                batch["pruner_feature"][rows] = out.pooled.float().cpu().numpy()
            except Exception as e:  # e.g. out of GPU memory: these clips' videos fail, the run goes on
                mark_failed(batch, rows, "prune", e)
        add_seconds(batch, "t_prune", time.perf_counter() - t0)
        return batch
