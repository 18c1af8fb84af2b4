"""Column conventions shared by the stages.

Segment rows (plan -> decode): one per bounded piece of a video's clip plan.
Clip rows (decode -> prune -> encode -> gather): `kind` "clip" (one clip), "error" (a failed segment: error_type
    set) or "gap" (clips a slightly short stream never had); `covers` = how many of the video's planned clips the row
    stands for, so the gather stage knows when a video is whole.
Video rows (gather, with its AAM -> sink): one per video; its `VideoRecord` travels as one pickled `payload` (videos
    differ in clip count, and a blob keeps the rows flat whatever Arrow makes of ragged arrays).
Busy seconds: each stage adds its wall time as a `t_<stage>` column (STAGE_SECONDS, the one list of them); gather
    sums them per video, the sink returns them per video, and the run record sums them per run (`stage_busy_s`).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import numpy as np

OK = ""  # error_type of a good row
# Every stage's busy-seconds column, in pipeline order: clip stages (summed per video by gather) then video stages.
STAGE_SECONDS = ("t_decode", "t_prune", "t_transform", "t_pixels", "t_encode", "t_aam", "t_write")
# The per-clip arrays a clip row may carry on to its video record (the model stages add the last four).
CLIP_ARRAYS = ("clip_index", "start_s", "end_s", "features", "kept_tubelet_ids", "pruner_feature", "pixels")


@dataclass
class VideoRecord:
    """One whole video, from gather through the AAM to the sink: the one declaration of what a video row carries.

    A failed video has `error` ({"type", "stage", "message"}: its first failed segment) and no clips; an ok one has
    its clips in clip order, one row of each array in `clips` per clip (the CLIP_ARRAYS the stages produced).
    """

    uri: str
    labels: str | None = None  # JSON of the manifest's label columns (None: no manifest)
    source_id: str | None = None  # the manifest's own id of the video
    seconds: dict[str, float] = field(default_factory=dict)  # STAGE_SECONDS -> this video's busy seconds
    error: dict | None = None
    clips: dict[str, np.ndarray] = field(default_factory=dict)  # CLIP_ARRAYS name -> (n_clips, ...)

    @property
    def num_clips(self) -> int:
        return len(self.clips["clip_index"]) if "clip_index" in self.clips else 0

    def pack(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def unpack(blob) -> VideoRecord:
        record = pickle.loads(blob)
        if not isinstance(record, VideoRecord):
            raise TypeError(f"a video row's payload must be a packed VideoRecord, got {type(record).__name__}")
        return record


def error_fields(n: int) -> dict[str, np.ndarray]:
    return {
        "error_type": np.full(n, OK, dtype=object),
        "error_stage": np.full(n, OK, dtype=object),
        "error_message": np.full(n, OK, dtype=object),
    }


def clip_mask(batch: dict[str, np.ndarray]) -> np.ndarray:
    """Rows holding a real clip, not yet failed: the rows a model stage computes on."""
    return np.array(
        [k == "clip" and e == OK for k, e in zip(batch["kind"], batch["error_type"], strict=True)], dtype=bool
    )


def mark_failed(batch: dict[str, np.ndarray], rows: np.ndarray, stage: str, err: BaseException) -> None:
    """Record `err` on the given rows (bool mask) in place."""
    for col in ("error_type", "error_stage", "error_message"):
        batch[col] = batch[col].astype(object)
    batch["error_type"][rows] = getattr(getattr(err, "reason", None), "value", None) or type(err).__name__
    batch["error_stage"][rows] = stage
    batch["error_message"][rows] = str(err)[:2000]


def add_seconds(batch: dict[str, np.ndarray], column: str, seconds: float) -> None:
    """This stage's wall time, split evenly over the batch's rows (summed per video downstream, and per run)."""
    n = len(batch["video_id"])
    batch[column] = np.full(n, seconds / max(n, 1), dtype=np.float64)


class ClipCounter:
    """Clips through the pipeline's stages so far ({"decoded": n, "encoded": n}): a Ray actor the driver owns and
    reads for its progress line (the driver itself only sees whole videos, once committed). Stages add to it with
    `add_count`, without waiting for an answer."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + int(n)

    def get(self) -> dict[str, int]:
        return dict(self.counts)


def add_count(counter, key: str, n: int) -> None:
    """Add n to a ClipCounter actor's `key`; nothing when there is no counter (a stage called without Ray)."""
    if counter is not None and n:
        counter.add.remote(key, int(n))
