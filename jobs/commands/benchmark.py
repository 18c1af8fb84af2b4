"""`anonvid benchmark`: the whole privacy/utility protocol on a generated corpus, one command (jobs/recipes)."""

from __future__ import annotations

import argparse

from . import add_command, add_field_flags, add_json_flag, flag_overrides, json_stdout, print_json

EXAMPLES = """examples:
  anonvid benchmark --out bench_out --readme README.md          # 1000 videos: what the README table comes from
  anonvid benchmark --out /tmp/b --videos 64 bias_videos=32 encoder_epochs=1 pruner_epochs=1 aam_epochs=2
  anonvid benchmark --config jobs/configs/benchmark_tiny.yaml

Steps: generate a corpus and a --bias-protocol corpus, train encoder / pruner / AAM on Ray Train, anonymize with
every method, baseline and sweep point, evaluate (OUT/report/report.md, report.json, plots). Re-running resumes.
"""


FLAGS = ("out", "videos", "readme")  # BenchmarkConfig fields with a flag of their own


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "run the whole privacy/utility protocol on a generated corpus", EXAMPLES)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override fields of BenchmarkConfig")
    p.add_argument("--config", help="YAML with BenchmarkConfig fields")
    add_field_flags(p, "jobs.recipes.benchmark:BenchmarkConfig", {f: f for f in FLAGS}, {
        "out": "output folder", "videos": "corpus size",
        "readme": "write the result table into this README (between the benchmark markers)"})  # fmt: skip
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the steps and what an earlier run into --out already did; run nothing")  # fmt: skip
    add_json_flag(p, "the report (report.json) at the end")
    p.set_defaults(run=run, job_config=job_config)


def job_config(args: argparse.Namespace) -> tuple[str, str | None, list[str]]:
    return "benchmark", args.config, [*flag_overrides(args, FLAGS), *args.overrides]


def run(args: argparse.Namespace) -> int:
    from pipelines.anonymize import connect

    from ..jobconfigs import load_or_report
    from ..recipes.benchmark import dry_run, run_benchmark

    cfg = load_or_report("anonvid benchmark", *job_config(args))  # every config error, before anything runs
    if cfg is None:
        return 2
    if args.dry_run:
        dry_run(cfg)
        return 0
    out = json_stdout(args.json)
    connect(args.address)
    report = run_benchmark(cfg, log=lambda msg: print(msg, flush=True))
    from pipelines.evaluate.report import markdown_table

    print(markdown_table(report))
    print(f"report: {cfg.out}/report/report.md")
    if args.json:
        print_json(report, out)
    return 0
