"""The anonymize recipe: a video archive -> anonymized Parquet features. Reads top to bottom:

    1. preflight: list the input, check the output is writable and the models fit; repair a killed run's leftovers
    2. print the plan (and stop there with --dry-run)
    3. run the Ray Data pipeline (pipelines/anonymize.py), committing each video exactly once
    4. with --preview N, write masked preview videos and a mask-overlay contact sheet for N videos
    5. return the summary (also written to OUT/_runs/<run_id>.json)
"""

from __future__ import annotations

import os
import sys

from pipelines.anonymize import AnonymizeConfig, PreflightError, preflight, run_pipeline


def run_anonymize(
    cfg: AnonymizeConfig, *, dry_run: bool = False, preview: int = 0, progress=None, log=None
) -> dict:
    log = sys.stderr if log is None else log  # the stream of the moment, not the one at import
    if preview and "prune" not in cfg.mode:
        raise PreflightError(
            f"--preview shows the tubelets the pruner removed, and --mode {cfg.mode} runs no pruner: use --mode prune "
            "or prune+aam, or drop --preview"
        )
    if preview < 0:
        raise PreflightError(f"--preview N needs N >= 1, got {preview}")
    plan = preflight(cfg)  # 1
    print(plan.describe(), file=log)  # 2
    untrained = [k for k, i in plan.models.items() if not i.trained]
    if untrained:
        print(f"WARNING: untrained weights for {', '.join(untrained)}: these features are NOT anonymized", file=log)
    if dry_run:
        return {"dry_run": True, "run_id": plan.run_id, "videos_listed": len(plan.listing.videos),
                "videos_to_process": len(plan.todo), "videos_skipped_committed": plan.already_done}  # fmt: skip
    summary = run_pipeline(plan, progress, log=log)  # 3 (under the output lease)
    if preview:  # 4
        from pipelines.preview import write_preview

        summary["preview"] = write_preview(plan, preview)
    return summary  # 5


def s3_endpoint(url: str | None, profile: str | None = None) -> None:
    """--s3-endpoint / --aws-profile: botocore (s3fs, and through it every reader here) reads AWS_ENDPOINT_URL and
    AWS_PROFILE; a local Ray's workers inherit both, a cluster's get them from connect() (never a credential:
    docs/credentials.md). Secrets never go on a command line."""
    if url:
        os.environ["AWS_ENDPOINT_URL"] = url
    if profile:
        os.environ["AWS_PROFILE"] = profile
