"""Losses for latent anonymization with the Anonymizing Adapter Module (arXiv 2511.08666).

The adapter f_A is trained on one joint objective

    total = w_lc * L_LC + w_t * L_T - w_b * L_B          [w_lc = 100, w_t = 1, w_b = 1]

- L_LC, latent consistency: MSE between the frozen encoder's features h and f_A(h) on real clips. It keeps the
  features useful for tasks nobody trained.
- L_T, utility: cross-entropy of linear task heads on f_A(h); several heads may be given, each with weight 1.
- L_B, privacy: SimCLR NT-Xent (arXiv 2002.05709) between two static clips of each video (one frame repeated),
  passed through f_E then f_A. It is MAXIMISED (hence the minus): pushing apart what two static views of one video
  share, which is its appearance.

The tubelet pruner's loss lives with the pruner, not here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR NT-Xent between two views, (N, d) each; mean over the 2N anchors.

    Cosine similarity divided by `temperature`; for each anchor the positive is the other view of the same row and
    the candidates are the other 2N - 1 embeddings of the batch (in-batch negatives). No projection head.
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent needs two (N, d) views of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 1:
        raise ValueError("nt_xent needs at least one pair of views")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)  # (2N, d), unit rows
    sim = z @ z.T / temperature  # (2N, 2N)
    self_pair = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_pair, float("-inf"))  # an anchor is never its own candidate
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positive)


def _check_mask(mask: torch.Tensor, shape: torch.Size, what: str) -> None:
    if mask.dtype != torch.bool or mask.shape != shape:
        raise ValueError(f"{what} mask must be bool of shape {tuple(shape)}, got {mask.dtype} {tuple(mask.shape)}")
    if not bool(mask.any()):
        raise ValueError(f"{what} mask selects no clip; pass at least one real clip")


def latent_consistency(h: torch.Tensor, h_anon: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between encoder features h and adapter outputs, (..., d) each, over real clips only.

    `mask` (same shape as h without the feature axis, True = real clip) drops padding. h is the frozen encoder's
    output: detach it upstream if it was computed with gradients.
    """
    if h.shape != h_anon.shape:
        raise ValueError(f"h and h_anon must have equal shapes, got {tuple(h.shape)} and {tuple(h_anon.shape)}")
    if mask is None:
        return F.mse_loss(h_anon, h)
    _check_mask(mask, h.shape[:-1], "latent_consistency")
    # boolean indexing rather than multiplying by the mask: padding may hold NaN, and NaN * 0 is NaN
    return F.mse_loss(h_anon[mask], h[mask])


def classification_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of (..., K) logits against integer labels, mean over the (masked) rows.

    Labels have the logits' leading shape, or, for per-clip logits (videos, clips, K), one label per video (videos,)
    that is shared by all its clips. `mask` has the logits' leading shape, True = real clip.
    """
    if logits.dim() == 3 and labels.dim() == 1 and labels.shape[0] == logits.shape[0]:
        labels = labels[:, None].expand(logits.shape[:2])  # (V,) -> (V, C)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits {tuple(logits.shape)}")
    if mask is not None:
        _check_mask(mask, logits.shape[:-1], "classification_ce")
        logits, labels = logits[mask], labels[mask]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))  # (rows, K), (rows,)


def aam_objective(
    *,
    h: torch.Tensor,
    h_anon: torch.Tensor,
    task_logits: Mapping[str, torch.Tensor],
    task_labels: Mapping[str, torch.Tensor],
    static_a: torch.Tensor,
    static_b: torch.Tensor,
    mask: torch.Tensor | None = None,
    w_lc: float = 100.0,
    w_t: float = 1.0,
    w_b: float = 1.0,
    temperature: float = 0.1,
    task_weights: Mapping[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """The adapter's joint objective; returns {"total", "l_lc", "l_t", "l_b", "l_t/<head>"}: minimise "total".

    h, h_anon: (videos, clips, d) encoder features and f_A(h), with `mask` (videos, clips) marking real clips.
    task_logits / task_labels: per head name, logits of a linear head on f_A(h) and its labels (see
    `classification_ce`); `mask` is applied to a head whose logits have the mask's leading shape. Each head has
    weight 1 unless `task_weights` says otherwise. static_a, static_b: (videos, d) f_A(f_E(static clip)) of two
    random frames of each video. L_B enters with a minus sign: it is maximised.
    """
    if set(task_logits) != set(task_labels):
        raise ValueError(f"task_logits heads {sorted(task_logits)} differ from task_labels heads {sorted(task_labels)}")
    if not task_logits:
        raise ValueError("aam_objective needs at least one task head (e.g. {'action': logits})")
    weights = dict(task_weights or {})
    unknown = set(weights) - set(task_logits)
    if unknown:
        raise ValueError(f"task_weights names heads that have no logits: {sorted(unknown)}")
    parts: dict[str, torch.Tensor] = {"l_lc": latent_consistency(h, h_anon, mask)}
    l_t = h_anon.new_zeros(())
    for name, logits in task_logits.items():
        head_mask = mask if mask is not None and logits.shape[:-1] == mask.shape else None
        ce = classification_ce(logits, task_labels[name], head_mask)
        parts[f"l_t/{name}"] = ce
        l_t = l_t + weights.get(name, 1.0) * ce
    parts["l_t"] = l_t
    parts["l_b"] = nt_xent(static_a, static_b, temperature)
    parts["total"] = w_lc * parts["l_lc"] + w_t * parts["l_t"] - w_b * parts["l_b"]
    return parts
