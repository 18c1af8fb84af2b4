"""Training data through Ray Data: labelled clips, decoded by the anonymize pipeline's own plan and decode stages.

Rows: clip (T, S, S, 3) uint8, action int64, attributes (A,) float32, identity int64, video_index int64. Strings are
left out: iter_torch_batches cannot carry them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from anon_core.synthetic import ATTRIBUTES
from anon_core.video import ClipSpec

from ..sources import list_manifest


class AttachLabels:
    """Keep good clip rows and turn each video's JSON labels into training targets."""

    def __init__(self, attributes=ATTRIBUTES) -> None:
        self.attributes = tuple(attributes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        good = np.array([k == "clip" and e == "" for k, e in zip(batch["kind"], batch["error_type"], strict=True)])
        labels = [json.loads(s) for s in batch["labels"][good]]
        return {
            "clip": batch["clip"][good],
            "action": np.array([lab["action_id"] for lab in labels], dtype=np.int64),
            "attributes": np.array([[lab[a] for a in self.attributes] for lab in labels], dtype=np.float32),
            "identity": np.array([lab.get("identity", -1) for lab in labels], dtype=np.int64),
            "video_index": np.array([lab["_index"] for lab in labels], dtype=np.int64),
        }


def labelled_videos(manifest: str, split: str | None = None) -> pd.DataFrame:
    videos = list_manifest(manifest).videos
    labels = [json.loads(s) for s in videos["labels"]]
    for i, lab in enumerate(labels):
        lab["_index"] = i  # a numeric video id that survives iter_torch_batches
    videos = videos.assign(labels=[json.dumps(lab) for lab in labels])
    if split is not None:
        videos = videos[[lab.get("split") == split for lab in labels]].reset_index(drop=True)
    if videos.empty:
        raise ValueError(f"no videos of split {split!r} in {manifest}")
    return videos


def labelled_clips(manifest: str, spec: ClipSpec, split: str | None = None, clips_per_task: int = 32):
    """A Ray Dataset of labelled clips; deterministic order when the DataContext preserves order."""
    import ray.data

    from ..stages import DecodeClips, PlanSegments

    videos = labelled_videos(manifest, split)
    ds = ray.data.from_pandas([videos.iloc[i : i + 8] for i in range(0, len(videos), 8)])
    plan = PlanSegments(spec, clips_per_task)
    ds = ds.map_batches(plan, **plan.ray_args())
    decode = DecodeClips(spec, segment_clips=clips_per_task)
    ds = ds.map_batches(decode, **decode.ray_args())
    return ds.map_batches(AttachLabels(), num_cpus=0.25, batch_size=64)
