"""Sequential frame readers. All three decode forward only and hand back just the frames asked for.

Seeking back to a keyframe for every clip costs a whole GOP per clip on long-GOP files (measured: 0.8 clips/s on a
720p file), so no reader seeks backwards: decord and torchcodec skip forward (jumping to a later keyframe when the
next wanted frame lies past one), PyAV decodes straight through. Frames are resized inside the decoder (swscale),
which is far cheaper than decoding at full size and resizing afterwards.

decord and PyAV convert and scale in one swscale pass (bicubic); torchcodec converts to RGB at full size, then scales
(bilinear with antialiasing, the only filter it offers). Its frames are the closer to an exact resize of the full-size
frames: PyAV's one-pass scaling comes out about 0.7-1 grey level brighter on average (see torchcodec_frames).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import IO, Literal

import numpy as np

from .errors import DecodeFailure, VideoDecodeError
from .sampling import center_crop
from .source import classify_open_error

Backend = Literal["decord", "pyav", "torchcodec"]
BACKENDS: tuple[str, ...] = ("decord", "pyav", "torchcodec")


class _BackendOpenError(Exception):
    """The backend could not open the file (the caller may fall back to another backend)."""

    def __init__(self, error: VideoDecodeError) -> None:
        super().__init__(str(error))
        self.error = error


class BackendUnavailable(RuntimeError):
    """The backend cannot decode anything on this machine (a library is missing), whatever the file: the reader falls
    back to PyAV when allowed to, and otherwise raises this, whose message names the fix."""


def decord_frames(
    path: str, wanted: Sequence[int], width: int, height: int, uri: str, num_threads: int = 1
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, (height, width, 3) uint8) for each wanted index (sorted, unique), in order; stops early at EOF."""
    import decord

    try:
        # num_threads=0 (decord's default) fails on every VP9 read here; 1 or 2 works
        vr = decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height, num_threads=max(1, num_threads))
    except Exception as e:  # DECORDError, RuntimeError
        raise _BackendOpenError(classify_open_error(path, uri, e)) from None
    keys = [int(k) for k in vr.get_key_indices()]
    pos = 0  # index of the frame the next vr.next() returns
    try:
        for idx in wanted:
            gap = idx - pos
            if gap > 0:
                # a keyframe in (pos, idx] lets us jump there instead of decoding the whole gap
                k = bisect.bisect_right(keys, idx) - 1
                if k >= 0 and keys[k] > pos:
                    vr.seek(keys[k])
                    pos = keys[k]
                if idx > pos:
                    vr.skip_frames(idx - pos)
                    pos = idx
            try:
                frame = vr.next().asnumpy()
            except StopIteration:
                return
            pos += 1
            yield idx, frame
    except Exception as e:
        raise VideoDecodeError(DecodeFailure.CORRUPT, uri, f"decord failed at frame {pos}: {e}") from None


def _pyav_converter(width: int, height: int, crop: int | None):
    """-> convert(frame) -> (h, w, 3) uint8 RGB: the frame resized to width x height, or with `crop` that resized
    frame's centre crop x crop square, cut before scaling (crop_rect) where that lands on whole pixels: a filter graph
    (crop, scale to YUV 4:4:4, then RGB), built from the first frame and again whenever the frame size or format
    changes. Bilinear: on a downscale swscale widens the filter, so it is antialiased, as torchcodec's resize. The
    4:4:4 step: scaling straight to RGB halves the chroma's horizontal resolution (sharp colour edges off by up to 50
    grey levels); full chroma interpolation mends that too, at 20% more cost. One thread: PyAV's default (threads=0,
    automatic) spends ~50 us a frame handing 112-pixel frames to a thread pool, five times the scaling itself."""
    import av
    from av.video.reformatter import VideoReformatter

    scaler = VideoReformatter()  # one scaler per video: frame.to_ndarray(width=...) builds a new one per frame
    built: dict = {}

    def graph_for(frame):
        rect = crop_rect(width, height, frame.width, frame.height, crop) if crop else None
        if rect is None or rect[2:] == (frame.width, frame.height):
            return None
        x, y, w, h = rect
        graph = av.filter.Graph()
        graph.threads = 1
        time_base = frame.time_base or Fraction(1, 1000)
        nodes = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format, time_base=time_base),
                 graph.add("crop", f"w={w}:h={h}:x={x}:y={y}:exact=1"),
                 graph.add("scale", f"{crop}:{crop}:flags=bilinear"), graph.add("format", "yuv444p"),
                 graph.add("scale", "flags=bilinear"), graph.add("format", "rgb24"),
                 graph.add("buffersink")]  # fmt: skip
        for a, b in zip(nodes, nodes[1:], strict=False):
            a.link_to(b)
        graph.configure()
        return graph

    def convert(frame) -> np.ndarray:
        key = (frame.width, frame.height, frame.format.name)
        if built.get("key") != key:
            built["key"], built["graph"] = key, graph_for(frame)
        graph = built["graph"]
        if graph is not None:
            graph.vpush(frame)
            return graph.vpull().to_ndarray()
        rgb = scaler.reformat(frame, width=width, height=height, format="rgb24", interpolation="BILINEAR", threads=1)
        return center_crop(rgb.to_ndarray(), crop) if crop else rgb.to_ndarray()

    return convert


# H.264 and HEVC hold at most 16 frames for reordering: a scan this many packets past a frame has seen every packet
# that comes before it in presentation order.
_REORDER = 32


class _SeekMissed(Exception):
    """After a keyframe seek the decoder handed back a frame the scan did not rank: decode from the start instead."""


def _pyav_seek(container, stream, first: int) -> dict[int, int] | None:
    """Jump to the last keyframe at or before frame `first` (presentation order) when there is one after frame 0:
    -> {pts: frame index} of the frames up to a little past `first`, which names the frames decoded from there.
    None (and the container back at its start) where decoding from the first frame is the way: `first` lies in the
    first GOP, or packets carry no or repeated timestamps (frames are then counted as they come).

    A demux-only scan of the packets up to `first` reads the file without decoding it, so the segment of a long video
    that starts at frame 90,000 costs its own frames plus a read, not 90,000 decodes."""
    if first < 1:
        return None
    pts: list[int] = []
    keys: list[int] = []
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's flush packet
            continue
        if packet.pts is None:
            keys = []
            break
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append(packet.pts)
        if len(pts) > first + _REORDER:
            break
    ranks = {p: i for i, p in enumerate(sorted(pts))}
    best = max((k for k in keys if ranks[k] <= first), key=ranks.get, default=None)
    if best is None or ranks[best] == 0 or len(ranks) != len(pts):
        container.seek(0)
        return None
    container.seek(best, stream=stream, backward=True, any_frame=False)
    return ranks


def pyav_frames(
    src: str | IO[bytes],
    wanted: Sequence[int],
    width: int,
    height: int,
    uri: str,
    num_threads: int = 1,
    size_bytes: int = 0,
    *,
    crop: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Same contract as decord_frames, decoding with PyAV (FFmpeg) straight through; with `crop`, each frame comes back
    as its centre crop x crop square instead (cut before scaling where it can: _pyav_converter).

    size_bytes (the file's size, from the probe) tells a packet cut off by the end of the file from a corrupt one.
    Decoding starts at the last keyframe at or before the first wanted frame (_pyav_seek), so a segment deep in a
    long video does not decode the video's start.
    """
    try:
        yield from _pyav_frames(src, wanted, width, height, uri, num_threads, size_bytes, crop, seek=True)
    except _SeekMissed:
        yield from _pyav_frames(src, wanted, width, height, uri, num_threads, size_bytes, crop, seek=False)


def _pyav_frames(src, wanted, width, height, uri, num_threads, size_bytes, crop, seek: bool):
    import av

    if not isinstance(src, str):
        src.seek(0)
    try:
        container = av.open(src, "r", metadata_errors="ignore")
    except Exception as e:
        raise _BackendOpenError(classify_open_error(src, uri, e)) from None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if num_threads > 1 else "SLICE"
        stream.codec_context.thread_count = max(1, num_threads)
        if not wanted:
            return
        convert = _pyav_converter(width, height, crop)
        it = iter(wanted)
        target = next(it)
        packet = None
        try:
            ranks = _pyav_seek(container, stream, target) if seek else None
            index = 0 if ranks is None else None  # after a seek, the first frame's timestamp says where we are
            # demux and decode by hand: a failing packet that is cut short (or reaches past the end of the file)
            # means a truncated file, a complete one that the decoder rejects means corrupt data
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if index is None:  # the first frame after the seek; then frames come in presentation order
                        index = ranks.get(frame.pts)
                        if index is None or index > target:  # on no frame the scan ranked, or past the one we want
                            raise _SeekMissed
                    if index == target:
                        yield index, convert(frame)
                        target = next(it, None)
                        if target is None:
                            return
                    index += 1
        except av.error.FFmpegError as e:
            ends_at_eof = size_bytes > 0 and packet is not None and packet.pos is not None
            cut = packet is not None and (packet.is_corrupt or (ends_at_eof and packet.pos + packet.size >= size_bytes))
            reason = DecodeFailure.TRUNCATED if cut else DecodeFailure.CORRUPT
            raise VideoDecodeError(reason, uri, f"pyav failed at frame {index}: {e}") from None
    finally:
        container.close()


# torchcodec loads FFmpeg's shared libraries (major versions 4-9) at run time; it ships none of its own
TORCHCODEC_FIX = "install FFmpeg's shared libraries (libavcodec and friends), e.g. `apt-get install ffmpeg`"
# frames per get_frames_at call: memory holds this many resized frames, whatever the video's length
TORCHCODEC_CHUNK = 16
# a decode failure this close to the last frame the file holds may come from its last packet (a decoder holds up to
# 16 frames for reordering in H.264/HEVC, fewer elsewhere)
_TAIL_FRAMES = 16


@functools.cache
def torchcodec_unavailable() -> str | None:
    """Why torchcodec cannot decode on this machine, or None when it can."""
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as e:  # not installed, or built against another torch
        return f"torchcodec cannot be imported ({type(e).__name__}: {e}); pip install torchcodec, or use backend='pyav'"
    if torchcodec.ffmpeg_major_version is None:
        return f"torchcodec found no FFmpeg libraries to load: {TORCHCODEC_FIX}"
    return None


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """torch's intra-op threads at 1 while torchcodec works, then as they were. torchcodec copies frames with torch ops;
    with a thread pool those spin on every core the decoder needs (measured on 2 cores: 3x slower at 112p, 2x at 720p;
    the more so on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


def crop_rect(width: int, height: int, full_w: int, full_h: int, crop: int) -> tuple[int, int, int, int] | None:
    """The centre crop x crop square of a full_w x full_h frame resized to width x height, as a rectangle (x, y, w, h)
    of the full frame: what to cut before scaling (less to scale: 17-20% faster decoding at 720p). None where FFmpeg's
    whole-pixel crop would land more than 0.1 output pixels from the exact one (every common size from 360p up lands
    within it at 112); the caller then scales the whole frame and cuts the square afterwards, so the pixels agree."""
    rect = []
    for n_out, n_full, at_out in ((width, full_w, (width - crop) // 2), (height, full_h, (height - crop) // 2)):
        scale = n_full / n_out
        start, stop = round(at_out * scale), min(n_full, round((at_out + crop) * scale))
        if max(abs(start - at_out * scale), abs(stop - (at_out + crop) * scale)) / scale > 0.1:
            return None
        rect.append((start, stop - start))
    (x, w), (y, h) = rect
    return x, y, w, h


def _rot90_rect(x: int, y: int, w: int, h: int, frame_w: int, frame_h: int) -> tuple[int, int, int, int, int, int]:
    """A rectangle of a frame_w x frame_h frame, after the frame is turned as np.rot90(frame, 1) turns it: the new
    (x, y, w, h, frame_w, frame_h)."""
    return y, frame_w - x - w, h, w, frame_h, frame_w


def _torchcodec_transforms(
    width: int, height: int, full_w: int, full_h: int, turns: int, crop: int | None
) -> tuple[list, bool]:
    """The decoder transforms for a full_w x full_h frame (as stored) resized to width x height, or with `crop` that
    resized frame's centre crop x crop square, given that torchcodec turns the frame upright by `turns` quarter turns
    (np.rot90) before any transform; and whether the square still has to be cut from what comes back (crop_rect)."""
    from torchcodec.transforms import DecoderTransform, Resize

    class _Crop(DecoderTransform):  # FFmpeg's crop filter at a given position (torchcodec exports only centred crops)
        def __init__(self, x: int, y: int, w: int, h: int) -> None:
            self.x, self.y, self.w, self.h = x, y, w, h

        def _make_transform_spec(self, input_dims) -> str:
            return f"crop, {self.h}, {self.w}, {self.x}, {self.y}"

        def _get_output_dims(self):
            return self.h, self.w

    def resize(w: int, h: int, from_w: int, from_h: int) -> list:
        if (w, h) == (from_w, from_h):
            return []
        return [Resize((w, h) if turns % 2 else (h, w))]  # (height, width) of the upright frame

    if crop is None:
        return resize(width, height, full_w, full_h), False
    rect = crop_rect(width, height, full_w, full_h, crop)
    if rect is None:
        return resize(width, height, full_w, full_h), True
    x, y, w, h = rect
    if (w, h) == (full_w, full_h):
        return resize(crop, crop, full_w, full_h), False
    fw, fh = full_w, full_h
    for _ in range(turns):
        x, y, w, h, fw, fh = _rot90_rect(x, y, w, h, fw, fh)
    return [_Crop(x, y, w, h), *resize(crop, crop, w, h)], False


def torchcodec_frames(
    src: str | IO[bytes],
    wanted: Sequence[int],
    width: int,
    height: int,
    uri: str,
    num_threads: int = 1,
    size_bytes: int = 0,
    *,
    crop: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Same contract as decord_frames, decoding with torchcodec (PyTorch's FFmpeg decoder) in chunks of
    TORCHCODEC_CHUNK frames. With `crop`, each frame comes back as its centre crop x crop square instead, cut before
    scaling. size_bytes is accepted for the common signature: torchcodec reports no packet positions.

    Frame i is the i-th frame in presentation order from a scan of every packet (seek_mode="exact"), as PyAV counts
    them; the scan reads the whole file once per open (measured 1 ms more than reading the header of a 6 MB 720p file).
    torchcodec turns rotated videos upright; their frames are turned back here, so every backend hands on the frames as
    stored.

    Pixels: torchcodec converts to RGB at full size, then scales with bilinear filtering and antialiasing; decord and
    PyAV convert and scale in one bicubic swscale pass. Against PyAV: mean |diff| 1.1-1.2 grey levels, 99th percentile
    11 on 160x96 sources cropped to 64, 1.7 and 18 on 720p testsrc2 cropped to 112; most of the mean is PyAV's one-pass
    scaling coming out brighter (+1.0 and +0.65 against the full-size frames resized in float, where torchcodec is
    within 0.1). Raises BackendUnavailable when torchcodec cannot run here (TORCHCODEC_FIX).
    """
    reason = torchcodec_unavailable()
    if reason is not None:
        raise BackendUnavailable(reason)
    from torchcodec.decoders import VideoDecoder, get_container_metadata

    try:
        if not isinstance(src, str):
            src.seek(0)
        # the header alone (no scan): which stream PyAV reads (the first video stream), its size and rotation
        stream = next(m for m in get_container_metadata(src).streams if m.media_type == "video")
        turns = round((stream.rotation or 0) / 90) % 4
        # the header gives the upright size; the transforms are computed on the frame as stored
        full_w, full_h = (stream.height, stream.width) if turns % 2 else (stream.width, stream.height)
        transforms, crop_after = _torchcodec_transforms(width, height, full_w, full_h, turns, crop)
        if not isinstance(src, str):
            src.seek(0)
        with _one_torch_thread():
            decoder = VideoDecoder(
                src, stream_index=stream.stream_index, seek_mode="exact", dimension_order="NHWC",
                num_ffmpeg_threads=max(1, num_threads), device="cpu", transforms=transforms,
            )  # fmt: skip
    except Exception as e:  # RuntimeError from FFmpeg, ValueError for a stream without a decoder, StopIteration
        raise _BackendOpenError(classify_open_error(src, uri, e)) from None
    found = decoder.metadata.num_frames_from_content
    found = decoder.metadata.num_frames if found is None else found
    todo = [i for i in wanted if i < found]  # the stream ends at `found`: the reader tells a shortfall from damage
    for at in range(0, len(todo), TORCHCODEC_CHUNK):
        chunk = todo[at : at + TORCHCODEC_CHUNK]
        try:
            with _one_torch_thread():  # not across the yields: the caller's own torch work keeps its threads
                batch = decoder.get_frames_at(chunk).data.numpy()  # (n, h, w, 3) uint8
        except Exception as e:
            cut = _ends_cut_short(decoder.metadata, chunk[-1])
            reason = DecodeFailure.TRUNCATED if cut else DecodeFailure.CORRUPT
            detail = f"torchcodec failed in frames {chunk[0]}-{chunk[-1]} of {found}: {_first_line(e)}"
            raise VideoDecodeError(reason, uri, detail) from None
        for idx, frame in zip(chunk, batch, strict=True):
            if turns:
                frame = np.rot90(frame, -turns)
            if crop_after:
                frame = center_crop(frame, crop)
            yield idx, (np.ascontiguousarray(frame) if turns or crop_after else frame)


def _ends_cut_short(meta, last: int) -> bool:
    """A failure up to frame `last` is the file's end cut off: the scan found fewer frames, or a shorter stream, than
    the header promises, and the failure lies among the last frames there are (their last packet is cut short)."""
    found = meta.num_frames_from_content
    if found is None or last < found - _TAIL_FRAMES:
        return False
    if meta.num_frames_from_header is not None:
        return found < meta.num_frames_from_header
    end, duration = meta.end_stream_seconds_from_content, meta.duration_seconds_from_header
    fps = meta.average_fps_from_header or meta.average_fps or 0
    return bool(end is not None and duration and fps and end < duration - 1.5 / fps)


def _first_line(e: Exception) -> str:
    # torchcodec's messages start with the C++ function, file and line: keep FFmpeg's own words
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg.rsplit(", ", 1)[-1] if ".cpp:" in msg else msg
