"""`anonvid`: the command line. One module per subcommand in jobs/commands/; each validates, then calls a recipe."""

from __future__ import annotations

import argparse
import sys

from .commands import anonymize, benchmark, demo, evaluate, probe, synth, train

COMMANDS = {"synth": synth, "probe": probe, "anonymize": anonymize, "train": train, "evaluate": evaluate,
            "benchmark": benchmark, "demo": demo}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anonvid",
        description="Privacy-preserving video features at cluster scale.",
        epilog="Run `anonvid COMMAND --help` for examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        module.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come before or after the options; argparse alone only takes them before
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("anonvid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
