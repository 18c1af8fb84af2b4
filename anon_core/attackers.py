"""Attackers and probes on clip features, for the privacy/utility evaluation (docs/methods.md, section 3).

Every attacker is trained on the anonymized *train* split and scored on the anonymized *test* split, so it adapts to
the anonymization: the worst case. The test split only scores: what an attacker chooses (its number of epochs, k-NN
its k) is chosen on a validation fifth of the training split, held out by group (`groups`: a person where the labels
name one, as the test split holds out whole people; else a video), and the attacker is then refitted on the whole
training split with that choice. Choosing on the test split instead takes the luckiest of 60 noisy epochs: on
features that carry nothing it reads up to 0.54 cMAP where chance is 0.50 (docs/methods.md, section 3). The pool's
worst case is the highest test cMAP.

Each attacker and probe can be `seeds` fits, each seeded apart (its own hold-out, initialisation and batch order),
whose test probabilities are averaged: one attacker (an ensemble) as strong as its fits and much less noisy. One fit's
cMAP moves by several points with its seed alone, which the bootstrap CI over test videos does not show.

    pool = attack_pool(x_train, attrs_train, x_test, attrs_test, groups=person_train, seeds=5)  # {"linear": ...}
    worst = worst_case(pool)
    util = action_probe(x_train, action_train, x_test, action_test, video_ids_test, groups=person_train)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .metrics import cmap, macro_f1, top1_accuracy, video_top1_accuracy


@dataclass
class AttackResult:
    name: str
    cmap: float  # in [0, 1]
    macro_f1: float
    scores: np.ndarray  # (N_test, A) attribute probabilities of the chosen epoch / k
    best: str  # which epoch or k the validation part chose
    history: list[float] = field(default_factory=list)  # validation cMAP per epoch (or per k), mean over the fits


@dataclass
class ProbeResult:
    top1: float  # clip level
    video_top1: float | None  # clips of a video averaged (when video ids are given)
    probs: np.ndarray  # (N_test, classes) of the chosen epoch
    best: str
    history: list[float] = field(default_factory=list)  # validation top-1 (clip level) per epoch, mean over the fits


def _standardize(x_train: np.ndarray, x_test: np.ndarray, whiten: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-split statistics only: the test split must not leak into the attacker. Per dimension, or with `whiten`
    PCA whitening (every direction of the training features at unit variance; directions along which they do not
    vary are dropped), which lets an attacker read what sits in a feature's low-variance directions."""
    mean = x_train.mean(axis=0, keepdims=True)
    if whiten:
        xc = x_train - mean
        ev, vecs = np.linalg.eigh(xc.T @ xc / len(xc))
        keep = ev > 1e-6 * max(ev.max(), 1e-12)
        w = vecs[:, keep] / np.sqrt(ev[keep])  # (D, r)
        f = lambda x: torch.from_numpy(((x - mean) @ w).astype(np.float32))  # noqa: E731
        return f(x_train), f(x_test)
    std = x_train.std(axis=0, keepdims=True) + 1e-6
    f = lambda x: torch.from_numpy(((x - mean) / std).astype(np.float32))  # noqa: E731
    return f(x_train), f(x_test)


def _check(x_train, y_train, x_test, y_test) -> tuple[np.ndarray, ...]:
    x_train, x_test = np.asarray(x_train, np.float64), np.asarray(x_test, np.float64)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {x_train.shape} and {x_test.shape}")
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError("features and labels must have the same number of rows in each split")
    if not (np.isfinite(x_train).all() and np.isfinite(x_test).all()):
        raise ValueError("features hold NaN or inf; the anonymizer output is broken upstream")
    return x_train, y_train, x_test, y_test


def _head(kind: str, d: int, out: int, hidden: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d, out)
    # the 2-layer MLP attacker of arXiv 2511.08666
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, out))


VAL_FRACTION = 0.2  # of the training split's groups, held out to choose epochs and k on


def holdout(n: int, groups=None, *, seed: int = 0, fraction: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (fit, val) of a training split of n rows: a seeded `fraction` of its groups (people or videos;
    None: every row its own group) goes to validation, whole, so a choice made on it is made on unseen groups."""
    g = np.arange(n) if groups is None else np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups needs one id per training row: shape {g.shape} for {n} rows")
    keys, inv = np.unique(g, return_inverse=True)
    if len(keys) < 2:
        raise ValueError(f"the training split holds {len(keys)} group(s) (person or video): choosing an epoch or k "
                         "needs at least 2, one to hold out for validation; add training videos")  # fmt: skip
    n_val = min(max(1, round(fraction * len(keys))), len(keys) - 1)
    is_val = np.isin(inv.reshape(-1), np.random.default_rng(seed).permutation(len(keys))[:n_val])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _val_cmap(y: np.ndarray, scores: np.ndarray) -> float:
    """cMAP on the validation rows; NaN (never chosen) when none of their attributes has both values, as can happen
    on a small corpus: the choice then falls to the last epoch / largest k."""
    try:
        return cmap(y, scores)
    except ValueError:
        return float("nan")


def _last_best(history: list[float]) -> int:
    """Index of the highest score, the later one on a tie (same ranking, better calibrated); NaN never wins."""
    h = np.nan_to_num(np.asarray(history, dtype=np.float64), nan=-np.inf)
    return int(len(h) - 1 - np.argmax(h[::-1]))


def _fits(seed: int, seeds: int) -> range:
    """The seeds of an attacker's fits: seed, seed + 1, ... (`seeds` of them)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r}: need an integer >= 1 (seeded fits averaged into one attacker)")
    return range(seed, seed + seeds)


def _chosen(what: str, values: list[int]) -> str:
    """'epoch 12' for one fit, 'epochs 12, 9, 15' for several: what each fit's validation part chose."""
    return f"{what} {values[0]}" if len(values) == 1 else f"{what}s {', '.join(map(str, values))}"


def _mean_history(histories: list[list[float]]) -> list[float]:
    """Per epoch (or k), the fits' mean validation score; NaN where none of them scored (`_val_cmap`)."""
    if len({len(h) for h in histories}) != 1:  # k-NN: a small hold-out can leave fewer candidate ks
        return list(histories[0])
    h = np.asarray(histories, dtype=np.float64)
    ok = np.isfinite(h)
    n = ok.sum(axis=0)
    return [float(t / c) if c else float("nan") for t, c in zip(np.where(ok, h, 0.0).sum(axis=0), n, strict=True)]


def _fit_head(kind, x, y, loss_fn, out, *, epochs, lr, hidden, batch_size, seed, each_epoch=None) -> nn.Module:
    """Mini-batch AdamW for `epochs` epochs, deterministic given seed; each_epoch(model) after each (in eval mode)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _head(kind, x.shape[1], out, hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        if each_epoch is not None:
            with torch.no_grad():
                each_epoch(model)
    return model


def _train_eval(kind, xtr, ytr, xte, loss_fn, out, val_score, groups, *, epochs, lr, hidden, batch_size, seed):
    """Choose the number of epochs on the held-out validation groups (trained on the rest; val_score(logits, rows)
    -> float), then refit on every training row for that many epochs. Returns (test logits, the chosen epoch index)
    and the validation score per epoch."""
    fit, val = holdout(len(xtr), groups, seed=seed)
    kw = {"epochs": epochs, "lr": lr, "hidden": hidden, "batch_size": batch_size, "seed": seed}
    history: list[float] = []
    _fit_head(kind, xtr[fit], ytr[fit], loss_fn, out, **kw,
              each_epoch=lambda m: history.append(val_score(m(xtr[val]), val)))  # fmt: skip
    best = _last_best(history)
    model = _fit_head(kind, xtr, ytr, loss_fn, out, **{**kw, "epochs": best + 1})
    with torch.no_grad():
        return (model(xte), best), history


def train_attacker(
    kind: str,
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    epochs: int = 60,
    lr: float | None = None,  # None: 1e-2 for the linear model, 3e-3 for the MLP (each converges in the epochs given)
    hidden: int = 512,
    batch_size: int = 64,
    seed: int = 0,
    whiten: bool = False,
    groups=None,
    seeds: int = 1,
) -> AttackResult:
    """kind "linear" (logistic regression) or "mlp"; y: (N, A) binary attributes, multi-label BCE. whiten: on PCA-
    whitened features (`_standardize`), named "<kind>_whitened". groups: (N_train,) person or video of each training
    row, for the validation hold-out that chooses the epochs (None: rows). seeds: fits averaged (module docstring)."""
    if kind not in ("linear", "mlp"):
        raise ValueError(f"attacker kind must be 'linear' or 'mlp', got {kind!r}")
    x_train, y_train, x_test, y_test = _check(x_train, y_train, x_test, y_test)
    lr = lr if lr is not None else (1e-2 if kind == "linear" else 3e-3)
    xtr, xte = _standardize(x_train, x_test, whiten)
    ytr = torch.from_numpy(y_train.astype(np.float32))
    runs = [_train_eval(
        kind, xtr, ytr, xte, nn.functional.binary_cross_entropy_with_logits, y_train.shape[1],
        lambda lg, rows: _val_cmap(y_train[rows], lg.numpy()), groups,
        epochs=epochs, lr=lr, hidden=hidden, batch_size=batch_size, seed=s,
    ) for s in _fits(seed, seeds)]  # fmt: skip
    probs = np.mean([torch.sigmoid(logits).numpy() for (logits, _), _ in runs], axis=0)  # (N_test, A)
    name = f"{kind}_whitened" if whiten else kind
    chosen = _chosen("epoch", [epoch + 1 for (_, epoch), _ in runs])
    return AttackResult(name, cmap(y_test, probs), macro_f1(y_test, probs), probs, chosen,
                        _mean_history([h for _, h in runs]))  # fmt: skip


def _knn_scores(xq: torch.Tensor, xg: torch.Tensor, yg: np.ndarray, ks: list[int]) -> list[np.ndarray]:
    """For each k: (N_query, A) the fraction of a query's k most cosine-similar gallery rows with each attribute."""
    nearest = torch.cat([(xq[i : i + 1024] @ xg.T).topk(max(ks), dim=1).indices for i in range(0, len(xq), 1024)])
    return [yg[nearest[:, :k].numpy()].mean(axis=1) for k in ks]


def knn_attacker(x_train, y_train, x_test, y_test, ks=(1, 5, 15, 45), whiten: bool = False, groups=None,
                 seed: int = 0, seeds: int = 1) -> AttackResult:  # fmt: skip
    """Cosine k-NN: an attribute's score is the fraction of the k nearest training clips that have it; k chosen on
    the validation hold-out of the training split (`groups`, as `train_attacker`), neighbours of the chosen k then
    from all of it. whiten: neighbours on PCA-whitened features (a Mahalanobis-like distance), "knn_whitened".
    seeds: that many hold-outs, each choosing its k; the scores of the chosen ks are averaged."""
    x_train, y_train, x_test, y_test = _check(x_train, y_train, x_test, y_test)
    xtr, xte = _standardize(x_train, x_test, whiten)
    xtr, xte = nn.functional.normalize(xtr, dim=1), nn.functional.normalize(xte, dim=1)
    ytr = y_train.astype(np.float64)
    chosen, histories = [], []
    for s in _fits(seed, seeds):
        fit, val = holdout(len(xtr), groups, seed=s)
        cand = sorted({min(k, len(fit)) for k in ks})
        histories.append([_val_cmap(y_train[val], p) for p in _knn_scores(xtr[val], xtr[fit], ytr[fit], cand)])
        chosen.append(min(cand[_last_best(histories[-1])], len(xtr)))
    probs = np.mean(_knn_scores(xte, xtr, ytr, chosen), axis=0)  # (N_test, A)
    name = "knn_whitened" if whiten else "knn"
    k = f"k={chosen[0]}" if len(chosen) == 1 else f"k={', '.join(map(str, chosen))}"
    return AttackResult(name, cmap(y_test, probs), macro_f1(y_test, probs), probs, k, _mean_history(histories))


def attack_pool(x_train, y_train, x_test, y_test, *, seed: int = 0, epochs: int = 60,
                groups=None, seeds: int = 1) -> dict[str, AttackResult]:  # fmt: skip
    """The feature attackers of the evaluation: logistic regression, the 2-layer MLP, k-NN, and the MLP and k-NN again
    on PCA-whitened features, which read what a defence leaves in low-variance directions (on the benchmark's raw and
    AAM features they read more than the plain ones: docs/methods.md §3). A logistic regression is affine, so
    whitening gives it nothing new to read. groups: the training rows' people or videos (`holdout`); seeds: fits
    averaged into each attacker (module docstring)."""
    data, kw = (x_train, y_train, x_test, y_test), {"seed": seed, "groups": groups, "seeds": seeds}
    return {
        "linear": train_attacker("linear", *data, epochs=epochs, **kw),
        "mlp": train_attacker("mlp", *data, epochs=epochs, **kw),
        "knn": knn_attacker(*data, **kw),
        "mlp_whitened": train_attacker("mlp", *data, epochs=epochs, whiten=True, **kw),
        "knn_whitened": knn_attacker(*data, whiten=True, **kw),
    }


def worst_case(pool: dict[str, AttackResult]) -> AttackResult:
    """The attacker that leaks most (highest cMAP): the figure a privacy claim must survive."""
    return max(pool.values(), key=lambda r: r.cmap)


def action_probe(
    x_train, y_train, x_test, y_test, video_ids_test=None, *, num_classes: int | None = None, epochs: int = 60,
    lr: float = 1e-2, batch_size: int = 64, seed: int = 0, groups=None, seeds: int = 1,
) -> ProbeResult:  # fmt: skip
    """Utility: a linear probe for the action; video-level top-1 averages the clip probabilities of each video. The
    epochs are chosen by clip top-1 on the validation hold-out of the training split (`groups`, as the attackers);
    seeds: fits whose probabilities are averaged, as the attackers'."""
    x_train, y_train, x_test, y_test = _check(x_train, y_train, x_test, y_test)
    classes = int(num_classes or max(y_train.max(), y_test.max()) + 1)
    xtr, xte = _standardize(x_train, x_test)
    ytr = torch.from_numpy(y_train.astype(np.int64))

    runs = [_train_eval(
        "linear", xtr, ytr, xte, nn.functional.cross_entropy, classes,
        lambda lg, rows: top1_accuracy(torch.softmax(lg, dim=1).numpy(), y_train[rows]), groups,
        epochs=epochs, lr=lr, hidden=0, batch_size=batch_size, seed=s,
    ) for s in _fits(seed, seeds)]  # fmt: skip
    probs = np.mean([torch.softmax(logits, dim=1).numpy() for (logits, _), _ in runs], axis=0)  # (N_test, classes)
    video = None if video_ids_test is None else video_top1_accuracy(probs, y_test, video_ids_test)
    return ProbeResult(top1_accuracy(probs, y_test), video, probs, _chosen("epoch", [e + 1 for (_, e), _ in runs]),
                       _mean_history([h for _, h in runs]))  # fmt: skip
