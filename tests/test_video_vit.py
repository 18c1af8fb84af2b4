"""VideoViT: builders, token layout, attention paths, and checkpoint import (timm inflation, VideoMAE, URIs)."""

from __future__ import annotations

import fsspec
import pytest
import timm
import torch
from safetensors.torch import save, save_file

from anon_core.models import VideoViT, load_pretrained, video_vit_base, video_vit_small, video_vit_tiny
from anon_core.models.video_vit import (
    Attention,
    checkpoint_filter_fn,
    resample_video_pos_embed,
    sinusoid_pos_embed,
)

TINY_INPUT = dict(img_size=32, num_frames=4, patch_size=16)  # 2 x 2 x 2 tubelets


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter non-trivial, so a copy that drops or zeroes something shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.mark.parametrize(
    "builder, pool",
    [(video_vit_tiny, "token"), (video_vit_tiny, "avg"), (video_vit_small, "avg"), (video_vit_base, "token")],
)
def test_builder_forward_backward(builder, pool):
    torch.manual_seed(0)
    model = builder(num_classes=5, global_pool=pool, **TINY_INPUT)
    video = torch.randn(2, 3, 4, 32, 32)
    tokens = model.forward_features(video)
    assert tokens.shape == (2, 1 + 8, model.embed_dim)
    logits = model.forward_head(tokens)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad}"


def test_builder_shapes_at_published_size():
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = video_vit_base(num_classes=0)
    assert model.grid_size == (8, 14, 14) and model.patch_embed.num_patches == 1568
    assert model.pos_embed.shape == (1, 1569, 768)
    assert model.head_drop is not None and isinstance(model.head, torch.nn.Identity)


def test_video_of_wrong_size_is_rejected_with_the_fix():
    model = video_vit_tiny(**TINY_INPUT)
    with pytest.raises(ValueError, match="num_frames="):
        model(torch.randn(1, 3, 6, 32, 32))


def test_token_order_is_the_global_tubelet_id():
    model = VideoViT(img_size=32, num_frames=4, patch_size=8, tubelet_size=2, embed_dim=16, depth=1, num_heads=2)
    torch.nn.init.zeros_(model.patch_embed.proj.bias)
    T, Hp, Wp = model.grid_size  # (2, 4, 4)
    t, h, w = 1, 2, 3
    video = torch.zeros(1, 3, 4, 32, 32)
    video[:, :, 2 * t : 2 * t + 2, 8 * h : 8 * h + 8, 8 * w : 8 * w + 8] = 1.0  # light exactly one tubelet
    tokens = model.patch_embed(video)[0]  # (N, D)
    assert tokens.abs().sum(-1).nonzero().flatten().tolist() == [t * Hp * Wp + h * Wp + w]


def test_explicit_attention_matches_fused_kernel():
    torch.manual_seed(0)
    attn = Attention(32, 4).eval()
    x = torch.randn(2, 11, 32)
    fused, none = attn(x)
    explicit, a = attn(x, return_attn=True)
    assert none is None and a.shape == (2, 4, 11, 11)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 11))
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)
    rows_out, rows = attn(x, return_attn=True, attn_rows=2)
    assert rows.shape == (2, 4, 2, 11)
    torch.testing.assert_close(rows, a[:, :, :2], atol=1e-6, rtol=1e-6)
    assert torch.equal(rows_out, fused)  # the output still comes from the fused kernel


# --- timm image ViT inflation ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_vit_file(tmp_path_factory):
    torch.manual_seed(0)
    vit = _randomise(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=7)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    return vit, path


def _video_like(num_frames: int, num_cls: int = 1, **kw) -> VideoViT:
    cfg = dict(img_size=64, num_frames=num_frames, tubelet_size=2, patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return VideoViT(**{**cfg, "num_classes": 7, "num_cls_tokens": num_cls, **kw}).eval()


@pytest.mark.parametrize("num_cls", [1, 2])
def test_inflated_static_clip_embeds_like_the_image(image_vit_file, num_cls):
    vit, path = image_vit_file
    video_model = load_pretrained(_video_like(8, num_cls), str(path))
    frame = torch.randn(2, 3, 64, 64)
    clip = frame.unsqueeze(2).expand(-1, -1, 8, -1, -1)  # static clip: the frame repeated T times
    with torch.no_grad():
        image_tokens = vit._pos_embed(vit.patch_embed(frame))  # (B, 1 + 16, D), image CLS first
        video_tokens = video_model.embed(clip)  # (B, num_cls + 4 * 16, D)
    T = video_model.grid_size[0]
    per_time = video_tokens[:, num_cls:].reshape(2, T, 16, -1)  # (B, T', Hp*Wp, D)
    for t in range(T):
        torch.testing.assert_close(per_time[:, t], image_tokens[:, 1:], atol=1e-5, rtol=1e-5)
    for c in range(num_cls):
        torch.testing.assert_close(video_tokens[:, c], image_tokens[:, 0], atol=1e-6, rtol=1e-6)


def test_inflated_single_time_step_reproduces_the_image_vit(image_vit_file):
    """With one tubelet in time (T = t), the whole video model must be the image ViT on a static clip."""
    vit, path = image_vit_file
    video_model = load_pretrained(_video_like(2), str(path))
    frame = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = vit(frame)
        got = video_model(frame.unsqueeze(2).expand(-1, -1, 2, -1, -1))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_inflation_to_another_grid_resamples_the_position_embedding(image_vit_file):
    _, path = image_vit_file
    model = load_pretrained(_video_like(4, img_size=96, num_classes=3), str(path))  # 4 x 4 -> 6 x 6, new head
    assert model.pos_embed.shape == (1, 1 + 2 * 36, 192)
    assert torch.isfinite(model(torch.randn(1, 3, 4, 96, 96))).all()


def test_position_resampling_is_identity_on_the_same_grid():
    pos = torch.randn(1, 2 * 4 * 4, 8)
    assert resample_video_pos_embed(pos, (2, 4, 4), (2, 4, 4)) is pos
    assert resample_video_pos_embed(pos, (2, 4, 4), (4, 6, 6)).shape == (1, 4 * 36, 8)


# --- VideoMAE format ---------------------------------------------------------------------------------------


def _videomae_state_dict(dim=32, depth=2, pretrain=True, fc_norm=False, num_classes=5):
    """Key names and shapes of a VideoMAE checkpoint: Conv3d patch kernel, q/v biases, no saved pos_embed."""
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {"patch_embed.proj.weight": r(dim, 3, 2, 16, 16), "patch_embed.proj.bias": r(dim)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": r(dim), b + "norm1.bias": r(dim), b + "attn.qkv.weight": r(3 * dim, dim)}
        sd |= {b + "attn.q_bias": r(dim), b + "attn.v_bias": r(dim), b + "attn.proj.weight": r(dim, dim)}
        sd |= {b + "attn.proj.bias": r(dim), b + "norm2.weight": r(dim), b + "norm2.bias": r(dim)}
        sd |= {b + "mlp.fc1.weight": r(4 * dim, dim), b + "mlp.fc1.bias": r(4 * dim)}
        sd |= {b + "mlp.fc2.weight": r(dim, 4 * dim), b + "mlp.fc2.bias": r(dim)}
    norm = "fc_norm." if fc_norm else "norm."
    sd |= {norm + "weight": r(dim), norm + "bias": r(dim)}
    if pretrain:
        sd = {"encoder." + k: v for k, v in sd.items()}
        sd |= {"decoder.blocks.0.norm1.weight": r(dim), "encoder_to_decoder.weight": r(dim, dim)}
        sd |= {"mask_token": r(1, 1, dim)}
    else:
        sd |= {"head.weight": r(num_classes, dim), "head.bias": r(num_classes)}
    return sd


def _mae_model(**kw) -> VideoViT:
    cfg = dict(img_size=32, num_frames=4, embed_dim=32, depth=2, num_heads=4, num_classes=5)
    return VideoViT(**{**cfg, **kw})


def test_videomae_pretrain_import():
    src = _videomae_state_dict(pretrain=True)
    model = _mae_model(num_cls_tokens=0, global_pool="avg", num_classes=0)
    model.load_state_dict(checkpoint_filter_fn(src, model))
    q, v = src["encoder.blocks.1.attn.q_bias"], src["encoder.blocks.1.attn.v_bias"]
    torch.testing.assert_close(model.blocks[1].attn.qkv.bias, torch.cat([q, torch.zeros(32), v]), rtol=0, atol=0)
    torch.testing.assert_close(model.pos_embed, sinusoid_pos_embed(8, 32), rtol=0, atol=0)
    torch.testing.assert_close(model.patch_embed.proj.weight, src["encoder.patch_embed.proj.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.norm.weight, src["encoder.norm.weight"], rtol=0, atol=0)


def test_sinusoid_table_values():
    table = sinusoid_pos_embed(5, 6)[0]
    assert table[3, 0] == pytest.approx(torch.sin(torch.tensor(3.0)).item())
    assert table[3, 1] == pytest.approx(torch.cos(torch.tensor(3.0)).item())
    assert table[3, 2] == pytest.approx(torch.sin(torch.tensor(3.0 / 10000 ** (2 / 6))).item())


@pytest.mark.parametrize("model_fc_norm", [True, False])
def test_videomae_finetune_import(model_fc_norm):
    src = _videomae_state_dict(pretrain=False, fc_norm=True)
    model = _mae_model(num_cls_tokens=0, global_pool="avg", fc_norm=model_fc_norm)
    model.load_state_dict(checkpoint_filter_fn(src, model))
    norm = model.fc_norm if model_fc_norm else model.norm  # without fc_norm the per-token norm takes its weights
    torch.testing.assert_close(norm.weight, src["fc_norm.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.head.weight, src["head.weight"], rtol=0, atol=0)


def test_videomae_into_a_model_with_cls_keeps_its_own_cls():
    model = _mae_model(num_cls_tokens=1)
    cls_before = model.cls_token.detach().clone()
    model.load_state_dict(checkpoint_filter_fn(_videomae_state_dict(), model))
    assert torch.equal(model.cls_token, cls_before)
    assert torch.equal(model.pos_embed[:, 1:], sinusoid_pos_embed(8, 32))


# --- files, URIs, errors -----------------------------------------------------------------------------------


def _encoder_state(**kw) -> dict[str, torch.Tensor]:
    return _randomise(_mae_model(**kw)).state_dict()


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "pth_wrapped"])
@pytest.mark.parametrize("where", ["local", "memory"])
def test_load_pretrained_formats_and_uris(tmp_path, fmt, where):
    src = _encoder_state()
    blob_path = f"{tmp_path}/ckpt.{fmt.split('_')[0]}" if where == "local" else f"memory://ckpts/{fmt}.bin"
    with fsspec.open(blob_path, "wb") as f:
        if fmt == "safetensors":
            f.write(save(src))
        else:
            torch.save({"model": src, "epoch": 3} if fmt == "pth_wrapped" else src, f)
    model = load_pretrained(_mae_model(), blob_path)
    for k, v in src.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_builder_checkpoint_argument_loads_weights(tmp_path):
    src = _randomise(video_vit_tiny(num_classes=5, **TINY_INPUT)).state_dict()
    path = tmp_path / "tiny.safetensors"
    save_file(src, str(path))
    model = video_vit_tiny(num_classes=5, checkpoint=str(path), **TINY_INPUT)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in src.items())


def test_shape_mismatch_names_the_keys_and_the_fix(tmp_path):
    path = tmp_path / "wide.safetensors"
    save_file(_encoder_state(), str(path))
    narrow = VideoViT(img_size=32, num_frames=4, embed_dim=16, depth=2, num_heads=4, num_classes=5)
    with pytest.raises(ValueError, match=r"(?s)shape mismatch.*blocks\.0\.attn\.qkv\.weight.*embed_dim"):
        load_pretrained(narrow, str(path))


def test_missing_blocks_are_listed(tmp_path):
    path = tmp_path / "shallow.safetensors"
    save_file(_encoder_state(), str(path))
    deeper = _mae_model(depth=3)
    with pytest.raises(ValueError, match=r"missing \[.*'blocks\.2\.attn\.proj\.bias'"):
        load_pretrained(deeper, str(path))


def test_not_a_state_dict_is_rejected(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="not a state dict"):
        load_pretrained(_mae_model(), str(path))


# --- our copies of timm's layers -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("old", "new"), [((14, 14), (4, 4)), ((4, 4), (14, 14)), ((7, 7), (5, 9))])
def test_pos_embed_resampling_matches_timm(old, new):
    from timm.layers import resample_abs_pos_embed as timm_resample

    from anon_core.models.layers import resample_abs_pos_embed

    pos = torch.randn(1, 1 + old[0] * old[1], 24)
    ours = resample_abs_pos_embed(pos, list(new), list(old), num_prefix_tokens=1)
    torch.testing.assert_close(ours, timm_resample(pos, list(new), list(old), num_prefix_tokens=1))


def test_mlp_has_timms_keys_and_output():
    from timm.layers import Mlp as TimmMlp

    from anon_core.models.layers import Mlp

    ours, theirs = Mlp(16, 40).eval(), TimmMlp(16, 40).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(ours(x), theirs(x))


def test_loading_a_model_does_not_import_timm_or_torchvision():
    """Every Ray actor is a new process: timm's import (torchvision, torch._dynamo) would add ~1.5 CPU-s to each."""
    import subprocess
    import sys

    code = ("import sys; from anon_core.models import video_vit_tiny, pruner_tiny; video_vit_tiny(), pruner_tiny(); "
            "import pipelines.stages as s; s.PruneClips, s.EncodeClips, s.ApplyAam; "
            "print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_motion_input_ignores_what_stands_still_and_rides_in_the_bundle(tmp_path):
    """With motion_input the model sees only what changes over the clip: a clip plus any static image (a new
    background, another person's still look) gives the same output; without it, it does not."""
    from anon_core.models.bundle import load_bundle, save_bundle

    torch.manual_seed(0)
    model = video_vit_tiny(num_classes=4, depth=2, motion_input=True).eval()
    plain = video_vit_tiny(num_classes=4, depth=2).eval()
    x = torch.randn(2, 3, 16, 112, 112)
    still = torch.randn(2, 3, 1, 112, 112)  # the same image added to every frame
    with torch.no_grad():
        assert torch.allclose(model(x), model(x + still), atol=1e-4)
        assert not torch.allclose(plain(x), plain(x + still), atol=1e-2)
    save_bundle(model, str(tmp_path / "b"), "video_vit_tiny", {"num_classes": 4, "depth": 2, "motion_input": True},
                trained=False)  # fmt: skip
    loaded, _ = load_bundle(str(tmp_path / "b"))
    with torch.no_grad():
        assert loaded.motion_input and torch.allclose(loaded(x), model(x), atol=1e-5)


def test_conv_stem_keeps_the_tubelet_grid_and_loads_back_from_its_bundle(tmp_path):
    """stem='conv': the same (T', Hp, Wp) grid and raster token order as the linear stem (pruning masks keep their
    meaning), a tubelet's token sees its own pixels and a small margin around them, never another time step, and
    the bundle (with BatchNorm buffers) rebuilds the same model."""
    from anon_core.models.bundle import load_bundle, save_bundle
    from anon_core.models.pruner import pruner_tiny

    torch.manual_seed(0)
    kwargs = {"num_classes": 4, "depth": 2, "img_size": 64, "stem": "conv", "global_pool": "avg", "fc_norm": True}
    model = video_vit_tiny(**kwargs).eval()
    x = torch.randn(1, 3, 16, 64, 64)
    assert model.grid_size == video_vit_tiny(num_classes=4, img_size=64).grid_size == (8, 4, 4)
    y = x.clone()
    y[:, :, 4:6, 16:32, 32:48] += 1.0  # pixels of tubelet (t=2, h=1, w=2) only
    with torch.no_grad():
        changed = (model.patch_embed(x) - model.patch_embed(y)).abs().amax(-1)[0] > 1e-6  # (N,)
    # a 3x3 conv reaches one pixel into the neighbours; the changed tokens all lie in time step 2, around (1, 2)
    ids = changed.nonzero().flatten().tolist()
    assert 2 * 16 + 1 * 4 + 2 in ids and all(i // 16 == 2 for i in ids)
    save_bundle(model, str(tmp_path / "b"), "video_vit_tiny", kwargs, trained=False)
    loaded, info = load_bundle(str(tmp_path / "b"))
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert info.input["size"] == 64
    out = pruner_tiny(num_classes=4, num_privacy_classes=2, depth=3, stem="conv")(torch.randn(2, 3, 16, 112, 112))
    assert out.tubelet_mask.shape == (2, 8, 7, 7)
    with pytest.raises(ValueError, match="power-of-two patch_size"):
        video_vit_tiny(num_classes=4, img_size=96, patch_size=12, stem="conv")


@pytest.mark.parametrize("stem, motion", [("linear", False), ("conv", True)])
def test_kept_ids_read_only_the_kept_tubelets(stem, motion):
    """kept_ids: every id kept reads like the whole clip; otherwise the output does not depend on the removed
    tubelets' pixels at all (not through the conv stem's margin, not through the motion input's temporal mean),
    and it does depend on the kept ones."""
    from pipelines.train.loop import random_kept_ids

    torch.manual_seed(0)
    kwargs = {"num_classes": 4, "depth": 2, "img_size": 64, "stem": stem, "motion_input": motion}
    model = video_vit_tiny(**kwargs, global_pool="avg", num_cls_tokens=0, fc_norm=True).eval()
    x = torch.randn(2, 3, 16, 64, 64)
    n = model.patch_embed.num_patches
    with torch.no_grad():
        assert torch.allclose(model(x, torch.arange(n).expand(2, n)), model(x), atol=1e-5)
        kept = random_kept_ids(2, n, 0.5, torch.Generator().manual_seed(1))
        assert kept is not None and kept.shape[0] == 2 and n // 2 <= kept.shape[1] <= n
        kept = torch.stack([torch.arange(0, n, 2), torch.arange(1, n, 2)])  # (2, n / 2): alternate tubelets
        removed = torch.ones(2, n, dtype=torch.bool).scatter_(1, kept, False)  # (2, N)
        from anon_core.models.video_vit import tubelet_mask_from_ids, tubelet_to_pixel_mask

        pix = tubelet_to_pixel_mask(removed.view(2, *model.grid_size), model.patch_embed.tubelet)  # (2, 1, T, H, W)
        y = torch.where(pix, torch.randn_like(x) * 5, x)  # only removed pixels change
        assert torch.allclose(model(y, kept), model(x, kept), atol=1e-5)
        keep_pix = tubelet_to_pixel_mask(tubelet_mask_from_ids(kept, model.grid_size), model.patch_embed.tubelet)
        z = torch.where(keep_pix, x + torch.randn_like(x), x)  # only kept pixels change
        assert not torch.allclose(model(z, kept), model(x, kept), atol=1e-3)
        assert model.forward_features(x, kept).shape == (2, n // 2, 192)
    with pytest.raises(ValueError, match="kept_ids must be"):
        model(x, kept[0])
    assert random_kept_ids(2, n, 0.0, torch.Generator()) is None
