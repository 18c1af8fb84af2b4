"""`anonvid train encoder|pruner|aam --config FILE [key=value ...]`: Ray Train jobs whose checkpoints are bundles."""

from __future__ import annotations

import argparse
import json
import sys

from . import add_command, add_json_flag, json_stdout, print_json

EXAMPLES = """examples:
  anonvid train encoder --config jobs/configs/train_encoder_tiny.yaml
  anonvid train pruner --config jobs/configs/train_pruner_tiny.yaml epochs=10 lr=3e-4
  anonvid train aam --config jobs/configs/train_aam_tiny.yaml encoder=models/encoder out=models/aam

Re-running the same command after a crash resumes from the last checkpoint (same name and storage_path).
"""


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "train the encoder, the pruner or the AAM on Ray Train", EXAMPLES)
    p.add_argument("kind", choices=["encoder", "pruner", "aam"], help="which model to train")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config fields")
    p.add_argument("--config", help="YAML config (jobs/configs/train_*.yaml)")
    p.add_argument("--init-from", help="encoder/pruner: start from these timm or VideoMAE weights")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    add_json_flag(p, "the run's result (metrics of the last epoch, checkpoint, export)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved label schema, videos per class and split, the clip count and the plan; "
                        "train nothing")  # fmt: skip
    p.set_defaults(run=run, job_config=job_config)


def job_config(args: argparse.Namespace) -> tuple[str, str | None, list[str]]:
    overrides = list(args.overrides)
    if args.init_from:
        if args.kind == "aam":
            from ..config import ConfigError

            raise ConfigError(["--init-from is for the encoder and the pruner; the AAM starts as the identity"])
        overrides.append(f"init_from={json.dumps(args.init_from)}")
    return f"train {args.kind}", args.config, overrides


def run(args: argparse.Namespace) -> int:
    from pipelines.sources import InputError
    from pipelines.train.clips import TrainDataError
    from pipelines.train.schema import LabelError

    from ..config import ConfigError
    from ..jobconfigs import load_or_report

    name = f"anonvid train {args.kind}"
    try:
        cfg = load_or_report(name, *job_config(args))
    except ConfigError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    if cfg is None:
        return 2
    errors = cfg.encoder_errors() if args.kind == "aam" else []  # before anything is decoded
    if errors:
        print(f"{name}: " + "; ".join(errors), file=sys.stderr)
        return 2
    try:
        if args.dry_run:
            from pipelines.train.common import dry_run

            dry_run(cfg, args.kind)
            return 0
        return _train(args, cfg)
    except (LabelError, InputError, FileNotFoundError) as e:  # the input or the config does not fit: refused
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    except TrainDataError as e:  # the run started and failed on its data
        print(f"{name}: {e}", file=sys.stderr)
        return 1


def _train(args: argparse.Namespace, cfg) -> int:
    from pipelines.anonymize import connect

    if args.kind == "aam":
        from pipelines.train.aam_loop import run_aam_training as train
    else:
        from pipelines.train.loop import run_training as train
    out = json_stdout(args.json)
    connect(args.address)
    result = train(cfg)
    summary = {"ok": result.error is None, "error": None if result.error is None else str(result.error),
               "metrics": result.metrics, "checkpoint": str(result.checkpoint.path) if result.checkpoint else None,
               "out": cfg.out}  # fmt: skip
    if args.json:
        print_json(summary, out)
    elif result.error is None:
        print(f"trained: last epoch {summary['metrics'].get('epoch', -1) + 1}; checkpoint {summary['checkpoint']}"
              + (f"; best exported to {cfg.out}" if cfg.out else ""))  # fmt: skip
    else:
        print(f"anonvid train {args.kind}: the run failed: {summary['error']}", file=sys.stderr)
    return 0 if result.error is None else 1
