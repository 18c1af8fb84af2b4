"""Video -> clips: the one entry point the rest of anonvid uses to decode.

    for clip in iter_clips("s3://bucket/v.mp4", ClipSpec(num_frames=16, stride=2, size=112)):
        clip.frames  # (T, S, S, 3) uint8

Memory holds one clip at a time (plus the decoder's own buffers), whatever the video's length.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .backends import (
    BACKENDS,
    Backend,
    BackendUnavailable,
    _BackendOpenError,
    decord_frames,
    pyav_frames,
    torchcodec_frames,
)
from .errors import DecodeFailure, VideoDecodeError
from .sampling import ClipSpec, center_crop, clip_frame_indices, plan_clip_starts, resized_size
from .source import MAX_PIXELS, VideoMeta, open_source, probe

# PyAV: the one backend at the decode limit at every size with flat memory (0.9x or better of `ffmpeg -threads 1` at
# 720p, about it at 112p). decord trails at 112p and its memory grows with the file; torchcodec trails from 360p up
# and its process carries torch. Figures and reasons: docs/benchmarks.md, "Decode backends".
DEFAULT_BACKEND: Backend = "pyav"
# Where a backend's video goes when that backend cannot open it, cannot run here at all, or fails inside the stream.
# FFmpeg (PyAV) reads some damage decord stops at, and opens what torchcodec's packet scan gives up on.
FALLBACK = {"torchcodec": "pyav", "decord": "pyav"}


@dataclass(frozen=True)
class Clip:
    index: int  # 0..n_clips-1 within this video
    start_frame: int
    start_s: float
    end_s: float  # end of the clip's last frame
    frames: np.ndarray  # (T, S, S, 3) uint8


def _shortfall_tolerance(meta: VideoMeta) -> int:
    # Containers without a frame count (webm) give duration x fps, which can be off by a frame or two; falling short
    # of that estimate is not damage. Falling short of an exact index count is.
    return 0 if meta.frame_count_exact else max(2, int(0.02 * meta.num_frames))


class VideoClipReader:
    """Opens one video, exposes its metadata, and yields its clips.

    backend: "pyav" (default), "decord" or "torchcodec" (docs/benchmarks.md, "Decode backends", compares them). With
    `fallback`, a file decord or torchcodec cannot open is read with PyAV instead, and so are the clips they did not
    deliver when they fail inside the stream; so is every file when torchcodec cannot run on this machine (no FFmpeg
    shared libraries: a warning says so and names the fix).
    """

    def __init__(
        self,
        uri: str,
        spec: ClipSpec | None = None,
        backend: Backend = DEFAULT_BACKEND,
        *,
        fallback: bool = True,
        num_threads: int = 1,
        max_pixels: int = MAX_PIXELS,
        clip_range: tuple[int, int] | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        self.uri = str(uri)
        self.spec = spec or ClipSpec()
        self.backend = backend
        self.fallback = fallback
        self.num_threads = num_threads
        self.max_pixels = max_pixels
        # (first, stop) clip indices of the video's clip plan: a pipeline task decodes one bounded segment
        self.clip_range = clip_range
        self.meta: VideoMeta | None = None
        self.used_backend: str | None = None

    def clips(self) -> Iterator[Clip]:
        spec = self.spec
        # decord reads only paths (a remote video is spooled to a temp file); torchcodec and PyAV read file objects
        with open_source(self.uri, need_path=self.backend == "decord") as src:
            meta = self.meta = probe(src, self.uri, self.max_pixels)
            starts = plan_clip_starts(meta.num_frames, spec)
            if len(starts) == 0:
                raise VideoDecodeError(
                    DecodeFailure.TOO_SHORT, self.uri, f"{meta.num_frames} frames, one clip needs {spec.span}"
                )
            first = 0
            if self.clip_range is not None:
                first, stop = self.clip_range
                if not 0 <= first < stop <= len(starts):
                    raise ValueError(f"clip_range {self.clip_range} outside the video's {len(starts)} clips")
                starts = starts[first:stop]
            indices = clip_frame_indices(starts, spec)  # (n_clips, T)
            wanted = indices.reshape(-1).tolist()
            w, h = resized_size(meta.width, meta.height, spec.size)
            frames = self._open_frames(src, wanted, w, h, meta.size_bytes)
            done = 0
            try:
                for c in self._assemble(frames, starts, indices, meta):
                    yield Clip(c.index + first, c.start_frame, c.start_s, c.end_s, c.frames) if first else c
                    done += 1
            except VideoDecodeError:
                rescue = FALLBACK.get(self.used_backend) if self.fallback else None
                if rescue is None:
                    raise
                # the backend failed inside the stream (it opened the file): the clips it did not deliver are
                # decoded with the fallback before the video counts as failed
                yield from self._rest(rescue, src, starts[done:], first + done, w, h, meta)

    def _rest(self, name: str, src, starts, offset: int, w: int, h: int, meta: VideoMeta) -> Iterator[Clip]:
        indices = clip_frame_indices(starts, self.spec)  # (n_rest, T)
        gen = self._frames(name, src, indices.reshape(-1).tolist(), w, h, meta.size_bytes)
        try:
            frames = _prepend(next(gen, None), gen)
        except _BackendOpenError as e:
            raise e.error from None
        self.used_backend = f"{self.used_backend}+{name}"
        for c in self._assemble(frames, starts, indices, meta):
            yield Clip(c.index + offset, c.start_frame, c.start_s, c.end_s, c.frames)

    def _frames(self, name: str, src, wanted, w: int, h: int, size_bytes: int) -> Iterator[tuple[int, np.ndarray]]:
        if name == "decord":
            return decord_frames(src, wanted, w, h, self.uri, self.num_threads)
        if name == "torchcodec":  # torchcodec and PyAV cut the clip square inside the decoder: less to scale
            return torchcodec_frames(src, wanted, w, h, self.uri, self.num_threads, size_bytes, crop=self.spec.size)
        return pyav_frames(src, wanted, w, h, self.uri, self.num_threads, size_bytes, crop=self.spec.size)

    def _open_frames(self, src, wanted, w, h, size_bytes: int) -> Iterator[tuple[int, np.ndarray]]:
        order = [self.backend]
        while self.fallback and order[-1] in FALLBACK:
            order.append(FALLBACK[order[-1]])
        last: VideoDecodeError | None = None
        for name in order:
            gen = self._frames(name, src, wanted, w, h, size_bytes)
            try:
                first = next(gen, None)  # opening happens on first next(); a failure there may fall back
            except _BackendOpenError as e:
                last = e.error
                continue
            except BackendUnavailable as e:
                if name == order[-1]:
                    raise
                warnings.warn(f"{e}; decoding with {FALLBACK[name]} instead", RuntimeWarning, stacklevel=2)
                continue
            self.used_backend = name
            return _prepend(first, gen)
        assert last is not None
        raise last

    def _assemble(self, frames, starts, indices, meta: VideoMeta) -> Iterator[Clip]:
        spec = self.spec
        T = spec.num_frames
        buf = np.empty((T, spec.size, spec.size, 3), dtype=np.uint8)
        clip_i, slot, seen = 0, 0, 0
        for idx, frame in frames:
            assert idx == indices[clip_i, slot], "backend returned frames out of order"
            buf[slot] = center_crop(frame, spec.size)
            seen = idx + 1
            slot += 1
            if slot == T:
                start = int(starts[clip_i])
                yield Clip(
                    index=clip_i,
                    start_frame=start,
                    start_s=start / meta.fps,
                    end_s=(start + spec.span) / meta.fps,
                    frames=buf.copy(),
                )
                clip_i, slot = clip_i + 1, 0
        if clip_i == len(starts):
            return
        # The stream ended before the planned clips did.
        missing = meta.num_frames - seen
        if missing > _shortfall_tolerance(meta):
            raise VideoDecodeError(
                DecodeFailure.TRUNCATED, self.uri, f"stream ended near frame {seen} of {meta.num_frames}"
            )
        if clip_i == 0:
            raise VideoDecodeError(DecodeFailure.TOO_SHORT, self.uri, f"only {seen} frames decoded")


def _prepend(first, gen) -> Iterator:
    if first is not None:
        yield first
    yield from gen


def iter_clips(uri: str, spec: ClipSpec | None = None, backend: Backend = DEFAULT_BACKEND, **kwargs) -> Iterator[Clip]:
    """Clips of one video, one at a time. Raises VideoDecodeError (possibly after some clips were yielded)."""
    yield from VideoClipReader(uri, spec, backend, **kwargs).clips()


@dataclass(frozen=True)
class DecodedVideo:
    meta: VideoMeta
    clips: np.ndarray  # (n_clips, T, S, S, 3) uint8
    start_frames: np.ndarray  # (n_clips,)
    start_s: np.ndarray
    end_s: np.ndarray
    backend: str


def read_clips(uri: str, spec: ClipSpec | None = None, backend: Backend = DEFAULT_BACKEND, **kwargs) -> DecodedVideo:
    """All clips of one video stacked. Use iter_clips for long videos without max_clips."""
    reader = VideoClipReader(uri, spec, backend, **kwargs)
    clips = list(reader.clips())
    assert reader.meta is not None
    return DecodedVideo(
        meta=reader.meta,
        clips=np.stack([c.frames for c in clips]),
        start_frames=np.array([c.start_frame for c in clips], dtype=np.int64),
        start_s=np.array([c.start_s for c in clips], dtype=np.float64),
        end_s=np.array([c.end_s for c in clips], dtype=np.float64),
        backend=reader.used_backend or backend,
    )
