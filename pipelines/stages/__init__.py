"""Ray Data stages of the anonymize pipeline, in the order they run.

Each stage is a small class: its knobs are dataclass fields, `__call__(batch) -> batch` works on a plain dict of
NumPy arrays (so it is testable without Ray), and `ray_args()` declares the resources it runs with, beside it.
A bad video is data, not a crash: it becomes a row with `error_type`, `error_stage` and `error_message` set.
"""

from .aam import ApplyAam
from .decode import DecodeClips
from .encode import EncodeClips
from .gather import GatherVideos
from .plan import PlanSegments
from .prune import PruneClips
from .sink import WriteShards

__all__ = ["ApplyAam", "DecodeClips", "EncodeClips", "GatherVideos", "PlanSegments", "PruneClips", "WriteShards"]
