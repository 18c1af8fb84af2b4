"""Frozen-encoder clip features f_E: the one feature space every mode stores, so every mode is comparable.

raw: f_E(clip); prune: f_E of what the pruner kept (the prune stage ran before this one). A ViT encoder on the
pruner's tubelet grid reads only the kept tubelets (`VideoViT` kept_ids: the removed ones are not black pixels to
it but absent tokens, as an encoder trained with `tubelet_drop` expects); any other encoder (torchvision's, a ViT of
another grid) reads the masked clip. The clip pixels end here: only the (B, D) features go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from anon_core.models.bundle import normalize_clips

from .rows import add_count, add_seconds, clip_mask, mark_failed
from .workers import ModelResources, load_model


@dataclass
class EncodeClips:
    """`clip` (B, T, S, S, 3) uint8 -> `features` (B, D) float32. The encoder loads once (setup)."""

    encoder_uri: str
    resources: ModelResources = field(default_factory=ModelResources)
    pruner_uri: str | None = None  # the pruner before this stage, if any: its kept ids may be read (see above)
    counter: object = None  # a ClipCounter actor (rows.py): the clips encoded, for the progress line

    def ray_args(self) -> dict:
        return self.resources.ray_args()

    def setup(self) -> None:
        if load_model(self, self.encoder_uri, "encoder"):
            # the pruner's kept ids name tubelets of its own grid: read them only where the encoder's grid is the same
            grid = tubelet_layout(self.model)
            self.reads_kept = self.pruner_uri is not None and grid == pruner_tubelet_layout(self.pruner_uri)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.setup()
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
                kept = {}
                if self.reads_kept and "kept_tubelet_ids" in batch:
                    kept["kept_ids"] = torch.from_numpy(batch["kept_tubelet_ids"][rows].astype(np.int64)).to(x.device)
                with torch.inference_mode(), self.runner.autocast():
                    h = self.model.forward_head(self.model.forward_features(x, **kept), pre_logits=True)  # (B, D)
                batch["features"][rows] = h.float().cpu().numpy()
                add_count(self.counter, "encoded", int(rows.sum()))
            except Exception as e:
                mark_failed(batch, rows, "encode", e)
        add_seconds(batch, "t_encode", time.perf_counter() - t0)
        return batch


def tubelet_layout(model) -> tuple | None:
    """((T', Hp, Wp), (t, p, p)) of a ViT that can read kept tubelet ids; None for any other model."""
    from anon_core.models.video_vit import VideoViT

    if not isinstance(model, VideoViT):
        return None
    return tuple(model.grid_size), tuple(model.patch_embed.tubelet)


def pruner_tubelet_layout(uri: str) -> tuple | None:
    """The pruner bundle's tubelet layout, from its config alone (the model is built on the meta device)."""
    import torch

    from anon_core.models.bundle import BUILDERS, read_bundle_config

    config = read_bundle_config(uri)
    with torch.device("meta"):
        model = BUILDERS[config["builder"]][1](**config["kwargs"])
    return tubelet_layout(model)
