"""What the stage tests share: the test videos, the plan and decode outputs over them, and small batch helpers.

Fixtures here are imported by test_stages_decode.py and test_stages_models.py; being module-scoped, each test module
gets its own (cheap) copy of them.
"""

import json

import numpy as np
import pytest
from conftest import write_indexed_video

from anon_core.video import ClipSpec
from pipelines.stages import DecodeClips, PlanSegments

SPEC = ClipSpec()  # 16 frames at stride 2, 112 px: what the tiny models take
FPS = 25
GOOD_CLIPS = 6  # 200 frames: (200 - 31) // 32 + 1 clips of 16 x 2
DIM = 192
ERRORS = {"missing": "not_found", "short": "too_short", "text": "not_a_video"}
LABELS = {"good": {"action": "wave", "identity": 3}}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("stage_videos")
    (d / "text.mp4").write_bytes(b"a shopping list, not a video\n" * 40)
    return {
        "good": str(write_indexed_video(d / "good.mp4", 200)),
        "missing": str(d / "missing.mp4"),
        "short": str(write_indexed_video(d / "short.mp4", 20)),  # one clip spans 31 frames
        "text": str(d / "text.mp4"),
    }


def listing_rows(videos: dict[str, str], names) -> dict[str, np.ndarray]:
    """What the driver hands the plan stage: the listing's columns (video_id = the name here)."""
    return {
        "video_id": np.array(names, dtype=object),
        "uri": np.array([videos[n] for n in names], dtype=object),
        "labels": np.array([json.dumps(LABELS[n]) if n in LABELS else None for n in names], dtype=object),
    }


def copy_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in batch.items()}


def concat(batches) -> dict[str, np.ndarray]:
    batches = list(batches)
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def rows_of(batch: dict[str, np.ndarray], video_id: str) -> dict[str, np.ndarray]:
    keep = batch["video_id"] == video_id
    return {k: v[keep] for k, v in batch.items()}


@pytest.fixture(scope="module")
def segments(videos):
    """One clip per segment: the good video becomes GOOD_CLIPS segments, each bad one a single error segment."""
    return PlanSegments(SPEC, clips_per_task=1)(listing_rows(videos, ["good", "missing", "short", "text"]))


@pytest.fixture(scope="module")
def segments4(videos):
    return PlanSegments(SPEC, clips_per_task=4)(listing_rows(videos, ["good", "missing"]))


@pytest.fixture(scope="module")
def decoded(segments):
    return list(DecodeClips(SPEC)(copy_batch(segments)))


@pytest.fixture(scope="module")
def decoded4(segments4):
    """Segments of up to 4 clips, shipped in blocks of up to 3: several clips per batch."""
    return list(DecodeClips(SPEC, clips_per_block=3, segment_clips=4)(copy_batch(segments4)))
