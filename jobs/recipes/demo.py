"""The demo recipe: what `make demo` runs on a fresh machine.

Until the Ray anonymize pipeline lands, the main job is: generate a sample corpus, decode every video into clips
with the default backend, and report what came out. Reads top to bottom:
    1. generate (or reuse) OUT/corpus
    2. decode every video into clips (decord, PyAV fallback); failures are recorded, not fatal
    3. write OUT/decode_summary.json and OUT/contact_sheet.png; print the summary
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class DemoConfig:
    out: str = "demo_out"
    videos: int = 48
    seed: int = 0
    size: int = 112
    frames: int = 32
    clip_frames: int = 16
    clip_stride: int = 2
    workers: int = 0


def run_demo(cfg: DemoConfig, progress=None) -> dict:
    from anon_core.synthetic import ATTRIBUTES, CorpusConfig, generate_corpus
    from anon_core.video import ClipSpec, VideoClipReader, VideoDecodeError

    out = Path(cfg.out)
    corpus_dir = out / "corpus"
    t0 = time.monotonic()
    labels = generate_corpus(
        corpus_dir, CorpusConfig(videos=cfg.videos, seed=cfg.seed, size=cfg.size, frames=cfg.frames),
        workers=cfg.workers,
    )
    t_gen = time.monotonic() - t0

    spec = ClipSpec(num_frames=cfg.clip_frames, stride=cfg.clip_stride, size=cfg.size)
    t0 = time.monotonic()
    clips, frames_decoded, errors, thumbs = 0, 0, [], []
    for i, row in enumerate(labels.itertuples()):
        reader = VideoClipReader(str(corpus_dir / row.path), spec)
        try:
            for clip in reader.clips():
                clips += 1
                if clip.index == 0 and len(thumbs) < 16:
                    thumbs.append((clip.frames[0], clip.frames[-1]))
            frames_decoded += reader.meta.num_frames
        except VideoDecodeError as e:
            errors.append({"video_id": row.video_id, "error": e.reason.value, "message": str(e)})
        if progress:
            progress(i + 1, len(labels))
    t_dec = time.monotonic() - t0

    summary = {
        "corpus": str(corpus_dir),
        "videos": len(labels),
        "identities": int(labels["identity"].nunique()),
        "videos_ok": len(labels) - len(errors),
        "videos_failed": len(errors),
        "errors": errors,
        "clips": clips,
        "clip_shape": [spec.num_frames, spec.size, spec.size, 3],
        "generate_s": round(t_gen, 2),
        "decode_s": round(t_dec, 2),
        "decode_frames_per_s": round(frames_decoded / max(t_dec, 1e-9), 1),
        "actions": {k: int(v) for k, v in labels["action"].value_counts().sort_index().items()},
        "attribute_prevalence": {a: round(float(labels[a].mean()), 3) for a in ATTRIBUTES},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode_summary.json").write_text(json.dumps(summary, indent=2))
    if thumbs:
        _contact_sheet(thumbs, out / "contact_sheet.png")
        summary["contact_sheet"] = str(out / "contact_sheet.png")
    return summary


def _contact_sheet(pairs: list[tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """First and last frame of each video's first clip, side by side, four videos per row."""
    from PIL import Image

    tiles = [np.concatenate(p, axis=1) for p in pairs]  # (S, 2S, 3)
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + 4], axis=1) for i in range(0, len(tiles), 4)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
