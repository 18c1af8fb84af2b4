"""Video decoding: clips out of local files or any fsspec URI, with decord (default), PyAV or torchcodec."""

from .errors import DecodeFailure, VideoDecodeError
from .isolation import DecoderProcess, read_clips_isolated, run_isolated
from .reader import Clip, DecodedVideo, VideoClipReader, iter_clips, read_clips
from .sampling import ClipSpec, panned_clip, plan_clip_starts, static_clip
from .source import MAX_PIXELS, VideoMeta, probe

__all__ = [
    "MAX_PIXELS",
    "Clip",
    "ClipSpec",
    "DecodeFailure",
    "DecoderProcess",
    "DecodedVideo",
    "VideoClipReader",
    "VideoDecodeError",
    "VideoMeta",
    "iter_clips",
    "plan_clip_starts",
    "probe",
    "read_clips",
    "read_clips_isolated",
    "run_isolated",
    "panned_clip",
    "static_clip",
]
