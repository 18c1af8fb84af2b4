"""TubeletPruner (arXiv 2603.26336): scoring, selection, fusion, token counts, masks, GRL, checkpoints, training."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from anon_core.models import (
    GradientReversal,
    GradientReversalLayer,
    TubeletPruner,
    VideoViT,
    dann_coefficient,
    load_pretrained,
    pruner_base,
    pruner_loss,
    pruner_small,
    pruner_tiny,
    video_vit_tiny,
)
from anon_core.models.pruner import (
    default_prune_blocks,
    num_kept,
    relevance_loss,
    score_agreement,
    select_tubelets,
    tubelet_mask_from_ids,
    tubelet_relevance,
    tubelet_to_pixel_mask,
)

SMALL_INPUT = dict(img_size=32, num_frames=4, patch_size=8)  # 2 x 4 x 4 = 32 tubelets: 32 -> 29 -> 27 -> 25


def _labels(batch: int, num_classes: int, num_privacy: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    action = torch.randint(num_classes, (batch,), generator=g)
    return action, torch.randint(2, (batch, num_privacy), generator=g).float()


@pytest.mark.parametrize("builder", [pruner_tiny, pruner_small, pruner_base])
def test_builder_forward_backward_through_both_heads(builder):
    torch.manual_seed(0)
    model = builder(num_classes=5, num_privacy_classes=3, **SMALL_INPUT)
    video = torch.randn(2, 3, 4, 32, 32)
    out = model(video)
    assert out.real_tokens[-1] < 32, "tiny input must still prune, or the pruning path goes untested"
    assert torch.isfinite(out.action_logits).all() and torch.isfinite(out.privacy_logits).all()
    pruner_loss(out, *_labels(2, 5, 3)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad}"


def test_default_prune_blocks_scale_with_depth():
    assert default_prune_blocks(12) == (3, 6, 9)
    assert default_prune_blocks(6) == (2, 3, 5)
    assert pruner_tiny().prune_blocks == (2, 3, 5)


def test_keep_one_equals_the_dense_model():
    torch.manual_seed(0)
    pruner = pruner_tiny(num_classes=6, **SMALL_INPUT).eval()
    dense = VideoViT(num_classes=6, num_cls_tokens=2, embed_dim=192, depth=6, num_heads=3, **SMALL_INPUT).eval()
    missing, unexpected = dense.load_state_dict(pruner.state_dict(), strict=False)
    assert not missing and all(k.startswith("privacy_head") for k in unexpected)
    video = torch.randn(3, 3, 4, 32, 32)
    with torch.no_grad():
        out = pruner(video, keep_ratio=1.0)
        pruned = pruner(video)
    torch.testing.assert_close(out.action_logits, dense(video), atol=1e-5, rtol=1e-5)
    assert out.seq_lens == (2 + 32,) * 6 and out.kept_ids.shape == (3, 32) and out.tubelet_mask.all()
    assert (pruned.action_logits - out.action_logits).abs().max() > 1e-4, "default keep must differ from dense"


def test_cls_rows_only_scoring_equals_full_attention_maps():
    torch.manual_seed(0)
    model = pruner_tiny(keep_ratio=0.6, **SMALL_INPUT).eval()
    video = torch.randn(3, 3, 4, 32, 32)
    with torch.no_grad():
        rows_only = model(video)
        model.cls_rows_only = False
        full = model(video)
    assert torch.equal(rows_only.kept_ids, full.kept_ids)
    torch.testing.assert_close(rows_only.action_logits, full.action_logits, atol=1e-5, rtol=1e-5)


def test_token_counts_per_stage_for_vit_b_grid():
    model = pruner_base(embed_dim=32, num_heads=2, num_classes=3).eval()  # ViT-B token grid, cheap width
    expected = [1568]
    for _ in range(3):
        expected.append(math.ceil(0.9 * expected[-1]))
    assert expected == [1568, 1412, 1271, 1144]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 224, 224))
    assert list(out.real_tokens) == expected
    # blocks 1-3 see everything; each pruning stage shortens the next blocks and appends one fused token
    assert out.seq_lens == (1570,) * 3 + (2 + 1412 + 1,) * 3 + (2 + 1271 + 2,) * 3 + (2 + 1144 + 3,) * 3
    assert out.kept_ids.shape == (2, 1144) and (out.kept_ids.diff(dim=1) > 0).all()
    assert out.tubelet_mask.shape == (2, 8, 14, 14) and out.tubelet_mask.sum((1, 2, 3)).tolist() == [1144, 1144]
    assert model.forward_features(torch.randn(1, 3, 16, 224, 224)).shape == (1, 2 + 1144 + 3, 32)


@pytest.mark.slow
def test_published_vit_b_forward():
    torch.manual_seed(0)
    model = pruner_base(num_classes=51, num_privacy_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 16, 224, 224))
    assert out.real_tokens == (1568, 1412, 1271, 1144)
    assert torch.isfinite(out.action_logits).all() and out.pooled.shape == (1, 768)
    assert 1 - 1144 / 1568 == pytest.approx(0.27, abs=0.01)  # "about 27% of tubelets removed"


# --- the pure scoring / selection step on a hand-made attention map ------------------------------------------


def _hand_attention() -> torch.Tensor:
    """(1, 2, 8, 8): keys [act CLS, priv CLS, 5 tubelets, 1 earlier fused token].

    Head-mean and renormalised over the tubelets only (not CLS, not the fused key):
    a_act = [0.1, 0.3, 0.2, 0.25, 0.15], a_priv = [0.05, 0.5, 0.1, 0.1, 0.25].
    """
    A = torch.full((1, 2, 8, 8), 1 / 8)
    p, q = torch.tensor([0.2, 0.5, 0.1, 0.1, 0.1]), torch.tensor([0.0, 0.1, 0.3, 0.4, 0.2])  # (p + q) / 2 = a_act
    A[0, 0, 0] = torch.cat([torch.tensor([0.2, 0.1]), 0.6 * p, torch.tensor([0.1])])
    A[0, 1, 0] = torch.cat([torch.tensor([0.3, 0.0]), 0.6 * q, torch.tensor([0.1])])
    p, q = torch.tensor([0.1, 0.6, 0.1, 0.1, 0.1]), torch.tensor([0.0, 0.4, 0.1, 0.1, 0.4])  # (p + q) / 2 = a_priv
    A[0, 0, 1] = torch.cat([torch.tensor([0.1, 0.1]), 0.5 * p, torch.tensor([0.3])])
    A[0, 1, 1] = torch.cat([torch.tensor([0.2, 0.2]), 0.5 * q, torch.tensor([0.1])])
    return A


def test_selection_matches_hand_computation():
    A, x = _hand_attention(), torch.randn(1, 8, 4)
    step = select_tubelets(A, x, num_real=5, keep_ratio=0.6, lambda_priv=0.5)
    # s = a_act - 0.5 a_priv = [0.075, 0.05, 0.15, 0.2, 0.025]; keep ceil(0.6 * 5) = 3 -> tubelets 0, 2, 3.
    # Tubelet 1 draws the most action attention but even more privacy attention, so it goes.
    torch.testing.assert_close(step.score, torch.tensor([[0.075, 0.05, 0.15, 0.2, 0.025]]))
    assert step.keep_idx.tolist() == [[0, 2, 3]]
    torch.testing.assert_close(step.kept, x[:, [2, 4, 5]])
    torch.testing.assert_close(step.fused, (0.3 * x[:, 3] + 0.15 * x[:, 6]).unsqueeze(1))  # a_act-weighted pruned


def test_selection_without_privacy_term_keeps_top_action_attention():
    A, x = _hand_attention(), torch.randn(1, 8, 4)
    step = select_tubelets(A, x, num_real=5, keep_ratio=0.6, lambda_priv=0.0)
    assert step.keep_idx.tolist() == [[1, 2, 3]]
    torch.testing.assert_close(step.fused, (0.1 * x[:, 2] + 0.15 * x[:, 6]).unsqueeze(1))


def test_nothing_pruned_adds_no_fused_token():
    step = select_tubelets(_hand_attention(), torch.randn(1, 8, 4), num_real=5, keep_ratio=0.9, lambda_priv=0.5)
    assert step.keep_idx.tolist() == [[0, 1, 2, 3, 4]] and step.fused is None  # ceil(4.5) = 5


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 40), keep=st.floats(0.05, 1.0), lam=st.floats(0.0, 2.0), seed=st.integers(0, 2**16))
def test_selection_keeps_the_highest_scores(n, keep, lam, seed):
    g = torch.Generator().manual_seed(seed)
    N = 2 + n + 1
    A = torch.randn(3, 2, N, N, generator=g).softmax(-1)
    x = torch.randn(3, N, 5, generator=g)
    step = select_tubelets(A, x, n, keep, lam)
    k = num_kept(n, keep)
    assert step.keep_idx.shape == (3, k) and (step.keep_idx.diff(dim=1) > 0).all()
    pruned = torch.ones(3, n, dtype=torch.bool).scatter_(1, step.keep_idx, False)
    if k < n:
        kept_min = step.score.gather(1, step.keep_idx).min(1).values
        pruned_max = step.score.masked_fill(~pruned, -torch.inf).max(1).values
        assert (kept_min >= pruned_max).all()
        expected = torch.einsum("bn,bnd->bd", step.a_act * pruned, x[:, 2 : 2 + n])
        torch.testing.assert_close(step.fused[:, 0], expected)
    torch.testing.assert_close(step.a_act.sum(1), torch.ones(3))


# --- masks --------------------------------------------------------------------------------------------------


def test_tubelet_mask_from_ids_uses_the_raster_id():
    mask = tubelet_mask_from_ids(torch.tensor([[0, 2 * 12 + 1 * 4 + 3]]), (3, 3, 4))
    assert mask.sum() == 2 and mask[0, 0, 0, 0] and mask[0, 2, 1, 3]


def test_pixel_mask_is_constant_per_tubelet_and_masking_is_exact():
    torch.manual_seed(0)
    model = pruner_tiny(keep_ratio=0.5, **SMALL_INPUT).eval()
    video = torch.randn(2, 3, 4, 32, 32)  # negative values too: x * 0 would leave -0.0
    with torch.no_grad():
        out = model(video)
    pix = out.pixel_mask()
    assert pix.shape == (2, 1, 4, 32, 32) and pix.dtype == torch.bool
    blocks = pix.reshape(2, 2, 2, 4, 8, 4, 8)  # (B, T', t, Hp, p, Wp, p)
    assert (blocks == out.tubelet_mask[:, :, None, :, None, :, None]).all(), "mask must be constant per tubelet"
    masked = out.masked_video(video)
    keep = pix.expand_as(video)
    assert torch.equal(masked[keep], video[keep])  # bitwise
    assert (masked[~keep] == 0).all() and not torch.signbit(masked[~keep]).any()
    assert (~keep).any() and out.tubelet_mask.sum((1, 2, 3)).tolist() == [out.kept_ids.shape[1]] * 2


def test_pixel_mask_upsampling_by_hand():
    mask = torch.tensor([[[[True, False]]]])  # (1, T'=1, Hp=1, Wp=2)
    pix = tubelet_to_pixel_mask(mask, (2, 3, 3))
    assert pix.shape == (1, 1, 2, 3, 6) and pix[..., :3].all() and not pix[..., 3:].any()


def test_inference_knobs_change_without_retraining():
    torch.manual_seed(0)
    model = pruner_tiny(**SMALL_INPUT).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        half = model(video, keep_ratio=(1.0, 0.5, 0.5))
        no_priv = model(video, keep_ratio=0.5, lambda_priv=0.0)
        strong_priv = model(video, keep_ratio=0.5, lambda_priv=5.0)
    assert half.real_tokens == (32, 32, 16, 8) and model.keep_ratios == (0.9, 0.9, 0.9)
    assert not torch.equal(no_priv.kept_ids, strong_priv.kept_ids)
    with pytest.raises(ValueError, match="keep ratios"):
        model(video, keep_ratio=(0.5, 0.5))


def test_bf16_autocast_runs():
    model = pruner_tiny(**SMALL_INPUT).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 4, 32, 32))
    assert torch.isfinite(out.action_logits.float()).all() and out.real_tokens == (32, 29, 27, 25)


# --- gradient reversal --------------------------------------------------------------------------------------


def test_gradient_reversal_forward_identity_backward_negated():
    x = torch.randn(4, 3, requires_grad=True)
    y = GradientReversal.apply(x, 0.7)
    assert torch.equal(y, x)
    g = torch.randn(4, 3)
    y.backward(g)
    torch.testing.assert_close(x.grad, -0.7 * g)
    x.grad = None
    GradientReversalLayer(2.0)(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((4, 3), -2.0))


def test_dann_schedule():
    assert dann_coefficient(0.0) == 0.0
    assert dann_coefficient(1.0) == pytest.approx(0.99991, abs=1e-5)
    values = [dann_coefficient(i / 50) for i in range(51)]
    assert all(b > a for a, b in zip(values, values[1:], strict=False))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dann_coefficient(1.5)


def test_privacy_gradient_reaches_the_backbone_reversed():
    torch.manual_seed(0)
    model = pruner_tiny(num_privacy_classes=3, **SMALL_INPUT)
    video, (_, priv) = torch.randn(2, 3, 4, 32, 32), _labels(2, 2, 3)

    def grads(coeff):
        model.zero_grad()
        out = model(video, grl_coeff=coeff)
        torch.nn.functional.binary_cross_entropy_with_logits(out.privacy_logits, priv).backward()
        return model.blocks[0].mlp.fc1.weight.grad.clone(), model.privacy_head.weight.grad.clone()

    (bb_pos, head_pos), (bb_neg, head_neg) = grads(0.5), grads(-0.5)
    torch.testing.assert_close(bb_pos, -bb_neg)  # backbone: sign follows the reversal
    torch.testing.assert_close(head_pos, head_neg)  # head: plain descent either way
    assert bb_pos.abs().sum() > 0


# --- checkpoints --------------------------------------------------------------------------------------------


def test_encoder_checkpoint_loads_into_both_cls_slots(tmp_path):
    torch.manual_seed(0)
    encoder = video_vit_tiny(num_classes=4, **SMALL_INPUT)
    torch.nn.init.normal_(encoder.cls_token)
    path = tmp_path / "encoder.safetensors"
    save_file(encoder.state_dict(), str(path))
    pruner = load_pretrained(pruner_tiny(num_classes=4, **SMALL_INPUT), str(path))
    assert torch.equal(pruner.cls_token[0, 0], encoder.cls_token[0, 0])
    assert torch.equal(pruner.cls_token[0, 1], encoder.cls_token[0, 0])
    assert torch.equal(pruner.pos_embed[:, 1], encoder.pos_embed[:, 0])
    assert torch.equal(pruner.pos_embed[:, 2:], encoder.pos_embed[:, 1:])
    assert torch.equal(pruner.head.weight, encoder.head.weight)


def test_pruner_rejects_a_plain_layout():
    with pytest.raises(ValueError, match="num_cls_tokens=2"):
        TubeletPruner(num_cls_tokens=1, **SMALL_INPUT)


# --- a tiny pruner learns ------------------------------------------------------------------------------------


def moving_square_clips(n: int, seed: int, frames: int = 8, size: int = 32):
    """Action = direction of a bright square sweeping across the clip (0 right, 1 left); privacy = two static
    background tints (red, blue), independent of the action."""
    g = torch.Generator().manual_seed(seed)
    action = torch.randint(2, (n,), generator=g)
    privacy = torch.randint(2, (n, 2), generator=g).float()
    video = torch.full((n, 3, frames, size, size), -0.5)
    video[:, 0] += privacy[:, 0, None, None, None]
    video[:, 2] += privacy[:, 1, None, None, None]
    side, speed = 8, 3
    travel = speed * (frames - 1)
    start = torch.randint(0, size - side - travel + 1, (n,), generator=g)
    row = torch.randint(0, size - side + 1, (n,), generator=g)
    for i in range(n):
        for t in range(frames):
            x = int(start[i]) + (speed * t if action[i] == 0 else travel - speed * t)
            video[i, :, t, row[i] : row[i] + side, x : x + side] = 2.0
    return video, action, privacy


def test_tiny_pruner_loss_falls():
    torch.manual_seed(0)
    cfg = dict(img_size=32, num_frames=8, patch_size=8, embed_dim=64, depth=4, num_heads=4)
    model = pruner_tiny(num_classes=2, num_privacy_classes=2, **cfg)
    assert model.prune_blocks == (1, 2, 3)
    video, action, privacy = moving_square_clips(64, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    steps, losses, action_losses = 100, [], []
    for step in range(steps):
        idx = (torch.arange(16) + 16 * step) % 64
        out = model(video[idx], grl_coeff=dann_coefficient(step / (steps - 1)))
        loss = pruner_loss(out, action[idx], privacy[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        action_losses.append(torch.nn.functional.cross_entropy(out.action_logits, action[idx]).item())
    assert out.real_tokens == (64, 58, 53, 48)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.3, f"loss did not fall: first 5 {first:.3f}, last 5 {last:.3f}"
    first, last = sum(action_losses[:5]) / 5, sum(action_losses[-5:]) / 5
    assert last < first - 0.3, f"action loss did not fall: first 5 {first:.3f}, last 5 {last:.3f}"


def test_tubelet_relevance_is_a_detached_distribution_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = pruner_tiny(num_classes=2, num_privacy_classes=2, img_size=32, num_frames=8, patch_size=8, embed_dim=32,
                        depth=2, num_heads=2)  # fmt: skip
    video, action, privacy = moving_square_clips(4, seed=1)
    model.train()
    rel_act, rel_priv = tubelet_relevance(model, video, action, privacy)
    assert rel_act.shape == rel_priv.shape == (4, 64)
    assert not rel_act.requires_grad and not rel_priv.requires_grad
    torch.testing.assert_close(rel_act.sum(-1), torch.ones(4))
    assert (rel_act >= 0).all() and model.training
    assert all(p.grad is None for p in model.parameters()), "the relevance pass must not touch parameter gradients"


def test_score_agreement_is_the_rank_correlation_of_the_two_cls_rows():
    """1 where the privacy row ranks the tubelets as the action row does, -1 where it reverses them, near 0 for
    unrelated rows, averaged over the stages; None when nothing was pruned."""
    from dataclasses import replace

    torch.manual_seed(0)
    model = pruner_tiny(num_classes=2, num_privacy_classes=2, **SMALL_INPUT).eval()
    out = model(torch.randn(3, 3, 4, 32, 32))
    rho = score_agreement(out)
    assert rho.shape == (3,) and ((rho >= -1) & (rho <= 1)).all()
    a = torch.rand(3, 32)
    ids = torch.arange(32).expand(3, 32)
    assert torch.allclose(score_agreement(replace(out, stage_scores=((a, 2 * a + 1, ids),))), torch.ones(3))
    assert torch.allclose(score_agreement(replace(out, stage_scores=((a, -a, ids),))), -torch.ones(3))
    both = replace(out, stage_scores=((a, a, ids), (a, -a, ids)))
    assert torch.allclose(score_agreement(both), torch.zeros(3), atol=1e-6)  # the mean over stages
    unrelated = replace(out, stage_scores=((torch.rand(400, 64), torch.rand(400, 64), ids[:1].expand(400, 32)),))
    assert abs(score_agreement(unrelated).mean().item()) < 0.05
    assert score_agreement(model(torch.randn(1, 3, 4, 32, 32), keep_ratio=1.0)) is None


def test_relevance_loss_is_zero_where_attention_equals_relevance():
    model = pruner_tiny(num_classes=2, num_privacy_classes=2, prune_blocks=[2], **SMALL_INPUT)
    out = model(torch.randn(2, 3, 4, 32, 32))
    (a_act, a_priv, ids), = out.stage_scores  # the one stage scores all 32 tubelets, in raster order
    assert torch.equal(ids, torch.arange(32).expand(2, 32))
    assert relevance_loss(out, a_act.detach(), a_priv.detach()).item() == pytest.approx(0.0, abs=1e-4)
    uniform = torch.full((2, 32), 1 / 32)
    loss = relevance_loss(out, uniform, uniform)
    loss.backward()
    assert loss > 0 and model.cls_token.grad is not None and model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def _square_tubelets(video: torch.Tensor, tubelet: tuple[int, int, int]) -> torch.Tensor:
    """(B, N) float: the share of each tubelet's pixels that moving_square_clips drew its square in (value 2.0)."""
    t, p, _ = tubelet
    B, _, T, H, W = video.shape
    hit = (video[:, 1] == 2.0).float().reshape(B, T // t, t, H // p, p, W // p, p).mean(dim=(2, 4, 6))
    return hit.reshape(B, -1)  # (B, T' * Hp * Wp) in raster order


def test_relevance_loss_moves_both_attention_rows_to_the_map_it_is_given():
    # The loss's mechanism, on a fixed target: the square's tubelets for both CLS tokens. Trained with it, most of
    # the stage-1 attention mass sits on the square (a fraction of the tubelets); trained without it, far less.
    def attention_on_square(weight: float) -> tuple[float, float, float]:
        torch.manual_seed(0)
        model = pruner_tiny(num_classes=2, num_privacy_classes=2, img_size=32, num_frames=8, patch_size=8,
                            embed_dim=32, depth=3, num_heads=2)  # fmt: skip
        video, action, privacy = moving_square_clips(96, seed=0)
        square = _square_tubelets(video, model.patch_embed.tubelet)
        target = square / square.sum(-1, keepdim=True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        for step in range(60):
            idx = (torch.arange(16) + 16 * step) % 64
            out = model(video[idx])
            loss = pruner_loss(out, action[idx], privacy[idx])
            loss = loss + weight * relevance_loss(out, target[idx], target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            a_act, a_priv, ids = model.eval()(video[64:]).stage_scores[0]  # stage 1: every tubelet, raster order
        on = square[64:].gather(1, ids) > 0
        return float((a_act * on).sum(-1).mean()), float((a_priv * on).sum(-1).mean()), float(on.float().mean())

    act, priv, share = attention_on_square(1.0)
    act0, priv0, _ = attention_on_square(0.0)
    assert act > 0.7 and priv > 0.7 and share < 0.35, (act, priv, share)
    assert act > act0 + 0.15 and priv > priv0 + 0.15, (act, act0, priv, priv0)
