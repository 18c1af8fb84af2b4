"""One module per `anonvid` subcommand: each has add_parser(sub, name) and run(args) -> exit code."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing


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


FIELD_FLAGS = {"enabled": True}  # jobs.cli turns it off for the commands not being run: their configs load slowly


def add_field_flags(p: argparse.ArgumentParser, config: str, flags: dict[str, str], helps: dict[str, str]) -> None:
    """One --flag per entry of `flags` (argparse dest -> config key, "model.batch_size" for a nested field), made from
    the config dataclass field the key names: its type (int, float, str; bool: a switch; Literal: choices; a list:
    the flag repeats) and its default, which the help shows, so a default is written once, in the dataclass. The
    help text is `helps[dest]`. Every flag defaults to None: only a flag given overrides a --config file's value.
    `config` names the dataclass, "module:Class", imported only for the command being parsed (see jobs.cli)."""
    if not FIELD_FLAGS["enabled"]:
        return
    import importlib

    module, _, name = config.partition(":")
    cls = getattr(importlib.import_module(module), name)
    for dest, key in flags.items():
        field, hint = _field(cls, key)
        kwargs: dict = {"dest": dest, "default": None}
        base = _strip_optional(hint)
        origin = typing.get_origin(base)
        if base is bool:
            kwargs["action"] = "store_true"
        elif origin is typing.Literal:
            kwargs["choices"] = list(typing.get_args(base))
        elif origin is list:
            kwargs["action"], kwargs["type"] = "append", typing.get_args(base)[0]
        elif base in (int, float, str):
            kwargs["type"] = base
        else:
            raise TypeError(f"{cls.__name__}.{key}: no flag for a field of type {hint}")
        text = helps[dest]
        if field.default is not dataclasses.MISSING and field.default not in (None, False):
            text += f" (default {field.default})"
        p.add_argument("--" + dest.replace("_", "-"), help=text, **kwargs)


def _field(cls, key: str):
    """(dataclasses.Field, resolved type) of a dotted key such as "model.batch_size"."""
    head, _, rest = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    if head not in fields:
        raise KeyError(f"{cls.__name__} has no field {head!r}")
    if rest:
        return _field(hints[head], rest)
    return fields[head], hints[head]


def _strip_optional(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint
