"""`anonvid evaluate`: worst-case privacy and utility of anonymized outputs, with CIs, as report.json/.md and plots."""

from __future__ import annotations

import argparse
import shlex
import sys

from . import add_command, add_field_flags, add_json_flag, flag_overrides, json_stdout, print_json

EXAMPLES = """examples:
  anonvid evaluate --labels corpus/labels.parquet --out report \\
      --method raw=feats/raw --method prune=feats/prune --method aam=feats/aam --method prune+aam=feats/both
  anonvid evaluate --labels corpus/labels.parquet --out report --method raw=feats/raw --method aam=feats/aam \\
      --bias-labels bias/labels.parquet --bias raw=bias_feats/raw --bias aam=bias_feats/aam
  anonvid evaluate --config report.yaml epochs=100      # the same fields as a YAML file, plus key=value overrides

Inputs are `anonvid anonymize --out` folders (features; add --keep-pixels SIZE there and the pixels are attacked
by a freshly trained video model too). Make the reference with `anonvid anonymize --mode raw --allow-raw`.
Sweep points: --method prune-l2=feats/prune_l2 --sweep prune-l2=lambda_priv:2.0
"""


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "attack anonymized outputs and report privacy and utility", EXAMPLES)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override config fields (applied last, over --config and the flags)")  # fmt: skip
    p.add_argument("--config", help="YAML with the fields of pipelines.evaluate.run.EvaluateConfig")
    p.add_argument("--method", action="append", default=[], metavar="NAME=OUTPUT", help="a method's anonymize output")
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=PARAM:VALUE", help="mark NAME a sweep point")
    p.add_argument("--bias", action="append", default=[], metavar="NAME=OUTPUT", help="NAME's output on that corpus")
    add_field_flags(p, "pipelines.evaluate.run:EvaluateConfig", {f: f for f in SCALAR_FLAGS}, {
        "labels": "labels.parquet of the corpus the outputs were made from",
        "out": "report folder", "reference": "the method leakage is normalized by",
        "bias_labels": "labels.parquet of a --bias-protocol corpus",
        "bias_group": "the group column of the bias protocol",
        "epochs": "most epochs of a feature attacker or probe (the count is chosen on a training hold-out)",
        "attacker_seeds": "seeded fits averaged into each feature attacker and probe (1: fastest, noisiest)",
        "seed": "seed of the attackers, probes and bootstrap"})  # fmt: skip
    add_json_flag(p, "the report's figures and targets (what report.json holds)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the labels and every output, print what would be evaluated; train nothing")  # fmt: skip
    p.set_defaults(run=run, job_config=job_config)


SCALAR_FLAGS = ("labels", "out", "reference", "bias_labels", "bias_group", "epochs", "attacker_seeds", "seed")


def job_config(args: argparse.Namespace) -> tuple[str, str | None, list[str]]:
    """For checking and `anonvid submit`: a --config file plus scalar flags and overrides. --method, --sweep and
    --bias build the method list on the command line, which only `anonvid evaluate` itself merges."""
    from ..config import ConfigError

    if args.method or args.sweep or args.bias:
        raise ConfigError(["--method/--sweep/--bias: write the methods into a --config file to check or submit it"])
    return "evaluate", args.config, [*flag_overrides(args, SCALAR_FLAGS), *args.overrides]


def _pairs(items: list[str], flag: str, errors: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            errors.append(f"{flag} {item!r}: expected NAME=VALUE")
        else:
            out[name] = value
    return out


def build_config(args: argparse.Namespace, argv: list[str] | None = None):
    from pipelines.evaluate.run import EvalMethod, EvaluateConfig, Sweep

    from ..config import ConfigError, apply_overrides, load_config

    errors: list[str] = []
    base = load_config(EvaluateConfig, args.config, args.overrides) if args.config else None
    methods = {m.name: m for m in base.methods} if base else {}
    for name, output in _pairs(args.method, "--method", errors).items():
        methods[name] = EvalMethod(name, output)
    for name, value in _pairs(args.sweep, "--sweep", errors).items():
        param, _, v = value.partition(":")
        if name not in methods:
            errors.append(f"--sweep {name}: no --method of that name")
        else:
            try:
                methods[name].sweep = Sweep(param, float(v))
            except ValueError:
                errors.append(f"--sweep {name}={value}: expected PARAM:NUMBER, e.g. lambda_priv:2.0")
    for name, output in _pairs(args.bias, "--bias", errors).items():
        if name not in methods:
            errors.append(f"--bias {name}: no --method of that name (the bias output sits beside a main output)")
        else:
            methods[name].bias_output = output
    given = {k: getattr(args, k) for k in SCALAR_FLAGS if getattr(args, k) is not None}
    overridden = {item.partition("=")[0].strip() for item in args.overrides}
    for req in ("labels", "out"):
        if req not in given and req not in overridden and not (base and getattr(base, req)):
            errors.append(f"--{req} is required (or give it in --config, or as {req}=...)")
    if errors:
        raise ConfigError(errors)
    if base:
        for k, v in given.items():
            setattr(base, k, v)
        base.methods = list(methods.values())
        cfg = base
    else:
        cfg = EvaluateConfig(methods=list(methods.values()), **{"labels": "", "out": "", **given})
    if args.overrides:  # last: key=value words override the file and the flags (with or without --config)
        cfg = apply_overrides(cfg, args.overrides)
    cfg.command = "anonvid evaluate " + shlex.join(argv if argv is not None else sys.argv[2:])
    problems = cfg.validate()
    if problems:
        raise ConfigError(problems)
    return cfg


def run(args: argparse.Namespace) -> int:
    from pipelines.evaluate.load import EvalInputError
    from pipelines.evaluate.run import preflight, run_evaluation

    from ..config import ConfigError

    try:
        cfg = build_config(args)
    except ConfigError as e:
        print(f"anonvid evaluate: {e}", file=sys.stderr)
        return 2
    try:
        plan = preflight(cfg)  # every input read once before any attacker trains: a bad one is exit 2 at once
    except (EvalInputError, FileNotFoundError) as e:
        print(f"anonvid evaluate: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for m in plan:
            print(f"  {m['method']}: {m['output']} (mode {m['mode']}): {m['videos']} videos, {m['rows']} clip rows"
                  + (", pixels" if m["pixels"] else "") + (f", bias output {m['bias_output']}" if m["bias_output"]
                  else ""))  # fmt: skip
        print(f"dry run: {len(plan)} methods against {cfg.reference!r} would be evaluated into {cfg.out}")
        return 0
    out = json_stdout(args.json)
    print(f"evaluating {len(cfg.methods)} methods against {cfg.reference!r} -> {cfg.out}")
    try:
        report = run_evaluation(cfg)
    except (EvalInputError, FileNotFoundError) as e:
        print(f"anonvid evaluate: {e}", file=sys.stderr)
        return 2
    print(f"wrote {cfg.out}/report.json, report.md and plots in {report['timings']['total']:.0f} s")
    from pipelines.evaluate.report import small_sample_warnings

    for w in small_sample_warnings(report):
        print(f"WARNING: {w}", file=sys.stderr)
    for t in report["targets"]:
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        print(f"  {t['method']}: {t['name']}: {state}")
    if args.json:
        print_json(report, out)
    return 0
