"""Closed-form linear erasure of private attributes from features (LEACE, Belrose et al., arXiv 2306.03819).

Why: the AAM's privacy loss (`anon_core.losses.nt_xent` on still clips) is self-supervised and removes what a still
frame shows; an encoder that sees motion keeps a little of who moves in *how* they move, which a linear or MLP
attacker trained on private labels still reads, and a learned adversary inside the AAM's loop does not remove it
(it sees too weak a signal per batch to steer the adapter; see docs/methods.md). Least-squares concept erasure does,
in closed form, from the same training labels the pruner's privacy head uses: with x whitened by W = Sigma_x^-1/2
and U an orthonormal basis of the whitened cross-covariance W Sigma_xz, the map

    r(x) = x - W^+ U U^T W (x - mean)

leaves no linear predictor of the concept columns z better than a constant (on the fitted data), and among all such
maps moves x the least in the whitened norm, so the action survives. The concept columns are the attributes and,
with `pairs=True`, their pairwise products, so an attacker's linear read-out of a conjunction (dark skin AND hat) is
erased too: the 2-layer MLP attacker otherwise recovers part of what the attributes alone leave.

What LEACE leaves, a 2-layer MLP attacker still reads (the benchmark's worst case for the AAM). `fit_gradient_erasure`
then removes the directions such an attacker's predictions depend on: it trains a small MLP for the concepts on the
erased features, takes the top eigenvectors of its expected gradient outer product E[J^T J] (J = d sigmoid(logits) /
dx: the input directions that move its predictions, nonlinear read-outs included), projects them out, and repeats on
what is left, `rank` directions a round, up to `dims` in all. Removing as many random directions or as many top
principal components does not do it (the first removes nothing, the second the action; docs/methods.md).

`LinearEraser` holds the fitted map as buffers (it rides in a model bundle's weights); unfitted, it is the identity.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def concept_columns(attributes: np.ndarray, pairs: bool = True) -> np.ndarray:
    """(N, A) attribute labels -> (N, A [+ A(A-1)/2]) the concepts to erase: the attributes, then each pair's product.
    Non-binary columns are used as they are (a product of two scores is still their interaction)."""
    a = np.asarray(attributes, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"attributes must be (N, A), got shape {a.shape}")
    if not pairs or a.shape[1] < 2:
        return a
    i, j = np.triu_indices(a.shape[1], k=1)
    return np.concatenate([a, a[:, i] * a[:, j]], axis=1)  # (N, A + A(A-1)/2)


def fit_leace(x: np.ndarray, z: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features, (N, K) concept values -> (mean (D,), P (D, D)) with r(x) = (x - mean) @ P.T + mean.

    Directions of (numerically) zero variance are left alone (eigenvalues clipped at eps * the largest), and concept
    columns that are constant carry no direction to erase."""
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if x.ndim != 2 or z.ndim != 2 or len(x) != len(z):
        raise ValueError(f"need x (N, D) and z (N, K) with the same N, got {x.shape} and {z.shape}")
    if len(x) < 2:
        raise ValueError(f"erasure needs at least 2 rows to estimate a covariance, got {len(x)}")
    mean = x.mean(0)
    xc, zc = x - mean, z - z.mean(0)
    sigma = xc.T @ xc / len(x)  # (D, D)
    ev, vecs = np.linalg.eigh(sigma)
    keep = ev > eps * max(ev.max(), eps)
    inv_sqrt = np.where(keep, 1.0 / np.sqrt(np.where(keep, ev, 1.0)), 0.0)
    w = vecs @ np.diag(inv_sqrt) @ vecs.T  # (D, D) whitening (pseudo-inverse square root)
    w_pinv = vecs @ np.diag(np.where(keep, np.sqrt(np.clip(ev, 0, None)), 0.0)) @ vecs.T
    cross = w @ (xc.T @ zc) / len(x)  # (D, K) whitened cross-covariance
    u, s, _ = np.linalg.svd(cross, full_matrices=False)
    u = u[:, s > 1e-9 * max(s.max(initial=0.0), 1e-12)]  # (D, r): the erased subspace, in whitened coordinates
    proj = np.eye(x.shape[1]) - w_pinv @ u @ u.T @ w  # (D, D)
    return mean.astype(np.float32), proj.astype(np.float32)


def fit_gradient_erasure(
    x: np.ndarray, z: np.ndarray, dims: int, *, rank: int | None = None, max_rounds: int = 8, max_rows: int = 16384,
    hidden: int = 256, epochs: int = 40, max_steps: int = 2000, seed: int = 0,
) -> np.ndarray:  # fmt: skip
    """(N, D) features, (N, K) binary concepts -> P (D, D) with r(x) = (x - mean) @ P.T + mean (mean = x's), which
    removes `dims` directions that MLPs trained for z read it from, `rank` a round (default: K, or more so that it
    takes at most `max_rounds` rounds: a wide feature does not cost more MLP fits). The directions are found in
    per-dimension standardized coordinates, so a feature's scale does not decide what is removed. Each MLP trains
    `epochs` passes over at most `max_rows` rows (a seeded sample) and at most `max_steps` steps of 64 rows, so a
    large archive's AAM epoch pays tens of seconds for it (20,000 clips of 768 dimensions: 24 s on 2 cores)."""
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float32)
    if x.ndim != 2 or z.ndim != 2 or len(x) != len(z):
        raise ValueError(f"need x (N, D) and z (N, K) with the same N, got {x.shape} and {z.shape}")
    d = x.shape[1]
    dims = min(int(dims), d - 1)
    rank = max(1, int(rank or max(z.shape[1], -(-dims // max_rounds))))
    std = x.std(0) + 1e-6
    rows = np.random.default_rng(seed).permutation(len(x))[:max_rows] if len(x) > max_rows else slice(None)
    xs = torch.from_numpy(((x[rows] - x.mean(0)) / std).astype(np.float32))  # (n, D) standardized
    zt = torch.from_numpy(z[rows])
    basis = np.zeros((d, 0))  # (D, removed) orthonormal, in standardized coordinates
    g = torch.Generator().manual_seed(seed)
    while basis.shape[1] < dims:
        keep = torch.from_numpy((np.eye(d) - basis @ basis.T).astype(np.float32))  # (D, D) symmetric projector
        xk = xs @ keep
        mlp = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, z.shape[1]))
        with torch.no_grad():  # a seeded init: every Ray Train worker fits the same eraser
            for p in mlp.parameters():
                p.copy_(torch.empty_like(p).uniform_(-1, 1, generator=g) / np.sqrt(p.shape[-1]))
        opt = torch.optim.AdamW(mlp.parameters(), 3e-3, weight_decay=1e-4)
        # only the epochs max_steps reaches draw an order: the generator then seeds the next round's MLP alike
        needed = min(epochs, math.ceil(max_steps / math.ceil(len(xk) / 64)))
        batches = [idx for _ in range(needed) for idx in torch.randperm(len(xk), generator=g).split(64)]
        for idx in batches[:max_steps]:
            opt.zero_grad(set_to_none=True)
            nn.functional.binary_cross_entropy_with_logits(mlp(xk[idx]), zt[idx]).backward()
            opt.step()
        xg = xk.clone().requires_grad_(True)
        probs = torch.sigmoid(mlp(xg))  # (N, K)
        egop = torch.zeros(d, d, dtype=torch.float64)
        for k in range(probs.shape[1]):
            (grad,) = torch.autograd.grad(probs[:, k].sum(), xg, retain_graph=True)  # (N, D)
            egop += (grad.T @ grad).double() / len(xg)
        egop = keep.double() @ egop @ keep.double()  # only directions not removed yet
        _, vecs = np.linalg.eigh(egop.numpy())
        new = vecs[:, ::-1][:, : min(rank, dims - basis.shape[1])]  # (D, r) the largest eigenvalues
        basis, _ = np.linalg.qr(np.concatenate([basis, new], axis=1))
    p_std = np.eye(d) - basis @ basis.T  # (D, D) the projection, standardized coordinates
    return (std[:, None] * p_std / std[None, :]).astype(np.float32)  # undo the scaling: diag(std) P diag(1/std)


def fit_principal_projection(x: np.ndarray, keep_variance: float) -> np.ndarray:
    """(N, D) features -> P (D, D) with r(x) = (x - mean) @ P.T + mean (mean = x's): the orthogonal projection onto
    the fewest principal directions of x that hold `keep_variance` of its variance; the low-variance rest is removed.
    After the concept erasers, that rest is where what they leave of the attributes sits for an attacker that whitens
    the features (docs/methods.md §2), and by construction it holds little of anything else."""
    if not 0.0 < keep_variance <= 1.0:
        raise ValueError(f"keep_variance must be in (0, 1], got {keep_variance}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need x (N, D) with N >= 2, got {x.shape}")
    xc = x - x.mean(0)
    ev, vecs = np.linalg.eigh(xc.T @ xc / len(x))
    ev, vecs = np.clip(ev[::-1], 0.0, None), vecs[:, ::-1]  # descending
    if keep_variance >= 1.0 or ev.sum() <= 0.0:
        return np.eye(x.shape[1], dtype=np.float32)
    k = int(np.searchsorted(np.cumsum(ev) / ev.sum(), keep_variance)) + 1  # first k reaching the share
    u = vecs[:, : min(k, x.shape[1])]  # (D, k)
    return (u @ u.T).astype(np.float32)


class LinearEraser(nn.Module):
    """r(x) = (x - mean) @ proj.T + mean over the last dimension; the identity until `set` is called."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("proj", torch.eye(dim))

    @property
    def fitted(self) -> bool:
        return not torch.equal(self.proj, torch.eye(self.proj.shape[0], device=self.proj.device))

    def set(self, mean: np.ndarray, proj: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.proj.copy_(torch.as_tensor(proj, dtype=self.proj.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, proj = self.mean.to(x.dtype), self.proj.to(x.dtype)
        return (x - mean) @ proj.T + mean
