"""`anonvid anonymize`: a video archive (folder, s3:// prefix or manifest) -> anonymized Parquet feature shards."""

from __future__ import annotations

import argparse
import re
import sys

from . import add_command, add_field_flags, flag_overrides, json_stdout, print_json

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
# flag (argparse dest) -> AnonymizeConfig key; each flag's type, choices and default come from that field, and a flag
# given on the command line overrides the --config file's value
FLAGS = {
    "manifest": "manifest", "label_column": "label_columns", "out": "output", "mode": "mode",
    "keep_pixels": "keep_pixels", "allow_raw": "allow_raw", "encoder": "encoder", "pruner": "pruner", "aam": "aam",
    "keep_ratio": "keep_ratio", "lambda_priv": "lambda_priv", "clip_frames": "clip_frames",
    "clip_stride": "clip_stride", "clip_size": "clip_size", "max_clips": "max_clips", "backend": "backend",
    "clips_per_task": "clips_per_task", "decode_timeout": "decode_timeout_s", "batch_size": "model.batch_size",
    "actors": "model.max_actors", "cpus_per_actor": "model.cpus_per_actor", "gpus_per_actor": "model.gpus_per_actor",
    "rows_per_shard": "rows_per_shard", "commit_interval": "commit_interval_s",
    "max_failed_fraction": "max_failed_fraction", "retry_failed": "retry_failed", "lease_wait": "lease_wait_s",
    "lease_ttl": "lease_ttl_s", "address": "address", "run_id": "run_id",
}  # fmt: skip
HELP = {
    "manifest": "Parquet/CSV with a `uri` (or `path`) column",
    "label_column": "a manifest column the output rows carry as JSON `labels`; repeat for more. Default: only the "
                    "manifest's own id (video_id or id); label_columns=[] for none",
    "out": "output folder or fsspec prefix (config: output)",
    "mode": "blur/down2/down4/blacken: the papers' pixel baselines, for comparison",
    "keep_pixels": "also store each clip's anonymized pixels at SIZE px, 8 frames (for `anonvid evaluate`)",
    "allow_raw": "confirm --mode raw, or raw pixels kept in modes that do not change them (evaluation only)",
    "encoder": "frozen encoder model bundle (path or URI)",
    "pruner": "tubelet pruner model bundle (modes prune, prune+aam)",
    "aam": "anonymizing adapter model bundle (modes aam, prune+aam)",
    "keep_ratio": "override the pruner's keep ratio at every pruning block",
    "lambda_priv": "override the pruner's lambda_priv",
    "clip_frames": "frames per clip",
    "clip_stride": "take every n-th frame",
    "clip_size": "clip side in pixels",
    "max_clips": "at most this many clips per video, spread over it",
    "backend": "video decoder",
    "clips_per_task": "decode work per task (segment length in clips)",
    "decode_timeout": "seconds before a segment's decode is abandoned",
    "batch_size": "clips per model forward pass",
    "actors": "actors per model stage (model.min_actors: autoscale from that many)",
    "cpus_per_actor": "CPUs each model actor reserves",
    "gpus_per_actor": "e.g. 0.25: four actors share one GPU",
    "rows_per_shard": "about this many clip rows per Parquet file",
    "commit_interval": "seconds finished videos may wait to be written",
    "max_failed_fraction": "the run fails (exit 1) when more of its videos than this fail",
    "retry_failed": "process videos that failed in earlier runs again",
    "lease_wait": "seconds to wait while another run holds the output's lease",
    "lease_ttl": "the lease expires this long after a dead holder's last heartbeat",
    "address": "Ray cluster address (else RAY_ADDRESS, else a local Ray)",
    "run_id": "name this run: letters, digits, '.', '_', '-' (else UTC time + a random suffix)",
}  # fmt: skip
METAVARS = {"label_column": "COL", "keep_pixels": "SIZE"}


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "anonymize a video archive into Parquet feature shards", EXAMPLES)
    p.add_argument("input", nargs="?", help="folder or fsspec prefix (s3://bucket/videos/) of videos")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config fields, e.g. model.batch_size=32")
    p.add_argument("--config", help="YAML with the fields of pipelines.anonymize.AnonymizeConfig (jobs/configs/)")
    add_field_flags(p, "pipelines.anonymize:AnonymizeConfig", FLAGS, HELP)
    for action in p._actions:
        action.metavar = METAVARS.get(action.dest, action.metavar)
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (else AWS_ENDPOINT_URL / AWS config)")
    p.add_argument("--aws-profile", help="credentials profile from ~/.aws (else AWS_PROFILE / the default chain)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--preview", type=int, default=0, metavar="N", help="write previews of N videos")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(run=run, job_config=job_config)


def job_config(args: argparse.Namespace) -> tuple[str, str | None, list[str]]:
    """The config this command reads: --config, then the flags given, then key=value overrides."""
    if args.input is not None and OVERRIDE.match(args.input):  # argparse fills the optional positional first
        args.overrides, args.input = [args.input, *args.overrides], None
    given = [*flag_overrides(args, {"input": "input"}), *flag_overrides(args, FLAGS)]
    return "anonymize", args.config, [*given, *args.overrides]


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
