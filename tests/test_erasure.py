"""Linear erasure of private attributes (anon_core.models.erasure) and the AAM's eraser layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anon_core.attackers import action_probe, train_attacker
from anon_core.models.aam import aam_tiny
from anon_core.models.erasure import (
    LinearEraser,
    concept_columns,
    fit_gradient_erasure,
    fit_leace,
    fit_principal_projection,
)


def _features(n: int, seed: int, conjunction: bool = False):
    """x (n, 16): an action in dims 0-3, two binary attributes mixed into dims 2-7 (overlapping the action's), noise.
    conjunction=True: only the attributes' XOR-like product (2a-1)(2b-1) is encoded, which neither attribute
    correlates with."""
    rng = np.random.default_rng(seed)
    attrs = rng.integers(0, 2, size=(n, 2)).astype(np.float64)
    action = rng.integers(0, 4, size=n)
    x = rng.normal(0, 1, size=(n, 16))
    x[np.arange(n), action] += 3.0
    mix = np.random.default_rng(99).normal(0, 1, size=(2, 6))
    s = 2 * attrs - 1  # (n, 2) in {-1, 1}
    x[:, 2:8] += 1.5 * ((s[:, :1] * s[:, 1:]) @ mix[:1] if conjunction else s @ mix)
    return x.astype(np.float32), attrs, action


def _erase(x, mean, proj):
    return (x - mean) @ proj.T + mean


def test_erased_features_have_no_linear_covariance_with_the_concepts_and_keep_the_rest():
    x, attrs, _ = _features(2000, 0)
    mean, proj = fit_leace(x, attrs)
    xe = _erase(x, mean, proj)
    zc = attrs - attrs.mean(0)
    cov = (xe - xe.mean(0)).T @ zc / len(x)  # (D, A): what any linear predictor of the attributes rests on
    assert np.abs(cov).max() < 1e-4, np.abs(cov).max()
    assert np.abs((x - x.mean(0)).T @ zc / len(x)).max() > 0.3  # there was something to erase
    # rank of what moved = number of concepts, and it moves little: dims the attributes never touched barely change
    assert np.linalg.matrix_rank(np.eye(16) - proj, tol=1e-4) == 2
    assert np.abs(xe[:, 10:] - x[:, 10:]).mean() < 0.1 * np.abs(x[:, 10:]).mean()


def test_attackers_fall_to_chance_on_held_out_videos_while_the_action_survives():
    (xtr, atr, ytr), (xte, ate, yte) = _features(1500, 1), _features(600, 2)
    before = train_attacker("linear", xtr, atr, xte, ate, epochs=20)
    mean, proj = fit_leace(xtr, atr)
    etr, ete = _erase(xtr, mean, proj), _erase(xte, mean, proj)
    after = train_attacker("linear", etr, atr, ete, ate, epochs=20)
    chance = float(ate.mean())
    assert before.cmap > 0.9 and after.cmap < chance + 0.05, (before.cmap, after.cmap, chance)
    kept = action_probe(etr, ytr, ete, yte, epochs=20).top1
    assert kept > 0.8, kept


def test_pairs_also_erase_a_conjunction_that_neither_attribute_correlates_with():
    (xtr, atr, _), (xte, ate, _) = _features(3000, 3, conjunction=True), _features(1000, 4, conjunction=True)
    target_tr = (atr[:, 0] == atr[:, 1]).astype(np.float64)[:, None]  # "same on both": the conjunction
    target_te = (ate[:, 0] == ate[:, 1]).astype(np.float64)[:, None]
    cmaps = {}
    for pairs in (False, True):
        mean, proj = fit_leace(xtr, concept_columns(atr, pairs))
        res = train_attacker("linear", _erase(xtr, mean, proj), target_tr, _erase(xte, mean, proj), target_te,
                             epochs=20)  # fmt: skip
        cmaps[pairs] = res.cmap
    assert cmaps[False] > 0.9 and cmaps[True] < 0.6, cmaps


def test_concept_columns_and_input_errors():
    a = np.array([[1, 0, 1], [0, 1, 1]], dtype=float)
    c = concept_columns(a)
    assert c.shape == (2, 6) and c[0].tolist() == [1, 0, 1, 0, 1, 0]  # a, then a0a1, a0a2, a1a2
    assert concept_columns(a, pairs=False).shape == (2, 3)
    with pytest.raises(ValueError, match="same N"):
        fit_leace(np.zeros((4, 3)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        fit_leace(np.zeros((1, 3)), np.zeros((1, 1)))
    # a constant concept or constant features: nothing to erase, the identity
    mean, proj = fit_leace(np.random.default_rng(0).normal(size=(50, 4)), np.ones((50, 1)))
    np.testing.assert_allclose(proj, np.eye(4), atol=1e-6)


def test_aam_eraser_is_identity_until_fitted_then_applied_only_when_asked_and_survives_a_bundle(tmp_path):
    from anon_core.models.bundle import load_bundle, save_bundle

    torch.manual_seed(0)
    aam = aam_tiny(32, erase=True).eval()
    x, mask = torch.randn(3, 4, 32), torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        plain = aam(x, mask, erase=False)
        assert not aam.eraser.fitted and torch.equal(aam(x, mask), plain)
        mean, proj = fit_leace(np.random.default_rng(0).normal(size=(64, 32)), np.random.default_rng(1).random((64, 2)))
        aam.eraser.set(mean, proj)
        erased = aam(x, mask)
    assert aam.eraser.fitted and not torch.allclose(erased, plain)
    assert torch.equal(erased[~mask], torch.zeros_like(erased[~mask]))  # padding stays exactly zero
    np.testing.assert_allclose(erased[mask].numpy(), _erase(plain[mask].numpy(), mean, proj), atol=1e-5)
    save_bundle(aam, str(tmp_path / "b"), "aam_tiny", {"dim": 32, "erase": True}, trained=True)
    back, _ = load_bundle(str(tmp_path / "b"), expect_kind="aam")
    with torch.no_grad():
        assert torch.allclose(back.eval()(x, mask), erased, atol=1e-6)
    assert aam_tiny(32).eraser is None  # the paper's adapter, unchanged


def test_eraser_module_alone():
    e = LinearEraser(3)
    x = torch.randn(5, 3)
    assert torch.equal(e(x), x) and not e.fitted


def _ring_features(n: int, seed: int):
    """x (n, 12): an action in dims 0-3; a binary attribute as the radius of a random-angle point in dims 8-9 (2.5 or
    0.5), which no linear read-out sees (its covariance with the attribute is zero); noise elsewhere."""
    rng = np.random.default_rng(seed)
    attrs = rng.integers(0, 2, size=(n, 1)).astype(np.float64)
    action = rng.integers(0, 4, size=n)
    x = rng.normal(0, 1, size=(n, 12))
    x[np.arange(n), action] += 3.0
    angle = rng.uniform(0, 2 * np.pi, size=n)
    radius = np.where(attrs[:, 0] > 0, 2.5, 0.5)
    x[:, 8], x[:, 9] = radius * np.cos(angle), radius * np.sin(angle)
    return x.astype(np.float32), attrs, action


def test_gradient_erasure_removes_what_only_a_nonlinear_attacker_reads_and_keeps_the_action():
    x, attrs, action = _ring_features(1500, 0)
    xt, attrs_t, action_t = _ring_features(600, 1)
    mean, proj = fit_leace(x, attrs)
    before = train_attacker("mlp", _erase(x, mean, proj), attrs, _erase(xt, mean, proj), attrs_t, epochs=30).cmap
    assert before > 0.9  # LEACE leaves the ring: an MLP still reads the attribute from it
    # three directions for the ring's two: LEACE's map mixes a little of the others into its plane
    proj = fit_gradient_erasure(_erase(x, mean, proj), attrs, dims=3) @ proj
    xe, xte = _erase(x, mean, proj), _erase(xt, mean, proj)
    after = train_attacker("mlp", xe, attrs, xte, attrs_t, epochs=30).cmap
    assert after < 0.6, after  # chance: the attribute's prevalence, about 0.5
    assert action_probe(xe, action, xte, action_t).top1 > 0.85  # the action's directions were not the ones removed
    assert np.allclose(_erase(x.mean(0, keepdims=True), mean, proj), x.mean(0), atol=1e-4)  # the mean stays put


def test_gradient_erasure_draws_only_the_batch_orders_its_steps_use():
    """max_steps cuts each round's MLP fit; the epochs past it draw no batch order, so a fit with 40 epochs and one
    with just the epochs the steps reach are the same eraser, round after round (the generator also seeds the next
    round's MLP). 300 rows are 5 batches an epoch: 12 steps reach 3 epochs."""
    x, attrs, _ = _ring_features(300, 2)
    fit = lambda epochs: fit_gradient_erasure(x, attrs, dims=3, rank=1, epochs=epochs, max_steps=12, hidden=16)  # noqa: E731
    np.testing.assert_array_equal(fit(40), fit(3))
    assert not np.array_equal(fit(3), fit(2))  # fewer epochs than the steps reach: a different fit


def _tail_features(n: int, seed: int):
    """x (n, 24): an action in 4 high-variance dims (scale 10), noise of scale 1 in 16 more, and a binary attribute
    as a small shift (0.3) in the other 4 dims with scale 0.05: a direction of tiny variance, which an attacker that
    whitens the features reads at once."""
    rng = np.random.default_rng(seed)
    attrs = rng.integers(0, 2, size=(n, 1)).astype(np.float64)
    action = rng.integers(0, 4, size=n)
    x = np.concatenate([10 * rng.normal(0, 1, size=(n, 4)), rng.normal(0, 1, size=(n, 16)),
                        0.05 * rng.normal(0, 1, size=(n, 4))], axis=1)  # fmt: skip
    x[np.arange(n), action] += 30.0
    x[:, 20:] += 0.3 * attrs
    return x.astype(np.float32), attrs, action


def test_principal_projection_removes_the_low_variance_tail_and_keeps_the_action():
    x, attrs, action = _tail_features(1500, 0)
    xt, attrs_t, action_t = _tail_features(600, 1)
    before = train_attacker("mlp", x, attrs, xt, attrs_t, epochs=20, whiten=True).cmap
    assert before > 0.9  # the whitened attacker reads the tiny shift
    proj = fit_principal_projection(x, 0.99)
    assert np.allclose(proj, proj.T, atol=1e-6) and np.allclose(proj @ proj, proj, atol=1e-5)  # orthogonal projector
    kept = int(round(np.trace(proj)))
    assert 4 <= kept < 20  # the action's directions and part of the noise; never the tail
    mean = x.mean(0)
    xe, xte = _erase(x, mean, proj), _erase(xt, mean, proj)
    after = train_attacker("mlp", xe, attrs, xte, attrs_t, epochs=20, whiten=True).cmap
    assert after < 0.6, after  # chance: the attribute's prevalence, about 0.5
    whole = action_probe(x, action, xt, action_t).top1
    assert whole > 0.9 and action_probe(xe, action, xte, action_t).top1 >= whole - 0.02  # the action is kept
    assert np.allclose(fit_principal_projection(x, 1.0), np.eye(24))  # 1: every direction kept
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="keep_variance"):
            fit_principal_projection(x, bad)
