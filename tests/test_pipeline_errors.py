"""End to end: `anonvid anonymize` run in-process (jobs.cli.main) on bad input and bad arguments: bad videos become
error rows and set the exit code, preflight failures exit 2 with the fix, a dry run writes nothing, and the CLI
writes to the streams of the moment. Every mode, re-runs and repair are in test_pipeline_modes.py.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pipeline_helpers
import pytest
from pipeline_helpers import (
    N_VIDEOS,
    RUN_TIMEOUT,
    Run,
    anonymize,
    copy_videos,
    mode_args,
    read_errors,
    read_features,
    run_job,
)

from jobs.cli import build_parser
from jobs.commands.anonymize import config_from_args, print_summary

# the shared fixture, bound here so that pytest finds it in this module
corpus = pipeline_helpers.corpus


# ---------------------------------------------------------------------------------------------------------------
# 1. bad input: the bad videos are data, not a crash

BAD = {  # name -> acceptable error types
    "corrupt.mp4": {"not_a_video", "corrupt"},  # random bytes
    "truncated.mp4": {"truncated"},  # the first half of a good video
    "empty.mp4": {"empty"},
    "notes.mkv": {"not_a_video"},  # a text file
}


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory, small_corpus) -> Path:
    d = copy_videos(small_corpus / "videos", tmp_path_factory.mktemp("e2e_bad") / "videos")
    good = sorted(d.iterdir())[0].read_bytes()
    (d / "corrupt.mp4").write_bytes(np.random.default_rng(7).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (d / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mkv").write_text("eggs, milk, bread: a shopping list, not a video\n" * 40)
    return d


@pytest.mark.slow
@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_bad_videos_become_error_rows_and_set_the_exit_code(ray_session, tiny_models, bad_input, tmp_path):
    args = mode_args("aam", tiny_models, [str(bad_input)])  # cheaper than prune+aam; errors still pass every stage
    good_names = {p.name for p in bad_input.iterdir()} - set(BAD)
    assert len(good_names) == N_VIDEOS

    def check(run: Run) -> None:
        s = run.summary
        assert (s["videos_listed"], s["videos_ok"], s["videos_failed"], s["videos_incomplete"]) == (16, 12, 4, 0)
        assert s["failed_fraction"] == pytest.approx(4 / 16)
        feats = read_features(run.out)
        assert {os.path.basename(u) for u in feats.column("source_uri").to_pylist()} == good_names
        assert np.isfinite(np.asarray(feats.column("features").to_pylist())).all()
        errors = read_errors(run.out)
        assert errors is not None and errors.num_rows == len(BAD)
        ids = {}
        for row in errors.to_pylist():
            name = os.path.basename(row["uri"])
            assert row["error_type"] in BAD[name], row
            assert row["stage"] in ("probe", "decode"), row
            assert row["message"] and row["run_id"] == s["run_id"]
            ids[name] = row["video_id"]
        assert set(ids) == set(BAD)
        assert not set(ids.values()) & set(feats.column("video_id").to_pylist())  # failed videos have no rows
        assert set(ids.values()) | set(feats.column("video_id").to_pylist()) == run.expected_ids
        commits = {p.stem: json.loads(p.read_text()) for p in (run.out / "_commits").glob("*.json")}
        assert {v for v, c in commits.items() if c["status"] == "failed"} == set(ids.values())
        assert sum(s["errors_by_type"].values()) == len(BAD)

    strict = run_job(tmp_path / "strict", args, run_id="strict")
    assert strict.rc == 1 and not strict.summary["ok"]  # 25% failed > the default 5%
    check(strict)
    printed = io.StringIO()
    record = str(strict.out / "_runs" / "strict.json")
    print_summary({**strict.summary, "run_record": record}, out=printed)  # what the CLI printed for this run
    assert "FAILED: 25.0% of videos failed (limit 5.0%)" in printed.getvalue() and "errors/" in printed.getvalue()

    lenient = run_job(tmp_path / "lenient", [*args, "--max-failed-fraction", "0.9"], run_id="lenient")
    assert lenient.rc == 0 and lenient.summary["ok"]
    check(lenient)


# ---------------------------------------------------------------------------------------------------------------
# 2. preflight: fail fast, exit 2, say what to do; no Ray work


@pytest.fixture
def no_pipeline(monkeypatch):
    """Any attempt to start the pipeline (or connect to Ray) fails the test."""
    import jobs.recipes.anonymize as recipe
    import pipelines.anonymize as pipeline

    def boom(*a, **k):
        raise AssertionError("the pipeline started, but the job should have stopped before any Ray work")

    monkeypatch.setattr(recipe, "run_pipeline", boom)
    monkeypatch.setattr(pipeline, "run_pipeline", boom)
    monkeypatch.setattr(pipeline, "connect", boom)


PREFLIGHT = {  # case -> what the message must say (the problem and its fix)
    "empty_input": ["no videos found", "--manifest"],
    "output_not_writable": ["not writable", "choose a folder you can write"],
    "missing_bundle": ["no model bundle at", "config.json missing", "save_bundle"],
    "aam_dim_mismatch": ["64-d", "192-d", "use an AAM trained on this encoder"],
    "clip_size_mismatch": ["112px", "64px", "--clip-size 112"],
    "raw_without_allow_raw": ["--allow-raw"],
    "mode_needs_pruner": ["needs a pruner model", "--pruner"],
}


@pytest.mark.parametrize("case", sorted(PREFLIGHT))
def test_preflight_errors_exit_2_with_the_fix(case, tiny_models, corpus, tmp_path, capfd, no_pipeline):
    from anon_core.models.aam import aam_for_dim
    from anon_core.models.bundle import save_bundle

    out = tmp_path / "out"
    manifest = ["--manifest", str(corpus / "labels.parquet")]
    args = mode_args("prune+aam", tiny_models, manifest)
    if case == "empty_input":
        (tmp_path / "empty").mkdir()
        args = mode_args("prune+aam", tiny_models, [str(tmp_path / "empty")])
    elif case == "output_not_writable":
        (tmp_path / "a_file").write_text("not a folder")
        out = tmp_path / "a_file" / "out"
    elif case == "missing_bundle":
        args[args.index("--encoder") + 1] = str(tmp_path / "no-such-bundle")
    elif case == "aam_dim_mismatch":
        save_bundle(aam_for_dim(64), str(tmp_path / "aam64"), "aam_for_dim", {"dim": 64}, trained=False)
        args[args.index("--aam") + 1] = str(tmp_path / "aam64")
    elif case == "clip_size_mismatch":
        args += ["--clip-size", "64"]
    elif case == "raw_without_allow_raw":
        args = [*manifest, "--mode", "raw", "--encoder", tiny_models["encoder"]]
    elif case == "mode_needs_pruner":
        args = [*manifest, "--mode", "prune", "--encoder", tiny_models["encoder"]]

    rc = anonymize(out, args)
    err = capfd.readouterr().err
    assert rc == 2, err
    assert "anonvid anonymize:" in err
    for words in PREFLIGHT[case]:
        assert words in err, (words, err)
    assert "Traceback" not in err
    assert not (out / "features").exists() and not (out / "_commits").exists()


@pytest.mark.parametrize("run_id", ["../../../../X", "/tmp/X", "a/b", "a\\b", "..", ".", ".hidden", "", "a b",
                                    "x" * 129])  # fmt: skip
def test_run_id_that_would_leave_the_output_is_a_config_error(run_id, tiny_models, corpus, tmp_path, capfd,
                                                              no_pipeline):  # fmt: skip
    """A run id names files under the output (_runs/<run_id>.json, part-<run_id>-*.parquet): '..', absolute paths
    and separators would put shards and run records outside it."""
    out = tmp_path / "a" / "b" / "out"
    args = [*mode_args("prune+aam", tiny_models, ["--manifest", str(corpus / "labels.parquet")]), "--run-id", run_id]
    assert anonymize(out, args) == 2
    err = capfd.readouterr().err
    assert "anonvid anonymize: config error" in err and "--run-id" in err and "e.g. --run-id nightly-" in err, err
    assert "Traceback" not in err
    assert [p for p in tmp_path.rglob("*")] == [], "a refused run wrote something"


def test_run_id_of_safe_characters_is_accepted(tiny_models, corpus, tmp_path, no_pipeline):
    args = [*mode_args("prune+aam", tiny_models, ["--manifest", str(corpus / "labels.parquet")]), "--dry-run"]
    assert anonymize(tmp_path / "out", [*args, "--run-id", "nightly-2026.11.22_T10"]) == 0


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_models, corpus, tmp_path, no_pipeline):
    from jobs.recipes.anonymize import run_anonymize

    out = tmp_path / "out"
    args = [*mode_args("prune+aam", tiny_models, ["--manifest", str(corpus / "labels.parquet")]), "--dry-run"]
    assert anonymize(out, args) == 0

    # the same command's config through the recipe, to read the plan it prints
    cfg = config_from_args(build_parser().parse_args(["anonymize", *args, "--out", str(out)]))
    plan = io.StringIO()
    summary = run_anonymize(cfg, dry_run=True, log=plan)
    assert summary["dry_run"] and summary["videos_to_process"] == summary["videos_listed"] == N_VIDEOS
    for words in ("mode prune+aam", f"to process now: {N_VIDEOS}", "stages:", "prune:", "AAM:", "UNTRAINED"):
        assert words in plan.getvalue(), (words, plan.getvalue())
    printed = io.StringIO()
    print_summary(summary, out=printed)
    assert f"dry run: {N_VIDEOS} of {N_VIDEOS} videos would be processed" in printed.getvalue()
    for sub in ("features", "errors", "_commits", "_shards", "_runs", "_output.json"):
        assert not (out / sub).exists(), sub


def test_cli_writes_to_the_streams_of_the_moment(tiny_models, corpus, tmp_path, capsys, no_pipeline):
    args = [*mode_args("prune+aam", tiny_models, ["--manifest", str(corpus / "labels.parquet")]), "--dry-run"]
    assert anonymize(tmp_path / "out", args) == 0
    cap = capsys.readouterr()
    assert "dry run:" in cap.out and "stages:" in cap.err


def test_model_actors_that_would_starve_decoding_are_refused(ray_session, tiny_models, corpus, tmp_path, capfd):
    """On the 2-CPU Ray, three model stages holding 1 CPU each leave decoding none: the run would wait for ever."""
    args = [*mode_args("prune+aam", tiny_models, ["--manifest", str(corpus / "labels.parquet")]),
            "--cpus-per-actor", "1"]  # fmt: skip
    assert pipeline_helpers.anonymize(tmp_path / "out", args) == 2
    err = capfd.readouterr().err
    assert "of the cluster's 2 CPUs" in err and "decoding would never start" in err
    assert "lower model.cpus_per_actor" in err
    assert not (tmp_path / "out" / "_runs").exists()  # refused before the lease and the run record
