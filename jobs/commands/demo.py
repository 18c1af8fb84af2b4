"""`anonvid demo`: the main job on the embedded default (local Ray, local files, a generated sample corpus)."""

from __future__ import annotations

import argparse

from pipelines.modes import METHOD_MODES

from . import add_command, add_field_flags

EXAMPLES = """examples:
  anonvid demo                      # what `make demo` runs: 48 videos, prune+aam, preview of 8
  anonvid demo --out /tmp/demo --videos 200 --mode aam

The demo's models are tiny and UNTRAINED (random weights), so it stays quick: the pipeline, its output
layout and its exactly-once commits are real; the features are not anonymized (train models with `anonvid train`).
"""


FLAGS = ("out", "videos", "seed", "workers", "preview")  # DemoConfig fields with a flag of their own


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "run the anonymize job on a generated sample corpus", EXAMPLES)
    add_field_flags(p, "jobs.recipes.demo:DemoConfig", {f: f for f in FLAGS}, {
        "out": "output folder", "videos": "videos in the sample corpus", "seed": "corpus seed",
        "workers": "corpus generation processes (0: one per CPU)",
        "preview": "videos with a masked preview"})  # fmt: skip
    from ..recipes.demo import DemoConfig  # light: dataclasses and the modes

    p.add_argument("--mode", choices=METHOD_MODES, help=f"anonymize mode (default {DemoConfig.mode})")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..recipes.demo import DemoConfig, run_demo
    from ._progress import Progress
    from .anonymize import print_summary

    cfg = DemoConfig(**{f: getattr(args, f) for f in (*FLAGS, "mode") if getattr(args, f) is not None})
    s = run_demo(cfg, progress=Progress("videos committed", cfg.videos))
    print_summary(s)
    print(f"features: {cfg.out}/output/features/ (any Parquet reader; README, \"Output layout\")")
    print("models: tiny and UNTRAINED (random weights), so these features are not anonymized; train real ones with "
          "`anonvid train` (or run `anonvid benchmark`)")  # fmt: skip
    return 0 if s["ok"] else 1
