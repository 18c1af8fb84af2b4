"""`anonvid validate-config FILE...`: check job configs without running anything; every error at once."""

from __future__ import annotations

import argparse
import sys

import fsspec

from . import add_command
from .anonymize import OVERRIDE

EXAMPLES = """examples:
  anonvid validate-config jobs/configs/*.yaml
  anonvid validate-config my_run.yaml --job "train pruner" epochs=20
  anonvid validate-config --inputs jobs/configs/train_encoder_tiny.yaml   # also open its manifest: labels, classes
  ANONVID_INPUT=s3://archive/videos/ ANONVID_OUTPUT=s3://features/vitb/ ANONVID_MODELS=s3://models/vitb \\
      anonvid validate-config jobs/configs/anonymize_gpu_vitb.yaml      # ${VAR} references come from the environment

The job a file configures comes from --job, else from the `anonvid ...` command in its header comment, else from its
name (anonymize_*.yaml, train_pruner_*.yaml, evaluate_*.yaml, ...).
Exit code: 0 when every file is valid, 2 otherwise.
"""


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "check job config files and list every error", EXAMPLES)
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML config (path or fsspec URI)")
    p.add_argument("--job", help='the job the files configure: anonymize, "train encoder", ..., evaluate, benchmark')
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="key=value",
                   help="validate with this override too (repeatable; trailing key=value words work as well)")
    p.add_argument("--inputs", action="store_true",
                   help="also open what each config names (manifest and labels, models, outputs) and report what the "
                        "job would refuse at run time")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..jobconfigs import (
        input_errors,
        job_config_errors,
        job_from_filename,
        job_from_header,
        job_names,
        load_job_config,
    )

    overrides = list(args.overrides)
    files = [f for f in args.files if not OVERRIDE.match(f)]
    overrides += [f for f in args.files if OVERRIDE.match(f)]  # trailing key=value words
    if args.job and args.job not in job_names():
        print(f"anonvid validate-config: --job must be one of {', '.join(job_names())}", file=sys.stderr)
        return 2
    bad = 0
    for path in files:
        job = args.job or _job_of(path, job_from_header) or job_from_filename(path)
        if job is None:
            print(f"{path}: cannot tell which job this configures: add a header line `# anonvid JOB --config "
                  f"{path}`, or pass --job (one of {', '.join(job_names())})")  # fmt: skip
            bad += 1
            continue
        errors = job_config_errors(job, path, overrides)
        if not errors and args.inputs:
            errors = input_errors(job, load_job_config(job, path, overrides))
        if errors:
            bad += 1
            print(f"{path}: {len(errors)} error{'s' if len(errors) > 1 else ''} ({job} config)")
            for e in errors:
                print(f"  - {e.removeprefix(path + ': ')}")
        else:
            print(f"{path}: ok ({job} config)")
    return 2 if bad else 0


def _job_of(path: str, from_header) -> str | None:
    try:
        with fsspec.open(path, "r", encoding="utf-8") as f:
            return from_header(f.read(4096))
    except (OSError, UnicodeDecodeError):
        return None  # the loader reports the unreadable file itself
