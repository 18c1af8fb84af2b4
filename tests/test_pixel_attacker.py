"""The pixel attacker and pixel action probe on constructed clips with known answers (tiny: 32 px, 8 frames)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anon_core.metrics import chance_cmap, cmap
from anon_core.pixel_attacker import SmallVideoNet, pixel_action_probe, prepare_clips, train_pixel_attacker

T, S = 8, 32
FAST = dict(size=S, frames=T, width=16)
COLOURS = np.array([(230, 30, 30), (30, 230, 30), (30, 30, 230)], np.uint8)  # one per attribute
CORNERS = [(2, 2), (2, 24), (24, 13)]  # top-left of each attribute's 6x6 square
DIRECTIONS = np.array([(0, -2), (0, 2), (-2, 0), (2, 0)])  # (dy, dx) per frame: left, right, up, down


def noise(n: int, rng) -> np.ndarray:
    return rng.integers(60, 190, (n, T, S, S, 3), dtype=np.uint8)


def attribute_clips(y: np.ndarray, rng) -> np.ndarray:
    """Attribute a present <=> a square of its colour at its place, in every frame, on fresh noise."""
    clips = noise(len(y), rng)
    for a, ((r, c), colour) in enumerate(zip(CORNERS, COLOURS, strict=True)):
        clips[y[:, a] == 1, :, r : r + 6, c : c + 6] = colour
    return clips


def motion_clips(actions: np.ndarray, rng) -> np.ndarray:
    """A white square moving in the action's direction, 2 px a frame, wrapping at the borders from a uniform random
    start: its position in any one frame is uniform whatever the action, so only motion tells the action."""
    clips = noise(len(actions), rng)
    for i, action in enumerate(actions):
        y0, x0 = rng.integers(0, S, 2)
        for t in range(T):
            dy, dx = DIRECTIONS[action] * t
            rows, cols = (y0 + dy + np.arange(6)) % S, (x0 + dx + np.arange(6)) % S
            clips[i, t, rows[:, None], cols[None, :]] = 255
    return clips


def attributes(n: int, rng, a: int = 3) -> np.ndarray:
    return (rng.random((n, a)) < 0.4).astype(np.int8)


def test_model_shapes_and_gradients():
    torch.manual_seed(0)
    net = SmallVideoNet(5, width=8)
    out = net(torch.randn(2, 3, T, S, S))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_prepare_clips_samples_frames_uniformly_and_area_resizes():
    clips = np.zeros((3, 16, 64, 48, 3), np.uint8)
    clips[:] = (np.arange(16, dtype=np.uint8) * 16)[None, :, None, None, None]  # frame t is grey level 16 t
    clips[:, :, :32, :, 0] = 255  # top half of the red channel saturated
    x = prepare_clips(clips, size=8, frames=4, chunk=2)
    assert x.shape == (3, 3, 4, 8, 8) and x.dtype == torch.float32
    levels = (x[0, 1, :, 0, 0] * 0.5 + 0.5) * 255  # green channel: the sampled frames' grey levels
    assert levels.round().tolist() == [16 * t for t in (2, 6, 10, 14)]  # centres of 4 equal segments of 16
    assert torch.all(x[:, 0, :, :4] == 1.0) and torch.all(x[:, 0, :, 4:] < 1.0)  # 8 source rows per output row
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_attributes_written_in_pixels_are_found():
    rng = np.random.default_rng(0)
    ytr, yte = attributes(200, rng), attributes(100, rng)
    r = train_pixel_attacker(attribute_clips(ytr, rng), ytr, attribute_clips(yte, rng), yte, epochs=4, **FAST)
    assert r.name == "video_model" and r.scores.shape == (100, 3)
    assert r.cmap > 0.9, r.history
    assert r.macro_f1 > 0.7
    # scored once, after the schedule's last epoch; the history is the training loss, which falls
    assert r.best == "epoch 4" and len(r.history) == 4 and r.history[-1] < r.history[0]
    assert r.cmap == pytest.approx(cmap(yte, r.scores))


def test_noise_with_random_labels_sits_at_the_chance_floor():
    rng = np.random.default_rng(1)
    ytr, yte = attributes(200, rng, a=5), attributes(100, rng, a=5)
    r = train_pixel_attacker(noise(200, rng), ytr, noise(100, rng), yte, epochs=3, **FAST)
    # one scoring after the last epoch: nothing is chosen on the test split
    assert abs(r.cmap - chance_cmap(yte)) < 0.08, (r.cmap, chance_cmap(yte))


def test_an_action_that_lives_only_in_motion_is_recognised():
    rng = np.random.default_rng(2)
    a_train = rng.integers(0, 4, 200)
    a_test = np.repeat(rng.integers(0, 4, 25), 4)  # 25 test videos of 4 clips each
    vids = np.repeat(np.arange(25), 4)
    r = pixel_action_probe(motion_clips(a_train, rng), a_train, motion_clips(a_test, rng), a_test, vids,
                           num_classes=4, epochs=6, **FAST)  # fmt: skip
    assert r.probs.shape == (100, 4)
    # chance is 0.25; a horizontal flip (not the probe's default) would confuse left with right and give ~0.75
    assert r.video_top1 > 0.9 and r.top1 > 0.85, (r.top1, r.video_top1, r.history)


def test_same_seed_same_result():
    rng = np.random.default_rng(3)
    y = attributes(48, rng)
    clips = attribute_clips(y, rng)
    run = lambda seed: train_pixel_attacker(clips[:32], y[:32], clips[32:], y[32:], epochs=2, seed=seed, **FAST)  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert a.history == b.history and np.array_equal(a.scores, b.scores)
    assert not np.array_equal(a.scores, c.scores)


def _bad(**change):
    rng = np.random.default_rng(4)
    args = dict(clips_train=noise(4, rng), y_train=np.array([[0], [1], [0], [1]]), clips_test=noise(2, rng),
                y_test=np.array([[0], [1]]))  # fmt: skip
    args.update(change)
    return args


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(clips_train=np.zeros((4, T, S, S, 3), np.float32)), "uint8"),
        (dict(clips_test=np.zeros((2, S, S, 3), np.uint8)), r"\(N, T, H, W, 3\)"),
        (dict(clips_test=np.zeros((2, T, S, S, 4), np.uint8)), r"\(N, T, H, W, 3\)"),
        (dict(clips_train=np.zeros((0, T, S, S, 3), np.uint8), y_train=np.zeros((0, 1))), "empty"),
        (dict(y_train=np.array([[0], [1], [0]])), "one row per clip"),
        (dict(y_test=np.array([[0, 1], [1, 0]])), "same A"),
        (dict(y_train=np.zeros((4, 0)), y_test=np.zeros((2, 0))), "A >= 1"),
        (dict(y_train=np.array([[0], [2], [0], [1]])), "0/1"),
        (dict(epochs=0), ">= 1"),
    ],
)
def test_attacker_rejects_invalid_inputs(change, match):
    args = _bad(**change)
    with pytest.raises(ValueError, match=match):
        train_pixel_attacker(args.pop("clips_train"), args.pop("y_train"), args.pop("clips_test"), args.pop("y_test"),
                             **args)  # fmt: skip


@pytest.mark.parametrize(
    "actions_train, actions_test, kwargs, match",
    [
        (np.array([0.0, 1.0, 0.0, 1.0]), np.array([0, 1]), {}, "integer"),
        (np.array([0, 1, 0, 1]), np.array([[0], [1]]), {}, "1-D"),
        (np.array([0, 1, 0, 3]), np.array([0, 1]), dict(num_classes=2), r"\[0, 2\)"),
        (np.array([0, 1, 0, 1]), np.array([0, 1]), dict(video_ids_test=np.arange(3)), "one id per test clip"),
        (np.array([0, 1, 0]), np.array([0, 1]), {}, "one row per clip"),
    ],
)
def test_action_probe_rejects_invalid_inputs(actions_train, actions_test, kwargs, match):
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match=match):
        pixel_action_probe(noise(4, rng), actions_train, noise(2, rng), actions_test, **kwargs)


def test_prepare_clips_rejects_non_pixels():
    with pytest.raises(ValueError, match="uint8"):
        prepare_clips(np.zeros((1, T, S, S, 3), np.int64))
