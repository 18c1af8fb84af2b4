"""One module per `anonvid` subcommand: each has add_parser(sub, name) and run(args) -> exit code."""

from __future__ import annotations

import argparse
import json
import sys


def add_command(sub, name: str, help: str, examples: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with its examples, laid out as written."""
    p = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--verbose", action="store_true",
                   help="also print Ray's own lines (workers, progress bars); they go to Ray's log folder otherwise")
    return p


def flag_overrides(args: argparse.Namespace, flags) -> list[str]:
    """key=value overrides for the flags given on the command line (None: not given). `flags` maps an argparse dest to
    its config key, or is a sequence of dests named like their keys. Values are written as JSON, which YAML reads."""
    pairs = flags.items() if isinstance(flags, dict) else ((f, f) for f in flags)
    return [f"{key}={json.dumps(getattr(args, dest))}" for dest, key in pairs if getattr(args, dest) is not None]


def add_json_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON document on stdout (rest: stderr)")


def json_stdout(enabled: bool):
    """The stream for the command's one JSON document. With --json, sys.stdout becomes stderr for the rest of the
    process: Ray prints worker and raylet lines to whatever sys.stdout is when they arrive, some late and some at
    exit, so stdout holds the document and nothing else. Without it: sys.stdout, unchanged."""
    out = sys.stdout
    if enabled:
        sys.stdout = sys.stderr
    return out


def print_json(doc, out) -> None:
    print(json.dumps(doc, indent=2, default=str), file=out, flush=True)
