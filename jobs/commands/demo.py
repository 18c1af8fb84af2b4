"""`anonvid demo`: the main job on the embedded default (local machine, local files, a generated sample corpus)."""

from __future__ import annotations

import argparse

from . import add_command

EXAMPLES = """examples:
  anonvid demo                      # what `make demo` runs
  anonvid demo --out /tmp/demo --videos 200
"""


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "run the main job on a generated sample corpus", EXAMPLES)
    p.add_argument("--out", default="demo_out")
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..recipes.demo import DemoConfig, run_demo
    from ._progress import Progress

    s = run_demo(
        DemoConfig(out=args.out, videos=args.videos, seed=args.seed, workers=args.workers),
        progress=Progress("decode", args.videos),
    )
    print(f"corpus: {s['videos']} videos of {s['identities']} identities in {s['corpus']} ({s['generate_s']} s)")
    print(
        f"decoded: {s['videos_ok']} ok, {s['videos_failed']} failed, {s['clips']} clips of shape {s['clip_shape']} "
        f"at {s['decode_frames_per_s']} frames/s"
    )
    print("actions: " + ", ".join(f"{k}={v}" for k, v in s["actions"].items()))
    print("private attribute prevalence: " + ", ".join(f"{k}={v}" for k, v in s["attribute_prevalence"].items()))
    print(f"summary: {args.out}/decode_summary.json")
    if "contact_sheet" in s:
        print(f"look at: {s['contact_sheet']} (first/last frame of a clip per video: the actor and its motion)")
    return 1 if s["videos_failed"] else 0
