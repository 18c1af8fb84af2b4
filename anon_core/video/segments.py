"""Segment-level decode work, as run inside a DecoderProcess child by the pipeline's plan and decode stages.

Kept here, importing only the video package, so a fresh child starts in ~0.2 s instead of importing torch.
"""

from __future__ import annotations

import numpy as np

from .errors import DecodeFailure, VideoDecodeError
from .reader import VideoClipReader
from .sampling import ClipSpec, plan_clip_starts
from .source import open_source, probe


def probe_clip_count(uri: str, spec: ClipSpec) -> int:
    """How many clips the video's plan has; TOO_SHORT when none fits."""
    with open_source(uri, need_path=False) as src:
        meta = probe(src, uri)
    n = len(plan_clip_starts(meta.num_frames, spec))
    if n == 0:
        raise VideoDecodeError(DecodeFailure.TOO_SHORT, uri, f"{meta.num_frames} frames, one clip needs {spec.span}")
    return n


def decode_segment(uri: str, spec: ClipSpec, clip_range: tuple[int, int], backend: str) -> dict[str, np.ndarray]:
    """Clips [first, stop) of the video's plan, stacked: clip (k, T, S, S, 3) uint8, clip_index, start_s, end_s."""
    reader = VideoClipReader(uri, spec, backend, clip_range=clip_range)
    clips = list(reader.clips())
    return {
        "clip": np.stack([c.frames for c in clips]),  # (k, T, S, S, 3)
        "clip_index": np.array([c.index for c in clips], dtype=np.int64),
        "start_s": np.array([c.start_s for c in clips], dtype=np.float64),
        "end_s": np.array([c.end_s for c in clips], dtype=np.float64),
    }
