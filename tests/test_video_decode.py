"""Decoding real encoded files: every backend, every codec the generator writes, local and fsspec URIs.
(torchcodec's own checks, and how far its pixels are from PyAV's: tests/test_video_torchcodec.py.)"""

import fsspec
import numpy as np
import pytest
from conftest import index_of

from anon_core.video import ClipSpec, VideoClipReader, iter_clips, probe, read_clips
from anon_core.video.backends import BACKENDS

SPEC = ClipSpec(num_frames=4, stride=3, size=64)
# Both backends resize with swscale's bicubic filter but round differently at a few edge pixels (measured on these
# files: mean |diff| ~0.2, max ~30 on single pixels at the sharp cell borders); the bulk of pixels must agree.
MEAN_ABS_TOL = 1.0
P99_ABS_TOL = 12


@pytest.mark.parametrize("codec", ["h264", "vp9", "mpeg4"])
def test_decord_and_pyav_agree_on_frames_and_pixels(indexed_videos, codec):
    path = str(indexed_videos[codec])
    a = read_clips(path, SPEC, "decord", fallback=False)
    b = read_clips(path, SPEC, "pyav")
    assert a.backend == "decord" and b.backend == "pyav"
    assert a.meta.num_frames == b.meta.num_frames == 64
    assert a.meta.codec == b.meta.codec
    assert a.clips.shape == b.clips.shape == (64 // 12, 4, 64, 64, 3)
    assert np.array_equal(a.start_frames, b.start_frames)
    for decoded in (a, b):  # the right frames, in the right order
        got = [[index_of(f) for f in clip] for clip in decoded.clips]
        want = [[s + 3 * i for i in range(4)] for s in decoded.start_frames]
        assert got == want
    diff = np.abs(a.clips.astype(np.int16) - b.clips.astype(np.int16))
    assert diff.mean() < MEAN_ABS_TOL and np.percentile(diff, 99) <= P99_ABS_TOL, (diff.mean(), diff.max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata(indexed_videos, backend):
    meta = probe(str(indexed_videos["h264"]))
    assert (meta.width, meta.height, meta.fps, meta.num_frames, meta.codec) == (160, 96, 25.0, 64, "h264")
    assert meta.duration_s == pytest.approx(64 / 25, abs=0.05)
    assert meta.frame_count_exact
    webm = probe(str(indexed_videos["vp9"]))
    assert webm.num_frames == 64 and not webm.frame_count_exact  # webm keeps no count: duration x fps


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_clips_spread_over_the_video(indexed_videos, backend):
    spec = ClipSpec(num_frames=2, stride=1, size=64, max_clips=3)
    d = read_clips(str(indexed_videos["mpeg4"]), spec, backend, fallback=False)
    assert d.start_frames.tolist() == [0, 32, 62]  # 32 windows of 2 frames; first, middle and last
    assert [[index_of(f) for f in c] for c in d.clips] == [[0, 1], [32, 33], [62, 63]]
    assert d.start_s.tolist() == pytest.approx([0, 32 / 25, 62 / 25])
    assert d.end_s.tolist() == pytest.approx([2 / 25, 34 / 25, 64 / 25])


@pytest.mark.parametrize("backend", BACKENDS)
def test_fsspec_uri_reads_like_a_local_file(indexed_videos, backend):
    path = indexed_videos["h264"]
    uri = f"memory://anonvid-test/{backend}/clip.mp4"
    with fsspec.open(uri, "wb") as f:
        f.write(path.read_bytes())
    remote = read_clips(uri, SPEC, backend, fallback=False)
    local = read_clips(str(path), SPEC, backend, fallback=False)
    assert remote.meta.uri == uri
    assert np.array_equal(remote.clips, local.clips)


def test_iter_clips_yields_one_clip_at_a_time(indexed_videos):
    reader = VideoClipReader(str(indexed_videos["h264"]), SPEC)
    it = reader.clips()
    first = next(it)
    assert first.index == 0 and first.frames.shape == (4, 64, 64, 3) and reader.meta is not None
    rest = list(it)
    assert [c.index for c in rest] == list(range(1, 5))
    assert sum(1 for _ in iter_clips(str(indexed_videos["vp9"]), SPEC, "pyav")) == 5


def test_unknown_backend_is_a_clear_error(indexed_videos):
    with pytest.raises(ValueError, match="unknown backend 'opencv'"):
        read_clips(str(indexed_videos["h264"]), SPEC, "opencv")
