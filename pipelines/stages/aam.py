"""Latent anonymization (arXiv 2511.08666): the AAM maps each video's sequence of frozen-encoder clip features
f_E to f_A(f_E), attending across that video's clips only (packed into (videos, clips, D) with a padding mask)."""

from __future__ import annotations

import time

import numpy as np

from anon_core.models.aam import pack_clips, unpack_clips

from .rows import pack, unpack
from .workers import ModelResources, ModelRunner


class ApplyAam:
    """Actor over whole-video rows (from the gather stage); replaces each ok video's `features` (n, D)."""

    def __init__(self, aam_uri: str, resources: ModelResources | None = None) -> None:
        self.runner = ModelRunner(resources)
        self.model, self.info = self.runner.load(aam_uri, "aam")

    @staticmethod
    def ray_args(resources: ModelResources) -> dict:
        # whole gathered groups (the batch is already videos); a 3-block adapter over features needs little CPU
        return {**resources.ray_args(), "num_cpus": min(resources.cpus_per_actor, 0.25), "batch_size": None}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        torch = self.runner.torch
        payloads = [unpack(p) for p in batch["payload"]]
        ok = [i for i, p in enumerate(payloads) if p["error"] is None]
        if ok:
            feats = np.concatenate([payloads[i]["features"] for i in ok])  # (clips, D)
            owner = np.concatenate([np.full(len(payloads[i]["features"]), i) for i in ok])
            try:
                h = torch.from_numpy(feats).to(self.runner.device)
                x, mask, packing = pack_clips(h, owner)  # (V, C, D), (V, C)
                with torch.inference_mode(), self.runner.autocast():
                    out = unpack_clips(self.model(x, mask), packing).float().cpu().numpy()  # (clips, D)
                for i in ok:
                    n = len(payloads[i]["features"])
                    payloads[i]["features"], out = out[:n], out[n:]
            except Exception as e:  # these videos fail, the run goes on
                for i in ok:
                    payloads[i]["error"] = {"type": type(e).__name__, "stage": "aam", "message": str(e)[:2000]}
                batch["status"] = np.array(["failed" if p["error"] else "ok" for p in payloads], dtype=object)
        seconds = (time.perf_counter() - t0) / max(len(payloads), 1)
        for p in payloads:
            p["seconds"]["t_aam"] = seconds
        batch["payload"] = np.array([pack(p) for p in payloads], dtype=object)
        return batch
