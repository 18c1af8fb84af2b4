"""Opening local paths and fsspec URIs (s3://, memory://, ...), probing headers, and classifying open failures."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import fsspec

from .errors import DecodeFailure, VideoDecodeError

# A header claiming more than this is corrupt or hostile: one decoded frame would already need gigabytes.
MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192
_SPOOL_CHUNK = 8 << 20


@dataclass(frozen=True)
class VideoMeta:
    uri: str
    container: str
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int  # from the container index, or duration x fps where the container keeps no count (webm)
    duration_s: float
    size_bytes: int
    frame_count_exact: bool  # False where num_frames is the duration x fps estimate


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def file_size(uri: str) -> int:
    """Bytes in the object; NOT_FOUND / IO_ERROR as VideoDecodeError."""
    try:
        if is_local(uri):
            path = _local_path(uri)
            if os.path.islink(path) and not os.path.exists(path):
                raise VideoDecodeError(DecodeFailure.BROKEN_LINK, uri, f"-> {os.readlink(path)}")
            return os.path.getsize(path)
        fs, path = fsspec.core.url_to_fs(uri)
        return int(fs.size(path))
    except FileNotFoundError as e:
        raise VideoDecodeError(DecodeFailure.NOT_FOUND, uri, str(e)) from None
    except OSError as e:
        raise VideoDecodeError(DecodeFailure.IO_ERROR, uri, str(e)) from None


@contextmanager
def open_source(uri: str, need_path: bool) -> Iterator[str | IO[bytes]]:
    """A local path for local URIs; for remote ones a temp copy (need_path) or a streaming file object.

    decord needs a real path to read efficiently, so remote objects are spooled to local disk in chunks: memory stays
    bounded whatever the video's size. PyAV reads from the file object directly.
    """
    size = file_size(uri)
    if size == 0:
        raise VideoDecodeError(DecodeFailure.EMPTY, uri)
    if is_local(uri):
        yield _local_path(uri)
        return
    try:
        f = fsspec.open(uri, "rb").open()
    except FileNotFoundError as e:
        raise VideoDecodeError(DecodeFailure.NOT_FOUND, uri, str(e)) from None
    except OSError as e:
        raise VideoDecodeError(DecodeFailure.IO_ERROR, uri, str(e)) from None
    with f:
        if not need_path:
            yield f
            return
        suffix = os.path.splitext(uri.rsplit("/", 1)[-1])[1]
        with tempfile.NamedTemporaryFile(prefix="anonvid-", suffix=suffix) as tmp:
            try:
                shutil.copyfileobj(f, tmp, _SPOOL_CHUNK)
                tmp.flush()
            except OSError as e:
                raise VideoDecodeError(DecodeFailure.IO_ERROR, uri, str(e)) from None
            yield tmp.name


def _read_head(src: str | IO[bytes], n: int = 64) -> bytes:
    if isinstance(src, str):
        with open(src, "rb") as f:
            return f.read(n)
    pos = src.tell()
    head = src.read(n)
    src.seek(pos)
    return head


def has_container_signature(head: bytes) -> bool:
    """True when the first bytes name a known video container: then an unreadable file is damaged, not foreign."""
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return True  # ISO BMFF: mp4, mov, m4v, 3gp
    return head.startswith(
        (
            b"\x1a\x45\xdf\xa3",  # EBML: mkv, webm
            b"RIFF",  # avi
            b"\x00\x00\x01\xba",  # MPEG program stream
            b"FLV",
            b"OggS",
            b"YUV4MPEG2",
            b"\x30\x26\xb2\x75",  # ASF / wmv
        )
    ) or (len(head) > 0 and head[0] == 0x47)  # MPEG transport stream sync byte


def classify_open_error(src: str | IO[bytes], uri: str, err: Exception) -> VideoDecodeError:
    """An exception from opening a container -> the VideoDecodeError that says what is wrong with the file."""
    msg = str(err)
    if isinstance(err, FileNotFoundError):
        return VideoDecodeError(DecodeFailure.NOT_FOUND, uri, msg)
    try:
        head = _read_head(src)
    except OSError as e:
        return VideoDecodeError(DecodeFailure.IO_ERROR, uri, str(e))
    if not head:
        return VideoDecodeError(DecodeFailure.EMPTY, uri)
    reason = DecodeFailure.TRUNCATED if has_container_signature(head) else DecodeFailure.NOT_A_VIDEO
    return VideoDecodeError(reason, uri, msg)


def probe(src: str | IO[bytes], uri: str | None = None, max_pixels: int = MAX_PIXELS) -> VideoMeta:
    """Read the header with PyAV (no frame is decoded) and check that the video can be decoded at all."""
    import av

    uri = uri if uri is not None else (src if isinstance(src, str) else getattr(src, "path", "<file object>"))
    if isinstance(src, str):
        size = file_size(src)
        if size == 0:
            raise VideoDecodeError(DecodeFailure.EMPTY, uri)
    else:
        size = getattr(src, "size", None) or 0
        src.seek(0)
    try:
        container = av.open(src, "r", metadata_errors="ignore")
    except Exception as e:  # PyAV raises a zoo of av.error.* types; all mean "cannot open"
        raise classify_open_error(src, uri, e) from None
    try:
        if not container.streams.video:
            if not len(container.streams) and has_container_signature(_read_head(src)):
                # a video container's start with no stream at all: the file ends before its header is complete
                raise VideoDecodeError(DecodeFailure.TRUNCATED, uri, "the container ends before any stream")
            raise VideoDecodeError(DecodeFailure.NOT_A_VIDEO, uri, "no video stream")
        if container.format.name == "image2" or container.format.name.endswith("_pipe"):
            # FFmpeg opens a lone picture (png, jpeg, ...) as a one-frame "video" through its image demuxers
            raise VideoDecodeError(DecodeFailure.NOT_A_VIDEO, uri, f"a still image ({container.format.name})")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            # No decoder was found for the stream. With an intact frame index that is a codec FFmpeg lacks; without
            # one it is a damaged header (an mp4 cut inside its index looks like this).
            if stream.frames:
                raise VideoDecodeError(DecodeFailure.UNSUPPORTED_CODEC, uri, "no decoder for the video stream's codec")
            raise classify_open_error(src, uri, ValueError("video stream without codec parameters or frame index"))
        codec = stream.codec_context.name
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if width <= 0 or height <= 0 or max(width, height) > MAX_SIDE or width * height > max_pixels:
            raise VideoDecodeError(DecodeFailure.BAD_DIMENSIONS, uri, f"{width}x{height}")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        exact = bool(stream.frames)
        num_frames = int(stream.frames) if exact else int(round(duration * fps))
        if num_frames <= 0:
            raise VideoDecodeError(DecodeFailure.NO_FRAMES, uri, "the container lists no frames")
        if fps <= 0:
            fps = num_frames / duration if duration > 0 else 0.0
        return VideoMeta(
            uri=uri,
            container=container.format.name,
            codec=codec,
            width=width,
            height=height,
            fps=fps,
            num_frames=num_frames,
            duration_s=duration if duration > 0 else (num_frames / fps if fps else 0.0),
            size_bytes=int(size),
            frame_count_exact=exact,
        )
    finally:
        container.close()
