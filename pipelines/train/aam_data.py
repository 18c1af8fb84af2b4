"""AAM training data (arXiv 2511.08666): each video's frozen-encoder clip features h and the features of two static
clips (one random frame each, repeated T times), extracted once and reused for every epoch, as the paper does.

Rows (fixed shapes, so Ray Train can batch them): h (C, D) float32 with mask (C,) bool (C = max_clips; a video's
clips are spread over it), static (2, D) float32, action int64, attributes (A,) float32, identity int64.
"""

from __future__ import annotations

import json

import numpy as np

from anon_core.synthetic import ATTRIBUTES
from anon_core.video import ClipSpec, static_clip
from anon_core.video.segments import decode_segment, probe_clip_count

from ..stages.workers import ModelResources, ModelRunner, decoder


class ExtractAamFeatures:
    """Actor: the frozen encoder loaded once; one row per video in, one row per good video out."""

    def __init__(self, encoder_uri: str, spec: ClipSpec, max_clips: int = 8, seed: int = 0,
                 resources: ModelResources | None = None) -> None:  # fmt: skip
        self.runner = ModelRunner(resources)
        self.model, self.info = self.runner.load(encoder_uri, "encoder")
        self.spec = ClipSpec(spec.num_frames, spec.stride, spec.size, max_clips)
        self.max_clips, self.seed = max_clips, seed

    def _encode(self, clips: np.ndarray) -> np.ndarray:
        from anon_core.models.bundle import normalize_clips

        torch = self.runner.torch
        x = torch.from_numpy(clips).to(self.runner.device)
        x = normalize_clips(x, self.info.input["mean"], self.info.input["std"])  # (B, 3, T, S, S)
        with torch.inference_mode(), self.runner.autocast():
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True).float().cpu().numpy()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: dict[str, list] = {k: [] for k in ("h", "mask", "static", "action", "attributes", "identity")}
        for uri, labels in zip(batch["uri"], batch["labels"], strict=True):
            lab = json.loads(labels)
            try:
                n = decoder().call(probe_clip_count, uri, self.spec, uri=uri, timeout_s=120.0)
                clip_range = (0, n)
                clips = decoder().call(decode_segment, uri, self.spec, clip_range, "decord", uri=uri)["clip"]
            except Exception:  # a video that does not decode has no features to learn from
                continue
            # two random frames of the video (seeded per video: the same pair in every extraction)
            rng = np.random.default_rng([self.seed, lab["_index"]])
            frames = clips.reshape(-1, *clips.shape[2:])  # (n * T, S, S, 3)
            a, b = rng.choice(len(frames), size=2, replace=len(frames) < 2)
            T = self.spec.num_frames
            static = np.stack([static_clip(frames[a], T), static_clip(frames[b], T)])  # (2, T, S, S, 3)
            h, z = self._encode(clips), self._encode(static)  # (n, D), (2, D)
            pad = np.zeros((self.max_clips, h.shape[1]), np.float32)
            pad[: len(h)] = h
            rows["h"].append(pad)
            rows["mask"].append(np.arange(self.max_clips) < len(h))
            rows["static"].append(z.astype(np.float32))
            rows["action"].append(lab["action_id"])
            rows["attributes"].append([lab[k] for k in ATTRIBUTES])
            rows["identity"].append(lab.get("identity", -1))
        d = self.model.embed_dim
        return {
            "h": np.array(rows["h"], np.float32).reshape(-1, self.max_clips, d),
            "mask": np.array(rows["mask"], bool).reshape(-1, self.max_clips),
            "static": np.array(rows["static"], np.float32).reshape(-1, 2, d),
            "action": np.array(rows["action"], np.int64),
            "attributes": np.array(rows["attributes"], np.float32).reshape(-1, len(ATTRIBUTES)),
            "identity": np.array(rows["identity"], np.int64),
        }


def aam_features(manifest: str, encoder_uri: str, spec: ClipSpec, split: str | None = "train", max_clips: int = 8,
                 seed: int = 0, resources: ModelResources | None = None):  # fmt: skip
    """A Ray Dataset of AAM training rows; materialize() it once and train on it for every epoch."""
    import ray.data

    from .data import labelled_videos

    videos = labelled_videos(manifest, split)
    res = resources or ModelResources()
    ds = ray.data.from_pandas([videos.iloc[i : i + 8] for i in range(0, len(videos), 8)])
    return ds.map_batches(
        ExtractAamFeatures,
        fn_constructor_kwargs={"encoder_uri": encoder_uri, "spec": spec, "max_clips": max_clips, "seed": seed,
                               "resources": res},  # fmt: skip
        batch_size=8,
        **{k: v for k, v in res.ray_args().items() if k != "batch_size"},
    )


def cached_aam_features(manifest: str, encoder_uri: str, spec: ClipSpec, cache_root: str, split: str = "train",
                        max_clips: int = 8, seed: int = 0, log=print):  # fmt: skip
    """The AAM rows, extracted once to Parquet under `cache_root`/aam_features/<key>/ and read from there by every
    later run with the same corpus, encoder weights, clip plan and seed (the paper extracts clip features once; an
    L_B-weight sweep or a resumed run reuses them). A `_complete.json` marker written after the files makes a
    half-written extraction count as absent."""
    import hashlib

    import fsspec
    import pyarrow.fs
    import ray.data

    from anon_core.models.bundle import load_bundle

    _, info = load_bundle(encoder_uri, expect_kind="encoder")
    key = json.dumps([manifest, info.model_id, [spec.num_frames, spec.stride, spec.size], split, max_clips, seed])
    uri = f"{cache_root.rstrip('/')}/aam_features/{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    fs, path = fsspec.core.url_to_fs(uri)
    arrow_fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))  # s3fs settings (endpoint, profile) apply
    if not fs.exists(f"{path}/_complete.json"):
        if fs.exists(path):
            fs.rm(path, recursive=True)  # a killed extraction's partial files
        aam_features(manifest, encoder_uri, spec, split, max_clips, seed).write_parquet(path, filesystem=arrow_fs)
        with fs.open(f"{path}/_complete.json", "w") as f:
            json.dump({"key": json.loads(key), "encoder": encoder_uri}, f)
        log(f"AAM features extracted to {uri}")
    else:
        log(f"AAM features reused from {uri}")
    return ray.data.read_parquet(path, filesystem=arrow_fs, file_extensions=["parquet"])
