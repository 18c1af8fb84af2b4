"""YAML configs for anonvid jobs: a dataclass in, every problem reported at once.

A job's config is a (possibly nested) dataclass. `load_config` reads a YAML file (local path or any fsspec URI),
applies `key=value` overrides from the command line, converts the plain YAML values into the dataclass and checks
them. All problems are collected and raised together as one `ConfigError`, so a user fixes a config in one round
rather than one error per run::

    cfg = load_config(AnonymizeConfig, "jobs/configs/anonymize.yaml", ["model.lr=3e-4", "keep_ratio=[0.9,0.7]"])

String values in the file may name environment variables as `${NAME}` or `${NAME:-default}` (`$${` is a literal
`${`), so one shipped config serves every deployment: the paths come from the environment (a Kubernetes ConfigMap
or Secret), never from literals. An unset variable without a default is one more config error.

Supported annotations: int, float, str, bool, Any, unions such as `X | None`, `Literal[...]`, `list[X]`,
`tuple[X, ...]`, `tuple[X, Y]` and nested dataclasses. A dataclass may define `validate(self) -> list[str]` for
checks that types cannot express (ranges, rules across fields). It runs on every dataclass whose own fields
converted cleanly, and its messages are reported under the dataclass's dotted path.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import reprlib
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import fsspec
import yaml

T = TypeVar("T")
_BAD = object()  # a conversion failed; the reason is already in the error list


class ConfigError(ValueError):
    """Every problem found in one config, one per line; `.errors` holds them as a list."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def load_config(cls: type[T], path: str | None, overrides: Sequence[str] = ()) -> T:
    """Read `path` (None: defaults only), apply `key=value` overrides, and return a checked `cls`."""
    errors, cfg = _load(cls, path, overrides)
    if errors:
        raise ConfigError(errors)
    return cfg


def config_errors(cls: type, path: str | None, overrides: Sequence[str] = ()) -> list[str]:
    """The messages `load_config` would raise, without raising; [] when the config is good."""
    return _load(cls, path, overrides)[0]


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """A copy of the config dataclass `cfg` with `key=value` overrides applied and checked as `load_config` would,
    `${NAME}` in their values expanded as there: for a job whose config is built from flags, so its key=value words
    work without a --config file too, and mean the same with one."""
    errors: list[str] = []
    raw = _plain(cfg)
    for item in overrides:  # only the words' values are expanded: the config's own strings were expanded already
        _apply_override(raw, item, errors, expand=True)
    out = _convert(type(cfg), raw, "", errors)
    if errors:
        raise ConfigError([f"<command line>: {e}" for e in errors])
    return out


def dump_config(cfg: Any) -> str:
    """YAML text of a config dataclass that `load_config` reads back to an equal object."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"dump_config needs a dataclass instance, got {type(cfg).__name__}")
    return yaml.safe_dump(_plain(cfg), sort_keys=False)


def _plain(value: Any) -> Any:
    # Tuples become lists because safe_dump cannot write tuples; the loader turns them back by annotation.
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _load(cls: type, path: str | None, overrides: Sequence[str]) -> tuple[list[str], Any]:
    errors: list[str] = []
    raw = _read_mapping(path, errors) if path is not None else {}
    for item in overrides:  # checked even when the file is unusable: their syntax errors are independent of it
        _apply_override(raw if raw is not None else {}, item, errors)
    if raw is not None:  # after the overrides: an override replaces a reference to an unset variable
        raw = _expand_env(raw, "", errors)
    # An unreadable file would turn into one "missing required field" per field: noise that hides the cause.
    cfg = _convert(cls, raw, "", errors) if raw is not None else _BAD
    label = path if path is not None else "<no file>"
    return [f"{label}: {e}" for e in errors], (None if errors else cfg)


def _read_mapping(path: str, errors: list[str]) -> dict | None:
    try:
        with fsspec.open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        errors.append("file not found")
        return None
    except OSError as e:
        errors.append(f"cannot read the file: {e}")
        return None
    except yaml.YAMLError as e:  # kept to one line: the mark says where to look
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        errors.append(f"not valid YAML: {where}{getattr(e, 'problem', None) or e}")
        return None
    if data is None:  # an empty file means "all defaults"
        return {}
    if not isinstance(data, dict):
        errors.append(f"the top level must be a mapping of keys to values, got {_show(data)}")
        return None
    return data


_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, where: str, errors: list[str]) -> Any:
    """`${NAME}` / `${NAME:-default}` in the file's strings, from the environment of the process loading it."""
    if isinstance(value, dict):
        return {k: _expand_env(v, _join(where, k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]", errors) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def one(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        errors.append(f"{where}: environment variable {name} is not set (set it, write ${{{name}:-default}}, or "
                      f"override {where}=...)")  # fmt: skip
        return m.group(0)

    whole = _ENV_REF.fullmatch(value) is not None and value != "$${"
    text = _ENV_REF.sub(one, value)
    if whole and text != value:  # `epochs: ${EPOCHS}` is a number, `init_from: ${X:-null}` is null, as if written
        try:
            return yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            return text
    return text


def _apply_override(raw: dict, item: str, errors: list[str], expand: bool = False) -> None:
    """Set one `key=value` word in the plain mapping `raw`; with `expand`, `${NAME}` in its value too (`_load`
    expands the whole mapping afterwards instead, the file's strings with the words')."""
    key, sep, text = item.partition("=")
    names = key.strip().split(".")
    if not sep or not all(n.isidentifier() for n in names):
        errors.append(f"override {item!r}: expected key=value, e.g. model.lr=3e-4")
        return
    try:
        value = yaml.safe_load(text)  # so that 3, 0.5, true, null and [0.9,0.7] mean what they do in the file
    except yaml.YAMLError:
        errors.append(f"override {item!r}: the value is not valid YAML (quote strings with special characters)")
        return
    if expand:
        value = _expand_env(value, key.strip(), errors)
    node = raw
    for i, name in enumerate(names[:-1]):
        if node.get(name) is None:  # absent or null: the override starts the section
            node[name] = {}
        node = node[name]
        if not isinstance(node, dict):
            errors.append(f"override {item!r}: {'.'.join(names[: i + 1])} is not a section")
            return
    node[names[-1]] = value


def _convert(tp: Any, value: Any, where: str, errors: list[str]) -> Any:
    """`value` (plain YAML data) as type `tp`, or _BAD after appending the reasons to `errors`."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, where, errors)
    if origin in (Union, types.UnionType):
        return _convert_union(tp, value, where, errors)
    if origin is Literal:
        # Compare types too: True == 1 and 1 == 1.0 would otherwise pass.
        if any(value == a and type(value) is type(a) for a in args):
            return value
        words = [a for a in args if isinstance(a, str)]
        close = difflib.get_close_matches(value, words, 1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return _fail(errors, where, f"must be one of {', '.join(map(repr, args))}; got {_show(value)}{hint}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return _fail(errors, where, f"expected a list ({_name(tp)}), got {_show(value)}")
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            item_types = [args[0] if args else Any] * len(value)
        elif len(value) != len(args):
            return _fail(errors, where, f"expected {len(args)} items ({_name(tp)}), got {len(value)}")
        else:
            item_types = list(args)
        pairs = enumerate(zip(item_types, value, strict=True))
        items = [_convert(t, v, f"{where}[{i}]", errors) for i, (t, v) in pairs]
        return _BAD if any(x is _BAD for x in items) else origin(items)
    if tp in (bool, str) and isinstance(value, tp):
        return value
    if tp in (int, float) and isinstance(value, int) and not isinstance(value, bool):
        return tp(value)  # an int is a fine float (3 -> 3.0); a float is never silently truncated to an int
    if tp is float and isinstance(value, float):
        return value
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp not in (bool, int, float, str):
        raise TypeError(f"{where or 'config'}: unsupported annotation {tp!r} in a config dataclass")
    hint = " (quote it to make it a string)" if tp is str and value is not None else ""
    return _fail(errors, where, f"expected {_name(tp)}, got {_show(value)}{hint}")


def _convert_union(tp: Any, value: Any, where: str, errors: list[str]) -> Any:
    options = [a for a in get_args(tp) if a is not type(None)]
    if value is None and len(options) < len(get_args(tp)):
        return None
    reasons: list[list[str]] = []
    for option in options:  # first match wins, in the order the annotation lists them
        scratch: list[str] = []
        result = _convert(option, value, where, scratch)
        if result is not _BAD:
            errors.extend(scratch)  # a matching dataclass's validate() messages still count
            return result
        reasons.append(scratch)
    if len(options) == 1:  # `X | None`: X's own reason is more precise than "expected X | None"
        errors.extend(reasons[0])
        return _BAD
    return _fail(errors, where, f"expected {_name(tp)}, got {_show(value)}")


def _convert_dataclass(cls: type, value: Any, where: str, errors: list[str]) -> Any:
    if not isinstance(value, dict):
        return _fail(errors, where, f"expected a section ({cls.__name__} fields), got {_show(value)}")
    hints = typing.get_type_hints(cls)  # resolves string annotations from `from __future__ import annotations`
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    n_before = len(errors)
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), 1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            errors.append(f"{_join(where, key)}: unknown key ({hint})")
    kwargs, defaulted = {}, []
    for name, f in known.items():
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], _join(where, name), errors)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            errors.append(f"{_join(where, name)}: missing required field ({_name(hints[name])})")
        else:
            defaulted.append(name)
    if len(errors) > n_before:
        return _BAD
    try:
        cfg = cls(**kwargs)
    except (TypeError, ValueError) as e:  # a __post_init__ check is one more config error, not a crash
        return _fail(errors, where, str(e))
    # Given fields ran validate() while converting; defaults never went through _convert, so check them here.
    for name in defaulted:
        _validate_tree(getattr(cfg, name), _join(where, name), errors)
    _run_validate(cfg, where, errors)
    return cfg


def _validate_tree(value: Any, where: str, errors: list[str]) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _validate_tree(getattr(value, f.name), _join(where, f.name), errors)
        _run_validate(value, where, errors)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _validate_tree(item, f"{where}[{i}]", errors)


def _run_validate(cfg: Any, where: str, errors: list[str]) -> None:
    check = getattr(cfg, "validate", None)
    if callable(check):
        for message in check():
            _fail(errors, where, message)


def _fail(errors: list[str], where: str, message: str) -> object:
    errors.append(f"{where}: {message}" if where else message)
    return _BAD


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(map(repr, get_args(tp)))
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _show(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {reprlib.repr(value)}"
