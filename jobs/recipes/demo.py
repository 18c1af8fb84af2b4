"""The demo recipe: what `make demo` runs on a fresh machine. Reads top to bottom:
    1. generate (or reuse) a sample corpus in OUT/corpus
    2. make tiny model bundles in OUT/models (UNTRAINED, random weights, until the training job lands)
    3. run the anonymize job on local Ray (prune+aam), with a preview of 8 videos
    4. return its summary
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.modes import mode


@dataclass
class DemoConfig:
    out: str = "demo_out"
    videos: int = 48
    seed: int = 0
    size: int = 112
    frames: int = 32
    workers: int = 0
    mode: str = "prune+aam"
    preview: int = 8


def untrained_models(models_dir: Path, seed: int, num_actions: int, num_attributes: int) -> dict[str, str]:
    """Tiny encoder / pruner / AAM bundles with random weights, marked untrained (the job warns about them)."""
    import torch

    from anon_core.models import aam_for_dim, pruner_tiny, video_vit_tiny
    from anon_core.models.bundle import read_bundle_config, save_bundle

    specs = {
        "encoder": ("video_vit_tiny", video_vit_tiny, {"num_classes": num_actions}),
        "pruner": ("pruner_tiny", pruner_tiny, {"num_classes": num_actions, "num_privacy_classes": num_attributes}),
        "aam": ("aam_for_dim", aam_for_dim, {"dim": 192}),
    }
    uris = {}
    for i, (kind, (builder, fn, kwargs)) in enumerate(specs.items()):
        uri = str(models_dir / kind)
        try:
            read_bundle_config(uri)
        except FileNotFoundError:
            torch.manual_seed(seed + i)
            save_bundle(fn(**kwargs), uri, builder, kwargs, trained=False, extra={"note": "random init (demo)"})
        uris[kind] = uri
    return uris


def run_demo(cfg: DemoConfig, progress=None) -> dict:
    from anon_core.synthetic import ACTIONS, ATTRIBUTES, CorpusConfig, generate_corpus
    from pipelines.anonymize import AnonymizeConfig

    from .anonymize import run_anonymize

    out = Path(cfg.out)
    corpus = out / "corpus"
    generate_corpus(corpus, CorpusConfig(videos=cfg.videos, seed=cfg.seed, size=cfg.size, frames=cfg.frames),
                    workers=cfg.workers)  # fmt: skip
    models = untrained_models(out / "models", cfg.seed, len(ACTIONS), len(ATTRIBUTES))
    job = AnonymizeConfig(
        output=str(out / "output"),  # the job writes output/features/part-*.parquet, output/errors/, ...
        manifest=str(corpus / "labels.parquet"),
        mode=cfg.mode,
        clip_size=cfg.size,
        **{k: v for k, v in models.items() if k in ("encoder", "pruner", "aam")},
    )
    return run_anonymize(job, preview=cfg.preview if mode(cfg.mode).pruner else 0, progress=progress)
