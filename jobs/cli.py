"""`anonvid`: the command line. One module per subcommand in jobs/commands/; each validates, then calls a recipe."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from .commands import (
    anonymize,
    bench,
    benchmark,
    demo,
    evaluate,
    import_encoder,
    probe,
    runs,
    submit,
    synth,
    train,
    validate_config,
)

COMMANDS = {"synth": synth, "probe": probe, "anonymize": anonymize, "train": train, "evaluate": evaluate,
            "benchmark": benchmark, "demo": demo, "validate-config": validate_config, "submit": submit,
            "runs": runs, "bench": bench, "import-encoder": import_encoder}  # fmt: skip


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser; with `only` (a command name, or "" for none), the others get no config-field flags,
    which would import their configs' modules (torch, pandas: seconds) for nothing."""
    from .commands import FIELD_FLAGS

    parser = argparse.ArgumentParser(
        prog="anonvid",
        description="Privacy-preserving video features at cluster scale.",
        epilog="Run `anonvid COMMAND --help` for examples.",
    )
    parser.add_argument("--version", action="version", version=f"anonvid {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        FIELD_FLAGS["enabled"] = only is None or name == only
        try:
            module.add_parser(sub, name)
        finally:
            FIELD_FLAGS["enabled"] = True
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse like argparse (SystemExit on a usage error), also taking key=value overrides after the options."""
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=next((w for w in words if w in COMMANDS), ""))
    # argparse alone only takes the positional key=value words before the options
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:  # the command's own usage, not the top-level one: the user was inside that command
        command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("anonvid")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed: pip install -e .)"


def command_config(args: argparse.Namespace) -> tuple[str, str | None, list[str]] | None:
    """(job, config path, overrides) a parsed command would load, or None for a command that reads no config."""
    job_config = getattr(args, "job_config", None)
    return job_config(args) if job_config else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as given, for jobs that record it
    if getattr(args, "verbose", False):
        os.environ["ANONVID_VERBOSE"] = "1"  # read where Ray is started (pipelines.anonymize.connect)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt as e:  # a run's own (RunInterrupted) says what it committed and where its record is
        print(f"anonvid: interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
        if str(e):  # what was committed stays: the same command again does the rest
            print(f"anonvid: to resume, run the same command again: anonvid {shlex.join(args.argv)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
