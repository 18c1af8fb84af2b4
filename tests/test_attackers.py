"""The evaluation's attackers and probes on constructed features with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from anon_core.attackers import _last_best, action_probe, attack_pool, holdout, knn_attacker, train_attacker, worst_case
from anon_core.metrics import bias_gap, chance_cmap, cmap, normalized_leakage

N_TRAIN, N_TEST, A = 600, 300, 5


def attributes(n: int, rng) -> np.ndarray:
    return (rng.random((n, A)) < rng.uniform(0.2, 0.6, size=A)).astype(np.int8)


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    return attributes(N_TRAIN, rng), attributes(N_TEST, rng), rng


def exact_features(y: np.ndarray, rng) -> np.ndarray:
    """The attributes themselves (scaled, slightly noisy) among 27 distractor dimensions."""
    return np.concatenate([3.0 * y + 0.05 * rng.standard_normal(y.shape), rng.standard_normal((len(y), 27))], axis=1)


def test_features_that_encode_the_attributes_leak_everything(split):
    ytr, yte, rng = split
    pool = attack_pool(exact_features(ytr, rng), ytr, exact_features(yte, rng), yte, epochs=30)
    for name, result in pool.items():
        assert result.cmap > 0.97, (name, result.cmap)
        assert result.macro_f1 > 0.8, (name, result.macro_f1)  # threshold 0.5; k-NN's fractions are coarse
        assert result.scores.shape == (N_TEST, A)
    assert worst_case(pool).cmap == max(r.cmap for r in pool.values())


def test_random_features_sit_at_the_chance_floor(split):
    ytr, yte, rng = split
    xtr, xte = rng.standard_normal((N_TRAIN, 32)), rng.standard_normal((N_TEST, 32))
    chance = chance_cmap(yte)
    pool = attack_pool(xtr, ytr, xte, yte, epochs=30)
    for name, result in pool.items():
        # epochs and k are chosen on a validation hold-out, not on the test split: no luckiest-epoch bonus
        assert abs(result.cmap - chance) < 0.05, (name, result.cmap, chance)
    exact = worst_case(attack_pool(exact_features(ytr, rng), ytr, exact_features(yte, rng), yte, epochs=30)).cmap
    assert normalized_leakage(worst_case(pool).cmap, exact, chance) < 0.25


def test_epochs_and_k_are_chosen_on_the_training_split_never_the_test_split(split):
    ytr, yte, rng = split
    xtr, xte = exact_features(ytr, rng), exact_features(yte, rng)
    r = train_attacker("linear", xtr, ytr, xte, yte, epochs=5)
    assert len(r.history) == 5 and r.best == f"epoch {_last_best(r.history) + 1}"  # the validation history decides
    assert r.cmap == pytest.approx(cmap(yte, r.scores))
    k = knn_attacker(xtr, ytr, xte, yte, ks=(1, 3))
    assert len(k.history) == 2 and k.best in ("k=1", "k=3")
    # the test labels play no part in any choice: the same attacker scored against other labels keeps its scores
    other = 1 - yte
    for a, b in ((r, train_attacker("linear", xtr, ytr, xte, other, epochs=5)),
                 (k, knn_attacker(xtr, ytr, xte, other, ks=(1, 3)))):  # fmt: skip
        assert a.best == b.best and np.array_equal(a.scores, b.scores)


def test_seeds_average_the_fits_of_consecutive_seeds_into_one_attacker(split):
    """seeds=3 is the mean of the probabilities of the fits seeded 7, 8 and 9 (each its own hold-out and epochs), and
    says what each chose; on features that carry nothing it stays at chance."""
    ytr, yte, rng = split
    xtr, xte = exact_features(ytr, rng), exact_features(yte, rng)
    ens = train_attacker("mlp", xtr, ytr, xte, yte, epochs=4, seed=7, seeds=3)
    fits = [train_attacker("mlp", xtr, ytr, xte, yte, epochs=4, seed=s) for s in (7, 8, 9)]
    assert np.allclose(ens.scores, np.mean([f.scores for f in fits], axis=0), atol=1e-6)
    assert ens.best == "epochs " + ", ".join(f.best.split()[1] for f in fits)
    assert np.allclose(ens.history, np.mean([f.history for f in fits], axis=0))
    k = knn_attacker(xtr, ytr, xte, yte, ks=(1, 3), seeds=2)
    k_fits = [knn_attacker(xtr, ytr, xte, yte, ks=(1, 3), seed=s) for s in (0, 1)]
    assert np.allclose(k.scores, np.mean([f.scores for f in k_fits], axis=0))
    probe = action_probe(xtr, ytr[:, 0], xte, yte[:, 0], epochs=3, seeds=2)
    p_fits = [action_probe(xtr, ytr[:, 0], xte, yte[:, 0], epochs=3, seed=s) for s in (0, 1)]
    assert np.allclose(probe.probs, np.mean([f.probs for f in p_fits], axis=0), atol=1e-6)
    noise = attack_pool(rng.standard_normal((N_TRAIN, 32)), ytr, rng.standard_normal((N_TEST, 32)), yte, epochs=8,
                        seeds=3)  # fmt: skip
    for name, result in noise.items():  # an ensemble of attackers that learned nothing still reads chance
        assert abs(result.cmap - chance_cmap(yte)) < 0.05, (name, result.cmap)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="seeds"):
            train_attacker("linear", xtr, ytr, xte, yte, epochs=1, seeds=bad)


def test_the_holdout_keeps_groups_whole_and_is_seeded():
    groups = np.repeat(np.arange(10), 3)  # 10 people, 3 rows each
    fit, val = holdout(30, groups, seed=0)
    assert len(val) == 6 and sorted(np.concatenate([fit, val]).tolist()) == list(range(30))
    assert not set(groups[fit]) & set(groups[val])  # nobody is in both parts
    assert np.array_equal(val, holdout(30, groups, seed=0)[1])
    assert len(holdout(5)[1]) == 1  # no groups: every row its own
    with pytest.raises(ValueError, match="at least 2"):
        holdout(4, np.zeros(4))
    # the choice: the highest validation score, the later on a tie; a validation part with no usable labels (NaN
    # throughout, e.g. a tiny corpus) leaves the last epoch
    assert (_last_best([0.5, 0.7, 0.7, 0.6]), _last_best([np.nan, np.nan, np.nan])) == (2, 2)
    with pytest.raises(ValueError, match="one id per training row"):
        holdout(4, np.arange(3))


def test_action_probe_averages_clips_per_video():
    rng = np.random.default_rng(1)
    classes, clips = 8, 4
    y_video = rng.integers(0, classes, 200)
    y = np.repeat(y_video, clips)
    # each clip alone is a weak cue; four clips of a video together are a strong one
    x = np.eye(classes)[y] * 1.5 + rng.standard_normal((len(y), classes))
    vids = np.repeat(np.arange(200), clips)
    tr, te = vids < 120, vids >= 120
    r = action_probe(x[tr], y[tr], x[te], y[te], vids[te], num_classes=classes, epochs=40)
    assert r.video_top1 > r.top1 + 0.1 and r.video_top1 > 0.75
    assert r.probs.shape == (te.sum(), classes)
    chance = action_probe(rng.standard_normal((400, 16)), rng.integers(0, classes, 400),
                          rng.standard_normal((400, 16)), rng.integers(0, classes, 400), epochs=20)  # fmt: skip
    assert chance.top1 < 0.25


def test_a_shortcut_learned_on_biased_training_data_shows_a_group_gap():
    """Train where action 1 is shot 95% with group 1 and action 0 95% with group 0; features carry the group
    strongly and the action weakly. On balanced test data the probe's accuracy differs between the groups."""
    rng = np.random.default_rng(2)
    n = 2000
    action = rng.integers(0, 2, n)
    group = np.where(rng.random(n) < 0.95, action, 1 - action)
    x = np.stack([3.0 * group + 0.3 * rng.standard_normal(n), 0.3 * action + rng.standard_normal(n)], axis=1)
    a_te, g_te = rng.integers(0, 2, 1000), rng.integers(0, 2, 1000)
    x_te = np.stack([3.0 * g_te + 0.3 * rng.standard_normal(1000), 0.3 * a_te + rng.standard_normal(1000)], axis=1)
    r = action_probe(x, action, x_te, a_te, num_classes=2, epochs=30)
    # the bias protocol's figure: accuracy on the biased action, per group
    biased = a_te == 1
    report = bias_gap(r.probs[biased], a_te[biased], g_te[biased], expected_groups=[0, 1])
    assert report.per_group[1] > report.per_group[0] and report.gap > 0.5
    # the shortcut: the probe reads the group, so it is right on aligned samples and wrong on the others
    aligned = g_te == a_te
    pred = r.probs.argmax(1)
    assert (pred[aligned] == a_te[aligned]).mean() > 0.8 > (pred[~aligned] == a_te[~aligned]).mean()


def test_attackers_refuse_broken_inputs(split):
    ytr, yte, rng = split
    with pytest.raises(ValueError, match="same D"):
        train_attacker("linear", rng.standard_normal((N_TRAIN, 4)), ytr, rng.standard_normal((N_TEST, 5)), yte)
    bad = rng.standard_normal((N_TEST, 4))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn_attacker(rng.standard_normal((N_TRAIN, 4)), ytr, bad, yte)
    with pytest.raises(ValueError, match="kind"):
        train_attacker("svm", rng.standard_normal((N_TRAIN, 4)), ytr, rng.standard_normal((N_TEST, 4)), yte)


def test_whitened_attackers_read_a_low_variance_direction(split):
    """Each attribute hides in the small difference of two coordinates that share a large common swing: per-dimension
    standardization leaves the swing dominant, so k-NN neighbours ignore the attribute; PCA whitening scales the
    difference direction up to the swing's size and the neighbours follow it."""
    ytr, yte, rng = split

    def hidden(y):
        swing = 10.0 * rng.standard_normal((len(y), A))
        eps = 0.1 * (y - 0.5) + 0.01 * rng.standard_normal(y.shape)
        return np.concatenate([swing + eps, swing - eps], axis=1)  # (N, 2A): attribute a in x[a] - x[A + a]

    xtr, xte = hidden(ytr), hidden(yte)
    plain, white = knn_attacker(xtr, ytr, xte, yte), knn_attacker(xtr, ytr, xte, yte, whiten=True)
    assert white.name == "knn_whitened" and plain.name == "knn"
    assert white.cmap > 0.95 > plain.cmap + 0.2, (plain.cmap, white.cmap)
    assert train_attacker("mlp", xtr, ytr, xte, yte, epochs=30, whiten=True).name == "mlp_whitened"
