"""`anonvid runs OUTPUT`: the runs that wrote an output folder, newest first, with counts, failures and throughput."""

from __future__ import annotations

import argparse
import json
import sys

from . import add_command

EXAMPLES = """examples:
  anonvid runs feats/                     # a table of past runs
  anonvid runs s3://features/vitb/ --limit 5 --json

A run's status: ok, failed (more than max_failed_fraction of its videos failed), incomplete (some did not finish:
run the job again), aborted, running (it holds the output's lease now) or interrupted (it died; its lease expired
or will expire, and the next run finishes its videos).
"""


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "list the runs that wrote an anonymize output", EXAMPLES)
    p.add_argument("output", help="an `anonvid anonymize` output folder or URI")
    p.add_argument("--limit", type=int, default=20, help="newest N runs (0: all)")
    p.add_argument("--json", action="store_true", help="print the run records as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pipelines.lease import OutputLease
    from pipelines.store import OutputStore

    store = OutputStore(args.output)
    if not store.exists(store.path("_output.json")):
        print(f"anonvid runs: {args.output} is not an anonymize output (no _output.json): check the path",
              file=sys.stderr)  # fmt: skip
        return 2
    lease = OutputLease(store, owner="")
    held = lease.current()
    holder = held[1].get("owner") if held and not OutputLease.is_free(held[1]) else None
    records = sorted(store.runs(), key=lambda r: r.get("started", ""), reverse=True)
    for r in records:
        r.setdefault("status", "ok" if r.get("ok") else "failed")  # records written before statuses existed
        if r["status"] == "running" and r.get("run_id") != holder:
            r["status"] = "interrupted"
    shown = records[: args.limit] if args.limit else records
    if args.json:
        print(json.dumps(shown, indent=2, default=str))
        return 0
    count = f"{len(records)} run{'' if len(records) == 1 else 's'}"
    print(f"{args.output}: {count}" + (f"; run {holder} holds the lease now" if holder else ""))
    if not shown:
        return 0
    header = ("run", "started", "status", "ok", "failed", "skipped", "unfinished", "clips", "seconds", "videos/s")
    rows = [
        (r.get("run_id", "?"), str(r.get("started", ""))[:19], r["status"], r.get("videos_ok", ""),
         r.get("videos_failed", ""), r.get("videos_skipped_committed", ""), r.get("videos_incomplete", ""),
         r.get("clips", ""), r.get("elapsed_s", ""), r.get("videos_per_s", ""))
        for r in shown
    ]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for line in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    failed = [r for r in shown if r.get("errors_by_type")]
    for r in failed:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(r["errors_by_type"].items()))
        print(f"  {r['run_id']}: failures {kinds} (rows in {args.output.rstrip('/')}/errors/)")
    return 0
