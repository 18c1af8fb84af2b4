"""`anonvid`: the command line. One module per subcommand in jobs/commands/; each validates, then calls a recipe."""

from __future__ import annotations

import argparse
import sys

from .commands import anonymize, demo, probe, synth

COMMANDS = {"synth": synth, "probe": probe, "anonymize": anonymize, "demo": demo}


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
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("anonvid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
