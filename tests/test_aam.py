"""Anonymizing Adapter Module (arXiv 2511.08666): shapes, per-video attention, identity start, a tiny training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anon_core.losses import aam_objective
from anon_core.models.aam import (
    AnonymizingAdapter,
    aam_for_dim,
    aam_tiny,
    pack_clips,
    unpack_clips,
    warm_start_identity,
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # these models are tiny: with 2 cores shared by other processes, OpenMP thread contention made steps 10x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BUILDERS = {
    "tiny": lambda: aam_tiny(32),
    "published_layout": lambda: aam_for_dim(32),
    "pre_norm": lambda: aam_tiny(32, norm="pre"),
}


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


@pytest.mark.parametrize("name", BUILDERS)
def test_shape_padding_and_no_nan(name):
    torch.manual_seed(0)
    adapter = BUILDERS[name]()
    x = torch.randn(3, 5, 32)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    x[~mask] = float("nan")  # padding may hold garbage; it must not reach real clips
    out = adapter(x, mask)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert (out[~mask] == 0).all(), "padded positions are documented to be exactly zero"
    assert (out[mask].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("name", BUILDERS)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    adapter = BUILDERS[name]()
    x = torch.randn(3, 4, 32)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)  # last video: all padding
    adapter(x, mask)[mask].pow(2).sum().backward()
    for pname, p in adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {pname}"
        assert torch.isfinite(p.grad).all(), f"NaN gradient in {pname}: a fully padded video leaked into backward"


def test_video_output_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    adapter = aam_tiny(32)
    video = torch.randn(3, 32)
    alone = adapter(video[None])[0]
    # batch A: the video padded to 6 among longer and shorter videos; batch B: padded to 9, at another row
    batch_a = torch.randn(3, 6, 32)
    mask_a = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] + [0] * 5], dtype=torch.bool)
    batch_a[1] = 0
    batch_a[1, :3] = video
    batch_b = torch.randn(4, 9, 32) * 5
    mask_b = torch.zeros(4, 9, dtype=torch.bool)
    mask_b[0, :9], mask_b[1, :2], mask_b[2, :7], mask_b[3, :3] = True, True, True, True
    batch_b[3, :3] = video
    out_a = adapter(batch_a, mask_a)[1, :3]
    out_b = adapter(batch_b, mask_b)[3, :3]
    torch.testing.assert_close(out_a, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_b, alone, atol=1e-5, rtol=1e-5)


def test_single_clip_video_and_static_path():
    torch.manual_seed(0)
    adapter = aam_tiny(32)
    z = torch.randn(5, 32)
    out = adapter.forward_static(z)
    assert out.shape == z.shape and torch.isfinite(out).all()
    # a static clip sees only itself: the same as a one-clip video on its own
    torch.testing.assert_close(out[2], adapter(z[2][None, None])[0, 0], atol=1e-6, rtol=1e-6)


def test_pack_unpack_roundtrip_and_forward_flat():
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.array(["a"] * 4 + ["b"] * 1 + ["c"] * 3))
    feats = rng.normal(size=(len(ids), 32)).astype(np.float32)
    packed, mask, packing = pack_clips(feats, ids)
    assert packed.shape == (3, 4, 32)
    assert sorted(mask.sum(1).tolist()) == [1, 3, 4]
    assert list(packing.video_ids) == list(dict.fromkeys(ids))  # rows in order of first appearance
    np.testing.assert_array_equal(unpack_clips(packed, packing), feats)
    # torch path and forward_flat: each clip's output equals running its video alone
    torch.manual_seed(0)
    adapter = aam_tiny(32)
    h = torch.from_numpy(feats)
    flat = adapter.forward_flat(h, ids)
    for vid in np.unique(ids):
        rows = np.flatnonzero(ids == vid)
        torch.testing.assert_close(flat[rows], adapter(h[rows][None])[0], atol=1e-5, rtol=1e-5)


def test_zero_out_init_is_exact_identity():
    adapter = aam_tiny(32, init="zero_out")
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(adapter(x), x, atol=0, rtol=0)


def _features(gen: torch.Generator, videos: int, clips: int, dim: int = 32) -> torch.Tensor:
    # a per-video component shared by its clips plus per-clip variation
    return torch.randn(videos, 1, dim, generator=gen) + 0.5 * torch.randn(videos, clips, dim, generator=gen)


def test_warm_start_reaches_identity_on_held_out_features():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    train, held_out = _features(gen, 128, 4), _features(gen, 32, 6)
    adapter = aam_tiny(32)
    with torch.no_grad():
        before = _rel_err(adapter(held_out), held_out)
    loss = warm_start_identity(adapter, train, 300, 1e-2)
    with torch.no_grad():
        after = _rel_err(adapter(held_out), held_out)
    assert before > 0.2, "the random adapter should start far from identity, or this test proves nothing"
    assert loss < 1e-3
    assert after < 0.05


def test_warm_start_accepts_iterables():
    gen = torch.Generator().manual_seed(0)
    x = _features(gen, 4, 3)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    x[~mask] = float("nan")
    loss = warm_start_identity(aam_tiny(32), [(x, mask), x[[0, 3]]], 20, 1e-3)
    assert np.isfinite(loss)
    # a one-shot generator stops when exhausted instead of looping forever
    assert np.isfinite(warm_start_identity(aam_tiny(32), (b for b in [x[[0, 3]]] * 2), 100, 1e-3))
    with pytest.raises(ValueError, match="empty"):
        warm_start_identity(aam_tiny(32), [], 5, 1e-3)
    with pytest.raises(ValueError, match="pack_clips"):
        warm_start_identity(aam_tiny(32), torch.randn(10, 32), 5, 1e-3)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="num_heads"):
        AnonymizingAdapter(dim=30, num_heads=8)
    with pytest.raises(ValueError, match="pack_clips"):
        aam_tiny(32)(torch.randn(4, 32))
    with pytest.raises(ValueError, match="mask"):
        aam_tiny(32)(torch.randn(2, 3, 32), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="norm"):
        aam_tiny(32, norm="post")


def _synthetic_videos(gen: torch.Generator, videos: int, clips: int, num_actions: int = 4, dim: int = 32):
    """Features where dims 0-7 carry the action and dims 8-23 a per-video appearance code; static clips (one frame
    repeated) carry the appearance but no action."""
    action_codes = torch.randn(num_actions, 8, generator=gen)
    labels = torch.randint(0, num_actions, (videos,), generator=gen)
    appearance = torch.randn(videos, 16, generator=gen)

    def noise(*shape):
        return 0.1 * torch.randn(*shape, dim, generator=gen)

    h = noise(videos, clips)
    h[..., :8] += action_codes[labels][:, None]
    h[..., 8:24] += appearance[:, None]
    static_a, static_b = noise(videos), noise(videos)
    static_a[:, 8:24] += appearance
    static_b[:, 8:24] += appearance
    return h, labels, static_a, static_b


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_aam_training_destroys_static_agreement_and_keeps_action(seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    h, labels, static_a, static_b = _synthetic_videos(gen, videos=48, clips=4)
    adapter = aam_tiny(32)
    warm_start_identity(adapter, h, 200, 1e-2)
    head = torch.nn.Linear(32, 4)
    # the action head first learns on the encoder features, so "stays high" below has a baseline
    head_opt = torch.optim.AdamW(head.parameters(), lr=5e-2)
    for _ in range(100):
        head_opt.zero_grad()
        torch.nn.functional.cross_entropy(head(h).flatten(0, 1), labels.repeat_interleave(4)).backward()
        head_opt.step()
    acc_before = float((head(h).argmax(-1) == labels[:, None]).float().mean())
    assert acc_before > 0.95

    opt = torch.optim.AdamW([*adapter.parameters(), *head.parameters()], lr=1e-3)
    history = []
    for _ in range(120):
        h_anon = adapter(h)
        parts = aam_objective(  # published weights: w_lc = 100, w_t = 1, w_b = 1
            h=h,
            h_anon=h_anon,
            task_logits={"action": head(h_anon)},
            task_labels={"action": labels},
            static_a=adapter.forward_static(static_a),
            static_b=adapter.forward_static(static_b),
        )
        opt.zero_grad()
        parts["total"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in parts.items()})

    def first_last(key):
        return np.mean([s[key] for s in history[:5]]), np.mean([s[key] for s in history[-5:]])

    total_first, total_last = first_last("total")
    lb_first, lb_last = first_last("l_b")
    assert total_last < total_first - 1.0
    assert lb_last > lb_first + 1.0, "NT-Xent between the two static views should rise: their agreement is destroyed"
    with torch.no_grad():
        acc_after = float((head(adapter(h)).argmax(-1) == labels[:, None]).float().mean())
    assert acc_after > 0.95
