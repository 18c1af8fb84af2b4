"""Gather: clip rows -> whole videos. The AAM needs a video's whole clip sequence, and a video may be committed only
when all of its rows are written, so every clip of a video meets here before anything is written.

One actor (the rows are features now, a few KB per clip), placed on the head node beside the driver: if that node
dies the run is lost anyway, and a worker node's death never loses a half-gathered video. Videos are released in
groups of about `rows_per_shard` clips, which is what sizes the output files; the last group goes when all
`expected_videos` are whole. Rows seen twice (an upstream task retried after part of its output went through) count
once.

With `aam` set, the AAM runs here on each group as it is released (ApplyAam, the stage of aam.py, called on the
group): the AAM needs a video's whole clip sequence, which first exists here, and it is a small adapter over features
(under a millisecond per clip on one CPU thread), so it costs the run no actor process and no object-store hop of its
own. Measured on 2 cores (128 videos, prune+aam): a separate AAM actor used 3.3 CPU-s per run, nearly all of it
start-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .rows import CLIP_ARRAYS, OK, STAGE_SECONDS, VideoRecord

if TYPE_CHECKING:  # aam.py imports torch, which a gather without an AAM never needs
    from .aam import ApplyAam

VIDEO_COLUMNS = ("video_id", "status", "num_clips", "payload")


@dataclass
class GatherVideos:
    expected_videos: int
    rows_per_shard: int = 16384
    flush_after_s: float = 60.0
    aam: ApplyAam | None = None  # set: each released group goes through the AAM here (see the module's docstring)

    def ray_args(self) -> dict:
        import ray.data

        # no CPU reserved (it only concatenates small arrays); the head-node resource pins it beside the driver
        return {
            "compute": ray.data.ActorPoolStrategy(size=1),
            "num_cpus": 0,
            "resources": {"node:__internal_head__": 0.001},
            "batch_size": None,
        }

    def setup(self) -> None:
        if hasattr(self, "open"):
            return
        if self.aam is not None:
            self.aam.setup()
        self.open: dict[str, dict] = {}
        self.ready: list[dict] = []
        self.ready_rows, self.oldest_ready = 0, None
        self.done: set[str] = set()  # every video made whole, released or still in `ready`

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.setup()
        for i in range(len(batch["video_id"])):
            self._add({k: v[i] for k, v in batch.items()})
        due = (
            self.ready_rows >= self.rows_per_shard
            or len(self.done) >= self.expected_videos
            or (self.oldest_ready is not None and time.monotonic() - self.oldest_ready > self.flush_after_s)
        )
        if not (due and self.ready):
            return _video_rows([])
        out = _video_rows(self.ready)
        self.ready, self.ready_rows, self.oldest_ready = [], 0, None
        return out if self.aam is None else self.aam(out)

    def _add(self, row: dict) -> None:
        vid = row["video_id"]
        if vid in self.done:
            return
        v = self.open.get(vid)
        if v is None:
            own = row.get("source_id")
            record = VideoRecord(row["uri"], row["labels"], own if isinstance(own, str) else None,
                                 dict.fromkeys(STAGE_SECONDS, 0.0))  # fmt: skip
            v = self.open[vid] = {"need": int(row["num_clips"]), "got": 0, "seen": set(), "clips": [], "errors": [],
                                  "record": record}  # fmt: skip
        key = (row["kind"], int(row["clip_index"]))
        if key in v["seen"]:
            return
        v["seen"].add(key)
        v["got"] += int(row["covers"])
        seconds = v["record"].seconds
        for s in STAGE_SECONDS:
            if s in row:
                seconds[s] += float(row[s])
        if row["error_type"] != OK:
            v["errors"].append((int(row["clip_index"]), row["error_type"], row["error_stage"], row["error_message"]))
        elif row["kind"] == "clip":
            v["clips"].append({k: row[k] for k in CLIP_ARRAYS if k in row})
        if v["got"] >= v["need"]:
            self._complete(vid, self.open.pop(vid))

    def _complete(self, vid: str, v: dict) -> None:
        self.done.add(vid)
        record: VideoRecord = v["record"]
        clips = sorted(v["clips"], key=lambda c: int(c["clip_index"]))
        if v["errors"]:
            first = min(v["errors"])
            note = f" ({len(v['errors'])} failed segments)" if len(v["errors"]) > 1 else ""
            record.error = {"type": first[1], "stage": first[2], "message": first[3] + note}
            clips = []
        if clips:
            record.clips = {k: np.stack([np.asarray(c[k]) for c in clips]) for k in CLIP_ARRAYS if k in clips[0]}
        self.ready.append({"video_id": vid, "status": "failed" if v["errors"] else "ok", "num_clips": len(clips),
                           "payload": record.pack()})  # fmt: skip
        self.ready_rows += max(len(clips), 1)
        if self.oldest_ready is None:
            self.oldest_ready = time.monotonic()


def _video_rows(videos: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.array([r[k] for r in videos], dtype=np.int64 if k == "num_clips" else object) for k in VIDEO_COLUMNS}
