"""Privacy and utility metrics for anonymized video (docs/methods.md section 3; arXiv 2511.08666, arXiv 2603.26336).

Pure NumPy. Utility is action top-1 (clip level, or video level by averaging clip probabilities). Privacy is what a
trained attacker recovers: cMAP (mean over attributes of average precision) and macro-F1 at threshold 0.5, put in
context with the chance floor, normalized leakage, bias gap between groups, rank-1 re-identification across videos
and bootstrap confidence intervals.

Defined behaviours at the edges:
- NaN or inf anywhere in an input raises ValueError.
- A constant attribute (all 0 or all 1 in y_true) has no ranking to judge, so its AP is undefined: cMAP and the
  chance floor skip it, with a warning naming the skipped attribute indices (`cmap_report` also returns them); if
  every attribute is constant, ValueError. `average_precision` on a constant column raises ValueError.
- macro-F1 keeps every attribute (it is sklearn's `f1_score(average="macro")` on the indicator matrix); an
  attribute with no true and no predicted positive scores `zero_division` (default 0, like sklearn).
- Normalized leakage raises ValueError when the raw attacker is within `min_gap` of chance (nothing to normalise
  by); it is not clipped, so below-chance attackers give negative values.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def _finite(name: str, x, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; drop or fix those rows before scoring")
    return a


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"inputs must have one row per sample, got lengths {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("inputs are empty: need at least one sample")
    return n


def _binary(name: str, y) -> np.ndarray:
    y = _finite(name, y)
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 labels")
    return y.astype(bool)


def _class_labels(labels, num_classes: int) -> np.ndarray:
    y = _finite("labels", labels, ndim=1)
    if y.dtype.kind not in "iub" or (y < 0).any() or (y >= num_classes).any():
        raise ValueError(f"labels must be integer class ids in [0, {num_classes})")
    return y.astype(np.int64)


# --- utility ---


def top1_accuracy(scores, labels) -> float:
    """Clip-level top-1: fraction of rows of (n, K) scores whose argmax equals the label."""
    s = _finite("scores", scores, ndim=2)
    y = _class_labels(labels, s.shape[1])
    _same_length(scores=s, labels=y)
    return float(np.mean(s.argmax(axis=1) == y))


def video_top1_accuracy(probs, labels, video_ids) -> float:
    """Video-level top-1: average the (n, K) clip probabilities of each video, then argmax; one vote per video.

    Probabilities, not logits (apply softmax first): averaging logits is a different rule. All clips of a video
    must carry the same label.
    """
    return float(np.mean(video_hits(probs, labels, video_ids)[1]))


def video_hits(probs, labels, video_ids) -> tuple[np.ndarray, np.ndarray]:
    """(V,) video ids (sorted) and (V,) bool: whether each video's vote (as in video_top1_accuracy) is its label."""
    p = _finite("probs", probs, ndim=2)
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probs rows must be probabilities summing to 1; apply softmax to logits first")
    y = _class_labels(labels, p.shape[1])
    vids = _finite("video_ids", video_ids, ndim=1)
    _same_length(probs=p, labels=y, video_ids=vids)
    _, inv = np.unique(vids, return_inverse=True)
    inv = inv.reshape(-1)
    n_videos = inv.max() + 1
    video_label = np.full(n_videos, -1)
    video_label[inv] = y
    if (video_label[inv] != y).any():
        raise ValueError("clips of one video carry different labels; video-level accuracy needs one label per video")
    sums = np.zeros((n_videos, p.shape[1]))
    np.add.at(sums, inv, p)
    # dividing by the clip count would not change the argmax, so the sums decide directly
    return np.unique(vids), sums.argmax(axis=1) == video_label


# --- privacy: attribute attackers ---


def average_precision(y_true, scores) -> float:
    """AP of one binary attribute: sum over distinct score thresholds of (R_k - R_{k-1}) * P_k.

    Tied scores form one threshold (they enter together), as in sklearn's `average_precision_score`. Raises
    ValueError when y_true is constant: AP is then undefined.
    """
    y = _binary("y_true", _finite("y_true", y_true, ndim=1))
    s = _finite("scores", scores, ndim=1).astype(np.float64)
    n = _same_length(y_true=y, scores=s)
    if y.all() or not y.any():
        raise ValueError("y_true is constant (all 0 or all 1): average precision is undefined for it")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), n - 1]  # one threshold per distinct score
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _informative(y: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Attributes with both classes present; the indices of the constant ones, with a warning."""
    keep = y.any(axis=0) & ~y.all(axis=0)
    skipped = tuple(int(i) for i in np.flatnonzero(~keep))
    if not keep.any():
        raise ValueError("every attribute is constant in y_true (all 0 or all 1): cMAP is undefined on this split")
    if skipped:
        warnings.warn(f"skipping constant attributes {list(skipped)}: their AP is undefined", stacklevel=3)
    return keep, skipped


@dataclass(frozen=True)
class CMapReport:
    cmap: float
    ap: np.ndarray  # (A,) per-attribute AP, NaN where skipped
    skipped: tuple[int, ...]  # constant attributes left out of the mean


def cmap_report(y_true, scores) -> CMapReport:
    """cMAP of (n, A) multi-label scores (logits or probabilities: AP only uses their order), with per-attribute AP."""
    y = _binary("y_true", _finite("y_true", y_true, ndim=2))
    s = _finite("scores", scores, ndim=2)
    if y.shape != s.shape:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must have the same shape")
    _same_length(y_true=y, scores=s)
    keep, skipped = _informative(y)
    ap = np.full(y.shape[1], np.nan)
    for a in np.flatnonzero(keep):
        ap[a] = average_precision(y[:, a], s[:, a])
    return CMapReport(cmap=float(np.nanmean(ap)), ap=ap, skipped=skipped)


def cmap(y_true, scores) -> float:
    """Mean over (non-constant) attributes of average precision."""
    return cmap_report(y_true, scores).cmap


def chance_cmap(y_true) -> float:
    """cMAP of an attacker that learned nothing: the expected AP of a uniformly random ranking, averaged over the
    attributes `cmap` keeps.

    For n rows with P positives, a positive at rank r has expected precision (1 + (r - 1)(P - 1)/(n - 1)) / r, and
    its rank is uniform, so E[AP] = (H_n + (P - 1)/(n - 1) * (n - H_n)) / n, H_n the n-th harmonic number. It tends to
    the prevalence P/n as n grows but lies above it on a finite test set (about +1.3 points at n = 200, P = 100):
    taking the prevalence as chance would read an attacker at chance as leaking. (The prevalence itself is the AP of
    a constant scorer only, whose ties are all broken against it.)
    """
    y = _binary("y_true", _finite("y_true", y_true, ndim=2))
    keep, _ = _informative(y)
    n = y.shape[0]
    h_n = float(np.sum(1.0 / np.arange(1, n + 1)))
    positives = y[:, keep].sum(axis=0).astype(np.float64)
    expected = (h_n + (positives - 1) / (n - 1) * (n - h_n)) / n  # n >= 2: a kept attribute has both classes
    return float(expected.mean())


def macro_f1(y_true, probs, threshold: float = 0.5, zero_division: float = 0.0) -> float:
    """Mean over attributes of binary F1 = 2TP / (2TP + FP + FN), predicting positive where prob >= threshold.

    Equals sklearn `f1_score(y_true, probs >= threshold, average="macro", zero_division=zero_division)` on the
    (n, A) indicator matrix. Every attribute counts, constant ones included.
    """
    y = _binary("y_true", _finite("y_true", y_true, ndim=2))
    p = _finite("probs", probs, ndim=2)
    if y.shape != p.shape:
        raise ValueError(f"y_true {y.shape} and probs {p.shape} must have the same shape")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("probs must lie in [0, 1]; apply a sigmoid to the attacker's logits first")
    _same_length(y_true=y, probs=p)
    pred = p >= threshold
    tp = (pred & y).sum(axis=0)
    fp = (pred & ~y).sum(axis=0)
    fn = (~pred & y).sum(axis=0)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), zero_division)
    return float(f1.mean())


def normalized_leakage(cmap_anon: float, cmap_raw: float, chance: float, *, min_gap: float = 1e-6) -> float:
    """(cMAP - chance) / (cMAP_raw - chance): 1 = leaks as much as raw video, 0 = at chance. Not clipped."""
    for name, v in (("cmap_anon", cmap_anon), ("cmap_raw", cmap_raw), ("chance", chance)):
        if not np.isfinite(v):
            raise ValueError(f"{name} is {v}; normalized leakage needs finite inputs")
    gap = cmap_raw - chance
    if abs(gap) < min_gap:
        raise ValueError(
            f"the raw attacker is at chance (cMAP_raw - chance = {gap:.3g}): normalized leakage is undefined; "
            "report absolute cMAP, or use a stronger raw attacker"
        )
    return float((cmap_anon - chance) / gap)


# --- fairness ---


@dataclass(frozen=True)
class BiasReport:
    per_group: dict  # group -> accuracy
    counts: dict  # group -> number of samples
    gap: float  # max - min accuracy over groups; |a - b| for two groups


def bias_gap(predictions, labels, groups, *, expected_groups: Sequence | None = None) -> BiasReport:
    """Per-group accuracy and the gap between the best and worst group.

    `predictions` are class ids (n,) or scores (n, K) (argmax taken). `expected_groups` lists the groups that must
    all be present: an empty one raises ValueError rather than silently shrinking the gap.
    """
    pred = _finite("predictions", predictions)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    y = _finite("labels", labels, ndim=1)
    g = _finite("groups", groups, ndim=1)
    _same_length(predictions=pred, labels=y, groups=g)
    names = list(expected_groups) if expected_groups is not None else np.unique(g).tolist()
    per_group, counts = {}, {}
    for name in names:
        rows = g == name
        if not rows.any():
            raise ValueError(f"group {name!r} has no samples; the bias gap needs every group represented")
        per_group[name] = float(np.mean(pred[rows] == y[rows]))
        counts[name] = int(rows.sum())
    if len(per_group) < 2:
        raise ValueError(f"the bias gap needs at least two groups, got {names}")
    accs = list(per_group.values())
    return BiasReport(per_group=per_group, counts=counts, gap=float(max(accs) - min(accs)))


# --- identity linkability ---


@dataclass(frozen=True)
class ReidReport:
    rank1: float
    n_queries: int  # queries whose identity appears in another video
    n_excluded: int  # queries whose identity has no other video: nothing to re-identify


def _reid_setup(identities, video_ids, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense identity and video codes, and per row: how many rows of its identity lie in OTHER videos."""
    ids = _finite("identities", identities, ndim=1)
    vids = np.arange(n) if video_ids is None else _finite("video_ids", video_ids, ndim=1)
    _same_length(embeddings=np.empty(n), identities=ids, video_ids=vids)
    ids = np.unique(ids, return_inverse=True)[1].reshape(-1)
    vids = np.unique(vids, return_inverse=True)[1].reshape(-1)
    # counts per (identity, video) pair, kept sparse: a dense identities x videos table can be huge
    _, pair, pair_count = np.unique(ids * (vids.max() + 1) + vids, return_inverse=True, return_counts=True)
    same_identity_other_video = np.bincount(ids)[ids] - pair_count[pair.reshape(-1)]
    return ids, vids, same_identity_other_video


def nearest_other(queries, gallery, query_video, gallery_video, *, chunk: int = 1024) -> np.ndarray:
    """For each query row, the index of the most cosine-similar gallery row of ANOTHER video (query_video[i] and
    gallery_video[j] name each row's video). Ties go to the lowest index; an all-zero row has similarity 0 to all."""
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
    q, g = unit(np.asarray(queries, np.float64)), unit(np.asarray(gallery, np.float64))
    query_video, gallery_video = np.asarray(query_video), np.asarray(gallery_video)
    best = np.empty(len(q), np.int64)
    for start in range(0, len(q), chunk):
        sim = q[start : start + chunk] @ g.T  # (chunk, n)
        sim[query_video[start : start + chunk, None] == gallery_video[None, :]] = -np.inf  # not the query's video
        best[start : start + chunk] = sim.argmax(axis=1)
    return best


def rank1_reid(embeddings, identities, video_ids=None, *, chunk: int = 1024) -> ReidReport:
    """Rank-1 re-identification: each embedding queries the embeddings of all OTHER videos (cosine similarity).

    Correct when the most similar gallery item has the query's identity. `video_ids=None` makes every row its own
    video. Ties go to the lowest row index; an all-zero embedding has similarity 0 to everything.
    """
    z = _finite("embeddings", embeddings, ndim=2).astype(np.float64)
    ids, vids, same_other = _reid_setup(identities, video_ids, len(z))
    queries = np.flatnonzero(same_other > 0)  # a query counts only if its identity appears in another video
    if len(queries) == 0:
        raise ValueError("no identity appears in more than one video: rank-1 re-identification is undefined")
    hits = int(np.sum(ids[nearest_other(z[queries], z, vids[queries], vids, chunk=chunk)] == ids[queries]))
    return ReidReport(rank1=hits / len(queries), n_queries=len(queries), n_excluded=len(z) - len(queries))


def chance_rank1(identities, video_ids=None) -> float:
    """Expected rank-1 of a random matcher over the same queries as `rank1_reid`.

    For a query, the chance that a uniformly drawn gallery item (any other video) shares its identity.
    """
    _, vids, same_other = _reid_setup(identities, video_ids, len(np.asarray(identities)))
    gallery = len(vids) - np.bincount(vids)[vids]
    eligible = same_other > 0
    if not eligible.any():
        raise ValueError("no identity appears in more than one video: rank-1 re-identification is undefined")
    return float(np.mean(same_other[eligible] / gallery[eligible]))


# --- uncertainty ---


@dataclass(frozen=True)
class BootstrapCI:
    point: float  # the metric on the full data
    low: float
    high: float
    n_boot: int  # resamples that gave a value
    n_failed: int  # resamples the metric rejected (ValueError, e.g. a class missing from the draw)


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups=None,
    pass_groups: bool = False,
) -> BootstrapCI:
    """Percentile bootstrap CI of `metric_fn(*arrays)`; all arrays are resampled by the same rows.

    With `groups` (one id per row, e.g. video ids) whole groups are drawn with replacement, so clips of one video
    stay together. A group drawn twice appears twice under its old id; with `pass_groups=True` the metric gets a
    `groups=` keyword with a fresh id per drawn copy (the original ids for the point estimate), for metrics that
    aggregate per video. Resamples where the metric raises ValueError are dropped and counted in `n_failed`;
    warnings inside resamples are silenced (the point estimate's are not).
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array to resample")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1, got n_boot={n_boot} alpha={alpha}")
    if pass_groups and groups is None:
        raise ValueError("pass_groups=True needs groups=")
    arrs = [_finite(f"array {i}", a) for i, a in enumerate(arrays)]
    n = _same_length(**{f"array {i}": a for i, a in enumerate(arrs)})
    if groups is not None:
        g = _finite("groups", groups, ndim=1)
        _same_length(array=arrs[0], groups=g)
        _, inv = np.unique(g, return_inverse=True)
        inv = inv.reshape(-1)
        by_group = np.argsort(inv, kind="stable")
        sizes = np.bincount(inv)
        members = np.split(by_group, np.cumsum(sizes)[:-1])
    point = float(metric_fn(*arrs, groups=g) if pass_groups else metric_fn(*arrs))
    rng = np.random.default_rng(seed)
    values, failed = [], 0
    for _ in range(n_boot):
        extra = {}
        if groups is None:
            idx = rng.integers(0, n, n)
        else:
            drawn = rng.integers(0, len(members), len(members))
            idx = np.concatenate([members[k] for k in drawn])
            if pass_groups:
                extra["groups"] = np.repeat(np.arange(len(drawn)), sizes[drawn])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values.append(float(metric_fn(*(a[idx] for a in arrs), **extra)))
        except ValueError:
            failed += 1
    if not values:
        raise ValueError(f"the metric raised ValueError on all {n_boot} resamples; check it on the full data")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(point=point, low=float(low), high=float(high), n_boot=len(values), n_failed=failed)
