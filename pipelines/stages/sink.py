"""Sink: whole videos -> one Parquet shard (features + errors) and per-video commit markers (see pipelines.store).

Feature rows are one per clip; `features` is a fixed-size list of float32 so any Parquet reader (pyarrow, pandas,
DuckDB, Polars, Ray Data) reads it as plain numbers.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..lease import lease_check
from ..store import OutputStore
from .rows import STAGE_SECONDS, VideoRecord

SUMMARY_COLUMNS = ("video_id", "status", "num_clips", "error_type", "shard", *STAGE_SECONDS)


def fixed_size_list(a: np.ndarray, value_type: pa.DataType) -> pa.FixedSizeListArray:
    a = np.ascontiguousarray(a)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), type=value_type), a.shape[1])


@dataclass
class WriteShards:
    output: str
    run_id: str
    row_fields: dict = field(default_factory=dict)  # mode, model ids, config_hash: repeated on every row
    storage_options: dict | None = None
    lease_generation: int | None = None  # the run's output lease: checked before every commit (pipelines.lease)

    def ray_args(self) -> dict:
        return {"num_cpus": 0.25, "batch_size": None}  # I/O bound; whole gathered groups are one shard each

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        store = OutputStore(self.output, self.storage_options)
        # Named by its videos: a task Ray runs again (its node died after the writes) rewrites the same shard
        # instead of adding a second whole copy that repair() would never look at.
        key = "\n".join(sorted(map(str, batch["video_id"])))
        stem = f"{self.run_id}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        videos = [(vid, VideoRecord.unpack(p)) for vid, p in zip(batch["video_id"], batch["payload"], strict=True)]
        if not videos:
            return {k: np.zeros(0, dtype=np.float64 if k in STAGE_SECONDS else object) for k in SUMMARY_COLUMNS}
        features = self._features_table([(vid, p) for vid, p in videos if p.error is None])
        errors = self._errors_table([(vid, p) for vid, p in videos if p.error is not None])
        commits = [
            {
                "video_id": vid,
                "status": "failed" if p.error else "ok",
                "shard": stem,
                "rows": 0 if p.error else p.num_clips,
                "run_id": self.run_id,
                "uri": p.uri,
            }
            for vid, p in videos
        ]
        if self.lease_generation is not None:
            lease_check(self.output, self.lease_generation, self.storage_options)
        store.write_shard(stem, features, errors, commits)
        for _, p in videos:
            p.seconds["t_write"] = (time.perf_counter() - t0) / len(videos)
        return {
            "video_id": np.array([vid for vid, _ in videos], dtype=object),
            "status": np.array([c["status"] for c in commits], dtype=object),
            "num_clips": np.array([c["rows"] for c in commits], dtype=np.int64),
            "error_type": np.array([p.error["type"] if p.error else "" for _, p in videos], dtype=object),
            "shard": np.full(len(videos), stem, dtype=object),
            **{s: np.array([p.seconds.get(s, 0.0) for _, p in videos], dtype=np.float64) for s in STAGE_SECONDS},
        }

    def _features_table(self, videos: list) -> pa.Table | None:
        if not videos:
            return None
        n = [p.num_clips for _, p in videos]
        cat = lambda k: np.concatenate([p.clips[k] for _, p in videos])  # noqa: E731
        cols = {
            "video_id": pa.array(np.repeat([vid for vid, _ in videos], n), type=pa.string()),
            "source_uri": pa.array(np.repeat([p.uri for _, p in videos], n), type=pa.string()),
            # the manifest's own id (its video_id or id column), so a join needs no JSON; null without a manifest
            "source_id": pa.array(np.repeat(np.array([p.source_id for _, p in videos], dtype=object), n),
                                  type=pa.string()),  # fmt: skip
            "clip_index": pa.array(cat("clip_index"), type=pa.int32()),
            "start_s": pa.array(cat("start_s"), type=pa.float64()),
            "end_s": pa.array(cat("end_s"), type=pa.float64()),
            "features": fixed_size_list(cat("features").astype(np.float32), pa.float32()),
        }
        if "kept_tubelet_ids" in videos[0][1].clips:
            cols["kept_tubelet_ids"] = fixed_size_list(cat("kept_tubelet_ids").astype(np.int32), pa.int32())
            cols["pruner_feature"] = fixed_size_list(cat("pruner_feature").astype(np.float32), pa.float32())
        if "pixels" in videos[0][1].clips:  # the anonymized clip, small, for the evaluation's pixel attacker
            px = cat("pixels")  # (rows, T, S, S, 3) uint8
            cols["pixels"] = pa.array([c.tobytes() for c in px], type=pa.binary())
            cols["pixels_shape"] = fixed_size_list(np.tile(np.array(px.shape[1:], np.int32), (len(px), 1)), pa.int32())
        rows = sum(n)
        for k, v in self.row_fields.items():
            cols[k] = pa.array([v] * rows, type=pa.string())
        cols["run_id"] = pa.array([self.run_id] * rows, type=pa.string())
        labels = [p.labels if isinstance(p.labels, str) else None for _, p in videos]  # pandas made None NaN
        cols["labels"] = pa.array([lab for lab, k in zip(labels, n, strict=True) for _ in range(k)], type=pa.string())
        return pa.table(cols)

    def _errors_table(self, videos: list) -> pa.Table | None:
        if not videos:
            return None
        return pa.table(
            {
                "video_id": pa.array([vid for vid, _ in videos], type=pa.string()),
                "uri": pa.array([p.uri for _, p in videos], type=pa.string()),
                "source_id": pa.array([p.source_id for _, p in videos], type=pa.string()),
                "stage": pa.array([p.error["stage"] for _, p in videos], type=pa.string()),
                "error_type": pa.array([p.error["type"] for _, p in videos], type=pa.string()),
                "message": pa.array([p.error["message"] for _, p in videos], type=pa.string()),
                "run_id": pa.array([self.run_id] * len(videos), type=pa.string()),
            }
        )
