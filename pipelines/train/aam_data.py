"""AAM training data (arXiv 2511.08666): each video's frozen-encoder clip features h and the features of two static
clips (one random frame each, repeated T times), extracted once and reused for every epoch, as the paper does.

A static clip must be visible to the encoder. One that sees only motion (`motion_input`: each clip minus its
temporal mean) receives a repeated frame as zeros, every video would give it the same features and the privacy loss
would have nothing to push apart; for such an encoder the static view is the frame under a slow camera pan
(`panned_clip`): still no action, but its appearance moves. static_view="auto" picks by the encoder.

The clips come from the training jobs' decode-once cache (`clips.py`: decode failures are counted, logged and
written there as error rows), so the features are one encoder pass over already-decoded clips.

With a `pruner` (an AAM for prune+aam), every clip, the static views too, first goes through the pruner and the
encoder reads what it kept: the anonymize job's own PruneClips and EncodeClips stages, so the AAM learns (and its
eraser is fitted on) exactly the features prune+aam hands it.

Rows: video int64 (the labels' index), dim int64 (D), and as raw bytes (plain Parquet, readable without Ray's
tensor extension): h (C, D) float32 with mask (C,) bool (C = max_clips; a video's clips are spread over it) and
static (2, D) float32. Labels are joined by `video` in the training loop, so a
relabelled manifest reuses the features.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from anon_core.video import panned_clip, static_clip

from ..stages.workers import ModelResources


def feature_steps(encoder_uri: str, pruner_uri: str | None = None, resources: ModelResources | None = None) -> list:
    """The anonymize job's model stages that make a clip's features: [PruneClips (with a pruner)], EncodeClips; set
    up (models loaded)."""
    from ..stages.encode import EncodeClips
    from ..stages.prune import PruneClips

    res = resources or ModelResources()
    steps: list = [PruneClips(pruner_uri, resources=res)] if pruner_uri else []
    steps.append(EncodeClips(encoder_uri, res, pruner_uri))
    for step in steps:
        step.setup()
    return steps


def clip_features(steps: list, clips: np.ndarray) -> np.ndarray:
    """(n, T, S, S, 3) uint8 clips -> (n, D) float32 features, through `feature_steps` on clip rows."""
    from ..stages.rows import OK, error_fields

    n = len(clips)
    batch = {"video_id": np.zeros(n, dtype=object), "kind": np.full(n, "clip", dtype=object), "clip": clips,
             **error_fields(n)}  # fmt: skip
    for step in steps:
        batch = step(batch)
    failed = batch["error_type"] != OK
    if failed.any():  # a training run must not learn from zeros (the job would have failed these videos)
        i = int(np.flatnonzero(failed)[0])
        raise RuntimeError(f"AAM feature extraction: {batch['error_stage'][i]} failed: {batch['error_message'][i]}")
    return batch["features"]


class ExtractAamFeatures:
    """Actor: the frozen encoder (and pruner) loaded once; a batch of video indices in, one feature row per video
    out."""

    def __init__(self, encoder_uri: str, cache: str, max_clips: int = 8, seed: int = 0,
                 resources: ModelResources | None = None, static_view: str = "auto",
                 pruner_uri: str | None = None) -> None:  # fmt: skip
        from .clips import ClipStore

        self.steps = feature_steps(encoder_uri, pruner_uri, resources)
        self.model = self.steps[-1].model
        self.store = ClipStore(cache)
        self.max_clips, self.seed = max_clips, seed
        self.view = static_view_for(static_view, self.model)

    def _encode(self, clips: np.ndarray) -> np.ndarray:
        return clip_features(self.steps, clips)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: dict[str, list] = {"video": [], "h": [], "mask": [], "static": []}
        for v in batch["video"]:
            pos = self.store.clips_of([v])
            if len(pos) > self.max_clips:  # evenly spread over the video, first and last included
                pos = pos[np.unique(np.round(np.linspace(0, len(pos) - 1, self.max_clips)).astype(int))]
            clips = self.store.read(pos)  # (n, T, S, S, 3)
            # two random frames of the video (seeded per video: the same pair in every extraction)
            rng = np.random.default_rng([self.seed, int(v)])
            frames = clips.reshape(-1, *clips.shape[2:])  # (n * T, S, S, 3)
            a, b = rng.choice(len(frames), size=2, replace=len(frames) < 2)
            T = clips.shape[1]
            if self.view == "pan":
                static = np.stack([panned_clip(frames[a], T, rng), panned_clip(frames[b], T, rng)])
            else:
                static = np.stack([static_clip(frames[a], T), static_clip(frames[b], T)])  # (2, T, S, S, 3)
            h, z = self._encode(clips), self._encode(static)  # (n, D), (2, D)
            pad = np.zeros((self.max_clips, h.shape[1]), np.float32)
            pad[: len(h)] = h
            rows["video"].append(int(v))
            rows["h"].append(pad)
            rows["mask"].append(np.arange(self.max_clips) < len(h))
            rows["static"].append(z.astype(np.float32))
        as_bytes = lambda arrays: np.array([a.tobytes() for a in arrays], dtype=object)  # noqa: E731
        return {
            "video": np.array(rows["video"], np.int64),
            "dim": np.full(len(rows["video"]), self.model.embed_dim, np.int64),
            "h": as_bytes(rows["h"]),
            "mask": as_bytes(rows["mask"]),
            "static": as_bytes(rows["static"]),
        }


def static_view_for(requested: str, encoder) -> str:
    """"still" (a repeated frame, the paper's static clip) or "pan"; "auto": pan for a motion-only encoder."""
    if requested not in ("auto", "still", "pan"):
        raise ValueError(f"static_view must be 'auto', 'still' or 'pan', got {requested!r}")
    if requested == "auto":
        return "pan" if getattr(encoder, "motion_input", False) else "still"
    return requested


def cached_aam_features(cache: str, videos: list[int], encoder_uri: str, cache_root: str, max_clips: int = 8,
                        seed: int = 0, log=print, static_view: str = "auto",
                        pruner_uri: str | None = None) -> str:  # fmt: skip
    """The AAM rows of these videos, extracted once to Parquet under `cache_root`/aam_features/<key>/ and read from
    there by every later run with the same clips, encoder weights, max_clips and seed (an L_B-weight sweep or a
    resumed run reuses them; a pruner's weights are part of the key). A `_complete.json` marker written after the
    files makes a half-written extraction count as absent. Returns the folder's URI."""
    import fsspec
    import pyarrow.fs
    import ray.data

    from anon_core.models.bundle import load_bundle

    encoder, info = load_bundle(encoder_uri, expect_kind="encoder")
    view = static_view_for(static_view, encoder)
    pruned = [load_bundle(pruner_uri, expect_kind="pruner")[1].model_id] if pruner_uri else []
    key = json.dumps([cache, sorted(videos), info.model_id, max_clips, seed] + ([view] if view != "still" else [])
                     + pruned)  # fmt: skip
    uri = f"{cache_root.rstrip('/')}/aam_features/{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(f"{path}/_complete.json"):
        log(f"AAM features reused from {uri}")
        return uri
    if fs.exists(path):
        fs.rm(path, recursive=True)  # a killed extraction's partial files
    arrow_fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))  # s3fs settings (endpoint, profile) apply
    res = ModelResources()
    ds = ray.data.from_items([{"video": v} for v in sorted(videos)])
    ds.map_batches(
        ExtractAamFeatures,
        fn_constructor_kwargs={"encoder_uri": encoder_uri, "cache": cache, "max_clips": max_clips, "seed": seed,
                               "resources": res, "static_view": view, "pruner_uri": pruner_uri},  # fmt: skip
        batch_size=8,
        **{k: v for k, v in res.ray_args().items() if k != "batch_size"},
    ).write_parquet(path, filesystem=arrow_fs)
    with fs.open(f"{path}/_complete.json", "w") as f:
        json.dump({"key": json.loads(key), "encoder": encoder_uri, "pruner": pruner_uri}, f)
    log(f"AAM features extracted to {uri} (static view: {view}{', clips pruned first' if pruner_uri else ''})")
    return uri


def read_aam_features(uri: str) -> dict[str, np.ndarray]:
    """Every row of an extraction, sorted by video: {video (V,), h (V, C, D), mask (V, C), static (V, 2, D)}."""
    import fsspec
    import pyarrow.parquet as pq

    fs, path = fsspec.core.url_to_fs(uri)
    files = sorted(f for f in fs.find(path) if f.endswith(".parquet"))
    table = pq.ParquetDataset(files, filesystem=fs).read().to_pandas().sort_values("video", ignore_index=True)
    d, n = int(table["dim"].iloc[0]), len(table)
    raw = lambda col, dtype: np.frombuffer(b"".join(table[col]), dtype)  # noqa: E731
    return {"video": table["video"].to_numpy(np.int64), "h": raw("h", np.float32).reshape(n, -1, d),
            "mask": raw("mask", bool).reshape(n, -1), "static": raw("static", np.float32).reshape(n, 2, d)}  # fmt: skip
