"""VideoMAE pre-training (anon_core/models/mae.py): tube masks, no peeking into hidden tubes, and it learns."""

from __future__ import annotations

import pytest
import torch

from anon_core.models import video_vit_tiny
from anon_core.models.mae import VideoMAE


def mae(stem: str = "conv", motion: bool = True, **kw) -> VideoMAE:
    torch.manual_seed(0)
    enc = video_vit_tiny(num_classes=0, img_size=32, num_frames=8, depth=2, stem=stem, motion_input=motion,
                         num_cls_tokens=0, global_pool="avg", fc_norm=True)  # fmt: skip
    return VideoMAE(enc, decoder_depth=1, **kw).eval()


def test_a_tube_mask_hides_the_same_places_at_every_time_step():
    m = mae(mask_ratio=0.75)  # grid (4, 2, 2): 3 of 4 places hidden, one visible
    mask = m.tube_mask(5, torch.Generator().manual_seed(1))
    assert mask.shape == (5, 16) and mask.dtype == torch.bool
    per_time = mask.reshape(5, 4, 4)  # (B, T', Hp*Wp)
    assert (per_time == per_time[:, :1]).all()  # a tube: the same places in every time step
    assert (per_time[:, 0].sum(1) == 3).all() and m.num_visible == 4
    assert not (mask == mask[0]).all()  # each clip draws its own
    with pytest.raises(ValueError, match="mask_ratio"):
        mae(mask_ratio=1.0)


def test_patchify_follows_the_token_order():
    m = mae()
    x = torch.zeros(1, 3, 8, 32, 32)
    for i, (t, h, w) in enumerate((t, h, w) for t in range(4) for h in range(2) for w in range(2)):
        x[:, :, 2 * t : 2 * t + 2, 16 * h : 16 * h + 16, 16 * w : 16 * w + 16] = i  # tubelet i holds the value i
    patches = m.patchify(x)  # (1, 16, 2*16*16*3)
    assert patches.shape == (1, 16, 1536)
    assert torch.equal(patches[0].mean(1), torch.arange(16.0)) and (patches[0].std(1) == 0).all()


@pytest.mark.parametrize("stem", ["linear", "conv"])
def test_the_encoder_cannot_see_into_hidden_tubes(stem):
    """The conv stem's receptive field crosses tubelet borders: hidden tubes are zeroed before it."""
    m = mae(stem)
    mask = m.tube_mask(2, torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 8, 32, 32)
    hidden_px = 1 - m._pixel_mask(mask, x)  # (B, 1, T, H, W) 1 where hidden
    with torch.no_grad():
        ref = m.forward_encoder(x, mask)
        changed_hidden = m.forward_encoder(x + 5 * torch.randn_like(x) * hidden_px, mask)
        changed_visible = m.forward_encoder(x + 5 * torch.randn_like(x) * (1 - hidden_px), mask)
    assert ref.shape == (2, m.num_visible, 192)
    assert torch.allclose(ref, changed_hidden, atol=1e-5)
    assert not torch.allclose(ref, changed_visible, atol=1e-3)


def test_mae_learns_to_reconstruct_moving_clips():
    """A few steps on a small set of moving-square clips: the loss on held-out masks falls well below its start."""
    g = torch.Generator().manual_seed(0)
    clips = torch.zeros(8, 3, 8, 32, 32)
    for i in range(8):
        y, dx = int(torch.randint(4, 20, (1,), generator=g)), 1 + i % 3
        for t in range(8):
            clips[i, :, t, y : y + 8, 2 + dx * t : 10 + dx * t] = 1.0
    m = mae("conv", motion=True, mask_ratio=0.75).train()
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    fixed = m.tube_mask(8, torch.Generator().manual_seed(99))
    with torch.no_grad():
        m.eval()
        before = float(m(clips, fixed))
        m.train()
    for _ in range(60):
        loss = m(clips, m.tube_mask(8, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        after = float(m(clips, fixed))
    assert after < 0.7 * before, (before, after)
