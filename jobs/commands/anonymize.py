"""`anonvid anonymize`: a video archive (folder, s3:// prefix or manifest) -> anonymized Parquet feature shards."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from . import add_command

EXAMPLES = """examples:
  anonvid anonymize demo_out/corpus/videos --out feats --encoder models/encoder --pruner models/pruner \\
      --aam models/aam                                   # prune+aam, the default mode
  anonvid anonymize s3://archive/videos/ --out s3://features/run1 --mode aam --encoder s3://models/enc \\
      --aam s3://models/aam --s3-endpoint http://127.0.0.1:9000
  anonvid anonymize --manifest videos.csv --out feats ... --dry-run     # print the plan, do nothing
  anonvid anonymize ... --preview 8                      # also write masked previews + a mask contact sheet

Re-running the same command skips committed videos; a killed run re-run finishes with every video exactly once.
Exit code: 0 ok; 1 when more than --max-failed-fraction of the videos failed or some did not finish; 2 when the
job cannot start (the message names the fix).
"""


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "anonymize a video archive into Parquet feature shards", EXAMPLES)
    p.add_argument("input", nargs="?", help="folder or fsspec prefix (s3://bucket/videos/) of videos")
    p.add_argument("--manifest", help="Parquet/CSV with a `uri` column (other columns are kept as labels)")
    p.add_argument("--out", required=True, help="output folder or fsspec prefix")
    p.add_argument("--mode", default="prune+aam", choices=["prune", "aam", "prune+aam", "raw", "blur", "down2",
                                                           "down4", "blacken"],
                   help="blur/down2/down4/blacken: the papers' pixel baselines, for comparison")  # fmt: skip
    p.add_argument("--keep-pixels", type=int, default=0, metavar="SIZE",
                   help="also store each clip's anonymized pixels at SIZE px, 8 frames (for `anonvid evaluate`)")
    p.add_argument("--allow-raw", action="store_true", help="confirm --mode raw (un-anonymized; evaluation only)")
    p.add_argument("--encoder", help="frozen encoder model bundle (path or URI)")
    p.add_argument("--pruner", help="tubelet pruner model bundle (modes prune, prune+aam)")
    p.add_argument("--aam", help="anonymizing adapter model bundle (modes aam, prune+aam)")
    p.add_argument("--keep-ratio", type=float, help="override the pruner's keep ratio at every pruning block")
    p.add_argument("--lambda-priv", type=float, help="override the pruner's lambda_priv")
    p.add_argument("--clip-frames", type=int, default=16)
    p.add_argument("--clip-stride", type=int, default=2)
    p.add_argument("--clip-size", type=int, default=112)
    p.add_argument("--max-clips", type=int, help="at most this many clips per video, spread over it")
    p.add_argument("--backend", default="decord", choices=["decord", "pyav"])
    p.add_argument("--clips-per-task", type=int, default=32, help="decode work per task (segment length in clips)")
    p.add_argument("--decode-timeout", type=float, default=600.0, help="seconds before a segment's decode is abandoned")
    p.add_argument("--batch-size", type=int, default=16, help="clips per model forward pass")
    p.add_argument("--actors", type=int, default=1, help="most actors per model stage (autoscaled from 1)")
    p.add_argument("--cpus-per-actor", type=float, default=0.5)
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="e.g. 0.25: four actors share one GPU")
    p.add_argument("--rows-per-shard", type=int, default=16384, help="about this many clip rows per Parquet file")
    p.add_argument("--commit-interval", type=float, default=30.0, help="seconds finished videos may wait to be written")
    p.add_argument("--max-failed-fraction", type=float, default=0.05)
    p.add_argument("--retry-failed", action="store_true", help="process videos that failed in earlier runs again")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (else AWS_ENDPOINT_URL / AWS config)")
    p.add_argument("--aws-profile", help="credentials profile from ~/.aws (else AWS_PROFILE / the default chain)")
    p.add_argument("--run-id", help="name this run (default: UTC time + random suffix)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--preview", type=int, default=0, metavar="N", help="write previews of N videos")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace):
    from pipelines.anonymize import AnonymizeConfig
    from pipelines.stages.workers import ModelResources

    return AnonymizeConfig(
        output=args.out,
        input=args.input,
        manifest=args.manifest,
        mode=args.mode,
        allow_raw=args.allow_raw,
        keep_pixels=args.keep_pixels,
        encoder=args.encoder,
        pruner=args.pruner,
        aam=args.aam,
        keep_ratio=args.keep_ratio,
        lambda_priv=args.lambda_priv,
        clip_frames=args.clip_frames,
        clip_stride=args.clip_stride,
        clip_size=args.clip_size,
        max_clips=args.max_clips,
        backend=args.backend,
        clips_per_task=args.clips_per_task,
        decode_timeout_s=args.decode_timeout,
        model=ModelResources(
            batch_size=args.batch_size,
            max_actors=args.actors,
            cpus_per_actor=args.cpus_per_actor,
            gpus_per_actor=args.gpus_per_actor,
        ),
        rows_per_shard=args.rows_per_shard,
        commit_interval_s=args.commit_interval,
        max_failed_fraction=args.max_failed_fraction,
        retry_failed=args.retry_failed,
        address=args.address,
        run_id=args.run_id,
    )


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
        print(f"ABORTED: {s['aborted'].splitlines()[0]}", file=out)
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

    from ..recipes.anonymize import run_anonymize, s3_endpoint
    from ._progress import Progress

    s3_endpoint(args.s3_endpoint, args.aws_profile)
    try:
        cfg = config_from_args(args)
        # with --json, stdout carries only the summary: Ray's and the plan's messages go to stderr
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            summary = run_anonymize(cfg, dry_run=args.dry_run, preview=args.preview, progress=Progress("videos", 0))
    except (PreflightError, InputError, OutputError, FileNotFoundError) as e:
        print(f"anonvid anonymize: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)
    return 0 if summary.get("dry_run") or summary["ok"] else 1
