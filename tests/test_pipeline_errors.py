"""End to end: `anonvid anonymize` run in-process (jobs.cli.main) on bad input and bad arguments: bad videos become
error rows and set the exit code, preflight failures exit 2 with the fix, a dry run writes nothing, and the CLI
writes to the streams of the moment. Every mode, re-runs and repair are in test_pipeline_modes.py.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
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


FUZZ = {  # name -> the reason its error row must give
    "cut at byte 100.mp4": "truncated",
    "cut_at_40pct.mp4": "truncated",
    "cut_at_90pct.mp4": "truncated",
    "zeros.mp4": "not_a_video",
    "random bytes.mp4": "not_a_video",
    "index_box_damaged.mp4": "truncated",
    "audio_only.mp4": "not_a_video",
    "picture.mp4": "not_a_video",
    "one_frame.mp4": "too_short",
    "huge.mp4": "bad_dimensions",
    "empty.mp4": "empty",
    "dangling link.mp4": "broken_link",
    "loop_a.mp4": "broken_link",
    "loop_b.mp4": "broken_link",
}
FUZZ_GOOD_EXTRA = ["ünïcode name's copy.mp4", "link to a good one.mp4", "long_400_frames.mp4"]


@pytest.fixture(scope="module")
def fuzz_input(tmp_path_factory, small_corpus) -> Path:
    """The good corpus plus one file of each kind of damage, odd names, links (good, dangling, a loop) and a folder
    named like a video."""
    from conftest import write_indexed_video
    from test_video_errors import _write_audio_only

    d = copy_videos(small_corpus / "videos", tmp_path_factory.mktemp("e2e_fuzz") / "videos")
    first = sorted(d.iterdir())[0]
    good = first.read_bytes()
    n = len(good)
    cuts = (("cut at byte 100.mp4", 100), ("cut_at_40pct.mp4", n // 10 * 4), ("cut_at_90pct.mp4", n // 10 * 9))
    for name, at in cuts:
        (d / name).write_bytes(good[:at])
    (d / "zeros.mp4").write_bytes(bytes(5000))
    (d / "random bytes.mp4").write_bytes(np.random.default_rng(7).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    damaged = bytearray(good)
    at = good.find(b"moov")
    damaged[at : at + 4] = b"XXXX"
    (d / "index_box_damaged.mp4").write_bytes(bytes(damaged))
    _write_audio_only(d / "audio_only.mp4")
    (d / "picture.mp4").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    write_indexed_video(d / "one_frame.mp4", 1)
    (d / "huge.mp4").write_bytes(b"YUV4MPEG2 W16000 H16000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 4096)
    (d / "empty.mp4").write_bytes(b"")
    (d / "dangling link.mp4").symlink_to(d / "gone.mp4")
    (d / "loop_a.mp4").symlink_to(d / "loop_b.mp4")
    (d / "loop_b.mp4").symlink_to(d / "loop_a.mp4")
    (d / "ünïcode name's copy.mp4").write_bytes(good)
    (d / "link to a good one.mp4").symlink_to(first)
    write_indexed_video(d / "long_400_frames.mp4", 400, width=112, height=112)  # 16 s: many clips, one video
    (d / "folder.mp4").mkdir()  # a folder named like a video: not a video, not an error
    (d / "folder.mp4" / "notes.txt").write_text("not a video")
    return d


@pytest.mark.slow
@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_a_fuzz_corpus_gives_every_good_video_features_and_every_bad_file_its_reason(
    ray_session, tiny_models, fuzz_input, tmp_path
):
    """Every listed object is accounted for: listed = ok + failed + already done (+ unfinished, here 0); each good
    video (odd names and a link included) has features, each bad file exactly one error row with its reason."""
    args = [*mode_args("raw", tiny_models, [str(fuzz_input)]), "--max-failed-fraction", "0.9"]
    run = run_job(tmp_path / "out", args, run_id="fuzz")
    s = run.summary
    good = {p.name for p in fuzz_input.iterdir() if p.name.endswith(".mp4") and p.name not in FUZZ and p.is_file()}
    good -= {"folder.mp4"}
    assert len(good) == N_VIDEOS + len(FUZZ_GOOD_EXTRA)
    assert s["videos_listed"] == len(good) + len(FUZZ) == len(run.expected_ids)
    assert s["videos_listed"] == s["videos_ok"] + s["videos_failed"] + s["videos_skipped_committed"]
    assert (s["videos_ok"], s["videos_failed"], s["videos_incomplete"]) == (len(good), len(FUZZ), 0)
    feats = read_features(run.out)
    assert {os.path.basename(u) for u in feats.column("source_uri").to_pylist()} == good
    reasons = {os.path.basename(r["uri"]): r["error_type"] for r in read_errors(run.out).to_pylist()}
    assert reasons == FUZZ
    assert run.rc == 0 and s["errors_by_type"] == {r: list(FUZZ.values()).count(r) for r in set(FUZZ.values())}


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
    "aam_keep_pixels_without_allow_raw": ["--keep-pixels", "mode aam", "raw", "--allow-raw"],
    "truncated_weights": ["model.safetensors is damaged", "write the bundle again"],
    "random_weights": ["model.safetensors is damaged", "write the bundle again"],
    "checkpoint_kwarg_path": ["kwargs.checkpoint", "/etc/hostname", "refused", "Remove `checkpoint`"],
    "checkpoint_kwarg_uri": ["kwargs.checkpoint", "http://127.0.0.1:9/weights.safetensors", "refused"],
    "unknown_builder_kwarg": ["video_vit_tiny does not take", "bogus", "write it again"],
    "label_column_not_in_manifest": ["no column ['skin_tone']", "'gender_proxy'", "'video_id'", "--label-column"],
    "label_column_without_manifest": ["--label-column", "name manifest columns", "--manifest"],
}


def _truncate(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _random_bytes(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(np.random.default_rng(5).integers(0, 256, 4096, np.uint8).tobytes())


def _kwarg(key: str, value) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config["kwargs"][key] = value
        (folder / "config.json").write_text(json.dumps(config))

    return change


BAD_BUNDLES = {  # a copy of the tiny encoder, damaged or made hostile
    "truncated_weights": _truncate,
    "random_weights": _random_bytes,
    # build_model pops `checkpoint` and loads it: a bundle must not make the job read or fetch other files
    "checkpoint_kwarg_path": _kwarg("checkpoint", "/etc/hostname"),
    "checkpoint_kwarg_uri": _kwarg("checkpoint", "http://127.0.0.1:9/weights.safetensors"),
    "unknown_builder_kwarg": _kwarg("bogus", 1),
}


def damaged_bundle(src: str, dst: Path, damage) -> str:
    import shutil

    shutil.copytree(src, dst)
    damage(dst)
    return str(dst)


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
    elif case == "aam_keep_pixels_without_allow_raw":
        args = [*mode_args("aam", tiny_models, manifest), "--keep-pixels", "56"]
    elif case in BAD_BUNDLES:
        args[args.index("--encoder") + 1] = damaged_bundle(tiny_models["encoder"], tmp_path / case, BAD_BUNDLES[case])
    elif case == "label_column_not_in_manifest":
        args += ["--label-column", "split", "--label-column", "skin_tone"]
    elif case == "label_column_without_manifest":
        args = [*mode_args("prune+aam", tiny_models, [str(corpus / "videos")]), "--label-column", "split"]

    rc = anonymize(out, args)
    err = capfd.readouterr().err
    assert rc == 2, err
    assert "anonvid anonymize:" in err
    for words in PREFLIGHT[case]:
        assert words in err, (words, err)
        assert all(w in line for line in err.splitlines() if words in line for w in PREFLIGHT[case]), err  # one line
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


PIXELS_STORED = {  # mode -> the stage whose output --keep-pixels stores (docs/privacy.md); None: the decoded clip
    "prune": "prune", "prune+aam": "prune", "blur": "pixel baseline blur", "down2": "pixel baseline down2",
    "down4": "pixel baseline down4", "blacken": "pixel baseline blacken", "aam": None, "raw": None,
}  # fmt: skip


@pytest.mark.parametrize("mode", sorted(PIXELS_STORED))
def test_kept_pixels_are_anonymized_unless_allow_raw(mode, tiny_models, corpus, tmp_path, no_pipeline):
    """--keep-pixels stores the clip as it leaves the pixel stages: modes without one (aam, raw) would store the raw
    clip, which only --allow-raw permits; the others need no flag."""
    from pipelines.anonymize import AnonymizeConfig, pipeline_stages, preflight

    kw = dict(output=str(tmp_path / "out"), manifest=str(corpus / "labels.parquet"), mode=mode, keep_pixels=56,
              encoder=tiny_models["encoder"], pruner=tiny_models["pruner"], aam=tiny_models["aam"])  # fmt: skip
    raw = PIXELS_STORED[mode] is None
    refused = [e for e in AnonymizeConfig(**kw).validate() if "--allow-raw" in e]
    assert bool(refused) == raw, refused
    assert AnonymizeConfig(**kw, allow_raw=True).validate() == []
    from pipelines.stages import ClipModels

    stages = [s for _, s in pipeline_stages(preflight(AnonymizeConfig(**kw, allow_raw=True)))]
    (clip_models,) = [s for s in stages if isinstance(s, ClipModels)]  # every pixel step runs in this one actor
    steps = [s for s in clip_models.describe().split(" -> ") if s != "decode"]
    assert steps[: steps.index("keep pixels")] == ([] if raw else [PIXELS_STORED[mode]])


def test_output_labels_default_to_the_manifests_own_id(tiny_models, corpus, tmp_path, no_pipeline):
    """The manifest's private columns (skin_dark, gender_proxy, identity, ...) never reach the output unless named:
    the rows the sink writes carry the plan's `labels`, by default only the manifest's own `video_id`."""
    import pandas as pd

    from pipelines.anonymize import preflight

    manifest = pd.read_parquet(corpus / "labels.parquet")
    assert {"skin_dark", "gender_proxy", "identity"} <= set(manifest.columns)
    own_id = {os.path.basename(p): v for p, v in zip(manifest["path"], manifest["video_id"], strict=True)}

    def planned_labels(*extra: str) -> dict[str, dict | None]:
        args = [*mode_args("prune+aam", tiny_models, ["--manifest", str(corpus / "labels.parquet")]), *extra]
        plan = preflight(config_from_args(build_parser().parse_args(["anonymize", *args, "--out", str(tmp_path)])))
        assert len(plan.todo) == N_VIDEOS
        return {os.path.basename(u): json.loads(s) if isinstance(s, str) else None
                for u, s in zip(plan.todo["uri"], plan.todo["labels"], strict=True)}  # fmt: skip

    assert planned_labels() == {name: {"video_id": v} for name, v in own_id.items()}
    named = planned_labels("--label-column", "split", "--label-column", "action")
    assert {name: set(lab) for name, lab in named.items()} == dict.fromkeys(own_id, {"split", "action"})
    assert planned_labels("label_columns=[]") == dict.fromkeys(own_id)


def test_an_aborted_run_records_its_traceback(tiny_models, corpus, tmp_path, monkeypatch):
    """A run that dies mid-way (here: building the pipeline) is recorded as aborted, and its run record keeps the
    traceback: the one-line reason alone does not say where a cluster-side failure came from."""
    import pipelines.anonymize as pipeline

    def build_fails(plan, counter=None):
        raise RuntimeError("the cluster went away")

    monkeypatch.setattr(pipeline, "connect", lambda address=None: None)  # no Ray: the failure comes first
    monkeypatch.setattr(pipeline, "_check_cpus", lambda plan: None)
    monkeypatch.setattr(pipeline, "_check_gpus", lambda cfg: None)
    monkeypatch.setattr(pipeline, "build_pipeline", build_fails)
    out = tmp_path / "out"
    args = [*mode_args("aam", tiny_models, ["--manifest", str(corpus / "labels.parquet")]), "--out", str(out)]
    plan = pipeline.preflight(config_from_args(build_parser().parse_args(["anonymize", *args])))
    summary = pipeline.run_pipeline(plan, log=io.StringIO())

    record = json.loads((out / "_runs" / f"{plan.run_id}.json").read_text())
    assert record["status"] == summary["status"] == "aborted" and not record["ok"]
    assert record["aborted"] == "RuntimeError: the cluster went away"
    tb = record["traceback"]
    assert tb.startswith("Traceback (most recent call last):") and "in build_fails" in tb, tb
    assert tb.rstrip().endswith("RuntimeError: the cluster went away")
    printed = io.StringIO()
    print_summary(summary, out=printed)
    assert "ABORTED: RuntimeError: the cluster went away" in printed.getvalue()
    assert f"traceback in {summary['run_record']}" in printed.getvalue()


def test_ctrl_c_records_what_the_run_committed(tiny_models, corpus, tmp_path, monkeypatch, capsys):
    """Ctrl-C mid-run: the run record says interrupted with the videos and clips done before the stop (not a
    'running' record with 0 clips), and the CLI's line says so and names the record; exit 130."""
    import pipelines.anonymize as pipeline

    class OneBatchThenCtrlC:
        def __init__(self, plan, counter=None):
            self.plan = plan

        def iter_batches(self, **kw):
            ids = list(self.plan.todo["video_id"][:3])
            yield {"video_id": np.array(ids), "status": np.array(["ok"] * 3), "num_clips": np.array([2, 2, 2]),
                   "error_type": np.array([None] * 3, dtype=object), "t_decode": np.ones(3)}  # fmt: skip
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "connect", lambda address=None: None)
    monkeypatch.setattr(pipeline, "_check_cpus", lambda plan: None)
    monkeypatch.setattr(pipeline, "_check_gpus", lambda cfg: None)
    monkeypatch.setattr(pipeline, "build_pipeline", OneBatchThenCtrlC)
    out = tmp_path / "out"
    args = [*mode_args("aam", tiny_models, ["--manifest", str(corpus / "labels.parquet")]), "--out", str(out)]
    from jobs.cli import main

    assert main(["anonymize", *args, "--run-id", "stopped"]) == 130
    record = json.loads((out / "_runs" / "stopped.json").read_text())
    assert record["status"] == "interrupted" and not record["ok"] and "traceback" not in record
    assert (record["videos_ok"], record["clips"]) == (3, 6)
    err = capsys.readouterr().err
    assert "anonvid: interrupted: 3 videos ok and 0 failed were committed before the stop (6 clips)" in err
    assert str(out / "_runs" / "stopped.json") in err
    assert "to resume, run the same command again: anonvid anonymize " in err and "--run-id stopped" in err


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
    words_wanted = ("mode prune+aam", f"to process now: {N_VIDEOS}", "stages:", "prune -> encode f_E:", "AAM:",
                    "UNTRAINED")  # fmt: skip
    for words in words_wanted:
        assert words in plan.getvalue(), (words, plan.getvalue())
    printed = io.StringIO()
    print_summary(summary, out=printed)
    assert f"dry run: {N_VIDEOS} of {N_VIDEOS} videos would be processed" in printed.getvalue()
    for sub in ("features", "errors", "_commits", "_shards", "_runs", "_output.json"):
        assert not (out / sub).exists(), sub


def test_json_stdout_holds_one_document_even_what_prints_at_exit(tiny_models, corpus, tmp_path):
    """Ray prints late worker and raylet lines (and, at exit, its de-duplicated repeats) to whatever sys.stdout is
    then; with --json they must land on stderr, after the job as during it. A line printed at exit stands in."""
    import subprocess
    import sys

    args = [*mode_args("aam", tiny_models, ["--manifest", str(corpus / "labels.parquet")]), "--dry-run", "--json",
            "--out", str(tmp_path / "out")]  # fmt: skip
    code = ("import atexit, sys; atexit.register(lambda: print('(raylet) a late line')); "
            f"from jobs.cli import main; sys.exit(main(['anonymize', *{args!r}]))")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parents[1])  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["dry_run"] is True  # the whole of stdout is one JSON document
    assert "(raylet) a late line" in res.stderr


def test_cli_writes_to_the_streams_of_the_moment(tiny_models, corpus, tmp_path, capsys, no_pipeline):
    args = [*mode_args("prune+aam", tiny_models, ["--manifest", str(corpus / "labels.parquet")]), "--dry-run"]
    assert anonymize(tmp_path / "out", args) == 0
    cap = capsys.readouterr()
    assert "dry run:" in cap.out and "stages:" in cap.err


def test_model_actors_that_would_starve_decoding_are_refused(ray_session, tiny_models, corpus, tmp_path, capfd):
    """On the 2-CPU Ray, the clip-model actor holding 1.5 CPUs and the AAM's 0.25 leave decoding less than its half
    CPU: the run would wait for ever."""
    args = [*mode_args("prune+aam", tiny_models, ["--manifest", str(corpus / "labels.parquet")]),
            "--cpus-per-actor", "1.5"]  # fmt: skip
    assert pipeline_helpers.anonymize(tmp_path / "out", args) == 2
    err = capfd.readouterr().err
    assert "of the cluster's 2 CPUs" in err and "decoding would never start" in err
    assert "lower model.cpus_per_actor" in err
    assert not (tmp_path / "out" / "_runs").exists()  # refused before the lease and the run record


def test_the_plan_is_fixed_once_built(tiny_models, corpus, tmp_path, no_pipeline):
    """A run's later facts (the lease, the work left under it) make a new Plan; nothing changes one in place."""
    import dataclasses

    from pipelines.anonymize import AnonymizeConfig, preflight

    plan = preflight(AnonymizeConfig(output=str(tmp_path / "out"), manifest=str(corpus / "labels.parquet"),
                                     mode="aam", encoder=tiny_models["encoder"], aam=tiny_models["aam"]))  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.lease_generation = 3
    later = dataclasses.replace(plan, lease_generation=3)
    assert (plan.lease_generation, later.lease_generation) == (None, 3)


@pytest.mark.parametrize(("mode", "trained_on", "warned"), [
    ("prune+aam", None, "it was trained on whole clips'"),
    ("aam", "s3://models/pruner", "it was trained on those of the tubelets the pruner s3://models/pruner keeps"),
    ("prune+aam", "s3://models/pruner", None),
    ("aam", None, None),
])  # fmt: skip
def test_an_aam_fed_other_features_than_it_was_trained_on_is_named(mode, trained_on, warned, tiny_models, corpus,
                                                                     tmp_path, capfd, no_pipeline):  # fmt: skip
    """A trained AAM's eraser fits whole-clip or pruned-clip features; the other kind runs, with a warning."""
    from anon_core.models import aam_for_dim
    from anon_core.models.bundle import save_bundle
    from pipelines.anonymize import AnonymizeConfig, preflight

    aam = str(tmp_path / "aam")
    save_bundle(aam_for_dim(dim=192), aam, "aam_for_dim", {"dim": 192}, trained=True,
                extra={"embed_dim": 192, "pruner": trained_on})  # fmt: skip
    capfd.readouterr()
    models = {"encoder": tiny_models["encoder"], "pruner": tiny_models["pruner"], "aam": aam}
    plan = preflight(AnonymizeConfig(output=str(tmp_path / "out"), manifest=str(corpus / "labels.parquet"), mode=mode,
                                     **models))  # fmt: skip
    err = capfd.readouterr().err
    assert plan.models["aam"].trained
    if warned is None:
        assert "WARNING" not in err, err
    else:
        assert f"WARNING: mode {mode}" in err and warned in err and "train" in err, err
