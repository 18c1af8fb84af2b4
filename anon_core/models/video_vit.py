"""Video ViT over 3D tubelets: the encoder behind the tubelet pruner and the frozen feature encoders.

Tubelet embedding and image-ViT inflation after ViViT (arXiv 2103.15691), the transformer after ViT
(arXiv 2010.11929), checkpoint layout compatible with timm image ViTs and VideoMAE (arXiv 2203.12602).

    model = video_vit_base(num_classes=400)
    load_pretrained(model, "s3://bucket/vit_base_patch16_224.safetensors")  # image ViT, inflated on load
    tokens = model.forward_features(video)  # video: (B, C, T, H, W) normalised float -> (B, num_cls + N, D)

Token order is [CLS x num_cls_tokens, tubelets in (t, h, w) raster order], so tubelet i has the global id
i = t * Hp * Wp + h * Wp + w that the pruner tracks.
"""

from __future__ import annotations

import io
import math
from typing import Any, Literal

import fsspec
import torch
import torch.nn.functional as F
from torch import nn

from .layers import DropPath, Mlp, resample_abs_pos_embed, trunc_normal_

__all__ = [
    "VideoViT",
    "build_model",
    "checkpoint_filter_fn",
    "load_pretrained",
    "load_state_dict_any",
    "resample_video_pos_embed",
    "sinusoid_pos_embed",
    "video_vit_base",
    "video_vit_small",
    "video_vit_tiny",
]


def _triple(x: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return x if isinstance(x, tuple) else (x, x, x)


class TubeletEmbed(nn.Module):
    """(B, C, T, H, W) -> (B, N, D): one token per non-overlapping t x p x p tubelet.

    stem="linear" is the ViT's one linear projection per tubelet (what image ViT and VideoMAE weights load into).
    stem="conv" puts a small convolutional stem in front (log2(p) - 1 stride-2 3x3 convolutions, each frame on its
    own, with BatchNorm and GELU, then a t x 2 x 2 projection): the same tubelet grid and token order, so pruning
    masks mean the same, but a model trained from scratch on little data optimises far better (Xiao et al., "Early
    Convolutions Help Transformers See Better", 2021).
    """

    def __init__(self, img_size: int, num_frames: int, tubelet_size: int, patch_size: int, in_chans: int, dim: int,
                 stem: Literal["linear", "conv"] = "linear"):  # fmt: skip
        super().__init__()
        assert img_size % patch_size == 0, f"img_size {img_size} must be a multiple of patch_size {patch_size}"
        assert num_frames % tubelet_size == 0, f"num_frames {num_frames} must be a multiple of tubelet_size"
        self.tubelet = (tubelet_size, patch_size, patch_size)
        self.grid_size = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.num_patches = math.prod(self.grid_size)
        if stem == "linear":
            self.stem = nn.Identity()
            self.proj = nn.Conv3d(in_chans, dim, kernel_size=self.tubelet, stride=self.tubelet)
            return
        n = round(math.log2(patch_size)) - 1  # stride-2 convolutions before the last 2 x 2 step
        if stem != "conv" or n < 1 or 2 ** (n + 1) != patch_size:
            raise ValueError(f"stem={stem!r} with patch_size {patch_size}: use stem='linear', or stem='conv' with a "
                             "power-of-two patch_size >= 4")  # fmt: skip
        chans = [in_chans] + [max(8, dim >> (n - i)) for i in range(n)]  # e.g. 3 -> 24 -> 48 -> 96 for dim 192
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv3d(a, b, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False), nn.BatchNorm3d(b), nn.GELU()]
        self.stem = nn.Sequential(*layers)  # (B, C, T, H, W) -> (B, c, T, 2 Hp, 2 Wp)
        self.proj = nn.Conv3d(chans[-1], dim, kernel_size=(tubelet_size, 2, 2), stride=(tubelet_size, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = tuple(g * s for g, s in zip(self.grid_size, self.tubelet, strict=True))
        if tuple(x.shape[2:]) != expected:
            raise ValueError(
                f"video of shape {tuple(x.shape)} does not match the model's (T, H, W) = {expected}; "
                "pass (B, C, T, H, W) or build the model with num_frames= / img_size= matching the clips"
            )
        x = self.proj(self.stem(x))  # (B, D, T', Hp, Wp)
        return x.flatten(2).transpose(1, 2)  # (B, T' * Hp * Wp, D), raster order (t, h, w)


def tubelet_mask_from_ids(ids: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """(B, k) global tubelet ids -> (B, T', Hp, Wp) bool, True where the tubelet was kept."""
    mask = torch.zeros(ids.shape[0], math.prod(grid), dtype=torch.bool, device=ids.device)
    return mask.scatter_(1, ids, True).view(ids.shape[0], *grid)  # (B, T', Hp, Wp)


def tubelet_to_pixel_mask(mask: torch.Tensor, tubelet: tuple[int, int, int]) -> torch.Tensor:
    """(B, T', Hp, Wp) -> (B, 1, T, H, W) nearest upsampling: constant inside each t x p x p tubelet."""
    for dim, size in zip((1, 2, 3), tubelet, strict=True):
        mask = mask.repeat_interleave(size, dim=dim)
    return mask.unsqueeze(1)  # (B, 1, T, H, W), broadcasts over channels


class Attention(nn.Module):
    """Multi-head self-attention; the fused SDPA kernel unless the caller needs the softmax map."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} must be divisible by num_heads {num_heads}"
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: torch.Tensor, return_attn: bool = False, attn_rows: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (output (B, N, D), softmax map (B, H, N, N) if return_attn else None).

        attn_rows=r returns only the first r query rows (B, H, r, N) of the map, and keeps the fused kernel for the
        output: softmax is per row, so these rows equal the full map's, at O(r N) instead of O(N^2) extra cost.
        """
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
        q, k, v = qkv.unbind(0)  # each (B, H, N, hd)
        drop = self.attn_drop if self.training else 0.0
        attn = None
        if return_attn and attn_rows is None:
            # Explicit path: the full map, which the fused kernel never materialises.
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, N, N)
            x = F.dropout(attn, drop, self.training) @ v  # (B, H, N, hd)
        else:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, H, N, hd)
            if return_attn:
                attn = ((q[:, :, :attn_rows] * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, r, N)
        x = x.transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        return self.proj_drop(self.proj(x)), attn


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block, split in two halves so a pruner can act between attention and MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward_attn(
        self, x: torch.Tensor, return_attn: bool = False, attn_rows: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, attn = self.attn(self.norm1(x), return_attn=return_attn, attn_rows=attn_rows)
        return x + self.drop_path1(self.ls1(y)), attn

    def forward_mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_mlp(self.forward_attn(x)[0])


class VideoViT(nn.Module):
    """ViT over t x p x p tubelets with `num_cls_tokens` learnable CLS tokens and a learnable position embedding.

    global_pool: "token" classifies CLS token 0, "avg" the mean of the tubelet tokens. fc_norm=True moves the
    final LayerNorm after pooling (VideoMAE's fine-tuning layout) instead of applying it to every token.
    motion_input=True subtracts each clip's per-pixel temporal mean before the tubelet embedding: what stays still
    (background, and the look of whoever stands still) is removed and what moves is kept. Actions are motion, and a
    ViT on raw RGB is slow to find it on small data; the option lives in the model (and so in its bundle), so every
    stage that feeds the model clips feeds it the same way. stem: see TubeletEmbed.

    kept_ids (forward, forward_features, embed): (B, k) global ids of the tubelets a pruner kept. The model then
    reads only those: the pixels of the other tubelets are zeroed before the stem, the motion input's mean runs over
    the frames in which a pixel is kept, and only the kept tokens (with their position embeddings) enter the blocks.
    So features of a pruned clip depend on nothing the pruner removed, and an encoder trained with random tubelet
    dropping (`tubelet_drop` in the training config) reads pruned clips as it reads whole ones.
    """

    def __init__(
        self,
        img_size: int = 224,
        num_frames: int = 16,
        tubelet_size: int = 2,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 400,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_cls_tokens: int = 1,
        global_pool: Literal["token", "avg"] = "token",
        fc_norm: bool = False,
        init_values: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        motion_input: bool = False,
        stem: Literal["linear", "conv"] = "linear",
    ):
        super().__init__()
        self.motion_input = motion_input
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if global_pool == "token" and num_cls_tokens < 1:
            raise ValueError("global_pool='token' needs num_cls_tokens >= 1; use global_pool='avg' without CLS tokens")
        self.num_classes = num_classes
        self.num_cls_tokens = num_cls_tokens
        self.global_pool = global_pool
        self.embed_dim = self.num_features = embed_dim

        self.patch_embed = TubeletEmbed(img_size, num_frames, tubelet_size, patch_size, in_chans, embed_dim, stem)
        self.grid_size = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, num_cls_tokens, embed_dim)) if num_cls_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_cls_tokens + self.patch_embed.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        # stochastic depth grows linearly with depth; plain floats so the model can be built on the meta device
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i], init_values)
            for i in range(depth)
        )
        self.norm = nn.Identity() if fc_norm else nn.LayerNorm(embed_dim, eps=1e-6)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        if self.pos_embed.is_meta:
            # built on the meta device (to read its shapes): there are no values to fill, and filling meta tensors
            # imports torch._dynamo, 0.9 s in every pipeline actor that reads the pruner's layout
            return
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor, kept_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, num_cls + N, D): the tokens that enter the first block; N = k with kept_ids."""
        keep = None
        if kept_ids is not None:
            if kept_ids.dim() != 2 or kept_ids.shape[0] != x.shape[0]:
                raise ValueError(f"kept_ids must be (B, k) tubelet ids for the {x.shape[0]} clips, got "
                                 f"{tuple(kept_ids.shape)}")  # fmt: skip
            grid_mask = tubelet_mask_from_ids(kept_ids.long(), self.grid_size)  # (B, T', Hp, Wp)
            keep = tubelet_to_pixel_mask(grid_mask, self.patch_embed.tubelet).to(x.dtype)  # (B, 1, T, H, W)
            x = x * keep
        if self.motion_input and keep is None:
            x = x - x.mean(dim=2, keepdim=True)  # (B, C, T, H, W) minus its mean over T
        elif self.motion_input:  # minus the mean over the frames where each pixel is kept; removed pixels stay 0
            mean = x.sum(dim=2, keepdim=True) / keep.sum(dim=2, keepdim=True).clamp(min=1)  # (B, C, 1, H, W)
            x = (x - mean) * keep
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, num_cls + N, D)
        x = x + self.pos_embed
        if kept_ids is not None:
            c = self.num_cls_tokens
            kept = x[:, c:].gather(1, kept_ids.long()[..., None].expand(-1, -1, x.shape[-1]))  # (B, k, D)
            x = torch.cat([x[:, :c], kept], dim=1)  # (B, num_cls + k, D)
        return self.pos_drop(x)

    def forward_features(self, x: torch.Tensor, kept_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(x, kept_ids)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)  # (B, num_cls + N, D)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.global_pool == "token" else x[:, self.num_cls_tokens :].mean(dim=1)  # (B, D)
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor, kept_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, kept_ids))


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: every external layout is converted here, nowhere else.


def sinusoid_pos_embed(num_positions: int, dim: int) -> torch.Tensor:
    """(1, num_positions, dim) fixed table over the flat token index: sin on even, cos on odd channels.

    VideoMAE does not save its position embedding because it is this deterministic table (arXiv 1706.03762, §3.5).
    """
    pos = torch.arange(num_positions, dtype=torch.float32)[:, None]  # (P, 1)
    rate = torch.pow(10000.0, -2.0 * (torch.arange(dim) // 2).float() / dim)  # (D,)
    angle = pos * rate  # (P, D)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table[None]  # (1, P, D)


def resample_video_pos_embed(
    pos: torch.Tensor, old_grid: tuple[int, int, int], new_grid: tuple[int, int, int]
) -> torch.Tensor:
    """(1, T0*H0*W0, D) -> (1, T1*H1*W1, D): bicubic in space (as timm), linear in time; identity if grids match."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    (t0, h0, w0), (t1, h1, w1) = old_grid, new_grid
    D = pos.shape[-1]
    x = pos.reshape(t0, h0 * w0, D)  # (T0, H0*W0, D): time slices as a batch of 2D grids
    x = torch.cat([resample_abs_pos_embed(s[None], [h1, w1], [h0, w0], num_prefix_tokens=0) for s in x])
    if t0 != t1:
        x = x.permute(1, 2, 0)  # (H1*W1, D, T0)
        x = F.interpolate(x.float(), size=t1, mode="linear", align_corners=False).to(pos.dtype)
        x = x.permute(2, 0, 1)  # (T1, H1*W1, D)
    return x.reshape(1, t1 * h1 * w1, D)


def _infer_grid(n: int, grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """The (T, H, W) grid of a checkpoint's n tubelet positions, assuming the model's T or the model's H x W."""
    t, h, w = grid
    side = math.isqrt(n // t) if n % t == 0 else 0
    if side and side * side * t == n:
        return t, side, side
    if n % (h * w) == 0:
        return n // (h * w), h, w
    raise ValueError(f"cannot infer the tubelet grid of a {n}-position pos_embed for a model grid {grid}")


_HEAD_PREFIXES = ("head.", "privacy_head.", "fc_norm.")


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: VideoViT) -> dict[str, torch.Tensor]:
    """Convert a timm image-ViT or a VideoMAE/VideoViT state dict to `model`'s layout.

    Image ViT (4-D patch kernel): inflate the kernel over the tubelet depth divided by t, so a static clip embeds
    like the image; resample the spatial position embedding and repeat it over time; copy the image CLS token
    (and its position slot) to every CLS slot. VideoMAE: strip `encoder.`, fuse q_bias / v_bias into qkv.bias
    with a zero k bias, build the sinusoidal table if no pos_embed was saved. A checkpoint with one CLS token
    feeds every CLS slot (an encoder into the two-CLS pruner). Heads whose shape differs keep the model's init.
    """
    target = model.state_dict()
    num_cls, grid = model.num_cls_tokens, model.grid_size
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        k = k.removeprefix("module.").removeprefix("encoder.")
        if k.startswith(("decoder.", "encoder_to_decoder.", "mask_token")):
            continue  # VideoMAE pre-training decoder
        k = k.replace(".gamma_1", ".ls1.gamma").replace(".gamma_2", ".ls2.gamma")
        out[k] = v

    # VideoMAE biases q and v only; a zero k bias is exact because softmax ignores a per-query constant.
    for k in [k for k in out if k.endswith(".attn.q_bias")]:
        prefix = k.removesuffix("q_bias")
        q_bias, v_bias = out.pop(k), out.pop(prefix + "v_bias")
        out[prefix + "qkv.bias"] = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])

    # A mean-pool checkpoint norms the pooled vector (fc_norm); a model without fc_norm norms each token before
    # pooling instead, the closest layout it has. Build with fc_norm=True for the exact one.
    has_fc_norm = "fc_norm.weight" in target
    if not has_fc_norm and "fc_norm.weight" in out:
        fc = {k: out.pop(k) for k in list(out) if k.startswith("fc_norm.")}
        if "norm.weight" not in out:
            out.update({"norm." + k.removeprefix("fc_norm."): v for k, v in fc.items()})
    elif has_fc_norm and "fc_norm.weight" not in out and "norm.weight" in out:
        out.update({"fc_norm." + k.removeprefix("norm."): out.pop(k) for k in list(out) if k.startswith("norm.")})

    w = out.get("patch_embed.proj.weight")
    if w is not None and w.ndim == 4:  # image ViT: (D, C, p, p) -> (D, C, t, p, p), summing back to the 2D kernel
        t = model.patch_embed.tubelet[0]
        out["patch_embed.proj.weight"] = w.unsqueeze(2).repeat(1, 1, t, 1, 1) / t

    src_cls = out.pop("cls_token", None)  # (1, c, D) or absent (VideoMAE)
    if src_cls is not None and num_cls:
        if src_cls.shape[1] not in (1, num_cls):
            raise ValueError(f"checkpoint has {src_cls.shape[1]} CLS tokens, model {num_cls}; only 1 -> n is defined")
        out["cls_token"] = src_cls.expand(1, num_cls, -1).clone()
    elif num_cls:
        out["cls_token"] = target["cls_token"]  # no CLS in the checkpoint: keep the model's init

    pos = out.pop("pos_embed", None)
    n_model = model.patch_embed.num_patches
    if pos is None:
        pos_patch = sinusoid_pos_embed(n_model, model.embed_dim)  # (1, N, D)
        pos_cls = torch.zeros(1, 1, model.embed_dim)
    else:
        n_pos, c = pos.shape[1], src_cls.shape[1] if src_cls is not None else 0
        if w is not None and w.ndim == 4:  # image: (1, [1] + h0*w0, D), some timm models keep no CLS slot
            c = c if math.isqrt(n_pos) ** 2 != n_pos else 0
            side = math.isqrt(n_pos - c)
            spatial = resample_abs_pos_embed(pos[:, c:], list(grid[1:]), [side, side], num_prefix_tokens=0)
            pos_patch = spatial.unsqueeze(1).expand(-1, grid[0], -1, -1).reshape(1, n_model, -1)  # (1, T'*Hp*Wp, D)
        else:
            old_grid = _infer_grid(n_pos - c, grid)
            pos_patch = resample_video_pos_embed(pos[:, c:], old_grid, grid)
        pos_cls = pos[:, :c] if c == num_cls else pos[:, :1] if c else torch.zeros_like(pos[:, :1])
    out["pos_embed"] = torch.cat([pos_cls.expand(-1, num_cls, -1), pos_patch], dim=1)

    for k in list(out):
        if k.startswith(_HEAD_PREFIXES) and (k not in target or out[k].shape != target[k].shape):
            del out[k]  # a different label set (or no head): the model keeps its own initialisation
    for k in target:
        if k.startswith(_HEAD_PREFIXES) and k not in out:
            out[k] = target[k]
    return out


def load_state_dict_any(path_or_uri: str) -> dict[str, torch.Tensor]:
    """Read a safetensors or torch .pth state dict from a local path or any fsspec URI (s3://, memory://, ...), or
    the weights of a model bundle folder (e.g. an encoder pre-trained with objective=mae)."""
    from safetensors.torch import load as load_safetensors

    fs, path = fsspec.core.url_to_fs(str(path_or_uri))
    if fs.isdir(path) and fs.exists(path.rstrip("/") + "/model.safetensors"):  # a model bundle folder: its weights
        path_or_uri = str(path_or_uri).rstrip("/") + "/model.safetensors"
    with fsspec.open(str(path_or_uri), "rb") as f:
        data = f.read()
    # safetensors opens with an 8-byte header length followed by a JSON header
    if len(data) > 9 and data[8:9] == b"{":
        return load_safetensors(data)
    sd: Any = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    for key in ("model", "module", "state_dict", "model_state"):  # training checkpoints wrap the weights
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path_or_uri} holds a {type(sd).__name__}, not a state dict")
    return sd


def load_pretrained(model: VideoViT, path_or_uri: str) -> VideoViT:
    """Load a checkpoint (any layout checkpoint_filter_fn knows) into `model`, strictly; nothing is downloaded."""
    sd = checkpoint_filter_fn(load_state_dict_any(path_or_uri), model)
    target = model.state_dict()
    missing = sorted(set(target) - set(sd))
    unexpected = sorted(set(sd) - set(target))
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in target.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"checkpoint {path_or_uri} does not fit {type(model).__name__}: missing {missing}, unexpected "
            f"{unexpected}, shape mismatch {mismatched}. Build the model with the checkpoint's embed_dim / depth / "
            "num_heads / patch and tubelet size (builder overrides), or convert the checkpoint first."
        )
    model.load_state_dict(sd)
    return model


# ---------------------------------------------------------------------------------------------------------------
# Builders: numbers only.


def build_model(cls: type[VideoViT], defaults: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """cls(**defaults) with `overrides` on top; `checkpoint=path_or_uri` loads weights through load_pretrained."""
    overrides = dict(overrides)
    checkpoint = overrides.pop("checkpoint", None)
    model = cls(**{**defaults, **overrides})
    return load_pretrained(model, checkpoint) if checkpoint else model


def video_vit_tiny(**kwargs: Any) -> VideoViT:
    """ViT-Ti over 16 x 112 clips (8 x 7 x 7 tubelets): CPU tests and demos."""
    return build_model(VideoViT, dict(img_size=112, num_frames=16, embed_dim=192, depth=6, num_heads=3), kwargs)


def video_vit_small(**kwargs: Any) -> VideoViT:
    """ViT-S/16 over 16 x 224 clips."""
    return build_model(VideoViT, dict(img_size=224, num_frames=16, embed_dim=384, depth=12, num_heads=6), kwargs)


def video_vit_base(**kwargs: Any) -> VideoViT:
    """ViT-B/16 over 16 x 224 clips, tubelet 2 x 16 x 16 -> 8 x 14 x 14 = 1568 tokens (the published backbone)."""
    return build_model(VideoViT, dict(img_size=224, num_frames=16, embed_dim=768, depth=12, num_heads=12), kwargs)
