import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anon_core.video import ClipSpec, plan_clip_starts, static_clip
from anon_core.video.sampling import center_crop, clip_frame_indices, resized_size


@given(
    n=st.integers(0, 5000),
    t=st.integers(1, 32),
    s=st.integers(1, 8),
    m=st.one_of(st.none(), st.integers(1, 50)),
)
def test_clip_plan_is_non_overlapping_in_range_and_covers(n, t, s, m):
    spec = ClipSpec(num_frames=t, stride=s, size=32, max_clips=m)
    starts = plan_clip_starts(n, spec)
    full = plan_clip_starts(n, ClipSpec(num_frames=t, stride=s, size=32))
    assert len(full) == (0 if n < spec.span else (n - spec.span) // spec.window + 1)
    if len(starts):
        idx = clip_frame_indices(starts, spec)
        assert idx.max() < n and idx.min() >= 0
        assert np.all(np.diff(starts) >= spec.window)  # never overlap
        assert starts[0] == 0
        if m != 1:  # the last clip that fits is taken too: the clips reach the end of the video
            assert starts[-1] == full[-1]
        assert len(starts) == (len(full) if m is None else min(m, len(full)))


def test_clip_plan_without_max_clips_tiles_the_video():
    starts = plan_clip_starts(100, ClipSpec(num_frames=4, stride=3, size=32))
    assert starts.tolist() == [0, 12, 24, 36, 48, 60, 72, 84]  # span 10: 84 + 9 = 93 < 100, 96 + 9 = 105 > 99


@pytest.mark.parametrize(
    "kwargs", [{"num_frames": 0}, {"stride": 0}, {"size": 2}, {"max_clips": 0}]
)
def test_clip_spec_rejects_nonsense(kwargs):
    with pytest.raises(ValueError, match="invalid ClipSpec"):
        ClipSpec(**kwargs)


def test_resize_and_crop_keep_aspect_and_centre():
    assert resized_size(1280, 720, 112) == (199, 112)
    assert resized_size(720, 1280, 112) == (112, 199)
    frame = np.arange(10 * 14 * 3, dtype=np.int64).reshape(10, 14, 3)
    out = center_crop(frame, 10)
    assert out.shape == (10, 10, 3) and np.array_equal(out, frame[:, 2:12])


def test_static_clip_repeats_one_frame():
    frame = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    clip = static_clip(frame, 5)
    assert clip.shape == (5, 8, 8, 3)
    assert all(np.array_equal(c, frame) for c in clip)
    clip[0, 0, 0, 0] ^= 1  # a real copy: writing into it leaves the frame alone
    assert clip[1, 0, 0, 0] == frame[0, 0, 0]
    with pytest.raises(ValueError, match="one"):
        static_clip(clip, 3)


def test_a_panned_clip_is_one_frame_moving_and_visible_to_a_motion_only_encoder():
    """The AAM's static view for an encoder with motion_input: a repeated frame minus its temporal mean is blank,
    a panned one is not, and every frame of it is a shifted copy of the frame (no new content)."""
    from anon_core.video import panned_clip

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    clip = panned_clip(frame, 16, np.random.default_rng(1))
    assert clip.shape == (16, 64, 64, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip[7], frame)  # the pan is centred on the frame itself
    still = static_clip(frame, 16).astype(np.float32)
    assert np.abs(still - still.mean(0)).max() == 0  # what a motion-only encoder receives: nothing
    moving = clip.astype(np.float32)
    assert np.abs(moving - moving.mean(0)).mean() > 10
    inner = clip[:, 8:-8, 8:-8]  # away from the repeated edges, each frame is the frame shifted by a few pixels
    for t in (0, 15):
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if np.array_equal(inner[t], frame[8 + dy : 56 + dy, 8 + dx : 56 + dx])]  # fmt: skip
        assert len(found) == 1 and found[0] != (0, 0)
    with pytest.raises(ValueError, match="one"):
        panned_clip(clip, 4, rng)
