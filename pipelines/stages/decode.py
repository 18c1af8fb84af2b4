"""Decode: one segment of a video -> its clips, (T, S, S, 3) uint8 rows. Frames never leave the task; clips do.

The decoding itself runs in this worker's decoder child process (anon_core.video.DecoderProcess): a segfault in a
decoder on a corrupt file becomes a `decoder_crash` error row for that video, not a dead worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from anon_core.video import ClipSpec, VideoDecodeError
from anon_core.video.reader import DEFAULT_BACKEND
from anon_core.video.segments import decode_segment

from .rows import OK, add_count
from .workers import decoder


@dataclass
class DecodeClips:
    spec: ClipSpec
    backend: str = DEFAULT_BACKEND
    timeout_s: float = 600.0
    clips_per_block: int = 8  # clips per output block: bounds what one task ships at once
    segment_clips: int = 32  # the most clips one task holds (the plan stage's clips_per_task)
    counter: object = None  # a ClipCounter actor (rows.py) the clips decoded are added to, for the progress line

    def ray_args(self) -> dict:
        # A segment's clips (held twice: child and worker) plus the decoder's own buffers. Declaring memory also keeps
        # Ray Data from fusing decode into the model actors that follow (fusion needs equal resources), so decoding
        # never idles an accelerator. Half a CPU: the decoder child runs one thread, and on small machines a whole
        # CPU per task would leave none for the model actors.
        clip_bytes = self.spec.num_frames * self.spec.size * self.spec.size * 3
        # Four segments per task (one held at a time): tiny videos do not pay a task's overhead each.
        return {"num_cpus": 0.5, "memory": 2 * self.segment_clips * clip_bytes + (640 << 20), "batch_size": 4}

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(batch["video_id"])):
            row = {k: v[i] for k, v in batch.items()}
            yield from self._segment(row)

    def _segment(self, row: dict) -> Iterator[dict[str, np.ndarray]]:
        first, count = int(row["first_clip"]), int(row["seg_clips"])
        if row["error_type"] != OK:
            yield self._error_rows(row, first, count, row["error_type"], row["error_stage"], row["error_message"])
            return
        uri = row["uri"]
        t0 = time.perf_counter()
        try:
            seg = decoder().call(
                decode_segment, uri, self.spec, (first, first + count), self.backend, uri=uri, timeout_s=self.timeout_s
            )
        except VideoDecodeError as e:
            yield self._error_rows(row, first, count, e.reason.value, "decode", str(e))
            return
        except Exception as e:  # anything else the decoder raised: still this video's problem only
            yield self._error_rows(row, first, count, type(e).__name__, "decode", str(e))
            return
        k = len(seg["clip_index"])
        add_count(self.counter, "decoded", k)
        per_clip = (time.perf_counter() - t0) / max(k, 1)
        for a in range(0, k, self.clips_per_block):
            b = min(k, a + self.clips_per_block)
            yield {
                **self._row_fields(row, b - a, covers=1, kind="clip"),
                "clip_index": seg["clip_index"][a:b],
                "start_s": seg["start_s"][a:b],
                "end_s": seg["end_s"][a:b],
                "clip": seg["clip"][a:b],
                "t_decode": np.full(b - a, per_clip),
            }
        if k != count:
            # The stream ended inside this segment, within the reader's tolerance: a video a little shorter than its
            # header promised. The clips past its end do not exist; they are not an error, but the gather stage must
            # still count them, so a row covering them says so.
            yield self._error_rows(row, first + k, count - k, OK, OK, OK, kind="gap")

    def _row_fields(self, row: dict, n: int, covers: int, kind: str) -> dict[str, np.ndarray]:
        return {
            "kind": np.full(n, kind, dtype=object),
            "video_id": np.full(n, row["video_id"], dtype=object),
            "uri": np.full(n, row["uri"], dtype=object),
            "labels": np.full(n, row["labels"], dtype=object),
            "source_id": np.full(n, row.get("source_id"), dtype=object),
            "num_clips": np.full(n, int(row["num_clips"]), dtype=np.int64),
            "covers": np.full(n, covers, dtype=np.int64),
            "error_type": np.full(n, OK, dtype=object),
            "error_stage": np.full(n, OK, dtype=object),
            "error_message": np.full(n, OK, dtype=object),
        }

    def _error_rows(
        self, row: dict, first: int, count: int, etype: str, stage: str, message: str, kind: str = "error"
    ) -> dict:
        """One row standing for `count` clips from `first` on that produced no clip."""
        T, S = self.spec.num_frames, self.spec.size
        out = self._row_fields(row, 1, covers=count, kind=kind)
        out.update(
            error_type=np.array([etype], dtype=object),
            error_stage=np.array([stage], dtype=object),
            error_message=np.array([str(message)[:2000]], dtype=object),
            clip_index=np.array([first], dtype=np.int64),
            start_s=np.zeros(1),
            end_s=np.zeros(1),
            clip=np.zeros((1, T, S, S, 3), dtype=np.uint8),
            t_decode=np.zeros(1),
        )
        return out
