"""The privacy/utility evaluation of one anonymized output (docs/methods.md, section 3), on arrays.

Every attacker is trained on the anonymized train split and tested on the anonymized test split; the strongest
attacker of the pool counts (worst case). Every figure carries a 95% bootstrap CI over *test videos* (clips of a
video are resampled together), as `{"value", "low", "high"}`:

    test = Split(x, action, attributes, identity, video)          # clip rows of the test split, same for train
    result = evaluate_split(train, test)                             # utility, attacker pool, re-id
    pixels = evaluate_pixels(train_clips, test_clips)                # a fresh video model on anonymized pixels
    leak = paired_leakage(result, reference)                        # (cMAP - chance) / (cMAP_ref - chance)
    bias = evaluate_bias(train, test)                               # on a --bias-protocol corpus
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .attackers import AttackResult, action_probe, attack_pool
from .metrics import (
    BootstrapCI,
    bias_gap,
    bootstrap_ci,
    chance_cmap,
    chance_rank1,
    cmap,
    cmap_report,
    macro_f1,
    nearest_other,
    normalized_leakage,
    top1_accuracy,
    video_hits,
    video_top1_accuracy,
)


@dataclass
class Split:
    """Clip rows of one split: x (N, D) features or (N, T, H, W, 3) uint8 clips, and per-row labels."""

    x: np.ndarray
    action: np.ndarray  # (N,) int
    attributes: np.ndarray  # (N, A) {0, 1}
    identity: np.ndarray  # (N,) int
    video: np.ndarray  # (N,) video ids: clips of one video share it
    group: np.ndarray | None = None  # (N,) the bias protocol's group (e.g. gender_proxy), when measured

    def __post_init__(self) -> None:
        n = len(self.x)
        for name in ("action", "attributes", "identity", "video"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Split.{name} has {len(getattr(self, name))} rows but x has {n}")
        if n == 0:
            raise ValueError("an empty split: no clips to train or test on (did every video fail upstream?)")


@dataclass
class Evaluation:
    """The figures (JSON-ready) plus what later pairings need: the worst attacker's test scores."""

    figures: dict
    worst_scores: np.ndarray | None = None  # (N_test, A)
    test: Split | None = None
    attacks: dict[str, AttackResult] = field(default_factory=dict)
    video_correct: dict | None = None  # {test video: the action probe's video-level answer was right}


def figure(ci: BootstrapCI | None) -> dict | None:
    return None if ci is None else {"value": ci.point, "low": ci.low, "high": ci.high}


def _ci(fn, *arrays, groups, n_boot: int, seed: int, pass_groups: bool = False) -> dict:
    return figure(bootstrap_ci(fn, *arrays, groups=groups, n_boot=n_boot, seed=seed, pass_groups=pass_groups))


def _video_top1(probs, labels, groups):
    return video_top1_accuracy(probs, labels, groups)


def _utility(probe, test: Split, n_boot: int, seed: int) -> dict:
    """Clip and video top-1 of an action probe's test predictions, with CIs over test videos."""
    return {
        "top1": _ci(top1_accuracy, probe.probs, test.action, groups=test.video, n_boot=n_boot, seed=seed),
        "video_top1": _ci(_video_top1, probe.probs, test.action, groups=test.video, n_boot=n_boot, seed=seed,
                          pass_groups=True),  # fmt: skip
    }


def _attacker_figures(res: AttackResult, test: Split, n_boot: int, seed: int) -> dict:
    return {
        "cmap": _ci(cmap, test.attributes, res.scores, groups=test.video, n_boot=n_boot, seed=seed),
        "macro_f1": _ci(macro_f1, test.attributes, res.scores, groups=test.video, n_boot=n_boot, seed=seed),
        "best": res.best,
    }


def _privacy(pool: dict[str, AttackResult], test: Split, attributes, n_boot: int, seed: int) -> tuple[dict, str]:
    attackers = {k: _attacker_figures(r, test, n_boot, seed) for k, r in pool.items()}
    worst = max(pool, key=lambda k: pool[k].cmap)
    per_attr = cmap_report(test.attributes, pool[worst].scores)
    names = list(attributes) if attributes is not None else [str(i) for i in range(test.attributes.shape[1])]
    ap = {names[i]: float(v) for i, v in enumerate(per_attr.ap) if np.isfinite(v)}
    return {
        "attackers": attackers,
        "worst": {"attacker": worst, "cmap": attackers[worst]["cmap"], "macro_f1": attackers[worst]["macro_f1"]},
        "per_attribute_ap": ap,
    }, worst


def holdout_groups(split: Split) -> np.ndarray:
    """What the attackers' and probes' validation hold-out keeps together: the person where every training row names
    one (the test split holds out whole people, so the choice is made on people the attacker has not seen), else
    the video (clips of one video are never split between fitting and choosing)."""
    if split.identity is not None and len(split.identity) and (np.asarray(split.identity) >= 0).all():
        return np.char.add("person:", np.asarray(split.identity).astype(str))
    return np.char.add("video:", np.asarray(split.video).astype(str))


def video_means(x: np.ndarray, video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) clip rows -> (V, D) per-video means and the row index of each video's first clip."""
    _, first, inv = np.unique(video, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    sums = np.zeros((len(first), x.shape[1]))
    np.add.at(sums, inv, x)
    return sums / np.bincount(inv)[:, None], first


def _video_rows(s: Split, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, D) standardized per-video means of a split and each video's identity, videos without one (-1) left out."""
    z, first = video_means((s.x.astype(np.float64) - mean) / std, s.video)
    ids = np.asarray(s.identity)[first]
    return z[ids >= 0], ids[ids >= 0]


def identity_discriminant(z: np.ndarray, ids: np.ndarray):
    """A linear metric learned on labelled people: LDA of (V, D) video rows by person (Ledoit-Wolf shrinkage, so no
    constant is chosen), fitted on the people seen in two or more videos. Returns its transform, or None when fewer
    than two such people exist (nothing to learn within-person variation from)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    people, counts = np.unique(ids, return_counts=True)
    if (counts > 1).sum() < 2:
        return None
    seen_twice = np.isin(ids, people[counts > 1])
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    return lda.fit(z[seen_twice], ids[seen_twice]).transform


def reid(train: Split, test: Split, *, n_boot: int, seed: int, folds: int = 5) -> dict | None:
    """Rank-1 re-identification of a person across videos: every video queries all other videos of both splits, by
    cosine on video means. Two matchers, the worse for privacy counts: the features standardized on the training
    split (`cosine`), and the same after a discriminant fitted on the training split's people (`lda`: an attacker
    with labelled people of its own, as the attribute attackers have labelled attributes). A test video is embedded
    by the discriminant of the whole training split, a training video by the one fitted without its fold of `folds`
    (so no query is embedded by a fit that saw it). The cosine matcher mostly finds videos of the same action; the
    learned one looks where people differ. Both share the queries and so the chance. CI: queries resampled, gallery
    fixed."""
    mean, std = train.x.mean(0), train.x.std(0) + 1e-6
    z_train, ids_train = _video_rows(train, mean, std)
    z_test, ids_test = _video_rows(test, mean, std)
    z, ids = np.concatenate([z_train, z_test]), np.concatenate([ids_train, ids_test])
    try:
        chance = chance_rank1(ids)
    except ValueError:
        return None  # no person appears in two videos: nothing to link
    _, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
    queries = np.flatnonzero(counts[inv.reshape(-1)] > 1)  # only people seen in another video count
    video = np.arange(len(z))  # one row per video
    matchers = {"cosine": (ids[nearest_other(z[queries], z, queries, video)] == ids[queries]).astype(np.float64)}
    # fold of each video: 0..folds-1 for training videos (a seeded shuffle), -1 for test videos
    fold = np.concatenate([np.random.default_rng(seed).permutation(len(z_train)) % folds, np.full(len(z_test), -1)])
    hits = np.zeros(len(z))
    for f in range(-1, folds):
        rows = np.intersect1d(queries, np.flatnonzero(fold == f))
        if not len(rows):
            continue
        fit = fold[: len(z_train)] != f
        transform = identity_discriminant(z_train[fit], ids_train[fit])
        if transform is None:
            break  # too few labelled people to learn from: the cosine matcher alone
        hits[rows] = ids[nearest_other(transform(z[rows]), transform(z), rows, video)] == ids[rows]
    else:
        matchers["lda"] = hits[queries]
    worst = max(matchers, key=lambda k: matchers[k].mean())
    fig = figure(bootstrap_ci(np.mean, matchers[worst], n_boot=n_boot, seed=seed))
    return {"rank1": fig, "chance": chance, "ratio_to_chance": fig["value"] / chance, "matcher": worst,
            "matchers": {k: float(h.mean()) for k, h in matchers.items()}, "n_queries": int(len(queries))}  # fmt: skip


def evaluate_split(
    train: Split, test: Split, *, attributes=None, num_actions: int | None = None, seed: int = 0, epochs: int = 60,
    n_boot: int = 500, seeds: int = 1,
) -> Evaluation:  # fmt: skip
    """Utility (linear action probe, video top-1), the feature attacker pool (linear, MLP, k-NN) and re-id. seeds:
    seeded fits averaged into each attacker and the probe (`anon_core.attackers`)."""
    for s in (train, test):
        if s.x.ndim != 2:
            raise ValueError(f"evaluate_split needs (N, D) features, got {s.x.shape}; pixels go to evaluate_pixels")
    groups = holdout_groups(train)
    probe = action_probe(train.x, train.action, test.x, test.action, test.video, num_classes=num_actions,
                         seed=seed, epochs=epochs, groups=groups, seeds=seeds)  # fmt: skip
    utility = _utility(probe, test, n_boot, seed)
    pool = attack_pool(train.x, train.attributes, test.x, test.attributes, seed=seed, epochs=epochs, groups=groups,
                       seeds=seeds)  # fmt: skip
    privacy, worst = _privacy(pool, test, attributes, n_boot, seed)
    figures = {
        "n_train": int(len(train.x)), "n_test": int(len(test.x)), "dim": int(train.x.shape[1]),
        "n_test_videos": int(len(np.unique(test.video))),
        "utility": utility, "privacy": privacy, "reid": reid(train, test, n_boot=n_boot, seed=seed),
    }  # fmt: skip
    correct = dict(zip(*video_hits(probe.probs, test.action, test.video), strict=True))
    return Evaluation(figures, pool[worst].scores, test, pool, correct)


def task_probe(train: Split, test: Split, y_train: np.ndarray, y_test: np.ndarray, *, seed: int = 0, epochs: int = 60,
               n_boot: int = 500, seeds: int = 1) -> dict:  # fmt: skip
    """Utility on another task: a linear probe for labels y (one int class per row) on the same features, video-level
    top-1 with its CI, and the majority-class chance over test videos. Used for tasks no model was trained for."""
    classes = int(max(y_train.max(), y_test.max()) + 1)
    probe = action_probe(train.x, y_train, test.x, y_test, test.video, num_classes=classes, seed=seed, epochs=epochs,
                         groups=holdout_groups(train), seeds=seeds)  # fmt: skip
    _, first = np.unique(test.video, return_index=True)
    chance = float(np.bincount(y_test[first]).max() / len(first))
    return {"video_top1": _ci(_video_top1, probe.probs, y_test, groups=test.video, n_boot=n_boot, seed=seed,
                              pass_groups=True), "chance": chance}  # fmt: skip


def evaluate_pixels(
    train: Split, test: Split, *, attributes=None, num_actions: int | None = None, seed: int = 0, epochs: int = 15,
    n_boot: int = 500, size: int = 56, frames: int = 8,
) -> Evaluation:  # fmt: skip
    """A freshly trained small video model on anonymized pixels: the attribute attacker and the action model."""
    from .pixel_attacker import pixel_action_probe, train_pixel_attacker

    kw = {"epochs": epochs, "seed": seed, "size": size, "frames": frames}
    attack = train_pixel_attacker(train.x, train.attributes, test.x, test.attributes, **kw)
    probe = pixel_action_probe(train.x, train.action, test.x, test.action, test.video, num_classes=num_actions, **kw)
    pool = {"video_model": attack}
    privacy, worst = _privacy(pool, test, attributes, n_boot, seed)
    utility = _utility(probe, test, n_boot, seed)
    figures = {"n_train": int(len(train.x)), "n_test": int(len(test.x)), "utility": utility, "privacy": privacy}
    return Evaluation(figures, attack.scores, test, pool)


def merge_pixels(features: Evaluation, pixels: Evaluation) -> Evaluation:
    """One method seen both ways (features of the masked video, and the masked pixels): the pool is the union, the
    worst case is over all of it; the feature probe stays the utility figure, the pixel model's is kept beside it."""
    fig = features.figures
    attackers = {**fig["privacy"]["attackers"], **pixels.figures["privacy"]["attackers"]}
    pool = {**features.attacks, **pixels.attacks}
    worst = max(attackers, key=lambda k: attackers[k]["cmap"]["value"])
    src = pixels if worst in pixels.attacks else features
    privacy = {
        "attackers": attackers,
        "worst": {"attacker": worst, "cmap": attackers[worst]["cmap"], "macro_f1": attackers[worst]["macro_f1"]},
        "per_attribute_ap": src.figures["privacy"]["per_attribute_ap"],
    }
    utility = {**fig["utility"], "pixel_video_top1": pixels.figures["utility"]["video_top1"]}
    return Evaluation({**fig, "utility": utility, "privacy": privacy}, src.worst_scores, src.test, pool,
                      features.video_correct)  # fmt: skip


def _rows_by_video(video: np.ndarray) -> dict:
    order = np.argsort(video, kind="stable")
    keys, starts = np.unique(video[order], return_index=True)
    return dict(zip(keys.tolist(), np.split(order, starts[1:]), strict=True))


def paired_leakage(method: Evaluation, reference: Evaluation, *, n_boot: int = 500, seed: int = 0) -> dict | None:
    """Normalized leakage of the worst attacker against the reference's worst attacker, with a paired bootstrap:
    each resample draws test videos (present in both) and recomputes both cMAPs and the chance floor."""
    a, b = _rows_by_video(method.test.video), _rows_by_video(reference.test.video)
    common = sorted(set(a) & set(b))
    if not common:
        return None

    def leak(videos) -> float:
        ia = np.concatenate([a[v] for v in videos])
        ib = np.concatenate([b[v] for v in videos])
        ref_y = reference.test.attributes[ib]
        return normalized_leakage(cmap(method.test.attributes[ia], method.worst_scores[ia]),
                                  cmap(ref_y, reference.worst_scores[ib]), chance_cmap(ref_y))  # fmt: skip

    try:
        point = leak(common)
    except ValueError:
        return None
    rng, values = np.random.default_rng(seed), []
    with warnings.catch_warnings():  # a resample may lack an attribute's positives: its warning is noise here
        warnings.simplefilter("ignore")
        for _ in range(n_boot):
            try:
                values.append(leak([common[i] for i in rng.integers(0, len(common), len(common))]))
            except ValueError:
                continue
    low, high = np.quantile(values, [0.025, 0.975]) if values else (np.nan, np.nan)
    return {"value": point, "low": float(low), "high": float(high)}


def paired_top1_drop(method: Evaluation, reference: Evaluation, *, n_boot: int = 500, seed: int = 0) -> dict | None:
    """The reference's video top-1 minus the method's, over the test videos both answered, with a paired bootstrap
    (each resample draws videos and scores both on them): the drop's own CI, narrower than the two top-1 CIs side by
    side suggest, since the videos both miss weigh on both alike. None when either lacks per-video answers."""
    a, b = method.video_correct, reference.video_correct
    common = sorted(set(a or {}) & set(b or {}))
    if not common:
        return None
    diff = np.array([float(b[v]) - float(a[v]) for v in common])  # (V,) 1: only the reference was right
    return _ci(np.mean, diff, groups=None, n_boot=n_boot, seed=seed)  # one row per video: videos are resampled


def evaluate_bias(
    train: Split, test: Split, *, num_actions: int | None = None, seed: int = 0, epochs: int = 60, n_boot: int = 500,
    seeds: int = 1,
) -> dict:
    """The bias protocol (arXiv 2511.08666): an action probe trained on a biased train split; per-group accuracy of
    its video-level predictions on the test split, and the gap between groups."""
    if train.group is None or test.group is None:
        raise ValueError("evaluate_bias needs Split.group (e.g. gender_proxy) on both splits")
    probe = action_probe(train.x, train.action, test.x, test.action, test.video, num_classes=num_actions,
                         seed=seed, epochs=epochs, groups=holdout_groups(train), seeds=seeds)  # fmt: skip
    # video level: average each video's clip probabilities, one prediction per video
    probs, first = video_means(probe.probs, test.video)
    labels, groups = test.action[first], test.group[first]
    expected = sorted(np.unique(np.concatenate([train.group, test.group])).tolist())
    try:
        rep = bias_gap(probs, labels, groups, expected_groups=expected)
    except ValueError as e:  # e.g. a small corpus whose test split lacks a group: not measurable, say why
        return {"gap": None, "per_group": {}, "counts": {}, "note": str(e)}
    ci = bootstrap_ci(lambda p, y, g: bias_gap(p, y, g, expected_groups=expected).gap, probs, labels, groups,
                      n_boot=n_boot, seed=seed)  # fmt: skip
    return {"gap": figure(ci), "per_group": {str(k): v for k, v in rep.per_group.items()},
            "counts": {str(k): v for k, v in rep.counts.items()}}  # fmt: skip
