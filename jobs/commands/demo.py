"""`anonvid demo`: the main job on the embedded default (local Ray, local files, a generated sample corpus)."""

from __future__ import annotations

import argparse

from pipelines.modes import METHOD_MODES

from . import add_command

EXAMPLES = """examples:
  anonvid demo                      # what `make demo` runs: 48 videos, prune+aam, preview of 8
  anonvid demo --out /tmp/demo --videos 200 --mode aam

The demo's models are tiny and UNTRAINED (random weights), so it stays quick: the pipeline, its output
layout and its exactly-once commits are real; the features are not anonymized (train models with `anonvid train`).
"""


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "run the anonymize job on a generated sample corpus", EXAMPLES)
    p.add_argument("--out", default="demo_out", help="output folder (%(default)s)")
    p.add_argument("--videos", type=int, default=48, help="videos in the sample corpus (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (%(default)s)")
    p.add_argument("--workers", type=int, default=0, help="corpus generation processes (0: one per CPU)")
    p.add_argument("--mode", default="prune+aam", choices=METHOD_MODES,
                   help="anonymize mode (%(default)s)")
    p.add_argument("--preview", type=int, default=8, help="videos with a masked preview (%(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..recipes.demo import DemoConfig, run_demo
    from ._progress import Progress
    from .anonymize import print_summary

    s = run_demo(
        DemoConfig(out=args.out, videos=args.videos, seed=args.seed, workers=args.workers, mode=args.mode,
                   preview=args.preview),  # fmt: skip
        progress=Progress("videos committed", args.videos),
    )
    print_summary(s)
    print(f"features: {args.out}/output/features/ (any Parquet reader; README, \"Output layout\")")
    print("models: tiny and UNTRAINED (random weights), so these features are not anonymized; train real ones with "
          "`anonvid train` (or run `anonvid benchmark`)")  # fmt: skip
    return 0 if s["ok"] else 1
