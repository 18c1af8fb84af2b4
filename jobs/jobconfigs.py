"""Which config each job reads, and the checks `validate-config`, `submit` and the commands share.

A job is named by its command words: "anonymize", "train encoder", "train pruner", "train aam", "evaluate",
"benchmark". Each reads one config dataclass (jobs/config.py loads it: YAML file + key=value overrides, every error at
once). A config file names its job in its header comment, the command that runs it::

    # anonvid anonymize --config jobs/configs/anonymize_tiny.yaml
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .config import ConfigError, config_errors, load_config


@dataclass(frozen=True)
class Job:
    config: str  # "module:Class" of the config dataclass, imported only when needed (torch and Ray are heavy)
    fixed: tuple[str, ...] = ()  # overrides the command words imply
    path_fields: tuple[str, ...] = ()  # fields naming files or folders (a submitted job cannot use relative ones)

    @property
    def cls(self) -> type:
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)


_TRAIN_PATHS = ("manifest", "storage_path", "out", "init_from")
JOBS: dict[str, Job] = {
    "anonymize": Job("pipelines.anonymize:AnonymizeConfig", (), ("input", "manifest", "output", "encoder", "pruner",
                                                                "aam")),  # fmt: skip
    "train encoder": Job("pipelines.train.loop:TrainConfig", ("kind=encoder",), _TRAIN_PATHS),
    "train pruner": Job("pipelines.train.loop:TrainConfig", ("kind=pruner",), _TRAIN_PATHS),
    "train aam": Job("pipelines.train.aam_loop:AamTrainConfig", (), ("manifest", "encoder", "storage_path", "out")),
    "evaluate": Job("pipelines.evaluate.run:EvaluateConfig", (), ("labels", "out", "bias_labels")),
    "benchmark": Job("jobs.recipes.benchmark:BenchmarkConfig", (), ("out", "readme")),
    "bench": Job("jobs.recipes.bench:BenchConfig", (), ("out", "docs")),
}
_HEADER_JOB = re.compile(r"\banonvid\s+(?:submit\s+(?:--?\S+\s+(?!-)\S+\s+|--\S+\s+)*)?(anonymize|train\s+(?:encoder"
                         r"|pruner|aam)|evaluate|benchmark|bench)\b")  # fmt: skip


def job_names() -> list[str]:
    return list(JOBS)


def get_job(job: str) -> Job:
    if job not in JOBS:
        raise ConfigError([f"unknown job {job!r}: one of {', '.join(JOBS)}"])
    return JOBS[job]


def load_job_config(job: str, path: str | None, overrides: Sequence[str] = ()):
    spec = get_job(job)
    return load_config(spec.cls, path, [*overrides, *spec.fixed])


def job_config_errors(job: str, path: str | None, overrides: Sequence[str] = ()) -> list[str]:
    if job not in JOBS:
        return [f"unknown job {job!r}: one of {', '.join(JOBS)}"]
    spec = JOBS[job]
    return config_errors(spec.cls, path, [*overrides, *spec.fixed])


def input_errors(job: str, cfg) -> list[str]:
    """What the job would refuse at run time in what its config names, read without running it: the anonymize
    preflight (input listing, models, output), a training run's labels through its schema (and the AAM's encoder),
    the evaluation's labels and outputs. Generated-data jobs (benchmark, bench) have nothing to read."""
    from pipelines.sources import InputError

    try:
        if job == "anonymize":
            from pipelines.anonymize import preflight

            preflight(cfg)
        elif job.startswith("train"):
            from pipelines.train.common import prepare_data

            errors = cfg.encoder_errors() if job == "train aam" else []
            if errors:
                return errors
            prepare_data(cfg, log=lambda msg: None, decode=False)
        elif job == "evaluate":
            from pipelines.evaluate.run import preflight

            preflight(cfg)
    except FileNotFoundError as e:
        what = e.filename or str(e)
        return [f"{what} does not exist: fix the path, or create it first (the config's header says how)"]
    except (InputError, ValueError) as e:  # every other refusal of these jobs is one of these
        return [str(e)]
    return []


def load_or_report(prog: str, job: str, path: str | None, overrides: Sequence[str] = ()):
    """The config, or None after printing every error under the command's name (the caller exits 2)."""
    try:
        return load_job_config(job, path, overrides)
    except ConfigError as e:
        print(f"{prog}: config error{'s' if len(e.errors) > 1 else ''}:", file=sys.stderr)
        for line in e.errors:
            print(f"  - {line}", file=sys.stderr)
        return None


def job_from_header(text: str) -> str | None:
    """The job a config file's header comment runs, e.g. '# anonvid train pruner --config ...' -> 'train pruner'."""
    for line in text.splitlines():
        if not line.startswith("#"):
            if line.strip():
                break  # the header is the comment block before the first key
            continue
        m = _HEADER_JOB.search(line)
        if m:
            return " ".join(m.group(1).split())
    return None


def job_from_filename(path: str) -> str | None:
    """jobs/configs naming: anonymize_*.yaml, train_<kind>_*.yaml, evaluate_*.yaml, benchmark_*.yaml."""
    stem = path.rstrip("/").rsplit("/", 1)[-1]
    for job in sorted(JOBS, key=len, reverse=True):
        if stem.startswith(job.replace(" ", "_") + "_") or stem.startswith(job.replace(" ", "_") + "."):
            return job
    return None


def relative_paths(job: str, cfg) -> list[str]:
    """Path fields holding relative local paths: they mean nothing in a job's own working directory on a cluster."""
    fields = [(name, getattr(cfg, name, None)) for name in JOBS[job].path_fields]
    for i, method in enumerate(getattr(cfg, "methods", None) or []):  # evaluate: each method's output folders
        fields += [(f"methods[{i}].{name}", getattr(method, name, None)) for name in ("output", "bias_output")]
    return [f"{where}: {value!r} is a relative local path" for where, value in fields
            if isinstance(value, str) and value and "://" not in value and not value.startswith("/")]  # fmt: skip


def command_errors(argv: Sequence[str]) -> list[str]:
    """[] when `argv` (starting with 'anonvid') parses with the CLI and the config it names loads and validates.

    For checking commands written elsewhere (Kubernetes entrypoints, config headers) without running them."""
    from .cli import command_config, parse_args

    argv = list(argv)
    if not argv or argv[0] != "anonvid":
        return [f"not an anonvid command: {shlex.join(argv)!r}"]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parse_args(argv[1:])
    except SystemExit:
        return [f"{shlex.join(argv)}: {stderr.getvalue().strip().splitlines()[-1]}"]
    try:
        found = command_config(args)
    except ConfigError as e:
        return [f"{shlex.join(argv)}: {m}" for m in e.errors]
    if found is None:  # a command that reads no config (synth, probe, demo, runs ...)
        return []
    job, path, overrides = found
    return job_config_errors(job, path, overrides)

