"""Privacy and utility metrics (docs/methods.md section 3), checked against scikit-learn and constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from anon_core.metrics import (
    average_precision,
    bias_gap,
    bootstrap_ci,
    chance_cmap,
    chance_rank1,
    cmap,
    cmap_report,
    macro_f1,
    normalized_leakage,
    rank1_reid,
    top1_accuracy,
    video_hits,
    video_top1_accuracy,
)


def _attacker_data(seed: int, n: int = 200, attrs: int = 6):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, attrs)) < rng.uniform(0.1, 0.6, attrs)).astype(int)
    # rounded scores: many ties, which is where AP definitions disagree
    probs = np.round(np.clip(0.3 * y + rng.random((n, attrs)) * 0.7, 0, 1), 1)
    return y, probs


@pytest.mark.parametrize("seed", range(5))
def test_cmap_equals_sklearn_with_ties(seed):
    y, probs = _attacker_data(seed)
    ours = [average_precision(y[:, a], probs[:, a]) for a in range(y.shape[1])]
    theirs = [average_precision_score(y[:, a], probs[:, a]) for a in range(y.shape[1])]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert cmap(y, probs) == pytest.approx(np.mean(theirs), rel=1e-12)
    assert cmap(y, probs) == pytest.approx(average_precision_score(y, probs, average="macro"), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_equals_sklearn(seed):
    y, probs = _attacker_data(seed)
    probs[:5, 0] = 0.5  # exactly on the threshold: predicted positive (prob >= 0.5)
    y[:, 1], probs[:, 1] = 0, 0.1  # no true and no predicted positive: scores zero_division
    expected = f1_score(y, (probs >= 0.5).astype(int), average="macro", zero_division=0)
    assert macro_f1(y, probs) == pytest.approx(expected, rel=1e-12)
    expected_1 = f1_score(y, (probs >= 0.5).astype(int), average="macro", zero_division=1)
    assert macro_f1(y, probs, zero_division=1.0) == pytest.approx(expected_1, rel=1e-12)


def test_constant_attribute_is_skipped_with_warning():
    y, probs = _attacker_data(0)
    y[:, 2], y[:, 4] = 0, 1
    with pytest.warns(UserWarning, match=r"\[2, 4\]"):
        report = cmap_report(y, probs)
    assert report.skipped == (2, 4)
    assert np.isnan(report.ap[[2, 4]]).all()
    keep = [0, 1, 3, 5]
    assert report.cmap == pytest.approx(np.mean([average_precision_score(y[:, a], probs[:, a]) for a in keep]))
    with pytest.warns(UserWarning):
        assert chance_cmap(y) == pytest.approx(chance_cmap(y[:, keep]))  # the constant attributes do not count
    with pytest.raises(ValueError, match="constant"):
        average_precision(y[:, 2], probs[:, 2])
    with pytest.raises(ValueError, match="every attribute is constant"):
        cmap(np.zeros((10, 3), int), np.random.default_rng(0).random((10, 3)))


@pytest.mark.parametrize(
    "call",
    [
        lambda y, p: cmap(y, np.where(p > 0.9, np.nan, p)),
        lambda y, p: macro_f1(y, np.where(p > 0.9, np.nan, p)),
        lambda y, p: top1_accuracy(np.where(p > 0.9, np.nan, p), y[:, 0]),
        lambda y, p: rank1_reid(np.where(p > 0.9, np.nan, p), y[:, 0]),
        lambda y, p: normalized_leakage(float("nan"), 0.8, 0.3),
        lambda y, p: bias_gap(y[:, 0], y[:, 1], np.where(p[:, 0] > 0.9, np.nan, 1.0)),
    ],
)
def test_nan_inputs_raise(call):
    y, probs = _attacker_data(0)
    with pytest.raises(ValueError, match="NaN|nan"):
        call(y, probs)


def test_chance_cmap_is_the_expected_ap_of_a_random_ranking():
    # exact: the mean AP over every ranking of a small set (4 rows, 2 positives: 6 orders of the labels)
    from itertools import permutations

    y = np.array([[1], [1], [0], [0]])
    orders = {p for p in permutations(range(4))}
    exact = np.mean([average_precision_score(y[:, 0], -np.array(np.argsort(p), float)) for p in orders])
    assert chance_cmap(y) == pytest.approx(exact, rel=1e-12)
    # and on a test set of the benchmark's size: above the prevalence, which a constant scorer gets
    y, _ = _attacker_data(1, n=200)
    rng = np.random.default_rng(0)
    random_cmaps = [cmap(y, rng.random(y.shape)) for _ in range(2000)]
    assert np.mean(random_cmaps) == pytest.approx(chance_cmap(y), abs=0.002)
    assert cmap(y, np.zeros(y.shape)) == pytest.approx(y.mean(0).mean(), rel=1e-12)  # ties: AP = prevalence
    assert chance_cmap(y) - y.mean(0).mean() > 0.008  # the prevalence would read an attacker at chance as leaking


def test_normalized_leakage_on_constructed_attackers():
    y, _ = _attacker_data(2)
    chance = chance_cmap(y)
    raw = cmap(y, y + 0.0)  # a perfect raw attacker
    assert raw == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    anonymized_at_chance = np.mean([cmap(y, rng.random(y.shape)) for _ in range(2000)])  # learned nothing
    assert normalized_leakage(anonymized_at_chance, raw, chance) == pytest.approx(0.0, abs=0.005)
    assert normalized_leakage(raw, raw, chance) == pytest.approx(1.0)
    half = chance + 0.5 * (raw - chance)
    assert normalized_leakage(half, raw, chance) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at chance"):
        normalized_leakage(0.4, chance, chance)


def test_top1_clip_and_video_level():
    probs = np.array([[0.55, 0.45], [0.45, 0.55], [0.45, 0.55], [0.9, 0.1], [0.2, 0.8]])
    labels = np.array([1, 1, 1, 0, 0])
    videos = np.array(["a", "a", "a", "b", "b"])
    assert top1_accuracy(probs, labels) == pytest.approx(3 / 5)
    # mean probabilities: video a (0.483, 0.517) -> 1 correct; video b (0.55, 0.45) -> 0 correct
    assert video_top1_accuracy(probs, labels, videos) == pytest.approx(1.0)
    probs[4] = [0.0, 1.0]  # video b now (0.45, 0.55) -> 1, wrong; clip level unchanged
    assert top1_accuracy(probs, labels) == pytest.approx(3 / 5)
    assert video_top1_accuracy(probs, labels, videos) == pytest.approx(0.5)
    ids, hits = video_hits(probs, labels, videos)  # the per-video votes that figure averages
    assert ids.tolist() == ["a", "b"] and hits.tolist() == [True, False]
    with pytest.raises(ValueError, match="softmax"):
        video_top1_accuracy(np.log(probs + 0.1), labels, videos)
    with pytest.raises(ValueError, match="different labels"):
        video_top1_accuracy(probs, np.array([1, 0, 1, 0, 0]), videos)


def test_bias_gap_per_group_and_empty_group():
    pred = np.array([1, 1, 1, 1, 0, 0, 1, 1])
    labels = np.array([1, 1, 1, 0, 0, 1, 0, 0])
    groups = np.array(["light", "light", "light", "light", "dark", "dark", "dark", "dark"])
    report = bias_gap(pred, labels, groups)
    assert report.per_group == {"light": 0.75, "dark": 0.25}
    assert report.gap == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'medium' has no samples"):
        bias_gap(pred, labels, groups, expected_groups=["light", "dark", "medium"])
    with pytest.raises(ValueError, match="at least two groups"):
        bias_gap(pred, labels, np.array(["light"] * 8))


def test_rank1_reid_perfect_clusters_and_own_video_excluded():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 32))
    identities = np.repeat(np.arange(10), 3)  # each identity in 3 videos
    emb = centres[identities] + 0.01 * rng.normal(size=(30, 32))
    report = rank1_reid(emb, identities)
    assert (report.rank1, report.n_queries, report.n_excluded) == (1.0, 30, 0)
    # a lone identity has nothing to match: excluded and counted
    report = rank1_reid(np.vstack([emb, rng.normal(size=(1, 32))]), np.r_[identities, 99])
    assert (report.rank1, report.n_queries, report.n_excluded) == (1.0, 30, 1)
    # clips of one video are identical, but other videos of the same person look unrelated: must not count
    video_ids = np.repeat(np.arange(30), 2)  # 2 clips per video, video v shows identities[v]
    clip_emb = rng.normal(size=(30, 32))[video_ids]
    report = rank1_reid(clip_emb, identities[video_ids], video_ids)
    assert report.n_queries == 60
    assert report.rank1 < 0.5


def test_rank1_reid_random_is_near_chance():
    rng = np.random.default_rng(1)
    identities = np.repeat(np.arange(20), 4)
    chance = chance_rank1(identities)
    assert chance == pytest.approx(3 / 79)
    # clips grouped in videos: v0 (A, 2 clips), v1 (A, 1 clip), v2 (B, 3 clips; excluded, B is in no other video)
    assert chance_rank1(list("AAABBB"), [0, 0, 1, 2, 2, 2]) == pytest.approx((1 / 4 + 1 / 4 + 2 / 5) / 3)
    scores = [rank1_reid(rng.normal(size=(80, 16)), identities).rank1 for _ in range(40)]
    assert np.mean(scores) == pytest.approx(chance, abs=0.02)


def test_bootstrap_ci_contains_point_and_narrows():
    rng = np.random.default_rng(0)

    def accuracy(pred, labels):
        return float(np.mean(pred == labels))

    widths = []
    for n in (100, 1600):
        labels = rng.integers(0, 2, n)
        pred = np.where(rng.random(n) < 0.8, labels, 1 - labels)
        ci = bootstrap_ci(accuracy, pred, labels, n_boot=500, seed=1)
        assert ci.low <= ci.point <= ci.high
        assert ci.n_boot == 500 and ci.n_failed == 0
        widths.append(ci.high - ci.low)
    assert widths[1] < widths[0] / 2  # 16x the data: about 4x narrower


def test_bootstrap_ci_resamples_whole_groups():
    # 20 videos of 50 identical clips: the clips are not independent, so row resampling is far too confident
    video_ids = np.repeat(np.arange(20), 50)
    correct = np.repeat(np.random.default_rng(0).integers(0, 2, 20), 50).astype(float)
    rows = bootstrap_ci(np.mean, correct, n_boot=400)
    videos = bootstrap_ci(np.mean, correct, n_boot=400, groups=video_ids)
    assert (videos.high - videos.low) > 3 * (rows.high - rows.low)
    # pass_groups: a video drawn twice counts twice at video level
    probs = np.stack([1 - correct, correct], axis=1)
    labels = np.ones(len(correct), dtype=int)
    ci = bootstrap_ci(
        lambda p, y, groups: video_top1_accuracy(p, y, groups), probs, labels, n_boot=200, groups=video_ids,
        pass_groups=True,
    )  # fmt: skip
    assert ci.low <= ci.point <= ci.high < 1.0
    assert ci.point == pytest.approx(correct.reshape(20, 50)[:, 0].mean())
    distinct = bootstrap_ci(lambda x, groups: len(np.unique(groups)), correct, groups=video_ids, pass_groups=True)
    assert distinct.low == distinct.high == 20  # every drawn copy got its own id


def test_bootstrap_ci_counts_failed_resamples():
    y = np.r_[np.ones(3), np.zeros(47)].astype(int)
    ci = bootstrap_ci(lambda t, s: average_precision(t, s), y, np.linspace(0, 1, 50), n_boot=200)
    assert ci.n_failed > 0 and ci.n_boot + ci.n_failed == 200

    def needs_distinct_rows(x):
        if len(np.unique(x)) < len(x):
            raise ValueError("duplicate rows")
        return 0.0

    with pytest.raises(ValueError, match="all 10 resamples"):
        bootstrap_ci(needs_distinct_rows, np.arange(20), n_boot=10)
    with pytest.raises(ValueError, match="constant"):  # the point estimate's own error is not swallowed
        bootstrap_ci(lambda t: average_precision(t, t), np.zeros(5, int), n_boot=10)
