"""Latent anonymization (arXiv 2511.08666): the AAM maps each video's sequence of frozen-encoder clip features
f_E to f_A(f_E), attending across that video's clips only (packed into (videos, clips, D) with a padding mask).

It needs a video's whole clip sequence, which first exists in the gather actor, so the pipeline runs it there
(GatherVideos(aam=...)), on each group of videos gather releases: features never cross the object store to reach it.
Alone, it is a stage like the others (tests, the benches).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from anon_core.models.aam import pack_clips, unpack_clips

from .rows import VideoRecord
from .workers import ModelResources, load_model


@dataclass
class ApplyAam:
    """Over whole-video rows (from the gather stage): replaces each ok video's `features` (n, D). Loads once."""

    aam_uri: str
    resources: ModelResources = field(default_factory=ModelResources)

    def ray_args(self) -> dict:
        # whole gathered groups (the batch is already videos); a 3-block adapter over features needs little CPU, so
        # its pool starts at one actor and grows only if videos queue
        res = self.resources
        return {**res.ray_args(min_actors=1), "num_cpus": min(res.cpus_per_actor, 0.25), "batch_size": None}

    def setup(self) -> None:
        load_model(self, self.aam_uri, "aam")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.setup()
        t0 = time.perf_counter()
        torch = self.runner.torch
        videos = [VideoRecord.unpack(p) for p in batch["payload"]]
        ok = [v for v in videos if v.error is None]
        if ok:
            feats = np.concatenate([v.clips["features"] for v in ok])  # (clips, D)
            owner = np.concatenate([np.full(v.num_clips, i) for i, v in enumerate(ok)])
            try:
                h = torch.from_numpy(feats).to(self.runner.device)
                x, mask, packing = pack_clips(h, owner)  # (V, C, D), (V, C)
                with torch.inference_mode(), self.runner.autocast():
                    out = unpack_clips(self.model(x, mask), packing).float().cpu().numpy()  # (clips, D)
                for v in ok:
                    v.clips["features"], out = out[: v.num_clips], out[v.num_clips :]
            except Exception as e:  # these videos fail, the run goes on
                for v in ok:
                    v.error = {"type": type(e).__name__, "stage": "aam", "message": str(e)[:2000]}
                batch["status"] = np.array(["failed" if v.error else "ok" for v in videos], dtype=object)
        seconds = (time.perf_counter() - t0) / max(len(videos), 1)
        for v in videos:
            v.seconds["t_aam"] = seconds
        batch["payload"] = np.array([v.pack() for v in videos], dtype=object)
        return batch
