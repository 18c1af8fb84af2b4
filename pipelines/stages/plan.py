"""Plan: probe each video's header and split its clip plan into segments of at most `clips_per_task` clips.

A segment is the unit of decode work, so a two-hour video spreads over many tasks (and many CPUs) instead of
holding one task for its whole length; a crash or retry costs one segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anon_core.video import ClipSpec, VideoDecodeError
from anon_core.video.segments import probe_clip_count

from .rows import OK
from .workers import decoder


@dataclass
class PlanSegments:
    spec: ClipSpec
    clips_per_task: int = 32
    timeout_s: float = 120.0
    # Videos per call, and so per output block: the stage after takes blocks whole, so this is its unit of work too.
    videos_per_call: int = 8

    def ray_args(self) -> dict:
        # Header reads are light, but each worker process that runs them keeps a decoder child: half a CPU keeps the
        # number of such processes near the number of CPUs instead of four times it.
        return {"num_cpus": 0.5, "batch_size": self.videos_per_call}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {k: [] for k in SEGMENT_COLUMNS}
        own_ids = batch.get("source_id", np.full(len(batch["video_id"]), None, dtype=object))
        for vid, uri, labels, own in zip(batch["video_id"], batch["uri"], batch["labels"], own_ids, strict=True):
            try:
                n = decoder().call(probe_clip_count, uri, self.spec, uri=uri, timeout_s=self.timeout_s)
                segments = [(a, min(n, a + self.clips_per_task)) for a in range(0, n, self.clips_per_task)]
                err = (OK, OK, OK)
            except VideoDecodeError as e:
                n, segments, err = 1, [(0, 1)], (e.reason.value, "probe", str(e))
            except Exception as e:  # a video must never take the run down with it
                n, segments, err = 1, [(0, 1)], (type(e).__name__, "probe", str(e))
            for first, stop in segments:
                for k, v in zip(
                    SEGMENT_COLUMNS, (vid, uri, labels, own, n, first, stop - first, *err), strict=True
                ):
                    out[k].append(v)
        return {k: np.array(v, dtype=object if k in _OBJECT else np.int64) for k, v in out.items()}


SEGMENT_COLUMNS = (
    "video_id", "uri", "labels", "source_id", "num_clips", "first_clip", "seg_clips", "error_type", "error_stage",
    "error_message",
)  # fmt: skip
_OBJECT = {"video_id", "uri", "labels", "source_id", "error_type", "error_stage", "error_message"}
