"""Typed decode errors: a bad video is data for the pipeline, so every failure carries a machine-readable reason."""

from __future__ import annotations

from enum import StrEnum


class DecodeFailure(StrEnum):
    NOT_FOUND = "not_found"
    BROKEN_LINK = "broken_link"  # a symbolic link to nothing, or a loop of links
    EMPTY = "empty"  # zero bytes
    NOT_A_VIDEO = "not_a_video"  # no known container signature, or no video stream
    TRUNCATED = "truncated"  # a known container that ends before its own header/index says it should
    CORRUPT = "corrupt"  # invalid data inside the stream: the decoder rejects a packet that is all there
    UNSUPPORTED_CODEC = "unsupported_codec"
    NO_FRAMES = "no_frames"
    TOO_SHORT = "too_short"  # decodes, but has fewer frames than one clip needs
    BAD_DIMENSIONS = "bad_dimensions"  # zero, negative or absurd frame size
    DECODER_CRASH = "decoder_crash"  # the decoder killed its (isolated) process
    TIMEOUT = "timeout"
    IO_ERROR = "io_error"


_HINTS = {
    DecodeFailure.NOT_FOUND: "check the path or URI (and credentials for object storage)",
    DecodeFailure.BROKEN_LINK: "the symbolic link leads to no file (its target is gone, or links point at each "
    "other); fix or remove it",
    DecodeFailure.EMPTY: "the file has zero bytes; re-copy it from the source",
    DecodeFailure.NOT_A_VIDEO: "the file is not a video container with a video stream",
    DecodeFailure.TRUNCATED: "the file ends early; re-copy it from the source (an interrupted upload?)",
    DecodeFailure.CORRUPT: "the stream holds invalid data; re-copy or re-encode the file",
    DecodeFailure.UNSUPPORTED_CODEC: "transcode it to h264, vp9 or mpeg4 (e.g. ffmpeg -c:v libx264)",
    DecodeFailure.NO_FRAMES: "the video stream holds no decodable frame",
    DecodeFailure.TOO_SHORT: "lower clip frames/stride or drop the video",
    DecodeFailure.BAD_DIMENSIONS: "the header claims an impossible frame size; the file is corrupt or hostile",
    DecodeFailure.DECODER_CRASH: "the decoder crashed on this file; try backend='pyav' or re-encode it",
    DecodeFailure.TIMEOUT: "decoding took longer than the time limit; raise it or re-encode the file",
    DecodeFailure.IO_ERROR: "reading the bytes failed; check storage and network",
}


class VideoDecodeError(Exception):
    """A video that cannot be turned into clips. `reason` is a DecodeFailure; `detail` the underlying message."""

    def __init__(self, reason: DecodeFailure | str, uri: str, detail: str = "") -> None:
        self.reason = DecodeFailure(reason)
        self.uri = uri
        self.detail = detail
        msg = f"{self.reason.value}: {uri}"
        if detail:
            msg += f" ({detail})"
        super().__init__(f"{msg} -> {_HINTS[self.reason]}")

    def __reduce__(self):  # keeps reason/uri/detail across process boundaries (isolation, Ray)
        return (VideoDecodeError, (self.reason.value, self.uri, self.detail))
