"""Gather: clip rows -> whole videos. The AAM needs a video's whole clip sequence, and a video may be committed only
when all of its rows are written, so every clip of a video meets here before anything is written.

One actor (the rows are features now, a few KB per clip), placed on the head node beside the driver: if that node
dies the run is lost anyway, and a worker node's death never loses a half-gathered video. Videos are released in
groups of about `rows_per_shard` clips, which is what sizes the output files; the last group goes when all
`expected_videos` are whole. Rows seen twice (an upstream task retried after part of its output went through) count
once.
"""

from __future__ import annotations

import time

import numpy as np

from .rows import OK, pack

CLIP_ARRAYS = ("clip_index", "start_s", "end_s", "features", "kept_tubelet_ids", "pruner_feature", "pixels")
SECONDS = ("t_decode", "t_prune", "t_encode")
VIDEO_COLUMNS = ("video_id", "status", "num_clips", "payload")


class GatherVideos:
    def __init__(self, expected_videos: int, rows_per_shard: int = 16384, flush_after_s: float = 60.0) -> None:
        self.expected, self.rows_per_shard, self.flush_after_s = expected_videos, rows_per_shard, flush_after_s
        self.open: dict[str, dict] = {}
        self.ready: list[dict] = []
        self.ready_rows, self.oldest_ready = 0, None
        self.done: set[str] = set()  # every video made whole, released or still in `ready`

    @staticmethod
    def ray_args() -> dict:
        import ray.data

        # no CPU reserved (it only concatenates small arrays); the head-node resource pins it beside the driver
        return {
            "compute": ray.data.ActorPoolStrategy(size=1),
            "num_cpus": 0,
            "resources": {"node:__internal_head__": 0.001},
            "batch_size": None,
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for i in range(len(batch["video_id"])):
            self._add({k: v[i] for k, v in batch.items()})
        due = (
            self.ready_rows >= self.rows_per_shard
            or len(self.done) >= self.expected
            or (self.oldest_ready is not None and time.monotonic() - self.oldest_ready > self.flush_after_s)
        )
        if not (due and self.ready):
            return _video_rows([])
        out = _video_rows(self.ready)
        self.ready, self.ready_rows, self.oldest_ready = [], 0, None
        return out

    def _add(self, row: dict) -> None:
        vid = row["video_id"]
        if vid in self.done:
            return
        v = self.open.setdefault(
            vid,
            {"need": int(row["num_clips"]), "got": 0, "seen": set(), "clips": [], "errors": [], "uri": row["uri"],
             "labels": row["labels"], "source_id": row.get("source_id"), "seconds": dict.fromkeys(SECONDS, 0.0)},
        )  # fmt: skip
        key = (row["kind"], int(row["clip_index"]))
        if key in v["seen"]:
            return
        v["seen"].add(key)
        v["got"] += int(row["covers"])
        for s in SECONDS:
            v["seconds"][s] += float(row.get(s, 0.0))
        if row["error_type"] != OK:
            v["errors"].append((int(row["clip_index"]), row["error_type"], row["error_stage"], row["error_message"]))
        elif row["kind"] == "clip":
            v["clips"].append({k: row[k] for k in CLIP_ARRAYS if k in row})
        if v["got"] >= v["need"]:
            self._complete(vid, self.open.pop(vid))

    def _complete(self, vid: str, v: dict) -> None:
        self.done.add(vid)
        clips = sorted(v["clips"], key=lambda c: int(c["clip_index"]))
        payload = {"uri": v["uri"], "labels": v["labels"], "source_id": v["source_id"], "seconds": v["seconds"],
                   "error": None}  # fmt: skip
        if v["errors"]:
            first = min(v["errors"])
            note = f" ({len(v['errors'])} failed segments)" if len(v["errors"]) > 1 else ""
            payload["error"] = {"type": first[1], "stage": first[2], "message": first[3] + note}
            clips = []
        for k in CLIP_ARRAYS:
            if clips and k in clips[0]:
                payload[k] = np.stack([np.asarray(c[k]) for c in clips])
        self.ready.append({"video_id": vid, "status": "failed" if v["errors"] else "ok", "num_clips": len(clips),
                           "payload": pack(payload)})  # fmt: skip
        self.ready_rows += max(len(clips), 1)
        if self.oldest_ready is None:
            self.oldest_ready = time.monotonic()


def _video_rows(videos: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.array([r[k] for r in videos], dtype=np.int64 if k == "num_clips" else object) for k in VIDEO_COLUMNS}
