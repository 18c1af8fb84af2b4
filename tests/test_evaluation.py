"""anon_core.evaluation on constructed inputs with known answers (docs/methods.md §3)."""

from __future__ import annotations

import numpy as np
import pytest

from anon_core.evaluation import Evaluation, Split, evaluate_bias, evaluate_split, paired_leakage, paired_top1_drop

A, ACTIONS = 5, 4


def make_split(rng, n_videos: int, clips: int, *, start: int = 0, people: np.ndarray | None = None):
    """Videos of people (fixed attribute sets) doing one action each; `clips` clips per video."""
    if people is None:
        people = rng.integers(0, 2, (40, A))
    who = rng.integers(0, len(people), n_videos)
    act = rng.integers(0, ACTIONS, n_videos)
    rows = np.repeat(np.arange(n_videos), clips)
    return who[rows], act[rows], people[who[rows]], (start + rows).astype(str), people


def features(kind: str, rng, who, act, attrs, people):
    n = len(who)
    noise = rng.normal(0, 0.3, (n, 16))
    if kind == "exact":  # attributes, identity and action all readable
        ident = np.eye(len(people))[who] * 2
        return np.concatenate([attrs * 2, np.eye(ACTIONS)[act] * 2, ident, noise], axis=1)
    if kind == "action_only":  # anonymized: only the action survives
        return np.concatenate([np.eye(ACTIONS)[act] * 2, noise], axis=1)
    return rng.normal(0, 1, (n, 24))


def splits(kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    who, act, attrs, vid, people = make_split(rng, 240, 2)
    who2, act2, attrs2, vid2, _ = make_split(rng, 120, 2, start=1000, people=people)
    train = Split(features(kind, rng, who, act, attrs, people), act, attrs, who, vid)
    test = Split(features(kind, rng, who2, act2, attrs2, people), act2, attrs2, who2, vid2)
    return train, test


@pytest.fixture(scope="module")
def exact():
    return evaluate_split(*splits("exact"), num_actions=ACTIONS, epochs=30, n_boot=100)


@pytest.fixture(scope="module")
def anonymized():
    return evaluate_split(*splits("action_only"), num_actions=ACTIONS, epochs=30, n_boot=100)


def test_exact_features_leak_everything(exact):
    f = exact.figures
    assert f["privacy"]["worst"]["cmap"]["value"] > 0.97
    assert f["utility"]["video_top1"]["value"] > 0.95
    assert f["reid"]["rank1"]["value"] > 0.9 and f["reid"]["ratio_to_chance"] > 5
    for fig in (f["privacy"]["worst"]["cmap"], f["utility"]["video_top1"], f["reid"]["rank1"]):
        assert fig["low"] <= fig["value"] <= fig["high"]
    assert set(f["privacy"]["attackers"]) == {"linear", "mlp", "knn", "mlp_whitened", "knn_whitened"}
    assert len(f["privacy"]["per_attribute_ap"]) == A


def test_anonymized_features_sit_at_the_chance_floor(anonymized, exact):
    from anon_core.metrics import chance_cmap

    f = anonymized.figures
    chance = chance_cmap(anonymized.test.attributes)
    assert abs(f["privacy"]["worst"]["cmap"]["value"] - chance) < 0.08
    assert f["privacy"]["worst"]["cmap"]["low"] < chance + 0.05  # the CI reaches down to chance
    assert f["utility"]["video_top1"]["value"] > 0.95  # the action survives
    assert f["reid"]["ratio_to_chance"] < 3
    leak = paired_leakage(anonymized, exact, n_boot=100)
    assert abs(leak["value"]) < 0.15 and leak["low"] <= leak["value"] <= leak["high"]
    same = paired_leakage(exact, exact, n_boot=50)
    assert same["value"] == pytest.approx(1.0)


def test_paired_top1_drop_is_the_difference_of_video_top1_with_a_ci_over_shared_videos(anonymized, exact):
    """The drop's point is the reference's video top-1 minus the method's on the same test videos; its paired CI is
    narrow when both miss the same hard videos, where the two top-1 CIs side by side would each span ~18 points."""
    drop = paired_top1_drop(anonymized, exact, n_boot=200)
    value = exact.figures["utility"]["video_top1"]["value"] - anonymized.figures["utility"]["video_top1"]["value"]
    assert drop["value"] == pytest.approx(value) and drop["low"] <= drop["value"] <= drop["high"]
    assert paired_top1_drop(exact, exact, n_boot=50) == {"value": 0.0, "low": 0.0, "high": 0.0}
    videos = [f"v{i}" for i in range(100)]
    ref = Evaluation({}, video_correct={v: i >= 30 for i, v in enumerate(videos)})  # 70 right: 30 hard videos
    same_hard = Evaluation({}, video_correct={v: i >= 32 for i, v in enumerate(videos)})  # 68: two more missed
    d = paired_top1_drop(same_hard, ref, n_boot=500)
    assert d["value"] == pytest.approx(0.02) and 0.0 <= d["low"] and d["high"] <= 0.05
    worse = Evaluation({}, video_correct={v: i >= 40 for i, v in enumerate(videos[:50])})  # only 50 videos answered
    assert paired_top1_drop(worse, ref, n_boot=100)["value"] == pytest.approx(0.2)  # 20 of 50 right vs 10 of 50
    assert paired_top1_drop(Evaluation({}), ref) is None


def test_random_features_give_chance_everywhere():
    ev = evaluate_split(*splits("random", seed=1), num_actions=ACTIONS, epochs=20, n_boot=50)
    from anon_core.metrics import chance_cmap

    f = ev.figures
    # the worst of the pool is the largest of several noisy estimates: a little above chance at most
    assert abs(f["privacy"]["worst"]["cmap"]["value"] - chance_cmap(ev.test.attributes)) < 0.08
    assert f["utility"]["video_top1"]["value"] < 0.25 + 0.2


def test_shortcut_biased_probe_shows_a_gap_that_anonymization_closes():
    """Train where action 0 is mostly group 1 (95/5) and the action signal is weak, the group signal strong: the
    probe takes the shortcut, so group-0 videos of action 0 (and group-1 videos of other actions) go wrong."""
    rng = np.random.default_rng(3)

    def biased(n, frac):
        act = rng.integers(0, ACTIONS, n)
        group = np.where(act == 0, rng.random(n) < frac, rng.random(n) > frac).astype(int)
        return act, group

    def feats(act, group, with_group: bool):
        x = [np.eye(ACTIONS)[act] * 0.6 + rng.normal(0, 0.8, (len(act), ACTIONS))]
        if with_group:
            x.append(group[:, None] * 3.0 + rng.normal(0, 0.1, (len(act), 1)))
        return np.concatenate(x, axis=1)

    a_tr, g_tr = biased(1200, 0.95)
    a_te, g_te = biased(600, 0.5)  # a balanced test split shows the gap
    gaps = {}
    for name, with_group in (("raw", True), ("anonymized", False)):
        ids_tr, ids_te = np.arange(1200), np.arange(600)
        train = Split(feats(a_tr, g_tr, with_group), a_tr, np.zeros((1200, 1)), ids_tr, ids_tr.astype(str), g_tr)
        test = Split(feats(a_te, g_te, with_group), a_te, np.zeros((600, 1)), ids_te, ids_te.astype(str), g_te)
        gaps[name] = evaluate_bias(train, test, num_actions=ACTIONS, epochs=40, n_boot=100)
    assert gaps["raw"]["gap"]["value"] > 0.15
    assert gaps["anonymized"]["gap"]["value"] < gaps["raw"]["gap"]["value"] * 0.6
    assert set(gaps["raw"]["per_group"]) == {"0", "1"}


def test_bad_inputs_are_named():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="empty split"):
        Split(np.zeros((0, 3)), np.zeros(0), np.zeros((0, 2)), np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="action has 3 rows"):
        Split(np.zeros((4, 3)), np.zeros(3), np.zeros((4, 2)), np.zeros(4), np.zeros(4))
    train, test = splits("random")
    with pytest.raises(ValueError, match="needs Split.group"):
        evaluate_bias(train, test)
    pixels = Split(rng.integers(0, 255, (4, 2, 8, 8, 3), dtype=np.uint8), np.zeros(4), np.zeros((4, 2)),
                   np.zeros(4), np.zeros(4).astype(str))  # fmt: skip
    with pytest.raises(ValueError, match="evaluate_pixels"):
        evaluate_split(pixels, pixels)


def test_reid_leaves_out_videos_without_an_identity():
    """An archive without identities (label_schema.identity unset: every identity -1) has nothing to link; it must
    not read as every video being the same person."""
    from dataclasses import replace

    from anon_core.evaluation import reid

    train, test = splits("exact")
    unknown = lambda s: replace(s, identity=np.full_like(s.identity, -1))  # noqa: E731
    assert reid(unknown(train), unknown(test), n_boot=20, seed=0) is None
    assert reid(train, test, n_boot=20, seed=0) is not None


def test_reid_learns_where_people_differ():
    """Features dominated by the action, with each person's trace small beside it: cosine on the features finds the
    same action, not the same person; the discriminant fitted on the training split's (other) people finds the
    person, and the worse case for privacy is what reid reports. Noise stays near chance for both matchers."""
    from anon_core.evaluation import reid

    rng = np.random.default_rng(3)

    def split(first_person: int, n_people: int, start: int) -> Split:
        who = np.repeat(np.arange(first_person, first_person + n_people), 4)  # 4 videos per person
        act = rng.integers(0, ACTIONS, len(who))
        trace = np.stack([np.random.default_rng(int(w)).normal(0, 1, 8) for w in who])  # the person's own
        action = np.eye(ACTIONS)[act] * 10 + rng.normal(0, 0.5, (len(who), ACTIONS))  # large: the variance
        x = np.concatenate([action, trace + rng.normal(0, 0.3, (len(who), 8)), rng.normal(0, 1, (len(who), 64))], 1)
        return Split(x, act, np.zeros((len(who), A)), who, (start + np.arange(len(who))).astype(str))

    train, test = split(0, 80, 0), split(1000, 40, 10_000)  # disjoint people, as a split by identity
    r = reid(train, test, n_boot=50, seed=0)
    assert r["matcher"] == "lda" and r["matchers"]["lda"] > 0.7 > 0.3 > r["matchers"]["cosine"]
    assert r["rank1"]["value"] == r["matchers"]["lda"] and r["ratio_to_chance"] > 20
    assert r["n_queries"] == 480 and r["chance"] == pytest.approx(3 / 479)
    noise = lambda s: Split(rng.normal(0, 1, s.x.shape), s.action, s.attributes, s.identity, s.video)  # noqa: E731
    r = reid(noise(train), noise(test), n_boot=50, seed=0)
    assert set(r["matchers"]) == {"cosine", "lda"} and r["rank1"]["value"] < 0.1


def test_reid_never_embeds_a_query_with_a_fit_that_saw_it():
    """On noise of many dimensions a discriminant fitted on the query's own video memorises it: in-sample, this
    corpus reads 0.83 rank-1 from nothing. Cross-fitted (training videos by the fit without their fold), both
    matchers stay at chance."""
    from anon_core.evaluation import reid

    rng = np.random.default_rng(0)

    def split(first_person: int, n_people: int, start: int) -> Split:
        who = np.repeat(np.arange(first_person, first_person + n_people), 3)
        return Split(rng.normal(0, 1, (len(who), 256)), np.zeros(len(who), int), np.zeros((len(who), A)), who,
                     (start + np.arange(len(who))).astype(str))  # fmt: skip

    r = reid(split(0, 150, 0), split(1000, 30, 10_000), n_boot=20, seed=0)
    assert set(r["matchers"]) == {"cosine", "lda"} and max(r["matchers"].values()) < 0.03
