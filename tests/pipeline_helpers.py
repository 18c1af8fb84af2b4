"""What the end-to-end pipeline tests share: running `anonvid anonymize` in-process, reading its output back, and
the input corpus. Imported by test_pipeline_modes.py and test_pipeline_errors.py.

The `corpus` fixture is module-scoped, so each of those modules makes its own (cheap) copy of the small corpus.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# Imported now, at collection, and not lazily inside a test: these modules bind sys.stdout/sys.stderr as default
# arguments when first imported (see test_pipeline_errors.py::test_cli_writes_to_the_streams_of_the_moment), so a
# first import under a test's capsys/capfd would leave them writing to a stream closed after that test, and every
# later in-process run in the session would die with "I/O operation on closed file".
import jobs.commands._progress  # noqa: F401
import jobs.recipes.anonymize  # noqa: F401
from jobs.cli import main
from pipelines.modes import MODES

N_VIDEOS = 12  # small_corpus: 32 frames each -> exactly one 16x2 clip per video
RUN_TIMEOUT = 240  # one pipeline run, with room for a loaded machine; a resource deadlock fails instead of hanging


@dataclass
class Run:
    rc: int
    out: Path
    args: list[str]
    summary: dict  # OUT/_runs/<run_id>.json
    expected_ids: set[str]  # the listing's video ids when the run started


def anonymize(out: Path, args: list[str], run_id: str | None = None) -> int:
    argv = ["anonymize", *args, "--out", str(out)]
    if run_id:
        argv += ["--run-id", run_id]
    return main(argv)


def listed_ids(args: list[str]) -> set[str]:
    from pipelines.sources import list_input

    if args[0] == "--manifest":
        listing = list_input(None, args[1])
    else:
        listing = list_input(args[0])
    return set(listing.videos["video_id"])


def run_job(out: Path, args: list[str], run_id: str) -> Run:
    expected = listed_ids(args)
    rc = anonymize(out, args, run_id)
    summary = json.loads((out / "_runs" / f"{run_id}.json").read_text())
    return Run(rc, out, args, summary, expected)


def mode_args(mode: str, models: dict[str, str], source: list[str]) -> list[str]:
    args = [*source, "--mode", mode, "--encoder", models["encoder"]]
    if MODES[mode].pruner:
        args += ["--pruner", models["pruner"]]
    if MODES[mode].aam:
        args += ["--aam", models["aam"]]
    if mode == "raw":
        args.append("--allow-raw")
    return args


def read_features(out: Path) -> pa.Table:
    return pq.read_table(str(out / "features"))


def read_errors(out: Path) -> pa.Table | None:
    if not (out / "errors").is_dir() or not list((out / "errors").glob("part-*.parquet")):
        return None
    return pq.read_table(str(out / "errors"))


def copy_videos(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in sorted(src.iterdir()):
        shutil.copy2(p, dst / p.name)
    return dst


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, small_corpus) -> Path:
    """A private copy of the small corpus: videos/ plus labels.parquet (a manifest with a relative `path` column)."""
    root = tmp_path_factory.mktemp("e2e_corpus")
    copy_videos(small_corpus / "videos", root / "videos")
    shutil.copy2(small_corpus / "labels.parquet", root / "labels.parquet")
    return root
