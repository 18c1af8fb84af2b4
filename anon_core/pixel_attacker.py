"""The pixel attacker and pixel action probe: a freshly trained small video model (docs/methods.md, section 3).

Feature attackers (`anon_core.attackers`) judge what an anonymizer's *features* leak. Anonymizers that output
pixels (masks, blurs, learned pixel filters) are judged here by a small 3D CNN trained from scratch on the
anonymized train clips for a fixed cosine schedule and scored once, after its last epoch, on the anonymized test
clips: nothing is chosen on the test split (the feature attackers choose their epochs on a validation part of the
training split; a network this size costs too much to fit twice per method, and its annealed last epoch is where its
schedule is meant to end). The same network and loop, trained with cross-entropy on the action, measures utility.

    attack = train_pixel_attacker(clips_train, attrs_train, clips_test, attrs_test)   # AttackResult "video_model"
    util = pixel_action_probe(clips_train, action_train, clips_test, action_test, video_ids_test)

Clips are (N, T, H, W, 3) uint8. They are resized once to (N, 3, frames, size, size) uint8 (a quarter of float
memory) and normalised per batch, so the prepared train split of 800 clips at 56 px x 8 frames is 60 MB.

Augmentation: a random crop with padding 4 and, by default for attributes only, a random horizontal flip. A flip
turns walking left into walking right, so the action probe does not flip unless asked (`hflip=True`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attackers import AttackResult, ProbeResult
from .metrics import cmap, macro_f1, top1_accuracy, video_top1_accuracy

MEAN, STD = 0.5, 0.5  # fixed: the anonymized pixels' own statistics would differ between methods
CROP_PAD = 4
CL = torch.channels_last_3d


class ConvBlock(nn.Module):
    """conv3d 3x3x3 -> BatchNorm3d -> ReLU; `stride` is (time, height, width)."""

    def __init__(self, in_ch: int, out_ch: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class SmallVideoNet(nn.Module):
    """A small 3D CNN for clips (B, 3, T, S, S): four conv blocks, global average pool, dropout, linear.

    Channels width, 2*width, 4*width, 4*width. Blocks 1-3 halve the frame side, blocks 3-4 halve time: an 8-frame
    clip at 56 px ends at 2 x 7 x 7, and the first two blocks see motion at the full frame rate. About 0.72 M
    parameters at width 32.

    Why small: it must train in a minute or two on 2 CPU cores, since the evaluation trains one per anonymizer,
    attribute set and seed: 800 clips at 56 px x 8 frames take about 6 s an epoch (12 CPU-seconds). Halving the
    side already in block 1, rather than from block 2, makes that about 5x cheaper: at full resolution the first
    two blocks cost most of the time.

    Why pixels at all: unlike a feature attacker, it sees whatever the anonymizer left in the picture (a
    silhouette, clothing colour, the unmasked background), including cues that a frozen encoder's features happen
    to hide. It is trained from scratch, so it owes nothing to the encoder the anonymizer was tuned against.
    """

    def __init__(self, num_outputs: int, width: int = 32, *, dropout: float = 0.3) -> None:
        super().__init__()
        if num_outputs < 1 or width < 1:
            raise ValueError(f"num_outputs and width must be >= 1, got {num_outputs} and {width}")
        self.blocks = nn.Sequential(
            ConvBlock(3, width, stride=(1, 2, 2)),
            ConvBlock(width, 2 * width, stride=(1, 2, 2)),
            ConvBlock(2 * width, 4 * width, stride=(2, 2, 2)),
            ConvBlock(4 * width, 4 * width, stride=(2, 1, 1)),
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(4 * width, num_outputs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(dim=(2, 3, 4))  # (B, 4*width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x)))  # (B, num_outputs)


# --- clips ---


def _check_clips(name: str, clips) -> np.ndarray:
    c = clips.numpy() if isinstance(clips, torch.Tensor) else np.asarray(clips)
    if c.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 pixels (N, T, H, W, 3), got dtype {c.dtype}")
    if c.ndim != 5 or c.shape[-1] != 3:
        raise ValueError(f"{name} must be (N, T, H, W, 3) RGB clips, got shape {c.shape}")
    if min(c.shape) == 0:
        raise ValueError(f"{name} is empty (shape {c.shape}): need at least one clip with frames and pixels")
    return c


def frame_indices(num_frames: int, frames: int) -> np.ndarray:
    """`frames` indices spread uniformly over `num_frames`: the centre of each of `frames` equal segments."""
    return ((np.arange(frames) + 0.5) * num_frames / frames).astype(np.int64)


def _resize(clips: np.ndarray, size: int, frames: int, chunk: int) -> torch.Tensor:
    """(N, T, H, W, 3) uint8 -> (N, 3, frames, size, size) uint8, area-resized, `chunk` clips at a time."""
    n = len(clips)
    idx = frame_indices(clips.shape[1], frames)
    out = torch.empty((n, 3, frames, size, size), dtype=torch.uint8)
    for start in range(0, n, chunk):
        part = torch.from_numpy(np.ascontiguousarray(clips[start : start + chunk, idx]))  # (n, f, H, W, 3)
        m = len(part)
        x = part.reshape(m * frames, *part.shape[2:]).permute(0, 3, 1, 2).float()  # (n*f, 3, H, W)
        x = F.interpolate(x, size=(size, size), mode="area")  # (n*f, 3, size, size)
        x = x.round_().clamp_(0, 255).to(torch.uint8).reshape(m, frames, 3, size, size)
        out[start : start + m] = x.permute(0, 2, 1, 3, 4)  # (n, 3, f, size, size)
    return out


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - MEAN) / STD


def prepare_clips(clips, size: int = 56, frames: int = 8, *, chunk: int = 64) -> torch.Tensor:
    """(N, T, H, W, 3) uint8 -> (N, 3, frames, size, size) float32: [0, 1] scaled, then (x - 0.5) / 0.5.

    Frames are sampled uniformly in time (repeated when the clip is shorter than `frames`); each frame is
    area-resized to size x size (non-square frames are squeezed, not cropped: nothing the anonymizer left is cut
    away). Works `chunk` clips at a time, so peak memory beyond the output is one chunk.
    """
    if size < 1 or frames < 1 or chunk < 1:
        raise ValueError(f"size, frames and chunk must be >= 1, got {size}, {frames}, {chunk}")
    return _normalise(_resize(_check_clips("clips", clips), size, frames, chunk))


# --- training ---


def _augment(x: torch.Tensor, g: torch.Generator, hflip: bool) -> torch.Tensor:
    """Per clip: a random crop of the zero-padded (mid-grey after normalisation) clip, and maybe a horizontal flip."""
    b, s = len(x), x.shape[-1]
    padded = F.pad(x, (CROP_PAD,) * 4)  # (B, 3, T, S+8, S+8)
    offsets = torch.randint(0, 2 * CROP_PAD + 1, (b, 2), generator=g).tolist()
    flips = (torch.rand(b, generator=g) < 0.5).tolist()
    out = []
    for clip, (dy, dx), flip in zip(padded, offsets, flips, strict=True):
        crop = clip[..., dy : dy + s, dx : dx + s]
        out.append(crop.flip(-1) if hflip and flip else crop)
    return torch.stack(out)


def _fit(
    xtr: torch.Tensor,
    ytr: torch.Tensor,
    xte: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    num_outputs: int,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    width: int,
    hflip: bool,
) -> tuple[torch.Tensor, list[float]]:
    """Train a fresh SmallVideoNet on uint8 clips for `epochs` epochs of a cosine schedule; returns its test logits
    after the last one and the mean training loss of each epoch. Deterministic given seed."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # weights and dropout
    # channels-last conv3d is faster on CPU (oneDNN): about 0.7x the time per step here
    model = SmallVideoNet(num_outputs, width).to(memory_format=CL)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = -(-len(xtr) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    history = []
    for _ in range(epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(xtr), generator=g).split(batch_size):
            opt.zero_grad(set_to_none=True)
            x = _augment(_normalise(xtr[idx]), g, hflip).contiguous(memory_format=CL)
            loss = loss_fn(model(x), ytr[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(xtr))
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(_normalise(x).contiguous(memory_format=CL)) for x in xte.split(2 * batch_size)])
    return logits, history


def _check_common(clips_train, n_train: int, clips_test, n_test: int, epochs: int, batch_size: int, size: int,
                  frames: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    ctr, cte = _check_clips("clips_train", clips_train), _check_clips("clips_test", clips_test)
    if len(ctr) != n_train or len(cte) != n_test:
        raise ValueError(
            f"clips and labels must have one row per clip in each split: train {len(ctr)} clips vs {n_train} labels,"
            f" test {len(cte)} clips vs {n_test} labels"
        )
    if epochs < 1 or batch_size < 1 or size < 1 or frames < 1:
        raise ValueError(
            f"epochs, batch_size, size and frames must be >= 1, got {epochs}, {batch_size}, {size}, {frames}"
        )
    return ctr, cte


def train_pixel_attacker(
    clips_train, y_train, clips_test, y_test, *, epochs: int = 15, lr: float = 2e-3, batch_size: int = 32,
    seed: int = 0, size: int = 56, frames: int = 8, width: int = 32, hflip: bool = True,
) -> AttackResult:  # fmt: skip
    """Privacy: a fresh video model predicts the (N, A) binary attributes from pixels (multi-label BCE).

    Scored with cMAP on the test split after the last epoch; `history` is the training loss per epoch.
    """
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if y_train.ndim != 2 or y_test.ndim != 2 or y_train.shape[1] != y_test.shape[1] or y_train.shape[1] == 0:
        raise ValueError(
            f"attributes must be (N, A >= 1) with the same A in both splits, got {y_train.shape} and {y_test.shape}"
        )
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"{name} must hold only 0/1 attribute labels")
    ctr, cte = _check_common(clips_train, len(y_train), clips_test, len(y_test), epochs, batch_size, size, frames)
    xtr, xte = _resize(ctr, size, frames, 64), _resize(cte, size, frames, 64)
    logits, history = _fit(
        xtr, torch.from_numpy(y_train.astype(np.float32)), xte, F.binary_cross_entropy_with_logits, y_train.shape[1],
        epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, width=width, hflip=hflip,
    )  # fmt: skip
    probs = torch.sigmoid(logits).numpy()
    return AttackResult("video_model", cmap(y_test, probs), macro_f1(y_test, probs), probs, f"epoch {epochs}", history)


def pixel_action_probe(
    clips_train, actions_train, clips_test, actions_test, video_ids_test=None, *, num_classes: int | None = None,
    epochs: int = 15, lr: float = 2e-3, batch_size: int = 32, seed: int = 0, size: int = 56, frames: int = 8,
    width: int = 32, hflip: bool = False,
) -> ProbeResult:  # fmt: skip
    """Utility: a fresh video model for the action (cross-entropy), scored after its last epoch.

    Video-level top-1 averages the clip probabilities of each video (`video_ids_test`); without ids, clip top-1.
    """
    a_train, a_test = np.asarray(actions_train), np.asarray(actions_test)
    if a_train.ndim != 1 or a_test.ndim != 1:
        raise ValueError(f"actions must be 1-D class ids, got shapes {a_train.shape} and {a_test.shape}")
    if a_train.dtype.kind not in "iu" or a_test.dtype.kind not in "iu":
        raise ValueError(f"actions must be integer class ids, got dtypes {a_train.dtype} and {a_test.dtype}")
    ctr, cte = _check_common(clips_train, len(a_train), clips_test, len(a_test), epochs, batch_size, size, frames)
    classes = int(num_classes or max(a_train.max(), a_test.max()) + 1)
    if min(a_train.min(), a_test.min()) < 0 or max(a_train.max(), a_test.max()) >= classes:
        raise ValueError(f"actions must lie in [0, {classes}), got [{min(a_train.min(), a_test.min())}, "
                         f"{max(a_train.max(), a_test.max())}]")  # fmt: skip
    if video_ids_test is not None and len(np.asarray(video_ids_test)) != len(a_test):
        raise ValueError(
            f"video_ids_test needs one id per test clip: {len(np.asarray(video_ids_test))} vs {len(a_test)}"
        )

    xtr, xte = _resize(ctr, size, frames, 64), _resize(cte, size, frames, 64)
    logits, history = _fit(
        xtr, torch.from_numpy(a_train.astype(np.int64)), xte, F.cross_entropy, classes,
        epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, width=width, hflip=hflip,
    )  # fmt: skip
    probs = torch.softmax(logits, dim=1).numpy()
    video = None if video_ids_test is None else video_top1_accuracy(probs, a_test, video_ids_test)
    return ProbeResult(top1_accuracy(probs, a_test), video, probs, f"epoch {epochs}", history)
