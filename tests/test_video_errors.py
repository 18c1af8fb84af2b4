"""Bad input: every kind of broken file gives a typed VideoDecodeError; a crashing decoder never kills the caller."""

import faulthandler
import time

import av
import numpy as np
import pytest
from conftest import write_indexed_video

from anon_core.video import ClipSpec, DecodeFailure, VideoDecodeError, read_clips, read_clips_isolated, run_isolated

SPEC = ClipSpec(num_frames=4, stride=2, size=32)
BACKENDS = ["torchcodec", "decord", "pyav"]


def _mux(c, s, frames, path):
    """Encode `frames` with stream `s` into the open container `c`, flush the encoder, close; returns `path`."""
    for frame in frames:
        for p in s.encode(frame):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def _write_mp4_index_at_end(path, n=200):
    """An mp4 without +faststart: its index (moov) comes after the frames, so a cut loses all of it."""
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    rng = np.random.default_rng(0)
    frames = (av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), format="rgb24")
              for _ in range(n))  # fmt: skip
    return _mux(c, s, frames, path)


def _write_audio_only(path):
    c = av.open(str(path), "w")
    s = c.add_stream("aac", rate=16000)

    def frame(k: int):
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 16000, k * 1024
        return f

    return _mux(c, s, (frame(k) for k in range(20)), path)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, indexed_videos):
    d = tmp_path_factory.mktemp("bad")
    good = indexed_videos["h264"].read_bytes()
    files = {}

    def put(name, data):
        (d / name).write_bytes(data)
        files[name] = str(d / name)

    put("empty.mp4", b"")
    put("text.mp4", b"this is a shopping list, not a video\n" * 50)
    put("random.bin", np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    put("truncated_faststart.mp4", good[: int(len(good) * 0.6)])  # index intact, frames cut
    tail = _write_mp4_index_at_end(d / "tail.mp4").read_bytes()
    put("truncated_index_at_end.mp4", tail[: len(tail) // 2])  # index lost
    put("truncated_webm.webm", indexed_videos["vp9"].read_bytes()[:400])
    put("unknown_codec.mp4", good.replace(b"avc1", b"zzzz"))  # a fourcc no decoder knows
    # The header claims 16000 x 16000: one frame would need 768 MB. Must be refused before any decoder allocates.
    put("absurd.y4m", b"YUV4MPEG2 W16000 H16000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 4096)
    put("no_frames.y4m", b"YUV4MPEG2 W64 H64 F25:1 Ip A1:1 C420jpeg\n")  # a valid header, then nothing
    files["missing.mp4"] = str(d / "missing.mp4")
    files["short.mp4"] = str(write_indexed_video(d / "short.mp4", 5))  # one clip needs 7 frames
    put("cut_at_100.mp4", good[:100])  # the container's first box, then nothing
    put("image.mp4", b"\x89PNG\r\n\x1a\n" + bytes(2000))  # a picture renamed .mp4
    put("zeros.mp4", bytes(5000))
    moov = bytearray(good)
    at = good.find(b"moov")
    moov[at : at + 4] = b"XXXX"  # the index box renamed: the frames are there, nothing says where
    put("index_box_damaged.mp4", bytes(moov))
    files["audio_only.mp4"] = str(_write_audio_only(d / "audio_only.mp4"))
    (d / "dangling.mp4").symlink_to(d / "gone.mp4")
    (d / "loop_a.mp4").symlink_to(d / "loop_b.mp4")
    (d / "loop_b.mp4").symlink_to(d / "loop_a.mp4")
    files.update({n: str(d / n) for n in ("dangling.mp4", "loop_a.mp4")})
    return files


EXPECTED = {
    "empty.mp4": DecodeFailure.EMPTY,
    "text.mp4": DecodeFailure.NOT_A_VIDEO,
    "random.bin": DecodeFailure.NOT_A_VIDEO,
    "truncated_faststart.mp4": DecodeFailure.TRUNCATED,
    "truncated_index_at_end.mp4": DecodeFailure.TRUNCATED,
    "truncated_webm.webm": DecodeFailure.TRUNCATED,
    "unknown_codec.mp4": DecodeFailure.UNSUPPORTED_CODEC,
    "absurd.y4m": DecodeFailure.BAD_DIMENSIONS,
    "missing.mp4": DecodeFailure.NOT_FOUND,
    "no_frames.y4m": DecodeFailure.NO_FRAMES,
    "short.mp4": DecodeFailure.TOO_SHORT,
    "cut_at_100.mp4": DecodeFailure.TRUNCATED,
    "image.mp4": DecodeFailure.NOT_A_VIDEO,
    "zeros.mp4": DecodeFailure.NOT_A_VIDEO,
    "index_box_damaged.mp4": DecodeFailure.TRUNCATED,
    "audio_only.mp4": DecodeFailure.NOT_A_VIDEO,
    "dangling.mp4": DecodeFailure.BROKEN_LINK,
    "loop_a.mp4": DecodeFailure.BROKEN_LINK,
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file_gives_typed_error(bad_files, name, backend):
    with pytest.raises(VideoDecodeError) as info:
        read_clips(bad_files[name], SPEC, backend)
    err = info.value
    assert err.reason == EXPECTED[name], str(err)
    assert err.uri == bad_files[name]
    assert "->" in str(err)  # every message ends with what to do about it


def test_fuzzed_files_never_take_down_the_caller(indexed_videos, tmp_path):
    """Random byte corruption: each file either decodes or raises VideoDecodeError, in an isolated process."""
    good = indexed_videos["h264"].read_bytes()
    rng = np.random.default_rng(7)
    outcomes = []
    for i in range(6):
        data = np.frombuffer(good, dtype=np.uint8).copy()
        data[rng.integers(64, len(data), 40)] = rng.integers(0, 256, 40, dtype=np.uint8)
        path = tmp_path / f"fuzz{i}.mp4"
        path.write_bytes(data.tobytes())
        try:
            read_clips_isolated(str(path), SPEC, timeout_s=120)
            outcomes.append("decoded")
        except VideoDecodeError as e:
            outcomes.append(e.reason.value)
    assert len(outcomes) == 6
    print("\nfuzzed outcomes:", outcomes)


def test_segfault_in_decoder_process_becomes_decoder_crash():
    # faulthandler._sigsegv raises a real SIGSEGV, as a decoder bug would; only the child process dies
    with pytest.raises(VideoDecodeError) as info:
        run_isolated(faulthandler._sigsegv, uri="crash.mp4", timeout_s=60)
    assert info.value.reason == DecodeFailure.DECODER_CRASH
    assert "SIGSEGV" in str(info.value)


def test_hung_decoder_process_times_out():
    t0 = time.monotonic()
    with pytest.raises(VideoDecodeError) as info:
        run_isolated(time.sleep, 60, uri="hang.mp4", timeout_s=3)
    assert info.value.reason == DecodeFailure.TIMEOUT
    assert time.monotonic() - t0 < 30


def test_the_decoder_child_hands_back_arrays_whole_and_writable():
    """Results cross the pipe with their arrays out of band (isolation._send): every layout and size arrives equal,
    and the parent owns it (writable, as the models' torch.from_numpy needs)."""
    from anon_core.video import DecoderProcess

    sent = {"clip": np.arange(5 * 4 * 8 * 8 * 3, dtype=np.uint8).reshape(5, 4, 8, 8, 3),
            "empty": np.zeros((0, 3), np.float32), "strided": np.arange(20.0)[::3],
            "fortran": np.asfortranarray(np.arange(12).reshape(3, 4)),
            "names": np.array(["a", None], dtype=object)}  # fmt: skip
    d = DecoderProcess(timeout_s=60)
    try:
        got = d.call(dict, **sent)
    finally:
        d.close()
    assert got.keys() == sent.keys()
    for k, v in sent.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)
    assert got["clip"].flags.writeable and got["fortran"].flags.writeable


def test_isolated_read_returns_the_same_clips_and_errors(indexed_videos, bad_files):
    path = str(indexed_videos["h264"])
    assert np.array_equal(read_clips_isolated(path, SPEC).clips, read_clips(path, SPEC).clips)
    with pytest.raises(VideoDecodeError) as info:
        read_clips_isolated(bad_files["text.mp4"], SPEC)
    assert info.value.reason == DecodeFailure.NOT_A_VIDEO  # the typed error crosses the process boundary


def test_a_stream_decord_stops_in_is_finished_with_pyav(indexed_videos, monkeypatch):
    """decord fails inside the stream, after opening the file and delivering some clips (it does so on some damaged
    files, and not always at the same frame): the reader decodes the clips it did not deliver with PyAV, the same
    frames PyAV alone gives, instead of failing the whole video. Without fallback the failure stands."""
    import anon_core.video.reader as reader_mod
    from anon_core.video import DecodeFailure, VideoClipReader

    real = reader_mod.decord_frames

    def fails_at_frame_9(src, wanted, w, h, uri, threads):
        for idx, frame in real(src, wanted, w, h, uri, threads):
            if idx >= 9:
                raise VideoDecodeError(DecodeFailure.CORRUPT, uri, f"decord failed at frame {idx}")
            yield idx, frame

    uri = str(indexed_videos["h264"])
    by_decord, by_pyav = read_clips(uri, SPEC, "decord").clips, read_clips(uri, SPEC, "pyav").clips  # (n, T, ...)
    monkeypatch.setattr(reader_mod, "decord_frames", fails_at_frame_9)
    reader = VideoClipReader(uri, SPEC, "decord")
    clips = list(reader.clips())
    assert reader.used_backend == "decord+pyav" and len(clips) == len(by_pyav) > 2
    assert [c.index for c in clips] == list(range(len(clips)))
    # the two decoders scale frames a little differently: the first clips are decord's, the rest PyAV's
    source = ["decord" if np.array_equal(c.frames, by_decord[c.index]) else
              "pyav" if np.array_equal(c.frames, by_pyav[c.index]) else "neither" for c in clips]  # fmt: skip
    done = source.index("pyav")
    assert done >= 1 and source == ["decord"] * done + ["pyav"] * (len(clips) - done)
    with pytest.raises(VideoDecodeError, match="decord failed at frame"):
        list(VideoClipReader(uri, SPEC, "decord", fallback=False).clips())


def test_every_reason_is_in_the_documented_table():
    from pathlib import Path

    table = (Path(__file__).parents[1] / "docs" / "errors.md").read_text()
    assert all(f"| `{r.value}` |" in table for r in DecodeFailure)
