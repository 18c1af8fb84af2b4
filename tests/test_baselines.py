"""The pixel-domain baselines (anon_core.baselines) on small constructed clips: no video, no Ray."""

import numpy as np
import pytest

from anon_core.baselines import BASELINES, apply_baseline, blacken, blacken_boxes, downsample, gaussian_blur


def _noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_changes_the_clip_keeps_shape_and_dtype_and_reads_only(name):
    clips = _read_only(_scene(True)[None, :, :33, :47])
    before = clips.copy()
    out = apply_baseline(name, clips)
    assert out.shape == clips.shape and out.dtype == np.uint8
    assert np.array_equal(clips, before)
    assert not np.array_equal(out, clips)


# -- blur ------------------------------------------------------------------------------------------------------------


def test_blur_removes_high_frequencies_and_keeps_mean_colour():
    base = np.array([200, 120, 40], dtype=np.int16)  # a distinct mean per channel
    jitter = np.random.default_rng(1).integers(-30, 31, (2, 3, 64, 64, 3))
    clips = (base + jitter).astype(np.uint8)
    out = gaussian_blur(clips)

    def hf_energy(x):
        x = x.astype(np.float64)
        return (np.diff(x, axis=2) ** 2).mean() + (np.diff(x, axis=3) ** 2).mean()

    assert hf_energy(out) < 0.02 * hf_energy(clips)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2, 3)), clips.mean(axis=(0, 1, 2, 3)), atol=0.5)


def _edge_sigma(h: int, w: int) -> tuple[float, np.ndarray]:
    """Blur a vertical step edge (0 | 255) in an h x w frame; -> (the blur's sigma measured from the spread of the
    edge's derivative, the blurred row)."""
    clips = np.zeros((1, 1, h, w, 3), dtype=np.uint8)
    clips[..., w // 2 :, :] = 255
    row = gaussian_blur(clips)[0, 0, h // 2, :, 0].astype(np.float64)
    d = np.diff(row)
    x = np.arange(len(d))
    mean = (d * x).sum() / d.sum()
    return float(np.sqrt((d * (x - mean) ** 2).sum() / d.sum())), row


@pytest.mark.parametrize("h, w", [(64, 64), (128, 128), (64, 160)])
def test_blur_sigma_is_a_fraction_of_the_short_side(h, w):
    sigma, row = _edge_sigma(h, w)
    assert sigma == pytest.approx(0.04 * min(h, w), rel=0.1)
    # reflect padding: the frame's edges keep their colour (zero padding would darken the bright edge)
    assert row[0] == 0 and row[-1] == 255


def test_blur_matches_a_plain_numpy_reference():
    """Per axis: pad by radius ceil(3 sigma) with reflect padding (edge not repeated), convolve with the normalized
    Gaussian. Catches a wrong radius, kernel or padding mode anywhere in the frame, borders included."""
    clips = _noise((1, 2, 20, 30, 3), seed=5)
    sigma = 0.04 * 20 * 2
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    x = clips.astype(np.float64)
    x = np.pad(x, [(0, 0), (0, 0), (r, r), (0, 0), (0, 0)], mode="reflect")
    x = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 2, x)
    x = np.pad(x, [(0, 0), (0, 0), (0, 0), (r, r), (0, 0)], mode="reflect")
    x = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 3, x)
    out = gaussian_blur(clips, sigma_frac=0.08)
    assert np.abs(out.astype(np.int16) - np.round(x)).max() <= 1


def test_blur_rejects_non_positive_sigma():
    with pytest.raises(ValueError, match="sigma_frac"):
        gaussian_blur(_noise((1, 1, 8, 8, 3)), sigma_frac=0)


def test_baselines_reject_clips_of_the_wrong_layout():
    with pytest.raises(ValueError, match=r"\(N, T, H, W, 3\) uint8"):
        gaussian_blur(_noise((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"\(N, T, H, W, 3\) uint8"):
        downsample(np.zeros((1, 1, 8, 8, 3), dtype=np.float32), 2)


# -- downsample ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_makes_constant_blocks_of_the_block_mean(factor):
    clips = _noise((2, 3, 16, 24, 3))
    out = downsample(clips, factor)
    n, t, h, w, c = clips.shape
    blocks = out.reshape(n, t, h // factor, factor, w // factor, factor, c)
    assert (blocks == blocks[:, :, :, :1, :, :1]).all()  # every pixel equals its block's top-left one
    means = clips.reshape(blocks.shape).mean(axis=(3, 5))
    np.testing.assert_array_equal(blocks[:, :, :, 0, :, 0], np.round(means).astype(np.uint8))


@pytest.mark.parametrize("shape, factor, small", [((1, 2, 7, 9, 3), 2, (4, 5)), ((1, 1, 3, 5, 3), 4, (1, 1))])
def test_downsample_odd_sizes_keep_shape_and_lose_detail(shape, factor, small):
    clips = _noise(shape, seed=2)
    out = downsample(clips, factor)
    assert out.shape == clips.shape and out.dtype == np.uint8
    # round(7 / 2) x round(9 / 2) = 4 x 5 distinct blocks (at most) per frame and channel
    for frame in out.reshape(-1, *shape[2:]):
        assert np.unique(frame[..., 0], axis=0).shape[0] <= small[0]  # distinct rows
        assert np.unique(frame[..., 0], axis=1).shape[1] <= small[1]  # distinct columns


@pytest.mark.parametrize("factor", [1, 0, -2, 2.0, True, "2"])
def test_downsample_rejects_a_factor_that_is_not_an_int_of_at_least_2(factor):
    with pytest.raises(ValueError, match="factor must be an int >= 2"):
        downsample(_noise((1, 1, 8, 8, 3)), factor)


# -- blacken ---------------------------------------------------------------------------------------------------------

T, S, SQ = 16, 64, 8  # frames, frame size, the mover's side
Y0 = 20  # the mover's top row; it slides right 2 px a frame from x = 8


def _scene(moving: bool, seed: int = 3) -> np.ndarray:
    """A static textured background with +-3 grey levels of per-frame sensor noise; with `moving`, a flat grey square
    slides across it, and one far-away pixel flashes once (noise the box must not stretch to)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 216, (S, S, 3))
    clip = background + rng.integers(-3, 4, (T, S, S, 3))
    if moving:
        for t in range(T):
            clip[t, Y0 : Y0 + SQ, 8 + 2 * t : 8 + 2 * t + SQ] = 250
        clip[5, 60, 60] = 0
    return clip.astype(np.uint8)


def test_blacken_boxes_the_mover_in_every_frame_and_leaves_far_background():
    clips = np.stack([_scene(True), _scene(False, seed=4)])
    (y0, x0, y1, x1), static_box = blacken_boxes(clips)
    swept = (Y0, 8, Y0 + SQ, 8 + 2 * (T - 1) + SQ)  # everything the square covers over the clip
    assert y0 < swept[0] and x0 < swept[1] and y1 > swept[2] and x1 > swept[3]  # contains it, with a margin
    assert y1 - y0 <= SQ * 2 + 2 and x1 - x0 <= (swept[3] - swept[1]) * 1.5 + 2  # and not the whole frame
    assert (static_box == -1).all()

    out = blacken(clips)
    assert (out[0, :, y0:y1, x0:x1] == 0).all()  # every frame, the whole box
    assert (out[0, :, swept[0] : swept[2], swept[1] : swept[3]] == 0).all()
    np.testing.assert_array_equal(out[0, :, y1:], clips[0, :, y1:])  # below the box, flashing pixel included
    np.testing.assert_array_equal(out[1], clips[1])


def test_blacken_leaves_a_static_clip_unchanged():
    clips = _read_only(_scene(False)[None])
    np.testing.assert_array_equal(blacken(clips), clips)
    np.testing.assert_array_equal(blacken_boxes(clips), [[-1, -1, -1, -1]])


def test_blacken_threshold_and_margin_are_honoured():
    clips = _scene(True)[None]
    # nothing in the scene differs from its background by more than 255
    np.testing.assert_array_equal(blacken_boxes(clips, threshold=255), [[-1, -1, -1, -1]])
    tight = blacken_boxes(clips, margin=0)[0]
    np.testing.assert_array_equal(tight, [Y0, 8, Y0 + SQ, 8 + 2 * (T - 1) + SQ])


def test_blacken_rejects_bad_knobs():
    with pytest.raises(ValueError, match="patch"):
        blacken(_scene(True)[None], patch=0)
    with pytest.raises(ValueError, match="margin"):
        blacken(_scene(True)[None], margin=-0.1)


# -- registry --------------------------------------------------------------------------------------------------------


def test_registry_names_map_to_their_settings():
    clips = _noise((1, 2, 16, 16, 3), seed=6)
    np.testing.assert_array_equal(apply_baseline("blur", clips), gaussian_blur(clips, sigma_frac=0.04))
    np.testing.assert_array_equal(apply_baseline("down2", clips), downsample(clips, 2))
    np.testing.assert_array_equal(apply_baseline("down4", clips), downsample(clips, 4))
    assert not np.array_equal(downsample(clips, 2), downsample(clips, 4))
    scene = _scene(True)[None]
    np.testing.assert_array_equal(apply_baseline("blacken", scene), blacken(scene, patch=16, margin=0.25))


def test_apply_baseline_names_the_known_baselines():
    with pytest.raises(ValueError, match="unknown baseline 'pixelate'") as err:
        apply_baseline("pixelate", _noise((1, 1, 8, 8, 3)))
    for name in ("blur", "down2", "down4", "blacken"):
        assert name in str(err.value)
