"""Ray Data stages of the anonymize pipeline, in the order they run.

Each stage is one shape (workers.py): its knobs are dataclass fields, `ray_args()` declares the resources it runs
with, `__call__(batch) -> batch` works on a plain dict of NumPy arrays (so it is testable without Ray), and a stage
holding a model or state loads it once in `setup()`. `workers.ray_map` turns any stage into map_batches arguments.
The pipeline runs: PlanSegments -> DecodeClips -> ClipModels (PruneClips, TransformClips, KeepPixels, EncodeClips
in one actor; on CPU DecodeClips runs in it too) -> GatherVideos (ApplyAam runs in it) -> WriteShards.
A bad video is data, not a crash: it becomes a row with `error_type`, `error_stage` and `error_message` set.

Imports are lazy: a worker running the plan, decode or write tasks never imports torch (seconds per worker process).
"""

from importlib import import_module

_WHERE = {
    "PlanSegments": "plan",
    "DecodeClips": "decode",
    "PruneClips": "prune",
    "TransformClips": "transform",
    "KeepPixels": "pixels",
    "EncodeClips": "encode",
    "ClipModels": "clip_models",
    "GatherVideos": "gather",
    "ApplyAam": "aam",
    "WriteShards": "sink",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
