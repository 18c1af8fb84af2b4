"""Tubelet pruning with an action and a privacy CLS token (arXiv 2603.26336, "From Pixels to Privacy").

A VideoViT with two CLS tokens, 0 = action and 1 = privacy, both attending in every block. In a pruning block
the head-averaged softmax attention rows of the two CLS tokens score every tubelet token,

    s = a_act - lambda_priv * a_priv      (rows restricted to the tubelet keys, each renormalised to sum 1)

and the top ceil(keep * n) tubelets survive, jointly over space and time, after the attention residual and before
the MLP (EViT, arXiv 2202.07800). The pruned tokens are fused into one token, sum_i a_act[i] * x_i. Surviving
tubelet ids give a (T', Hp, Wp) mask; the anonymised video is the clip with every pruned tubelet set to black.

Sequence layout, always: [action CLS, privacy CLS, n tubelet tokens, f fused tokens]. Fused tokens attend and
are attended like any token, but they are not tubelets: a later pruning stage neither scores them nor counts
them in the renormalisation of a_act / a_priv, never prunes them, and never folds them into its own fused
token. Each stage that prunes at least one tubelet appends one fused token at the end; a stage that prunes
nothing (keep 1.0, or ceil(keep * n) == n) runs the block unchanged, on the fused attention kernel.

Only rows 0 and 1 of A are ever read, so pruning blocks compute just those two rows explicitly and keep the fused
kernel for the block output (`cls_rows_only`; set it False to materialise the full (B, H, N, N) map, same result).

    model = pruner_base(num_classes=51, num_privacy_classes=5)
    out = model(video)                        # video: (B, C, T, H, W)
    loss = pruner_loss(out, action_labels, privacy_labels)
    loss = loss + relevance_loss(out, *tubelet_relevance(model, video, action_labels, privacy_labels))
    anonymised = out.masked_video(video)

relevance_loss is anonvid's addition (docs/methods.md §1): it teaches both CLS attention rows where the action and the
attributes are read (gradient x input at each tubelet's embedding), so the paper's score ranks what the released
tubelets carry rather than what the pruner's own, already mixed, tokens need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .grl import GradientReversalLayer, grad_reverse
from .video_vit import VideoViT, build_model, tubelet_mask_from_ids, tubelet_to_pixel_mask

__all__ = [
    "PruneStep",
    "PrunerOutput",
    "TubeletPruner",
    "default_prune_blocks",
    "num_kept",
    "pruner_base",
    "pruner_loss",
    "pruner_small",
    "pruner_tiny",
    "relevance_loss",
    "score_agreement",
    "score_tubelets",
    "select_tubelets",
    "tubelet_mask_from_ids",
    "tubelet_relevance",
    "tubelet_to_pixel_mask",
]

NUM_CLS = 2  # 0 = action, 1 = privacy


def default_prune_blocks(depth: int) -> tuple[int, ...]:
    """The published blocks (3, 6, 9) of 12 (1-indexed), scaled to `depth` (round half up): 6 -> (2, 3, 5)."""
    return tuple(sorted({min(depth, max(1, math.floor(k * depth / 12 + 0.5))) for k in (3, 6, 9)}))


def num_kept(n: int, keep_ratio: float) -> int:
    """ceil(keep * n), at least 1; rounding first so float noise (0.9 * 1410 = 1269.0000000000002) stays exact."""
    return max(1, math.ceil(round(keep_ratio * n, 6)))


def score_tubelets(
    attn: torch.Tensor, num_real: int, lambda_priv: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax attention (B, H, N, N), or just its CLS rows (B, H, >= 2, N) -> a_act, a_priv, score, each (B, n)
    over the n tubelet tokens.

    Scored in float32 whatever the autocast dtype, so bf16 rounding does not reorder close tubelets.
    """
    rows = attn[:, :, :NUM_CLS, NUM_CLS : NUM_CLS + num_real].float().mean(dim=1)  # (B, 2, n)
    rows = rows / rows.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(rows.dtype).tiny)
    a_act, a_priv = rows.unbind(dim=1)  # each (B, n)
    return a_act, a_priv, a_act - lambda_priv * a_priv


@dataclass
class PruneStep:
    keep_idx: torch.Tensor  # (B, k) positions among the current tubelet tokens, ascending
    kept: torch.Tensor  # (B, k, D) the surviving tubelet tokens, in that order
    fused: torch.Tensor | None  # (B, 1, D) sum over pruned i of a_act[i] * x_i; None when nothing was pruned
    score: torch.Tensor  # (B, n)
    a_act: torch.Tensor  # (B, n)
    a_priv: torch.Tensor  # (B, n)


def select_tubelets(
    attn: torch.Tensor, x: torch.Tensor, num_real: int, keep_ratio: float, lambda_priv: float
) -> PruneStep:
    """One pruning stage on x (B, 2 + n + f, D) given its block's attention (B, H, N or >= 2 rows, N)."""
    a_act, a_priv, score = score_tubelets(attn, num_real, lambda_priv)
    k = num_kept(num_real, keep_ratio)
    # Ascending positions keep the surviving tokens in tubelet raster order: deterministic, easy to inspect.
    keep_idx = score.topk(k, dim=1, sorted=False).indices.sort(dim=1).values  # (B, k)
    real = x[:, NUM_CLS : NUM_CLS + num_real]  # (B, n, D)
    kept = real.gather(1, keep_idx.unsqueeze(-1).expand(-1, -1, real.shape[-1]))  # (B, k, D)
    fused = None
    if k < num_real:
        pruned = torch.ones_like(score, dtype=torch.bool).scatter_(1, keep_idx, False)  # (B, n)
        weight = (a_act * pruned).to(real.dtype)  # (B, n): a_act on pruned tokens, 0 on kept ones
        fused = torch.einsum("bn,bnd->bd", weight, real).unsqueeze(1)  # (B, 1, D)
    return PruneStep(keep_idx, kept, fused, score, a_act, a_priv)


@dataclass
class PrunerOutput:
    action_logits: torch.Tensor  # (B, num_classes)
    privacy_logits: torch.Tensor  # (B, num_privacy_classes), computed behind the gradient reversal layer
    kept_ids: torch.Tensor  # (B, k) ascending global tubelet ids t * Hp * Wp + h * Wp + w after the last stage
    tubelet_mask: torch.Tensor  # (B, T', Hp, Wp) bool, True = kept
    pooled: torch.Tensor  # (B, D) mean of the surviving tubelet tokens after the final norm
    action_feature: torch.Tensor  # (B, D) action CLS after the final norm
    privacy_feature: torch.Tensor  # (B, D) privacy CLS after the final norm
    tubelet_size: tuple[int, int, int]
    real_tokens: tuple[int, ...]  # tubelet tokens at the input, then after each pruning block
    seq_lens: tuple[int, ...]  # sequence length entering each block (CLS + tubelets + fused)
    # per pruning stage: (a_act (B, n), a_priv (B, n), the global ids (B, n) of the n tubelets it scored)
    stage_scores: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...] = ()

    def pixel_mask(self) -> torch.Tensor:
        """(B, 1, T, H, W) bool, True where the pixel belongs to a kept tubelet."""
        return tubelet_to_pixel_mask(self.tubelet_mask, self.tubelet_size)

    def masked_video(self, video: torch.Tensor) -> torch.Tensor:
        """The anonymised clip: pruned tubelets exactly +0 (where, not multiply: -x * 0 would give -0.0)."""
        mask = self.pixel_mask()
        if mask.shape[2:] != video.shape[2:]:
            raise ValueError(f"video {tuple(video.shape)} is not the clip this output was computed on")
        return torch.where(mask, video, torch.zeros((), dtype=video.dtype, device=video.device))


class TubeletPruner(VideoViT):
    """VideoViT with action + privacy CLS tokens that prunes tubelets at `prune_blocks` (1-indexed).

    keep_ratio (one float for every stage, or one per stage), lambda_priv and grl_coeff are plain attributes,
    and forward() accepts overrides, so a trained model can be swept without retraining.
    """

    def __init__(
        self,
        num_privacy_classes: int = 5,
        prune_blocks: Sequence[int] | None = None,
        keep_ratio: float | Sequence[float] = 0.9,
        lambda_priv: float = 0.5,
        grl_coeff: float = 1.0,
        **kwargs: Any,
    ):
        kwargs.setdefault("num_cls_tokens", NUM_CLS)
        if kwargs["num_cls_tokens"] != NUM_CLS or kwargs.setdefault("global_pool", "token") != "token":
            raise ValueError("TubeletPruner fixes num_cls_tokens=2 (action, privacy) and global_pool='token'")
        if kwargs.get("fc_norm"):
            raise ValueError("TubeletPruner norms every token (the pooled feature needs it); leave fc_norm=False")
        super().__init__(**kwargs)
        depth = len(self.blocks)
        self.prune_blocks = tuple(prune_blocks) if prune_blocks is not None else default_prune_blocks(depth)
        if any(not 1 <= b <= depth for b in self.prune_blocks) or len(set(self.prune_blocks)) != len(self.prune_blocks):
            raise ValueError(f"prune_blocks {self.prune_blocks} must be distinct 1-indexed blocks of {depth}")
        self.keep_ratios = self._keep_ratios(keep_ratio)
        self.lambda_priv = lambda_priv
        # Scoring reads only the two CLS rows of A. Computing just those (exactly equal: softmax is per row) keeps the
        # fused kernel in pruning blocks; the full explicit map costs ~3x the attention time on CPU for no change.
        self.cls_rows_only = True
        self.num_privacy_classes = num_privacy_classes
        self.grl = GradientReversalLayer(grl_coeff)
        self.privacy_head = nn.Linear(self.embed_dim, num_privacy_classes)
        nn.init.trunc_normal_(self.privacy_head.weight, std=0.02)
        nn.init.zeros_(self.privacy_head.bias)

    def _keep_ratios(self, keep_ratio: float | Sequence[float]) -> tuple[float, ...]:
        ratios = (keep_ratio,) * len(self.prune_blocks) if isinstance(keep_ratio, int | float) else tuple(keep_ratio)
        if len(ratios) != len(self.prune_blocks):
            raise ValueError(f"{len(ratios)} keep ratios for the {len(self.prune_blocks)} blocks {self.prune_blocks}")
        if any(not 0.0 < r <= 1.0 for r in ratios):
            raise ValueError(f"keep ratios must lie in (0, 1], got {ratios}")
        return tuple(float(r) for r in ratios)

    def forward_pruned(
        self,
        video: torch.Tensor,
        keep_ratio: float | Sequence[float] | None = None,
        lambda_priv: float | None = None,
        stage_scores: list | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...], tuple[int, ...]]:
        """-> normed tokens (B, 2 + k + f, D), kept ids (B, k), tubelet counts per stage, block input lengths.
        stage_scores: a list that receives (a_act, a_priv, scored ids) of every stage that prunes."""
        ratios = self.keep_ratios if keep_ratio is None else self._keep_ratios(keep_ratio)
        stage_ratio = dict(zip(self.prune_blocks, ratios, strict=True))
        lam = self.lambda_priv if lambda_priv is None else lambda_priv
        x = self.embed(video)  # (B, 2 + N, D)
        B, n = x.shape[0], self.patch_embed.num_patches
        ids = torch.arange(n, device=x.device).expand(B, n)  # (B, n) global tubelet id of each tubelet token
        real_tokens, seq_lens = [n], []
        for i, blk in enumerate(self.blocks, start=1):
            seq_lens.append(x.shape[1])
            if i not in stage_ratio:
                x = blk(x)
                continue
            if num_kept(n, stage_ratio[i]) == n:  # nothing to prune: the dense block, bit for bit
                x = blk(x)
                real_tokens.append(n)
                continue
            rows = NUM_CLS if self.cls_rows_only else None
            x, attn = blk.forward_attn(x, return_attn=True, attn_rows=rows)  # attn: (B, H, 2 or N, N)
            step = select_tubelets(attn, x, n, stage_ratio[i], lam)
            if stage_scores is not None:
                stage_scores.append((step.a_act, step.a_priv, ids))
            ids = ids.gather(1, step.keep_idx)  # (B, k)
            fused_before = x[:, NUM_CLS + n :]  # (B, f, D)
            x = torch.cat([x[:, :NUM_CLS], step.kept, fused_before, step.fused], dim=1)  # (B, 2 + k + f + 1, D)
            n = step.kept.shape[1]
            real_tokens.append(n)
            x = blk.forward_mlp(x)
        return self.norm(x), ids, tuple(real_tokens), tuple(seq_lens)

    def forward_features(self, video: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.forward_pruned(video, **kwargs)[0]

    def forward(
        self,
        video: torch.Tensor,
        keep_ratio: float | Sequence[float] | None = None,
        lambda_priv: float | None = None,
        grl_coeff: float | None = None,
    ) -> PrunerOutput:
        stages: list = []
        x, ids, real_tokens, seq_lens = self.forward_pruned(video, keep_ratio, lambda_priv, stages)
        coeff = self.grl.coeff if grl_coeff is None else grl_coeff
        action_feature, privacy_feature = x[:, 0], x[:, 1]  # (B, D) each
        privacy_logits = self.privacy_head(self.head_drop(grad_reverse(privacy_feature, coeff)))
        return PrunerOutput(
            action_logits=self.forward_head(x),
            privacy_logits=privacy_logits,
            kept_ids=ids,
            tubelet_mask=tubelet_mask_from_ids(ids, self.grid_size),
            pooled=x[:, NUM_CLS : NUM_CLS + ids.shape[1]].mean(dim=1),
            action_feature=action_feature,
            privacy_feature=privacy_feature,
            tubelet_size=self.patch_embed.tubelet,
            real_tokens=real_tokens,
            seq_lens=seq_lens,
            stage_scores=tuple(stages),
        )


def pruner_loss(
    out: PrunerOutput, action_labels: torch.Tensor, privacy_labels: torch.Tensor, privacy_weight: float = 1.0
) -> torch.Tensor:
    """CE(action) + privacy_weight * BCE-with-logits(privacy); the privacy logits already went through the GRL,
    so minimising this trains the privacy head to predict and the backbone to hide."""
    ce = F.cross_entropy(out.action_logits.float(), action_labels)
    bce = F.binary_cross_entropy_with_logits(out.privacy_logits.float(), privacy_labels.float())
    return ce + privacy_weight * bce


def tubelet_relevance(
    model: TubeletPruner, video: torch.Tensor, action_labels: torch.Tensor, privacy_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) action and privacy relevance of every tubelet, each row summing to 1, detached (a target).

    Relevance = |gradient x input| at the tubelet embedding, of the model's own log-likelihood of the true action
    (resp. the true attributes, through the privacy head at GRL coefficient 1), from one unpruned forward in eval
    mode: how much the prediction rests on that tubelet's own pixels. Attention alone is not that: from scratch the
    action CLS rows settle on a few tokens and rank the rest by noise, and a choice by them reads worse than a random
    one (docs/methods.md §1).
    """
    tokens: dict[str, torch.Tensor] = {}

    def grab(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        tokens["x"] = output  # (B, N, D) the tubelet embeddings, before position and CLS

    was_training = model.training
    handle = model.patch_embed.register_forward_hook(grab)
    try:
        model.eval()
        with torch.enable_grad():
            out = model(video, keep_ratio=1.0, grl_coeff=1.0)
            x = tokens["x"]
            act = out.action_logits.float().log_softmax(-1).gather(1, action_labels.view(-1, 1)).sum()
            z, y = out.privacy_logits.float(), privacy_labels.float()
            priv = (y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z)).sum()
            g_act = torch.autograd.grad([act], [x], retain_graph=True)[0]
            g_priv = torch.autograd.grad([priv], [x], allow_unused=True)[0]  # None with no attributes at all
            g_priv = torch.zeros_like(x) if g_priv is None else g_priv
    finally:
        handle.remove()
        model.train(was_training)
    rel = [(g.float() * x.detach().float()).sum(-1).abs() for g in (g_act, g_priv)]  # each (B, N)
    return tuple(r / r.sum(-1, keepdim=True).clamp_min(torch.finfo(r.dtype).tiny) for r in rel)  # type: ignore[return-value]


def relevance_loss(out: PrunerOutput, rel_act: torch.Tensor, rel_priv: torch.Tensor) -> torch.Tensor:
    """Mean over pruning stages and the two CLS tokens of KL(relevance || attention row) over the tubelets the stage
    scored: teaches a_act to point where the action is read and a_priv where the attributes are, so the paper's
    score s = a_act - lambda_priv * a_priv ranks tubelets by what they carry. (B, N) targets from tubelet_relevance."""
    eps = 1e-8
    terms = []
    for a_act, a_priv, ids in out.stage_scores:
        for a, rel in ((a_act, rel_act), (a_priv, rel_priv)):
            t = rel.gather(1, ids)  # (B, n) the relevance of the tubelets this stage scored
            t = t / t.sum(-1, keepdim=True).clamp_min(eps)
            terms.append((t * ((t + eps).log() - (a.float() + eps).log())).sum(-1).mean())
    return torch.stack(terms).mean() if terms else out.action_logits.new_zeros(())


def score_agreement(out: PrunerOutput) -> torch.Tensor | None:
    """(B,) Spearman rank correlation between a_act and a_priv over the tubelets each pruning stage scored, averaged
    over the stages; None when no stage pruned. Near 1, the privacy row ranks tubelets much as the action row does,
    and the score s = a_act - lambda_priv * a_priv is a_act scaled down plus the rows' differences; whether a larger
    lambda_priv then drops what identifies or what the action needs depends on where those differences point, which
    this number does not say: read it beside the lambda_priv sweep (docs/methods.md §4: 0.97-0.98 on both benchmark
    styles, and lambda_priv removed attributes on one of them only)."""
    if not out.stage_scores:
        return None

    def centred_ranks(a: torch.Tensor) -> torch.Tensor:
        r = a.float().argsort(-1).argsort(-1).float()  # (B, n) rank of each tubelet; ties in index order
        return r - r.mean(-1, keepdim=True)

    rho = []
    for a_act, a_priv, _ in out.stage_scores:
        x, y = centred_ranks(a_act), centred_ranks(a_priv)
        rho.append((x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)).clamp_min(1e-12))  # (B,)
    return torch.stack(rho).mean(0)


def pruner_tiny(**kwargs: Any) -> TubeletPruner:
    """ViT-Ti over 16 x 112 clips (8 x 7 x 7 tubelets), depth 6, pruning blocks (2, 3, 5): CPU tests."""
    return build_model(TubeletPruner, dict(img_size=112, num_frames=16, embed_dim=192, depth=6, num_heads=3), kwargs)


def pruner_small(**kwargs: Any) -> TubeletPruner:
    """ViT-S/16 over 16 x 224 clips, pruning blocks (3, 6, 9)."""
    return build_model(TubeletPruner, dict(img_size=224, num_frames=16, embed_dim=384, depth=12, num_heads=6), kwargs)


def pruner_base(**kwargs: Any) -> TubeletPruner:
    """ViT-B/16 over 16 x 224 clips (1568 tubelets), pruning blocks (3, 6, 9) at keep 0.9: the published model."""
    return build_model(TubeletPruner, dict(img_size=224, num_frames=16, embed_dim=768, depth=12, num_heads=12), kwargs)
