"""`anonvid anonymize`: a video archive (folder, s3:// prefix or manifest) -> anonymized Parquet feature shards."""

from __future__ import annotations

import argparse
import re
import sys

from pipelines.modes import MODES

from . import add_command, flag_overrides, json_stdout, print_json

EXAMPLES = """examples:
  anonvid anonymize demo_out/corpus/videos --out feats --encoder models/encoder --pruner models/pruner \\
      --aam models/aam                                   # prune+aam, the default mode
  anonvid anonymize s3://archive/videos/ --out s3://features/run1 --mode aam --encoder s3://models/enc \\
      --aam s3://models/aam --s3-endpoint http://127.0.0.1:9000
  anonvid anonymize --manifest videos.csv --out feats ... --dry-run     # print the plan, do nothing
  anonvid anonymize ... --preview 8                      # also write masked previews + a mask contact sheet
  anonvid anonymize --config jobs/configs/anonymize_tiny.yaml model.batch_size=8    # a config file + overrides

Re-running the same command skips committed videos; a killed run re-run finishes with every video exactly once.
Exit code: 0 ok; 1 when more than --max-failed-fraction of the videos failed or some did not finish; 2 when the
job cannot start (the message names the fix).
"""


OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")  # key=value, not a path (write ./a=b for such a folder)
# flag (argparse dest) -> config key; a flag given on the command line overrides the --config file's value
FLAGS = {
    "input": "input", "manifest": "manifest", "label_column": "label_columns", "out": "output", "mode": "mode",
    "keep_pixels": "keep_pixels",
    "allow_raw": "allow_raw", "encoder": "encoder", "pruner": "pruner", "aam": "aam", "keep_ratio": "keep_ratio",
    "lambda_priv": "lambda_priv", "clip_frames": "clip_frames", "clip_stride": "clip_stride",
    "clip_size": "clip_size", "max_clips": "max_clips", "backend": "backend", "clips_per_task": "clips_per_task",
    "decode_timeout": "decode_timeout_s", "batch_size": "model.batch_size", "actors": "model.max_actors",
    "cpus_per_actor": "model.cpus_per_actor", "gpus_per_actor": "model.gpus_per_actor",
    "rows_per_shard": "rows_per_shard", "commit_interval": "commit_interval_s",
    "max_failed_fraction": "max_failed_fraction", "retry_failed": "retry_failed", "address": "address",
    "run_id": "run_id", "lease_wait": "lease_wait_s", "lease_ttl": "lease_ttl_s",
}  # fmt: skip


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "anonymize a video archive into Parquet feature shards", EXAMPLES)
    p.add_argument("input", nargs="?", help="folder or fsspec prefix (s3://bucket/videos/) of videos")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config fields, e.g. model.batch_size=32")
    p.add_argument("--config", help="YAML with the fields of pipelines.anonymize.AnonymizeConfig (jobs/configs/)")
    p.add_argument("--manifest", help="Parquet/CSV with a `uri` (or `path`) column")
    p.add_argument("--label-column", action="append", metavar="COL",
                   help="a manifest column the output rows carry as JSON `labels`; repeat for more. Default: only the "
                   "manifest's own id (video_id or id); label_columns=[] for none")  # fmt: skip
    p.add_argument("--out", help="output folder or fsspec prefix (config: output)")
    p.add_argument("--mode", choices=list(MODES),
                   help="default prune+aam; blur/down2/down4/blacken: the papers' pixel baselines, for comparison")
    p.add_argument("--keep-pixels", type=int, metavar="SIZE",
                   help="also store each clip's anonymized pixels at SIZE px, 8 frames (for `anonvid evaluate`)")
    p.add_argument("--allow-raw", action="store_true", default=None,
                   help="confirm --mode raw (un-anonymized; evaluation only)")
    p.add_argument("--encoder", help="frozen encoder model bundle (path or URI)")
    p.add_argument("--pruner", help="tubelet pruner model bundle (modes prune, prune+aam)")
    p.add_argument("--aam", help="anonymizing adapter model bundle (modes aam, prune+aam)")
    p.add_argument("--keep-ratio", type=float, help="override the pruner's keep ratio at every pruning block")
    p.add_argument("--lambda-priv", type=float, help="override the pruner's lambda_priv")
    p.add_argument("--clip-frames", type=int, help="default 16")
    p.add_argument("--clip-stride", type=int, help="default 2")
    p.add_argument("--clip-size", type=int, help="default 112")
    p.add_argument("--max-clips", type=int, help="at most this many clips per video, spread over it")
    p.add_argument("--backend", choices=["decord", "pyav"], help="default decord")
    p.add_argument("--clips-per-task", type=int, help="decode work per task (segment length in clips; default 32)")
    p.add_argument("--decode-timeout", type=float, help="seconds before a segment's decode is abandoned (600)")
    p.add_argument("--batch-size", type=int, help="clips per model forward pass (default 16)")
    p.add_argument("--actors", type=int, help="most actors per model stage, autoscaled from 1 (default 1)")
    p.add_argument("--cpus-per-actor", type=float, help="default 0.5")
    p.add_argument("--gpus-per-actor", type=float, help="e.g. 0.25: four actors share one GPU (default 0)")
    p.add_argument("--rows-per-shard", type=int, help="about this many clip rows per Parquet file (16384)")
    p.add_argument("--commit-interval", type=float, help="seconds finished videos may wait to be written (30)")
    p.add_argument("--max-failed-fraction", type=float, help="default 0.05")
    p.add_argument("--retry-failed", action="store_true", default=None,
                   help="process videos that failed in earlier runs again")
    p.add_argument("--lease-wait", type=float,
                   help="seconds to wait while another run holds the output's lease (default 3600)")
    p.add_argument("--lease-ttl", type=float, help="the lease expires this long after a dead holder's last "
                   "heartbeat (default 300)")  # fmt: skip
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (else AWS_ENDPOINT_URL / AWS config)")
    p.add_argument("--aws-profile", help="credentials profile from ~/.aws (else AWS_PROFILE / the default chain)")
    p.add_argument("--run-id", help="name this run: letters, digits, '.', '_', '-' (default: UTC time + random "
                   "suffix)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--preview", type=int, default=0, metavar="N", help="write previews of N videos")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(run=run, job_config=job_config)


def job_config(args: argparse.Namespace) -> tuple[str, str | None, list[str]]:
    """The config this command reads: --config, then the flags given, then key=value overrides."""
    if args.input is not None and OVERRIDE.match(args.input):  # argparse fills the optional positional first
        args.overrides, args.input = [args.input, *args.overrides], None
    return "anonymize", args.config, [*flag_overrides(args, FLAGS), *args.overrides]


def config_from_args(args: argparse.Namespace):
    """The checked AnonymizeConfig (raises jobs.config.ConfigError listing every problem)."""
    from ..jobconfigs import load_job_config

    return load_job_config(*job_config(args))


def print_summary(s: dict, out=None) -> None:
    out = sys.stdout if out is None else out
    if s.get("dry_run"):
        print(f"dry run: {s['videos_to_process']} of {s['videos_listed']} videos would be processed", file=out)
        return
    print(
        f"videos: {s['videos_ok']} ok, {s['videos_failed']} failed, {s['videos_incomplete']} unfinished, "
        f"{s['videos_skipped_committed']} already done; {s['clips']} clips",
        file=out,
    )
    if s["errors_by_type"]:
        print("failures: " + ", ".join(f"{k}={v}" for k, v in sorted(s["errors_by_type"].items())), file=out)
    print(f"throughput: {s['videos_per_s']} videos/s, {s['clips_per_s']} clips/s over {s['elapsed_s']} s", file=out)
    busy = ", ".join(f"{k} {v} s" for k, v in s["stage_busy_s"].items())
    if busy:
        print(f"stage busy time: {busy}", file=out)
    print(f"output: {s['output']}  (run record: {s['run_record']})", file=out)
    if s.get("preview", {}).get("contact_sheet"):
        print(f"preview: {s['preview']['contact_sheet']} and {len(s['preview']['videos'])} masked videos", file=out)
    elif "preview" in s:
        print("preview: no video was committed ok, nothing to preview", file=out)
    if s.get("aborted"):
        where = f" (traceback in {s['run_record']})" if s.get("run_record") else ""
        print(f"ABORTED: {s['aborted'].splitlines()[0]}{where}", file=out)
    if s["videos_incomplete"]:
        print(f"{s['videos_incomplete']} videos did not finish: run the same command again to finish them", file=out)
    if s["failed_fraction"] > s["max_failed_fraction"]:
        print(
            f"FAILED: {s['failed_fraction']:.1%} of videos failed (limit {s['max_failed_fraction']:.1%}); see "
            f"{s['output']}/errors/",
            file=out,
        )


def run(args: argparse.Namespace) -> int:
    from pipelines.anonymize import PreflightError
    from pipelines.sources import InputError
    from pipelines.store import OutputError

    from ..jobconfigs import load_or_report
    from ..recipes.anonymize import run_anonymize, s3_endpoint
    from ._progress import Progress

    s3_endpoint(args.s3_endpoint, args.aws_profile)
    cfg = load_or_report("anonvid anonymize", *job_config(args))
    if cfg is None:
        return 2
    out = json_stdout(args.json)
    try:
        progress = Progress("videos committed", 0)
        summary = run_anonymize(cfg, dry_run=args.dry_run, preview=args.preview, progress=progress)
    except (PreflightError, InputError, OutputError, FileNotFoundError) as e:
        print(f"anonvid anonymize: {e}", file=sys.stderr)
        return 2
    if args.json:
        print_json(summary, out)
    else:
        print_summary(summary)
    return 0 if summary.get("dry_run") or summary["ok"] else 1
