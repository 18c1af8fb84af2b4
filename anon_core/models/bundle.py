"""Model bundles: the one on-disk form a trained (or imported) model travels in.

A bundle is a folder, local or behind any fsspec URI (s3://bucket/models/pruner-v3/):
    config.json        {"format": "anonvid-model/1", "kind", "builder", "kwargs", "input", "trained", ...}
    model.safetensors  the state dict
Training writes bundles and the anonymize job loads them, so the builder name and its keyword arguments are the
whole recipe for rebuilding the module; nothing is downloaded, and a bundle that does not fit its own config is
refused with the reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
import torch
from torch import nn

from .aam import aam_for_dim, aam_i3d, aam_tiny, aam_vit_base
from .pruner import pruner_base, pruner_small, pruner_tiny
from .torchvision_video import tv_mvit_v2_s, tv_r2plus1d_18, tv_s3d, tv_swin3d_t
from .video_vit import video_vit_base, video_vit_small, video_vit_tiny

FORMAT = "anonvid-model/1"
Kind = Literal["encoder", "pruner", "aam"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BUILDERS: dict[str, tuple[Kind, Callable[..., nn.Module]]] = {
    "video_vit_tiny": ("encoder", video_vit_tiny),
    "video_vit_small": ("encoder", video_vit_small),
    "video_vit_base": ("encoder", video_vit_base),
    "tv_r2plus1d_18": ("encoder", tv_r2plus1d_18),  # torchvision video classifiers, head removed: frozen encoders
    "tv_s3d": ("encoder", tv_s3d),
    "tv_mvit_v2_s": ("encoder", tv_mvit_v2_s),
    "tv_swin3d_t": ("encoder", tv_swin3d_t),
    "pruner_tiny": ("pruner", pruner_tiny),
    "pruner_small": ("pruner", pruner_small),
    "pruner_base": ("pruner", pruner_base),
    "aam_for_dim": ("aam", aam_for_dim),
    "aam_tiny": ("aam", aam_tiny),
    "aam_i3d": ("aam", aam_i3d),
    "aam_vit_base": ("aam", aam_vit_base),
}


@dataclass
class BundleInfo:
    uri: str
    kind: Kind
    builder: str
    kwargs: dict[str, Any]
    model_id: str  # "<builder>-<first 12 hex of the weights' sha256>": names the exact weights in every output row
    trained: bool
    input: dict[str, Any] = field(default_factory=dict)  # video models: num_frames, size, mean, std
    extra: dict[str, Any] = field(default_factory=dict)  # whatever the writer added (training run, metrics, ...)

    @property
    def embed_dim(self) -> int | None:
        return self.extra.get("embed_dim")


def _join(uri: str, name: str) -> str:
    return uri.rstrip("/") + "/" + name


def save_bundle(
    model: nn.Module,
    uri: str,
    builder: str,
    kwargs: dict[str, Any] | None = None,
    *,
    trained: bool,
    extra: dict[str, Any] | None = None,
) -> BundleInfo:
    """Write `model` as a bundle at `uri`. kwargs must rebuild it: BUILDERS[builder](**kwargs)."""
    from safetensors.torch import save as save_safetensors

    if builder not in BUILDERS:
        raise ValueError(f"unknown builder {builder!r}; known: {sorted(BUILDERS)}")
    kind = BUILDERS[builder][0]
    kwargs = dict(kwargs or {})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    data = save_safetensors(state)
    config: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        "builder": builder,
        "kwargs": kwargs,
        "trained": bool(trained),
        "embed_dim": int(getattr(model, "embed_dim", getattr(model, "dim", 0))),
        **(extra or {}),
    }
    if kind != "aam":
        config["input"] = {**input_spec(model), **config.get("input", {})}
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path, exist_ok=True)
    with fsspec.open(_join(uri, "model.safetensors"), "wb") as f:
        f.write(data)
    with fsspec.open(_join(uri, "config.json"), "w") as f:  # last: a folder with a config is a whole bundle
        json.dump(config, f, indent=2)
    return _info(uri, config, data)


def input_spec(model: nn.Module) -> dict[str, Any]:
    """The clips a video model takes (num_frames, size, mean, std): its own `input_spec` where it has one (wrapped
    external encoders, whose clip and normalisation are not ours), else read off a VideoViT's tubelet grid."""
    spec = getattr(model, "input_spec", None)
    if spec is not None:
        return dict(spec)
    pe = model.patch_embed
    return {
        "num_frames": int(pe.grid_size[0] * pe.tubelet[0]),
        "size": int(pe.grid_size[1] * pe.tubelet[1]),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def _info(uri: str, config: dict[str, Any], weights: bytes) -> BundleInfo:
    known = {"format", "kind", "builder", "kwargs", "trained", "input"}
    return BundleInfo(
        uri=uri,
        kind=config["kind"],
        builder=config["builder"],
        kwargs=dict(config.get("kwargs", {})),
        model_id=f"{config['builder']}-{hashlib.sha256(weights).hexdigest()[:12]}",
        trained=bool(config.get("trained", False)),
        input=dict(config.get("input", {})),
        extra={k: v for k, v in config.items() if k not in known},
    )


def read_bundle_config(uri: str) -> dict[str, Any]:
    """config.json of a bundle, with a message naming the fix when it is missing or not a bundle."""
    try:
        with fsspec.open(_join(uri, "config.json"), "r") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no model bundle at {uri} (config.json missing). Train one (`anonvid train ...`), or write one with "
            "anon_core.models.bundle.save_bundle; `anonvid demo` makes untrained ones under OUT/models/."
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{uri}/config.json is not JSON ({e}); the bundle is damaged, write it again") from None
    if config.get("format") != FORMAT or config.get("builder") not in BUILDERS:
        raise ValueError(
            f"{uri}/config.json is not an {FORMAT} bundle config (format={config.get('format')!r}, "
            f"builder={config.get('builder')!r}; known builders: {sorted(BUILDERS)})"
        )
    kwargs = config.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"{uri}/config.json: kwargs must be a mapping of builder arguments, got {kwargs!r}; the "
                         "bundle is damaged, write it again")  # fmt: skip
    if "checkpoint" in kwargs:  # the builders load it (video_vit.build_model): any path or URI, read or downloaded
        raise ValueError(
            f"{uri}/config.json asks its builder to load weights from kwargs.checkpoint={kwargs['checkpoint']!r}: "
            "refused, a bundle's weights are its own model.safetensors and opening a bundle reads nothing else. "
            "Remove `checkpoint` from kwargs (load external weights with load_pretrained, then save_bundle)"
        )
    return config


def load_bundle(uri: str, expect_kind: Kind | None = None) -> tuple[nn.Module, BundleInfo]:
    """Rebuild and load a bundle strictly; the module comes back in eval mode on CPU."""
    from safetensors.torch import load as load_safetensors

    config = read_bundle_config(uri)
    if expect_kind is not None and config["kind"] != expect_kind:
        raise ValueError(f"{uri} holds a {config['kind']} ({config['builder']}), but a {expect_kind} is needed here")
    try:
        with fsspec.open(_join(uri, "model.safetensors"), "rb") as f:
            weights = f.read()
    except FileNotFoundError:
        msg = f"{uri}/model.safetensors is missing: the bundle is incomplete, write it again"
        raise FileNotFoundError(msg) from None
    try:
        model = BUILDERS[config["builder"]][1](**config.get("kwargs", {}))
    except TypeError as e:  # an argument the builder does not know
        raise ValueError(f"{uri}/config.json: {config['builder']} does not take kwargs {config.get('kwargs')} "
                         f"({e}); the bundle is damaged or from another version, write it again") from None  # fmt: skip
    try:
        state = load_safetensors(weights)
    except Exception as e:  # SafetensorError (truncated, random bytes) derives from Exception only
        raise ValueError(f"{uri}/model.safetensors is damaged ({e}): not a whole safetensors file; write the bundle "
                         "again") from None  # fmt: skip
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"the weights in {uri} do not fit {config['builder']}({config.get('kwargs', {})}): {e}. "
            "The config.json and model.safetensors come from different models; write the bundle again."
        ) from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, _info(uri, config, weights)


def normalize_clips(clips: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float normalised: the layout every encoder here takes."""
    x = clips.permute(0, 4, 1, 2, 3).float().div_(255.0)  # (B, 3, T, H, W)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
    return (x - m) / s
