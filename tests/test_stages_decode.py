"""The plan and decode stages on plain dicts of NumPy arrays, without Ray, and the decoder child process beneath them.
The stages after decode are in test_stages_models.py."""

import json
import os
import time

import numpy as np
import pytest
import stage_helpers
from conftest import index_of
from stage_helpers import ERRORS, FPS, GOOD_CLIPS, LABELS, SPEC, concat, rows_of

from anon_core.video import DecodeFailure, DecoderProcess, VideoDecodeError
from anon_core.video.segments import probe_clip_count
from pipelines.stages import DecodeClips
from pipelines.stages.rows import OK

# the shared fixtures, bound here so that pytest finds them in this module
videos, segments, segments4 = stage_helpers.videos, stage_helpers.segments, stage_helpers.segments4
decoded, decoded4 = stage_helpers.decoded, stage_helpers.decoded4


# -- plan ----------------------------------------------------------------------------------------------------------


def test_plan_splits_a_good_video_into_segments_covering_every_clip_once(segments):
    good = rows_of(segments, "good")
    assert list(good["first_clip"]) == list(range(GOOD_CLIPS))
    assert list(good["seg_clips"]) == [1] * GOOD_CLIPS
    assert list(good["num_clips"]) == [GOOD_CLIPS] * GOOD_CLIPS
    covered = [c for a, k in zip(good["first_clip"], good["seg_clips"], strict=True) for c in range(a, a + k)]
    assert covered == list(range(GOOD_CLIPS))
    assert set(good["error_type"]) == set(good["error_stage"]) == set(good["error_message"]) == {OK}
    assert set(good["labels"]) == {json.dumps(LABELS["good"])}
    assert segments["first_clip"].dtype == np.int64 and segments["video_id"].dtype == object


def test_plan_segments_hold_at_most_clips_per_task(segments4):
    good = rows_of(segments4, "good")
    assert list(zip(good["first_clip"], good["seg_clips"], strict=True)) == [(0, 4), (4, 2)]
    assert list(good["num_clips"]) == [GOOD_CLIPS, GOOD_CLIPS]


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_plan_turns_a_bad_video_into_one_error_segment(segments, videos, name):
    row = rows_of(segments, name)
    assert len(row["video_id"]) == 1
    assert (row["num_clips"][0], row["first_clip"][0], row["seg_clips"][0]) == (1, 0, 1)
    assert row["error_type"][0] == ERRORS[name]
    assert row["error_stage"][0] == "probe"
    assert videos[name] in row["error_message"][0]
    assert row["uri"][0] == videos[name]


# -- decode --------------------------------------------------------------------------------------------------------


def test_decode_yields_one_clip_row_per_planned_clip(decoded):
    good = concat(b for b in decoded if b["video_id"][0] == "good")
    assert list(good["kind"]) == ["clip"] * GOOD_CLIPS
    assert list(good["clip_index"]) == list(range(GOOD_CLIPS))
    assert good["clip"].shape == (GOOD_CLIPS, 16, 112, 112, 3) and good["clip"].dtype == np.uint8
    assert list(good["covers"]) == [1] * GOOD_CLIPS
    assert list(good["num_clips"]) == [GOOD_CLIPS] * GOOD_CLIPS
    assert set(good["error_type"]) == {OK}
    np.testing.assert_allclose(good["start_s"], np.arange(GOOD_CLIPS) * 32 / FPS)
    np.testing.assert_allclose(good["end_s"], (np.arange(GOOD_CLIPS) * 32 + 31) / FPS)
    for ci, clip in zip(good["clip_index"], good["clip"], strict=True):  # frames ci*32, ci*32+2, ... (index mod 64)
        assert [index_of(f) for f in clip] == [(32 * ci + 2 * j) % 64 for j in range(16)]


def test_decode_ships_a_segment_in_blocks_of_clips_per_block(decoded4):
    good = [b for b in decoded4 if b["video_id"][0] == "good"]
    assert [list(b["clip_index"]) for b in good] == [[0, 1, 2], [3], [4, 5]]
    assert [b["clip"].shape for b in good] == [(3, 16, 112, 112, 3), (1, 16, 112, 112, 3), (2, 16, 112, 112, 3)]
    assert all(list(b["kind"]) == ["clip"] * len(b["kind"]) for b in good)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_decode_turns_an_error_segment_into_one_error_row(decoded, name):
    (row,) = [b for b in decoded if b["video_id"][0] == name]
    assert list(row["kind"]) == ["error"]
    assert list(row["covers"]) == [1]  # the segment's seg_clips
    assert list(row["clip_index"]) == [0]
    assert list(row["error_type"]) == [ERRORS[name]]
    assert list(row["error_stage"]) == ["probe"]
    assert row["clip"].shape == (1, 16, 112, 112, 3) and not row["clip"].any()


def _segment(video_id, uri, num_clips, first, count, error=(OK, OK, OK)):
    text = {"video_id": video_id, "uri": uri, "labels": None, **dict(zip(ERROR_COLUMNS, error, strict=True))}
    numbers = {"num_clips": num_clips, "first_clip": first, "seg_clips": count}
    return {k: np.array([v], dtype=object) for k, v in text.items()} | {
        k: np.array([v], dtype=np.int64) for k, v in numbers.items()
    }


ERROR_COLUMNS = ("error_type", "error_stage", "error_message")


def test_decode_error_row_covers_the_whole_segment():
    seg = _segment("v", "/nowhere/v.mp4", 12, 4, 5, ("truncated", "probe", "cut short"))
    (row,) = list(DecodeClips(SPEC)(seg))
    assert list(row["kind"]) == ["error"]
    assert (row["covers"][0], row["clip_index"][0], row["num_clips"][0]) == (5, 4, 12)
    assert (row["error_type"][0], row["error_stage"][0], row["error_message"][0]) == ("truncated", "probe", "cut short")


def test_decode_of_a_file_gone_since_planning_is_a_decode_error(tmp_path):
    seg = _segment("v", str(tmp_path / "gone.mp4"), 6, 2, 3)
    (row,) = list(DecodeClips(SPEC)(seg))
    assert list(row["kind"]) == ["error"]
    assert (row["covers"][0], row["clip_index"][0]) == (3, 2)
    assert (row["error_type"][0], row["error_stage"][0]) == ("not_found", "decode")


# -- the decoder child process -------------------------------------------------------------------------------------


@pytest.fixture
def decoder_process():
    proc = DecoderProcess(timeout_s=30)
    yield proc
    proc.close()


def test_decoder_process_survives_a_crash_in_its_child(decoder_process):
    assert decoder_process.call(os.getpid) != os.getpid()  # it really is another process
    with pytest.raises(VideoDecodeError) as info:
        decoder_process.call(os.abort, uri="crash.mp4")
    assert info.value.reason == DecodeFailure.DECODER_CRASH
    assert info.value.uri == "crash.mp4" and "SIGABRT" in str(info.value)
    assert decoder_process.call(abs, -3) == 3  # a fresh child serves the next call


def test_decoder_process_times_out_a_hung_call(decoder_process):
    decoder_process.timeout_s = 1.0
    t0 = time.monotonic()
    with pytest.raises(VideoDecodeError) as info:
        decoder_process.call(time.sleep, 60, uri="hang.mp4")
    assert info.value.reason == DecodeFailure.TIMEOUT and info.value.uri == "hang.mp4"
    assert time.monotonic() - t0 < 20
    decoder_process.timeout_s = 30.0  # room for a fresh child's start on a loaded machine
    assert decoder_process.call(abs, -4) == 4


def test_decoder_process_reraises_the_childs_exception_with_its_type(decoder_process, tmp_path):
    with pytest.raises(ValueError, match="invalid literal"):
        decoder_process.call(int, "not a number")
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(VideoDecodeError) as info:  # raised in the child, reason and uri kept across the pipe
        decoder_process.call(probe_clip_count, missing, SPEC, uri=missing)
    assert (info.value.reason, info.value.uri) == (DecodeFailure.NOT_FOUND, missing)
    pid = decoder_process.call(os.getpid)
    assert decoder_process.call(os.getpid) == pid  # an exception does not cost the child


def test_decoder_process_recovers_from_a_failed_child_start(monkeypatch):
    import multiprocessing as mp

    spawn_process = mp.get_context("spawn").Process
    real_start = spawn_process.start
    calls = []

    def flaky_start(self):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(24, "Too many open files")
        return real_start(self)

    monkeypatch.setattr(spawn_process, "start", flaky_start)
    decoder_process = DecoderProcess(timeout_s=30)
    with pytest.raises(OSError):
        decoder_process.call(abs, -1)  # e.g. out of file descriptors for a moment
    assert decoder_process.call(abs, -5) == 5  # the worker's next video must not inherit the failure
    decoder_process.close()
