"""`anonvid train encoder|pruner|aam --config FILE [key=value ...]`: Ray Train jobs whose checkpoints are bundles."""

from __future__ import annotations

import argparse
import json
import sys

from . import add_command

EXAMPLES = """examples:
  anonvid train encoder --config jobs/configs/train_encoder_tiny.yaml
  anonvid train pruner --config jobs/configs/train_pruner_tiny.yaml epochs=10 lr=3e-4
  anonvid train aam --config jobs/configs/train_aam_tiny.yaml encoder=models/encoder out=models/aam

Re-running the same command after a crash resumes from the last checkpoint (same name and storage_path).
"""


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "train the encoder, the pruner or the AAM on Ray Train", EXAMPLES)
    p.add_argument("kind", choices=["encoder", "pruner", "aam"])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config fields")
    p.add_argument("--config", help="YAML config (jobs/configs/train_*.yaml)")
    p.add_argument("--init-from", help="encoder/pruner: start from these timm or VideoMAE weights")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pipelines.anonymize import connect

    from ..config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.kind == "aam":
        from pipelines.train.aam_loop import AamTrainConfig as cls
        from pipelines.train.aam_loop import run_aam_training as train
    else:
        from pipelines.train.loop import TrainConfig as cls
        from pipelines.train.loop import run_training as train

        overrides.append(f"kind={args.kind}")
        if args.init_from:
            overrides.append(f"init_from={args.init_from}")
    try:
        cfg = load_config(cls, args.config, overrides)
    except ConfigError as e:
        print(f"anonvid train {args.kind}: {e}", file=sys.stderr)
        return 2
    connect(args.address)
    result = train(cfg)
    print(json.dumps({"metrics": result.metrics, "checkpoint": str(result.checkpoint.path) if result.checkpoint
                      else None, "out": cfg.out}, indent=2, default=str))  # fmt: skip
    return 0 if result.error is None else 1
