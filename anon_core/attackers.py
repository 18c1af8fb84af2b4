"""Attackers and probes on clip features, for the privacy/utility evaluation (docs/methods.md, section 3).

Every attacker is trained on the anonymized *train* split and scored on the anonymized *test* split, so it adapts to
the anonymization: the worst case. Trained attackers report their best epoch on the test split ("best over epochs"),
k-NN its best k: the strongest attacker is the one that counts. The pool's worst case is the highest cMAP.

    pool = attack_pool(x_train, attrs_train, x_test, attrs_test)     # {"linear": AttackResult, "mlp": ..., "knn": ...}
    worst = worst_case(pool)
    util = action_probe(x_train, action_train, x_test, action_test, video_ids_test)
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
    scores: np.ndarray  # (N_test, A) attribute probabilities of the best epoch / k
    best: str  # which epoch or k gave it
    history: list[float] = field(default_factory=list)  # cMAP per epoch (or per k)


@dataclass
class ProbeResult:
    top1: float  # clip level
    video_top1: float | None  # clips of a video averaged (when video ids are given)
    probs: np.ndarray  # (N_test, classes) of the best epoch
    best: str
    history: list[float] = field(default_factory=list)


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


def _train_eval(kind, xtr, ytr, xte, loss_fn, out, score_fn, *, epochs, lr, hidden, batch_size, seed):
    """Mini-batch AdamW; after every epoch score the test split with score_fn(probs) -> float; keep the best."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _head(kind, xtr.shape[1], out, hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    history, best = [], (-np.inf, None, -1)
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(xtr), generator=g).split(batch_size):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xte)
        score = score_fn(logits)
        history.append(score)
        if score >= best[0]:  # a tie goes to the later epoch: same ranking, better calibrated (macro-F1)
            best = (score, logits, epoch)
    return best, history


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
) -> AttackResult:
    """kind "linear" (logistic regression) or "mlp"; y: (N, A) binary attributes, multi-label BCE. whiten: on PCA-
    whitened features (`_standardize`), named "<kind>_whitened"."""
    if kind not in ("linear", "mlp"):
        raise ValueError(f"attacker kind must be 'linear' or 'mlp', got {kind!r}")
    x_train, y_train, x_test, y_test = _check(x_train, y_train, x_test, y_test)
    lr = lr if lr is not None else (1e-2 if kind == "linear" else 3e-3)
    xtr, xte = _standardize(x_train, x_test, whiten)
    ytr = torch.from_numpy(y_train.astype(np.float32))
    (best, logits, epoch), history = _train_eval(
        kind, xtr, ytr, xte, nn.functional.binary_cross_entropy_with_logits, y_train.shape[1],
        lambda lg: cmap(y_test, torch.sigmoid(lg).numpy()),
        epochs=epochs, lr=lr, hidden=hidden, batch_size=batch_size, seed=seed,
    )  # fmt: skip
    probs = torch.sigmoid(logits).numpy()
    name = f"{kind}_whitened" if whiten else kind
    return AttackResult(name, float(best), macro_f1(y_test, probs), probs, f"epoch {epoch + 1}", history)


def knn_attacker(x_train, y_train, x_test, y_test, ks=(1, 5, 15, 45), whiten: bool = False) -> AttackResult:
    """Cosine k-NN: an attribute's score is the fraction of the k nearest training clips that have it; best k.
    whiten: neighbours on PCA-whitened features (a Mahalanobis-like distance), named "knn_whitened"."""
    x_train, y_train, x_test, y_test = _check(x_train, y_train, x_test, y_test)
    xtr, xte = _standardize(x_train, x_test, whiten)
    xtr, xte = nn.functional.normalize(xtr, dim=1), nn.functional.normalize(xte, dim=1)
    kmax = min(max(ks), len(xtr))
    nearest = torch.cat([(xte[i : i + 1024] @ xtr.T).topk(kmax, dim=1).indices for i in range(0, len(xte), 1024)])
    ytr = y_train.astype(np.float64)
    history, best = [], (-np.inf, None, None)
    for k in sorted({min(k, kmax) for k in ks}):
        probs = ytr[nearest[:, :k].numpy()].mean(axis=1)  # (N_test, A)
        score = cmap(y_test, probs)
        history.append(score)
        if score >= best[0]:  # a tie goes to the later epoch: same ranking, better calibrated (macro-F1)
            best = (score, probs, k)
    name = "knn_whitened" if whiten else "knn"
    return AttackResult(name, float(best[0]), macro_f1(y_test, best[1]), best[1], f"k={best[2]}", history)


def attack_pool(x_train, y_train, x_test, y_test, *, seed: int = 0, epochs: int = 60) -> dict[str, AttackResult]:
    """The feature attackers of the evaluation: logistic regression, the 2-layer MLP, k-NN, and the MLP and k-NN again
    on PCA-whitened features, which read what a defence leaves in low-variance directions (on the benchmark's raw and
    AAM features they read more than the plain ones: docs/methods.md §3). A logistic regression is affine, so
    whitening gives it nothing new to read."""
    return {
        "linear": train_attacker("linear", x_train, y_train, x_test, y_test, seed=seed, epochs=epochs),
        "mlp": train_attacker("mlp", x_train, y_train, x_test, y_test, seed=seed, epochs=epochs),
        "knn": knn_attacker(x_train, y_train, x_test, y_test),
        "mlp_whitened": train_attacker("mlp", x_train, y_train, x_test, y_test, seed=seed, epochs=epochs, whiten=True),
        "knn_whitened": knn_attacker(x_train, y_train, x_test, y_test, whiten=True),
    }


def worst_case(pool: dict[str, AttackResult]) -> AttackResult:
    """The attacker that leaks most (highest cMAP): the figure a privacy claim must survive."""
    return max(pool.values(), key=lambda r: r.cmap)


def action_probe(
    x_train, y_train, x_test, y_test, video_ids_test=None, *, num_classes: int | None = None, epochs: int = 60,
    lr: float = 1e-2, batch_size: int = 64, seed: int = 0,
) -> ProbeResult:  # fmt: skip
    """Utility: a linear probe for the action; video-level top-1 averages the clip probabilities of each video."""
    x_train, y_train, x_test, y_test = _check(x_train, y_train, x_test, y_test)
    classes = int(num_classes or max(y_train.max(), y_test.max()) + 1)
    xtr, xte = _standardize(x_train, x_test)
    ytr = torch.from_numpy(y_train.astype(np.int64))

    def score(logits: torch.Tensor) -> float:
        probs = torch.softmax(logits, dim=1).numpy()
        if video_ids_test is None:
            return top1_accuracy(probs, y_test)
        return video_top1_accuracy(probs, y_test, video_ids_test)

    (best, logits, epoch), history = _train_eval(
        "linear", xtr, ytr, xte, nn.functional.cross_entropy, classes, score,
        epochs=epochs, lr=lr, hidden=0, batch_size=batch_size, seed=seed,
    )  # fmt: skip
    probs = torch.softmax(logits, dim=1).numpy()
    video = None if video_ids_test is None else video_top1_accuracy(probs, y_test, video_ids_test)
    return ProbeResult(top1_accuracy(probs, y_test), video, probs, f"epoch {epoch + 1}", history)
