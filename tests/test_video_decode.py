"""Decoding real encoded files: every backend, every codec the generator writes, local and fsspec URIs.
(torchcodec's own checks, and how far its pixels are from PyAV's: tests/test_video_torchcodec.py.)"""

import fsspec
import numpy as np
import pytest
from conftest import index_of

from anon_core.video import ClipSpec, VideoClipReader, iter_clips, probe, read_clips
from anon_core.video.backends import BACKENDS

SPEC = ClipSpec(num_frames=4, stride=3, size=64)
# decord resizes with swscale's bicubic filter, PyAV with its bilinear one (antialiased on a downscale); they differ
# at the sharp cell borders (single pixels up to ~30 levels); the bulk of pixels must agree.
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


@pytest.fixture(scope="module")
def short_gop_video(tmp_path_factory):
    """200 indexed frames of H.264 with B-frames and a keyframe every 8 frames: segments start inside later GOPs."""
    import av
    from conftest import indexed_frame

    path = tmp_path_factory.mktemp("gop") / "gop8.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "veryfast", "bframes": "3"})
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.codec_context.gop_size = 8
        for i in range(200):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(indexed_frame(i, 160, 96), format="rgb24")))
        out.mux(stream.encode())
    return str(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_segment_deep_in_the_video_gives_the_whole_decodes_clips(short_gop_video, backend):
    """A segment (clip_range) starting past the first GOPs: every backend jumps ahead (PyAV to the last keyframe before
    it, found by a packet scan) and hands on exactly the clips a decode of the whole video gives there."""
    from anon_core.video.segments import decode_segment, probe_clip_count

    n = probe_clip_count(short_gop_video, SPEC)
    whole = decode_segment(short_gop_video, SPEC, (0, n), backend)["clip"]
    for first in (1, 5, 9, n - 1):
        seg = decode_segment(short_gop_video, SPEC, (first, n), backend)
        assert np.array_equal(seg["clip"], whole[first:]), (backend, first)
        step = SPEC.num_frames * SPEC.stride  # clips follow one another
        assert seg["clip_index"][0] == first and index_of(seg["clip"][0][0]) == (first * step) % 64


def test_pyav_seeks_to_the_keyframe_before_a_segment(short_gop_video):
    """PyAV does not decode the frames before a segment's GOP: asked for frame 150, the first frame it decodes is the
    keyframe of the GOP holding it (at most 8 frames before); a wanted frame in the first GOP decodes from the start."""
    import av

    from anon_core.video.backends import _pyav_seek

    with av.open(short_gop_video) as container:
        stream = container.streams.video[0]
        ranks = _pyav_seek(container, stream, 150)
        first = next(container.decode(stream))
        assert ranks is not None and 150 - 8 <= ranks[first.pts] <= 150 and first.key_frame
    with av.open(short_gop_video) as container:
        frame0 = next(container.decode(video=0)).pts
    with av.open(short_gop_video) as container:
        stream = container.streams.video[0]
        assert _pyav_seek(container, stream, 5) is None  # and back at the start
        assert next(container.decode(stream)).pts == frame0
