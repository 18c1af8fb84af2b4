"""Masked video pre-training (VideoMAE, arXiv 2203.12602) for a VideoViT: how an archive without labels gives an
encoder.

    mae = VideoMAE(video_vit_tiny(num_classes=0, img_size=64), mask_ratio=0.9)
    mask = mae.tube_mask(batch=8, generator=g)   # (B, N) True = hidden
    loss = mae(clips, mask)                       # clips: (B, C, T, H, W) normalised float

Tube masking hides the same spatial tubelets in every time step (a masked patch cannot be copied from the next
frame), the encoder runs on the visible tubelets only, and a light decoder (its own width and depth, fixed
sinusoidal positions) predicts the pixels of the hidden ones, each tubelet's target normalised by its own mean and
variance. Only the encoder is kept: it is an ordinary VideoViT, saved as an ordinary encoder bundle.

The hidden tubelets are also zeroed in the input before the tubelet embedding, so a convolutional stem (whose
receptive field crosses tubelet borders) cannot see into them. With `motion_input`, the encoder's own input (the
clip minus its temporal mean) is what it learns to reconstruct.
"""

from __future__ import annotations

import torch
from torch import nn

from .video_vit import Block, VideoViT, sinusoid_pos_embed


class VideoMAE(nn.Module):
    def __init__(self, encoder: VideoViT, mask_ratio: float = 0.9, decoder_dim: int | None = None,
                 decoder_depth: int = 4, decoder_heads: int | None = None, norm_pix: bool = True):  # fmt: skip
        super().__init__()
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio, self.norm_pix = mask_ratio, norm_pix
        t, p, _ = encoder.patch_embed.tubelet
        self.grid = encoder.grid_size  # (T', Hp, Wp)
        self.patch_dim = t * p * p * 3  # RGB pixels of one tubelet
        dim = decoder_dim or max(64, encoder.embed_dim // 2)
        heads = decoder_heads or max(1, dim // 64)
        self.encoder_norm = nn.LayerNorm(encoder.embed_dim, eps=1e-6)  # the encoder may leave tokens un-normed
        self.encoder_to_decoder = nn.Linear(encoder.embed_dim, dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("decoder_pos", sinusoid_pos_embed(encoder.patch_embed.num_patches, dim), persistent=False)
        self.decoder = nn.ModuleList(Block(dim, heads) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_head = nn.Linear(dim, self.patch_dim)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @property
    def num_visible(self) -> int:
        spatial = self.grid[1] * self.grid[2]
        return max(1, spatial - int(round(self.mask_ratio * spatial))) * self.grid[0]

    def tube_mask(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(B, N) bool, True = hidden: the same int(mask_ratio * Hp * Wp) spatial positions at every time step."""
        t, h, w = self.grid
        spatial = h * w
        hidden = min(spatial - 1, int(round(self.mask_ratio * spatial)))  # at least one visible tube
        order = torch.rand(batch, spatial, generator=generator).argsort(dim=1)  # (B, Hp*Wp) random ranking
        mask2d = torch.zeros(batch, spatial, dtype=torch.bool)
        mask2d.scatter_(1, order[:, :hidden], True)
        return mask2d.unsqueeze(1).expand(batch, t, spatial).reshape(batch, t * spatial).to(device)  # (B, N)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, N, t*p*p*C) in the tokens' raster order (t, h, w)."""
        b, c = x.shape[:2]
        (gt, gh, gw), (t, p, _) = self.grid, self.encoder.patch_embed.tubelet
        x = x.reshape(b, c, gt, t, gh, p, gw, p)
        return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, gt * gh * gw, t * p * p * c)

    def _pixel_mask(self, mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B, N) hidden tokens -> (B, 1, T, H, W) 1.0 where visible, to zero the hidden tubelets' pixels."""
        (gt, gh, gw), (t, p, _) = self.grid, self.encoder.patch_embed.tubelet
        keep = (~mask).to(like.dtype).reshape(-1, 1, gt, 1, gh, 1, gw, 1)
        keep = keep.expand(-1, 1, gt, t, gh, p, gw, p)
        return keep.reshape(-1, 1, gt * t, gh * p, gw * p)

    def forward_encoder(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Visible tubelets through the encoder: (B, C, T, H, W), (B, N) -> (B, N_visible, D)."""
        enc = self.encoder
        z = enc.embed(x * self._pixel_mask(mask, x))  # (B, num_cls + N, D), positions added
        cls, tokens = z[:, : enc.num_cls_tokens], z[:, enc.num_cls_tokens :]
        b, _, d = tokens.shape
        visible = tokens[~mask].reshape(b, -1, d)  # (B, N_visible, D): every row hides the same count
        h = torch.cat([cls, visible], dim=1)
        for blk in enc.blocks:
            h = blk(h)
        return self.encoder_norm(enc.norm(h)[:, enc.num_cls_tokens :])

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, t*p*p*3): what the decoder predicts, from the input the encoder sees."""
        if self.encoder.motion_input:
            x = x - x.mean(dim=2, keepdim=True)
        patches = self.patchify(x.float())
        if self.norm_pix:
            mean, var = patches.mean(-1, keepdim=True), patches.var(-1, unbiased=True, keepdim=True)
            patches = (patches - mean) / (var + 1e-6).sqrt()
        return patches

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the hidden tubelets."""
        visible = self.encoder_to_decoder(self.forward_encoder(x, mask))  # (B, N_visible, Dd)
        b, n = mask.shape
        full = self.mask_token.to(visible.dtype).expand(b, n, -1).clone()  # (B, N, Dd)
        full[~mask] = visible.reshape(-1, visible.shape[-1])
        h = full + self.decoder_pos.to(full.dtype)
        for blk in self.decoder:
            h = blk(h)
        pred = self.decoder_head(self.decoder_norm(h))[mask]  # (B * N_hidden, t*p*p*3)
        return nn.functional.mse_loss(pred.float(), self.target(x)[mask])
