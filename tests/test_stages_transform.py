"""The baseline transform stage on plain dicts shaped like decode's output (no video, no Ray)."""

import numpy as np
import pytest
from stage_helpers import copy_batch

from anon_core.baselines import BASELINES, apply_baseline
from pipelines.stages.rows import OK, clip_mask
from pipelines.stages.transform import TransformClips

T, S = 6, 32


def clip_batch(kinds: list[str]) -> dict[str, np.ndarray]:
    """A decode output batch with DecodeClips' columns: every row's clip is a textured static scene with a square
    moving across it (so that every baseline would change it); "error" rows have the error set, "gap" rows none.
    (Decode gives error and gap rows a black clip, which no baseline changes: useless for telling them apart.)"""
    n = len(kinds)
    clips = np.random.default_rng(0).integers(0, 200, (n, T, S, S, 3), dtype=np.uint8)
    clips[:] = clips[:, :1]  # static background
    for t in range(T):
        clips[:, t, 8:16, 4 + 4 * t : 12 + 4 * t] = 250
    error = np.array([k == "error" for k in kinds])
    return {
        "kind": np.array(kinds, dtype=object),
        "video_id": np.array([f"v{i}" for i in range(n)], dtype=object),
        "uri": np.array([f"/data/v{i}.mp4" for i in range(n)], dtype=object),
        "labels": np.full(n, None, dtype=object),
        "num_clips": np.full(n, 1, dtype=np.int64),
        "covers": np.full(n, 1, dtype=np.int64),
        "error_type": np.where(error, "not_found", OK).astype(object),
        "error_stage": np.where(error, "plan", OK).astype(object),
        "error_message": np.where(error, "no such file", OK).astype(object),
        "clip_index": np.zeros(n, dtype=np.int64),
        "start_s": np.zeros(n),
        "end_s": np.zeros(n),
        "clip": clips,
        "t_decode": np.zeros(n),
    }


def read_only(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for v in batch.values():
        v.setflags(write=False)
    return batch


@pytest.mark.parametrize("name", list(BASELINES))
def test_good_rows_are_transformed_and_error_rows_pass_untouched(name):
    batch = clip_batch(["clip", "error", "clip", "gap"])
    out = TransformClips(name)(read_only(copy_batch(batch)))
    good = clip_mask(batch)
    np.testing.assert_array_equal(out["clip"][good], apply_baseline(name, batch["clip"][good]))
    np.testing.assert_array_equal(out["clip"][~good], batch["clip"][~good])
    assert not np.array_equal(out["clip"][good], batch["clip"][good])
    for col in ("error_type", "error_stage", "error_message", "kind", "video_id"):
        np.testing.assert_array_equal(out[col], batch[col])
    assert out["t_transform"].shape == (4,) and (out["t_transform"] > 0).all()


def test_read_only_input_is_not_written():
    batch = read_only(clip_batch(["clip", "clip"]))
    original = batch["clip"]
    before = original.copy()
    out = TransformClips("blur")(batch)
    np.testing.assert_array_equal(original, before)
    assert out["clip"] is not original and not np.array_equal(out["clip"], before)


def test_a_failing_transform_marks_its_rows_failed_and_the_run_goes_on():
    batch = clip_batch(["clip", "error", "clip"])
    bad = copy_batch(batch)
    bad["clip"] = bad["clip"][..., :2]  # two channels: the baseline raises ValueError
    out = TransformClips("down2")(bad)
    assert list(out["error_type"]) == ["ValueError", "not_found", "ValueError"]
    assert list(out["error_stage"]) == ["transform", "plan", "transform"]
    assert "(N, T, H, W, 3) uint8" in out["error_message"][0]
    assert out["error_message"][1] == "no such file"
    assert out["t_transform"].shape == (3,)


def test_a_batch_without_good_rows_is_left_as_is():
    batch = clip_batch(["error", "gap"])
    out = TransformClips("blur")(copy_batch(batch))
    np.testing.assert_array_equal(out["clip"], batch["clip"])
    assert set(out["error_type"]) == {OK, "not_found"}


def test_unknown_baseline_is_refused_at_construction():
    with pytest.raises(ValueError, match="unknown baseline 'sepia'.*blur, down2, down4, blacken"):
        TransformClips("sepia")


def test_ray_args_declare_half_a_cpu_and_a_batch_size():
    args = TransformClips("blur").ray_args()
    assert args["num_cpus"] == 0.5 and args["batch_size"] >= 1
    assert "compute" not in args  # tasks, not an actor pool
