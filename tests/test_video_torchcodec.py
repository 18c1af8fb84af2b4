"""torchcodec, the third decode backend: PyAV's frames with its own scaling, damage told apart, and its fallbacks.

The tests that decode need FFmpeg's shared libraries (torchcodec loads them at run time); without them they are
skipped, and the tests of what the reader does then (fall back to PyAV, or name the fix) still run.
"""

import struct

import numpy as np
import pytest
from conftest import index_of, write_indexed_video

import anon_core.video.backends as backends
import anon_core.video.reader as reader_mod
from anon_core.video import ClipSpec, DecodeFailure, VideoClipReader, VideoDecodeError, read_clips
from anon_core.video.backends import BackendUnavailable, torchcodec_frames

needs_ffmpeg_libs = pytest.mark.skipif(
    backends.torchcodec_unavailable() is not None, reason=str(backends.torchcodec_unavailable())
)

SPEC = ClipSpec(num_frames=4, stride=3, size=64)
# torchcodec converts to RGB at full size, then scales bilinearly with antialiasing; PyAV converts and scales in one
# bicubic swscale pass. Measured on the 160x96 indexed videos: mean |diff| 1.13-1.16 (mostly PyAV coming out one grey
# level brighter), 99th percentile 11, max 24 at the cell borders. On 1280x720 (cropped before scaling): 1.09, 4, 19.
MEAN_ABS_TOL = 1.5
P99_ABS_TOL = 12

# tkhd display matrices (16.16 fixed point) as `ffmpeg -metadata:s:v rotate=R` writes them
_IDENTITY = (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
_ROTATIONS = {90: (0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30), 180: (-65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30),
              270: (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)}  # fmt: skip


def _rotated(data: bytes, degrees: int) -> bytes:
    """The mp4 with its video track marked as shown turned by `degrees` (the frames as stored stay the same)."""
    at = data.index(struct.pack(">9i", *_IDENTITY), data.index(b"tkhd"))  # the track's matrix, not the movie's
    return data[:at] + struct.pack(">9i", *_ROTATIONS[degrees]) + data[at + 36 :]


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def _frames_right(decoded, stride: int) -> bool:
    got = [[index_of(f) for f in clip] for clip in decoded.clips]
    return got == [[s + stride * i for i in range(decoded.clips.shape[1])] for s in decoded.start_frames]


@pytest.fixture(scope="module")
def hd_videos(tmp_path_factory) -> dict[int, str]:
    """A 24-frame 1280x720 indexed h264 video, and copies marked as rotated by 90, 180 and 270 degrees."""
    d = tmp_path_factory.mktemp("hd")
    plain = write_indexed_video(d / "hd.mp4", 24, width=1280, height=720)
    out = {0: str(plain)}
    for degrees in _ROTATIONS:
        path = d / f"hd_rot{degrees}.mp4"
        path.write_bytes(_rotated(plain.read_bytes(), degrees))
        out[degrees] = str(path)
    return out


@needs_ffmpeg_libs
@pytest.mark.parametrize("codec", ["h264", "vp9", "mpeg4"])
def test_torchcodec_gives_the_frames_pyav_gives(indexed_videos, codec):
    path = str(indexed_videos[codec])
    a = read_clips(path, SPEC, "torchcodec", fallback=False)
    b = read_clips(path, SPEC, "pyav")
    assert a.backend == "torchcodec" and b.backend == "pyav"
    assert a.clips.shape == b.clips.shape == (64 // 12, 4, 64, 64, 3)
    assert np.array_equal(a.start_frames, b.start_frames)
    assert _frames_right(a, 3) and _frames_right(b, 3)
    diff = _diff(a.clips, b.clips)
    assert diff.mean() < MEAN_ABS_TOL and np.percentile(diff, 99) <= P99_ABS_TOL, (diff.mean(), diff.max())


@needs_ffmpeg_libs
def test_hd_frames_are_cropped_before_scaling_and_rotation_is_undone(hd_videos):
    """At 1280x720 the clip square is cut in the decoder, before scaling. torchcodec turns rotated videos upright; the
    backend turns them back, so a rotated copy gives exactly the unrotated file's clips, as PyAV and decord do."""
    spec = ClipSpec(num_frames=4, stride=2, size=112)
    transforms, crop_after = backends._torchcodec_transforms(199, 112, 1280, 720, 0, 112)
    assert len(transforms) == 2 and not crop_after  # crop, then resize
    plain = read_clips(hd_videos[0], spec, "torchcodec", fallback=False)
    by_pyav = read_clips(hd_videos[0], spec, "pyav")
    assert _frames_right(plain, 2) and np.array_equal(plain.start_frames, by_pyav.start_frames)
    diff = _diff(plain.clips, by_pyav.clips)
    assert diff.mean() < MEAN_ABS_TOL and np.percentile(diff, 99) <= P99_ABS_TOL, (diff.mean(), diff.max())
    for degrees in _ROTATIONS:
        turned = read_clips(hd_videos[degrees], spec, "torchcodec", fallback=False)
        assert np.array_equal(turned.clips, plain.clips), degrees
        assert np.array_equal(read_clips(hd_videos[degrees], spec, "pyav").clips, by_pyav.clips)


@needs_ffmpeg_libs
def test_small_sources_are_scaled_whole_then_cropped(indexed_videos, tmp_path):
    """160x96 -> 107x64: FFmpeg's whole-pixel crop would land 0.27 output pixels off the reader's crop, so the whole
    frame is scaled and the square cut afterwards, rotated or not (a rotated frame is scaled upright, where swscale
    rounds a few pixels the other way: measured 0.02-0.05% of them off by one)."""
    transforms, crop_after = backends._torchcodec_transforms(107, 64, 160, 96, 0, 64)
    assert len(transforms) == 1 and crop_after
    plain = read_clips(str(indexed_videos["h264"]), SPEC, "torchcodec").clips
    for degrees in _ROTATIONS:
        path = tmp_path / f"rot{degrees}.mp4"
        path.write_bytes(_rotated(indexed_videos["h264"].read_bytes(), degrees))
        turned = read_clips(str(path), SPEC, "torchcodec", fallback=False)
        assert _frames_right(turned, 3) and _diff(turned.clips, plain).max() <= 1, degrees


@needs_ffmpeg_libs
def test_scaling_is_an_exact_antialiased_bilinear_resize(indexed_videos):
    """torchcodec's frames equal its own full-size frames resized in float (torch, bilinear, antialiased) within
    rounding: measured mean |diff| 0.001. (PyAV's one-pass scaling comes out ~1 grey level brighter than this.)"""
    import torch

    path = str(indexed_videos["h264"])
    wanted = [0, 7, 30, 63]
    small = np.stack([f for _, f in torchcodec_frames(path, wanted, 107, 64, path)])
    full = np.stack([f for _, f in torchcodec_frames(path, wanted, 160, 96, path)])  # no scaling at all
    ref = torch.nn.functional.interpolate(torch.from_numpy(full).permute(0, 3, 1, 2).float(), size=(64, 107),
                                          mode="bilinear", antialias=True).permute(0, 2, 3, 1).numpy()  # fmt: skip
    assert small.shape == (4, 64, 107, 3) and np.abs(small - ref).mean() < 0.1


@needs_ffmpeg_libs
def test_frames_are_decoded_in_bounded_chunks(indexed_videos, monkeypatch):
    from torchcodec.decoders import VideoDecoder

    asked = []
    real = VideoDecoder.get_frames_at

    def recording(self, indices):
        asked.append(list(indices))
        return real(self, indices)

    monkeypatch.setattr(VideoDecoder, "get_frames_at", recording)
    spec = ClipSpec(num_frames=4, stride=1, size=64)  # 64 clips' worth of frames: every frame of the video
    d = read_clips(str(indexed_videos["h264"]), spec, "torchcodec", fallback=False)
    assert len(d.clips) == 16 and _frames_right(d, 1)
    assert [i for chunk in asked for i in chunk] == list(range(64))
    assert max(len(chunk) for chunk in asked) == backends.TORCHCODEC_CHUNK < 64


@needs_ffmpeg_libs
@pytest.mark.parametrize("backend", ["torchcodec", "pyav"])
def test_damage_inside_the_stream_is_told_apart(indexed_videos, tmp_path, backend):
    """A cut-off file and one with invalid data in the middle: torchcodec names them as PyAV does, with no fallback."""
    good, webm = indexed_videos["h264"].read_bytes(), indexed_videos["vp9"].read_bytes()
    corrupt = bytearray(good)
    mid = len(good) // 2
    corrupt[mid : mid + 400] = np.random.default_rng(3).integers(0, 256, 400, dtype=np.uint8).tobytes()
    cases = {
        "truncated.mp4": (good[: int(len(good) * 0.6)], DecodeFailure.TRUNCATED),  # its index intact, frames cut
        "truncated.webm": (webm[: int(len(webm) * 0.7)], DecodeFailure.TRUNCATED),  # the stream ends early
        "corrupt.mp4": (bytes(corrupt), DecodeFailure.CORRUPT),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(VideoDecodeError) as info:
            read_clips(str(path), ClipSpec(num_frames=4, stride=2, size=32), backend, fallback=False)
        assert info.value.reason == reason, (name, str(info.value))
        if backend == "torchcodec" and name.endswith(".mp4"):
            assert "torchcodec failed in frames" in str(info.value)


@needs_ffmpeg_libs
def test_a_file_torchcodec_cannot_open_is_read_with_pyav(indexed_videos, monkeypatch):
    import torchcodec.decoders

    def cannot_open(*args, **kwargs):
        raise RuntimeError("Could not open input file: Invalid data found when processing input")

    path = str(indexed_videos["h264"])
    by_pyav = read_clips(path, SPEC, "pyav")
    monkeypatch.setattr(torchcodec.decoders, "VideoDecoder", cannot_open)
    d = read_clips(path, SPEC, "torchcodec")
    assert d.backend == "pyav" and np.array_equal(d.clips, by_pyav.clips)
    with pytest.raises(VideoDecodeError) as info:
        read_clips(path, SPEC, "torchcodec", fallback=False)
    assert info.value.reason == DecodeFailure.TRUNCATED  # a known container that its decoder cannot open


@needs_ffmpeg_libs
def test_a_stream_torchcodec_stops_in_is_finished_with_pyav(indexed_videos, monkeypatch):
    """torchcodec fails inside the stream after delivering some clips: the clips it did not deliver are PyAV's."""
    real = reader_mod.torchcodec_frames

    def fails_at_frame_9(src, wanted, w, h, uri, threads, size_bytes, **kw):
        for idx, frame in real(src, wanted, w, h, uri, threads, size_bytes, **kw):
            if idx >= 9:
                raise VideoDecodeError(DecodeFailure.CORRUPT, uri, f"torchcodec failed in frames {idx}-{idx}")
            yield idx, frame

    uri = str(indexed_videos["h264"])
    spec = ClipSpec(num_frames=4, stride=2, size=32)
    by_tc, by_pyav = read_clips(uri, spec, "torchcodec").clips, read_clips(uri, spec, "pyav").clips
    monkeypatch.setattr(reader_mod, "torchcodec_frames", fails_at_frame_9)
    reader = VideoClipReader(uri, spec, "torchcodec")
    clips = list(reader.clips())
    assert reader.used_backend == "torchcodec+pyav" and len(clips) == len(by_pyav) > 2
    assert [c.index for c in clips] == list(range(len(clips)))
    source = ["torchcodec" if np.array_equal(c.frames, by_tc[c.index]) else
              "pyav" if np.array_equal(c.frames, by_pyav[c.index]) else "neither" for c in clips]  # fmt: skip
    done = source.index("pyav")
    assert done >= 1 and source == ["torchcodec"] * done + ["pyav"] * (len(clips) - done)
    with pytest.raises(VideoDecodeError, match="torchcodec failed in frames"):
        list(VideoClipReader(uri, spec, "torchcodec", fallback=False).clips())


def test_without_ffmpeg_libraries_torchcodec_falls_back_and_names_the_fix(indexed_videos, monkeypatch):
    """No FFmpeg shared libraries: every video is decoded with PyAV, with a warning that says what to install; without
    fallback the error says it. (Runs with or without the libraries: their absence is what it plays.)"""
    torchcodec = pytest.importorskip("torchcodec")
    monkeypatch.setattr(torchcodec, "ffmpeg_major_version", None)  # what torchcodec reports when it found none
    reason = backends.torchcodec_unavailable.__wrapped__()
    assert "apt-get install ffmpeg" in reason
    monkeypatch.setattr(backends, "torchcodec_unavailable", lambda: reason)
    path = str(indexed_videos["h264"])
    with pytest.warns(RuntimeWarning, match="apt-get install ffmpeg.*decoding with pyav instead"):
        d = read_clips(path, SPEC, "torchcodec")
    assert d.backend == "pyav" and np.array_equal(d.clips, read_clips(path, SPEC, "pyav").clips)
    with pytest.raises(BackendUnavailable, match="apt-get install ffmpeg"):
        read_clips(path, SPEC, "torchcodec", fallback=False)
