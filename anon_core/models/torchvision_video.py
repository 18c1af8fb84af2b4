"""torchvision's video classifiers as frozen encoders for the AAM: R(2+1)D-18 (arXiv 1711.11248), S3D
(arXiv 1712.04851), MViTv2-S (arXiv 2112.01526) and Video Swin-T (arXiv 2106.13230).

Each is wrapped, classification head removed, to offer what the pipeline asks of an encoder:

    tokens = model.forward_features(video)   # video: (B, 3, T, H, W) Kinetics-normalised float -> (B, N, D)
    h = model.forward_head(tokens)           # (B, D): the feature torchvision's classifier reads
    model.embed_dim, model.input_spec        # D; the clips it takes (num_frames, size, mean, std) for the bundle

Users bring the weights: a torchvision state-dict .pth (such as r2plus1d_18-91a641e6.pth, the file torchvision
itself downloads) from a local path or any fsspec URI; `import_torchvision_encoder` loads it strictly and writes a
model bundle. Nothing is downloaded: every torchvision builder here is called with weights=None.

These encoders have no tubelet grid, so they serve the modes that encode whole clips (aam, raw, the pixel
baselines) and the AAM's training, not the pruning modes (pipelines.anonymize.preflight refuses those).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from .bundle import BundleInfo

__all__ = [
    "ARCHS",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "TorchvisionVideoEncoder",
    "checkpoint_filter_fn",
    "import_torchvision_encoder",
    "tv_mvit_v2_s",
    "tv_r2plus1d_18",
    "tv_s3d",
    "tv_swin3d_t",
]

Arch = Literal["r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t"]
# torchvision's Kinetics-400 weights were trained on clips normalised with these (torchvision.transforms._presets)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def _resnet_tokens(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.layer4(net.layer3(net.layer2(net.layer1(net.stem(x)))))  # (B, D, T', H', W')
    return x.flatten(2).transpose(1, 2)  # (B, T'H'W', D)


def _s3d_tokens(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # torchvision averages 2 x 7 x 7 windows before its 1x1x1 classifier and the mean over what is left: each token
    # is one such window, so the token mean is exactly the feature the classifier reads
    x = net.avgpool(net.features(x))  # (B, D, T', H', W')
    return x.flatten(2).transpose(1, 2)  # (B, T'H'W', D)


def _mvit_tokens(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.conv_proj(x).flatten(2).transpose(1, 2)  # (B, N, D0)
    x = net.pos_encoding(x)  # (B, 1 + N, D0): the class token goes first
    thw = (net.pos_encoding.temporal_size, *net.pos_encoding.spatial_size)
    for block in net.blocks:
        x, thw = block(x, thw)
    return net.norm(x)  # (B, 1 + N', D)


def _swin_tokens(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.norm(net.features(net.pos_drop(net.patch_embed(x))))  # (B, T', H', W', D)
    return x.flatten(1, 3)  # (B, T'H'W', D)


@dataclass(frozen=True)
class ArchSpec:
    embed_dim: int  # width of the pooled pre-classifier feature
    head: str  # the classifier's attribute (and state-dict prefix): removed, its keys dropped on import
    tokens: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    pool: Literal["mean", "cls"]
    default_input: tuple[int, int]  # (num_frames, size): what torchvision's Kinetics weights were evaluated on
    min_input: tuple[int, int]  # torchvision's weights meta: min_temporal_size, min_size
    fixed_input: bool = False  # torchvision builds it for default_input only (MViT's relative-position tables)


ARCHS: dict[str, ArchSpec] = {
    "r2plus1d_18": ArchSpec(512, "fc", _resnet_tokens, "mean", (16, 112), (1, 1)),
    "s3d": ArchSpec(1024, "classifier", _s3d_tokens, "mean", (16, 224), (14, 224)),
    "mvit_v2_s": ArchSpec(768, "head", _mvit_tokens, "cls", (16, 224), (16, 224), fixed_input=True),
    "swin3d_t": ArchSpec(768, "head", _swin_tokens, "mean", (16, 224), (1, 1)),
}


def input_errors(arch: str, num_frames: int, size: int) -> list[str]:
    """Why `arch` cannot take num_frames x size clips (empty: it can), each with the fix."""
    if arch not in ARCHS:
        return [f"unknown torchvision video arch {arch!r}: one of {', '.join(ARCHS)}"]
    spec = ARCHS[arch]
    (frames, side), (min_frames, min_side) = spec.default_input, spec.min_input
    if spec.fixed_input and (num_frames, size) != (frames, side):
        return [f"{arch} takes exactly {frames} frames at {side} px (torchvision sizes its relative-position tables "
                f"for that clip), got {num_frames} x {size}: pass --frames {frames} --size {side}, and the same "
                f"--clip-frames/--clip-size to the jobs"]  # fmt: skip
    if num_frames < min_frames or size < min_side:
        return [f"{arch} needs clips of at least {min_frames} frames at {min_side} px (torchvision's minimum for it), "
                f"got {num_frames} x {size}: pass --frames >= {min_frames} --size >= {min_side}"]  # fmt: skip
    return []


class TorchvisionVideoEncoder(nn.Module):
    """A torchvision video classifier without its head, as a frozen clip encoder (its weights live under `net.`)."""

    def __init__(self, arch: Arch, num_frames: int, size: int) -> None:
        super().__init__()
        errors = input_errors(arch, num_frames, size)
        if errors:
            raise ValueError(errors[0])
        from torchvision.models import video  # here, not at import: only processes that run one pay for torchvision

        self.arch, self.spec = arch, ARCHS[arch]
        self.net = getattr(video, arch)(weights=None)  # never a download: the user's weights are loaded into it
        setattr(self.net, self.spec.head, nn.Identity())
        self.embed_dim = self.num_features = self.spec.embed_dim
        # read by save_bundle: the clips the encode stage must prepare for this model
        self.input_spec = {"num_frames": int(num_frames), "size": int(size), "mean": list(KINETICS_MEAN),
                           "std": list(KINETICS_STD)}  # fmt: skip

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, N, D) tokens (mvit_v2_s: the class token first)."""
        return self.spec.tokens(self.net, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, D) -> (B, D): the pooled feature torchvision's classifier reads. The classifier is gone, so
        pre_logits changes nothing; it is there because every encoder's forward_head takes it."""
        return x[:, 0] if self.spec.pool == "cls" else x.mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), pre_logits=True)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], arch: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A torchvision state dict of `arch` -> (this wrapper's keys, the dropped classifier keys). A DDP `module.`
    prefix is stripped; the classifier is gone from the wrapper, so its keys (any number of classes) are dropped."""
    head = ARCHS[arch].head + "."
    out, dropped = {}, []
    for k, v in state_dict.items():
        k = k.removeprefix("module.")
        if k.startswith(head):
            dropped.append(k)
        else:
            out["net." + k] = v
    return out, dropped


def _looks_like(raw: dict[str, torch.Tensor]) -> str | None:
    """The arch whose keys a torchvision state dict has (the error's hint); built on the meta device: no memory."""
    for arch, spec in ARCHS.items():
        with torch.device("meta"):
            own = TorchvisionVideoEncoder(arch, *spec.default_input).state_dict()
        if set(checkpoint_filter_fn(raw, arch)[0]) == set(own):
            return arch
    return None


def load_torchvision_weights(model: TorchvisionVideoEncoder, weights_uri: str) -> list[str]:
    """Load a torchvision .pth (local path or fsspec URI; torch.load with weights_only=True) into `model` strictly.
    Returns the classifier keys that were dropped; raises ValueError / FileNotFoundError naming the fix."""
    import pickle

    from .video_vit import load_state_dict_any

    try:
        raw = load_state_dict_any(weights_uri)
    except FileNotFoundError:
        raise FileNotFoundError(f"no weights file at {weights_uri}: pass --weights the .pth path or URI") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(
            f"{weights_uri} is not a state dict torch.load(weights_only=True) can read ({str(e).splitlines()[0]}): "
            "save the weights alone, e.g. torch.save(model.state_dict(), 'weights.pth')"
        ) from None
    state, dropped = checkpoint_filter_fn(raw, model.arch)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]  # fmt: skip
    if missing or unexpected or shapes:
        guess = _looks_like(raw)
        if guess and guess != model.arch:
            fix = f"they look like {guess} weights: pass --arch {guess}"
        else:
            fix = f"pass the --arch the file was saved from (one of {', '.join(ARCHS)}), as a torchvision state dict"
        found = "; ".join(f"{what} {len(keys)}: " + ", ".join(k.removeprefix("net.") for k in keys[:3])
                          + (" ..." if len(keys) > 3 else "")
                          for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
                          if keys)  # fmt: skip
        raise ValueError(f"the weights in {weights_uri} do not fit torchvision's {model.arch} ({found}): {fix}")
    model.net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()}, strict=True)
    return dropped


def import_torchvision_encoder(arch: Arch, weights_uri: str, out_uri: str, num_frames: int | None = None,
                               size: int | None = None) -> BundleInfo:  # fmt: skip
    """A torchvision .pth -> an encoder bundle at `out_uri` (marked trained) that the anonymize job (mode aam, raw
    and the pixel baselines) and `anonvid train aam` load. num_frames / size: the clips the weights were trained on
    (default: torchvision's Kinetics evaluation clip for the arch). Returns the bundle's BundleInfo."""
    from .bundle import save_bundle

    if arch not in ARCHS:
        raise ValueError(f"unknown torchvision video arch {arch!r}: one of {', '.join(ARCHS)}")
    frames, side = ARCHS[arch].default_input
    frames, side = frames if num_frames is None else num_frames, side if size is None else size
    kwargs = {"num_frames": int(frames), "size": int(side)}
    model = TorchvisionVideoEncoder(arch, **kwargs)
    dropped = load_torchvision_weights(model, weights_uri)
    extra = {"imported": {"from": weights_uri, "arch": f"torchvision.models.video.{arch}",
                          "dropped_keys": dropped}}  # fmt: skip
    return save_bundle(model.eval(), out_uri, f"tv_{arch}", kwargs, trained=True, extra=extra)


# ---------------------------------------------------------------------------------------------------------------
# Builders: the arch and the clip, nothing else (registered in bundle.BUILDERS as tv_<arch>).


def tv_r2plus1d_18(num_frames: int = 16, size: int = 112) -> TorchvisionVideoEncoder:
    """R(2+1)D-18, 512-d; torchvision's Kinetics weights: 16 x 112 clips. Any clip size works."""
    return TorchvisionVideoEncoder("r2plus1d_18", num_frames, size)


def tv_s3d(num_frames: int = 16, size: int = 224) -> TorchvisionVideoEncoder:
    """S3D, 1024-d; clips of at least 14 frames at 224 px."""
    return TorchvisionVideoEncoder("s3d", num_frames, size)


def tv_mvit_v2_s(num_frames: int = 16, size: int = 224) -> TorchvisionVideoEncoder:
    """MViTv2-S, 768-d (its class token); exactly 16 x 224 clips."""
    return TorchvisionVideoEncoder("mvit_v2_s", num_frames, size)


def tv_swin3d_t(num_frames: int = 16, size: int = 224) -> TorchvisionVideoEncoder:
    """Video Swin-T, 768-d; any clip (windows shrink to small inputs). Kinetics weights: 224 px."""
    return TorchvisionVideoEncoder("swin3d_t", num_frames, size)
