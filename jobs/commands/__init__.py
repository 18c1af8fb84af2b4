"""One module per `anonvid` subcommand: each has add_parser(sub, name) and run(args) -> exit code."""

from __future__ import annotations

import argparse


def add_command(sub, name: str, help: str, examples: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with its examples, laid out as written."""
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
