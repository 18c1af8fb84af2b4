"""`anonvid synth`: generate the synthetic privacy/action video corpus."""

from __future__ import annotations

import argparse
import sys
import time

from . import add_command, add_field_flags, add_json_flag, print_json

EXAMPLES = """examples:
  anonvid synth --out data/corpus --videos 200 --seed 1
  anonvid synth --out data/bias --videos 1000 --seed 2 --bias-protocol --split-by identity
  anonvid synth --out data/webm --videos 50 --seed 3 --codec vp9 --size 160 --frames 48
  anonvid synth --out data/blocks --videos 200 --style blocks   # other drawing, actions and attributes
"""


# CorpusConfig fields
FLAGS = ("seed", "size", "frames", "fps", "codec", "style", "bias_protocol", "split_by", "videos_per_identity")


def add_parser(sub, name: str) -> None:
    p = add_command(
        sub,
        name,
        "generate the synthetic privacy/action corpus",
        EXAMPLES,
        description="Procedurally drawn actors: private attributes only in appearance, actions only in motion. "
        "Writes OUT/videos/*, OUT/labels.parquet and OUT/corpus.json; deterministic per seed.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--videos", type=int, required=True, help="number of videos")
    add_field_flags(p, "anon_core.synthetic:CorpusConfig", {f: f for f in FLAGS}, {
        "seed": "corpus seed: the same seed, the same corpus", "size": "frame side in pixels (even)",
        "frames": "frames per video", "fps": "frames per second", "codec": "video codec",
        "style": "drawing style, each with its own actions and private attributes (blocks: a check of another style)",
        "bias_protocol": "one action 95%% with one group, the rest 95%% other",
        "split_by": "train/test split by video, or by identity (no person in both)",
        "videos_per_identity": "videos of each person"})  # fmt: skip
    p.add_argument("--workers", type=int, default=0, help="processes (0: one per CPU)")
    add_json_flag(p, "what was written (counts per split, action and attribute)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from anon_core.synthetic import STYLES, CorpusConfig, CorpusExistsError, generate_corpus

    from ._progress import Progress

    try:
        cfg = CorpusConfig(videos=args.videos, **{f: getattr(args, f) for f in FLAGS if getattr(args, f) is not None})
    except ValueError as e:
        print(f"anonvid synth: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        labels = generate_corpus(args.out, cfg, workers=args.workers, progress=Progress("synth", cfg.videos))
    except CorpusExistsError as e:
        print(f"anonvid synth: {e}", file=sys.stderr)
        return 2
    dt = time.monotonic() - t0
    attributes = STYLES[cfg.style].attributes
    if args.json:
        print_json({"out": args.out, "videos": len(labels), "seconds": round(dt, 3),
                    "identities": int(labels["identity"].nunique()),
                    "splits": labels["split"].value_counts().to_dict(),
                    "actions": labels["action"].value_counts().sort_index().to_dict(),
                    "attribute_prevalence": {a: float(labels[a].mean()) for a in attributes}}, sys.stdout)  # fmt: skip
        return 0
    print(f"wrote {len(labels)} videos to {args.out}/videos and labels to {args.out}/labels.parquet in {dt:.1f} s")
    print(f"  identities: {labels['identity'].nunique()}, splits: {labels['split'].value_counts().to_dict()}")
    print("  actions: " + ", ".join(f"{k}={v}" for k, v in labels["action"].value_counts().sort_index().items()))
    print("  attribute prevalence: " + ", ".join(f"{a}={labels[a].mean():.2f}" for a in attributes))
    return 0
