"""`anonvid bench`: measured throughput of every stage against its limit, and of the whole pipeline (a job)."""

from __future__ import annotations

import argparse
import shlex
import sys

from . import add_command, add_field_flags, add_json_flag, flag_overrides, json_stdout, print_json

EXAMPLES = """examples:
  anonvid bench --out bench_perf                       # this machine, CPU: decode, models, pipeline
  anonvid bench --out bench_perf --docs docs/benchmarks.md   # and put the tables in the docs (this device's section)
  anonvid bench --device cuda --out bench_gpu          # on a GPU machine (bf16 autocast, as the pipeline runs)
  anonvid bench --tiny --out /tmp/b sections=[models]  # a smoke run of one section

Prints each section's table and writes OUT/bench.json: every figure the median of repeated runs with its spread,
each ratio measured in the same run, and the targets met or missed.
"""


FLAGS = ("out", "device", "tiny", "repeats", "docs")  # BenchConfig fields with a flag of their own


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "measure the throughput of every stage and the pipeline against its limit", EXAMPLES)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override fields of BenchConfig")
    p.add_argument("--config", help="YAML with BenchConfig fields")
    add_field_flags(p, "jobs.recipes.bench:BenchConfig", {f: f for f in FLAGS}, {
        "out": "output folder", "device": "cuda adds the GPU section (exit 2 without a GPU)",
        "tiny": "small inputs, 2 repeats (a smoke run)", "repeats": "runs per decode and model figure",
        "docs": "also write the tables into this markdown file (docs/benchmarks.md)"})  # fmt: skip
    add_json_flag(p, "the figures (what bench.json holds)")
    p.set_defaults(run=run, job_config=job_config)


def job_config(args: argparse.Namespace) -> tuple[str, str | None, list[str]]:
    return "bench", args.config, [*flag_overrides(args, FLAGS), *args.overrides]


def run(args: argparse.Namespace) -> int:
    from ..jobconfigs import load_or_report
    from ..recipes.bench import run_bench

    cfg = load_or_report("anonvid bench", *job_config(args))
    if cfg is None:
        return 2
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():  # before minutes of decode figures, not after them
            print("anonvid bench: --device cuda, but torch sees no CUDA device here; use --device cpu", file=sys.stderr)
            return 2
    out = json_stdout(args.json)
    command = " ".join(["anonvid", *map(shlex.quote, getattr(args, "argv", sys.argv[1:]))])
    result = run_bench(cfg, log=lambda msg: print(msg, flush=True), command=command)
    for t in result["targets"]:
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        print(f"  {t['target']}: {value} (goal {t['goal']}): {state}")
    print(f"wrote {cfg.out}/bench.json")
    if args.json:
        print_json(result, out)
    return 0
