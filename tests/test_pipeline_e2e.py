"""End to end: `anonvid anonymize` run in-process (jobs.cli.main) on the shared local Ray, every mode, re-runs, bad
input, preflight failures and a killed run's leftovers.

Each pipeline run costs 20-40 s on a 2-core machine, so every mode runs once (lazily, cached per module) and the
tests that need an output of their own start from a copy of one of those.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# Imported now, at collection, and not lazily inside a test: these modules bind sys.stdout/sys.stderr as default
# arguments when first imported (see test_cli_writes_to_the_streams_of_the_moment), so a first import under a
# test's capsys/capfd would leave them writing to a stream closed after that test, and every later in-process run
# in the session would die with "I/O operation on closed file".
import jobs.commands._progress  # noqa: F401
import jobs.recipes.anonymize  # noqa: F401
from jobs.cli import build_parser, main
from jobs.commands.anonymize import config_from_args, print_summary

MODES = ("prune", "aam", "prune+aam", "raw")
DIM = 192  # the tiny encoder's feature size
N_VIDEOS = 12  # small_corpus: 32 frames each -> exactly one 16x2 clip per video
BASE_COLUMNS = {
    "video_id", "source_uri", "clip_index", "start_s", "end_s", "features", "mode", "encoder_id", "pruner_id",
    "aam_id", "config_hash", "run_id", "labels",
}  # fmt: skip
PRUNE_COLUMNS = {"kept_tubelet_ids", "pruner_feature"}
RUN_TIMEOUT = 240  # one pipeline run, with room for a loaded machine; a resource deadlock fails instead of hanging


# ---------------------------------------------------------------------------------------------------------------
# helpers


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
    if "prune" in mode:
        args += ["--pruner", models["pruner"]]
    if "aam" in mode:
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


def by_clip(table: pa.Table, column: str = "features") -> dict[tuple[str, int], np.ndarray]:
    """(file name of the source, clip_index) -> that clip's row of `column`: comparable across inputs and outputs."""
    names = [os.path.basename(u) for u in table.column("source_uri").to_pylist()]
    values = np.asarray(table.column(column).to_pylist())
    if values.dtype.kind == "f":
        values = values.astype(np.float32)  # as stored
    return {(n, int(c)): v for n, c, v in zip(names, table.column("clip_index").to_pylist(), values, strict=True)}


def assert_exactly_once(table: pa.Table, expected_ids: set[str], clips_per_video: int = 1) -> None:
    counts = pd.Series(table.column("video_id").to_pylist()).value_counts()
    assert set(counts.index) == expected_ids
    assert (counts == clips_per_video).all(), counts[counts != clips_per_video]
    keys = list(zip(table.column("video_id").to_pylist(), table.column("clip_index").to_pylist(), strict=True))
    assert len(keys) == len(set(keys))  # no (video, clip) twice


def feature_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "features").iterdir())


def copy_videos(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in sorted(src.iterdir()):
        shutil.copy2(p, dst / p.name)
    return dst


# ---------------------------------------------------------------------------------------------------------------
# inputs and the one run per mode


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, small_corpus) -> Path:
    """A private copy of the small corpus: videos/ plus labels.parquet (a manifest with a relative `path` column)."""
    root = tmp_path_factory.mktemp("e2e_corpus")
    copy_videos(small_corpus / "videos", root / "videos")
    shutil.copy2(small_corpus / "labels.parquet", root / "labels.parquet")
    return root


@pytest.fixture(scope="module")
def folder_input(tmp_path_factory, small_corpus) -> Path:
    """The same videos in a folder of their own, listed without a manifest; the re-run test adds videos to it."""
    return copy_videos(small_corpus / "videos", tmp_path_factory.mktemp("e2e_folder") / "videos")


def source_for(mode: str, corpus: Path, folder_input: Path) -> list[str]:
    # raw reads the folder (no labels), the others the manifest (labels kept): both kinds of input are covered
    return [str(folder_input)] if mode == "raw" else ["--manifest", str(corpus / "labels.parquet")]


@pytest.fixture(scope="module")
def mode_run(ray_session, tiny_models, corpus, folder_input, tmp_path_factory):
    """mode -> its Run, each mode run once per module, on first use."""
    runs: dict[str, Run] = {}

    def get(mode: str) -> Run:
        if mode not in runs:
            out = tmp_path_factory.mktemp(f"e2e_out_{mode.replace('+', '_')}")
            args = mode_args(mode, tiny_models, source_for(mode, corpus, folder_input))
            runs[mode] = run_job(out, args, run_id=f"first-{mode.replace('+', '-')}")
        return runs[mode]

    return get


# ---------------------------------------------------------------------------------------------------------------
# 1. every mode


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT)
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_writes_every_video_exactly_once(mode, mode_run, corpus, folder_input, tiny_models):
    run = mode_run(mode)
    s = run.summary
    assert run.rc == 0, s
    assert s["ok"] and s["mode"] == mode
    counts = (s["videos_listed"], s["videos_ok"], s["videos_failed"], s["videos_incomplete"])
    assert counts == (N_VIDEOS, N_VIDEOS, 0, 0)
    assert s["videos_skipped_committed"] == 0 and s["clips"] == N_VIDEOS

    # the listing names exactly the corpus' files
    assert len(run.expected_ids) == N_VIDEOS
    table = read_features(run.out)
    assert {os.path.basename(u) for u in table.column("source_uri").to_pylist()} == {
        p.name for p in (corpus / "videos").iterdir()
    }
    assert_exactly_once(table, run.expected_ids)  # 32 frames -> one 16x2 clip per video
    assert set(table.column("clip_index").to_pylist()) == {0}
    assert read_errors(run.out) is None

    # schema: fixed-size float vectors any Parquet reader takes; prune columns only where a pruner ran
    assert table.schema.field("features").type == pa.list_(pa.float32(), DIM)
    feats = np.asarray(table.column("features").to_pylist(), dtype=np.float32)
    assert feats.shape == (N_VIDEOS, DIM) and np.isfinite(feats).all()
    assert np.abs(feats).sum(axis=1).min() > 0  # a real feature, not the zeros a failed row starts as
    expected_cols = BASE_COLUMNS | (PRUNE_COLUMNS if "prune" in mode else set())
    assert set(table.column_names) == expected_cols
    if "prune" in mode:
        kept = np.asarray(table.column("kept_tubelet_ids").to_pylist())
        assert kept.min() >= 0 and all(len(set(r)) == len(r) for r in kept)  # real, distinct tubelets
        assert np.isfinite(np.asarray(table.column("pruner_feature").to_pylist())).all()

    # provenance columns: constant and equal to what the run record says
    constants = {
        "mode": mode,
        "encoder_id": s["models"]["encoder"]["id"],
        "pruner_id": s["models"]["pruner"]["id"] if "prune" in mode else "",
        "aam_id": s["models"]["aam"]["id"] if "aam" in mode else "",
        "config_hash": s["output_config"]["config_hash"],
        "run_id": s["run_id"],
    }
    for col, value in constants.items():
        assert set(table.column(col).to_pylist()) == {value}, col
    assert json.loads((run.out / "_output.json").read_text())["config_hash"] == s["output_config"]["config_hash"]

    # one ok commit marker per video, naming a whole shard
    commits = {p.stem: json.loads(p.read_text()) for p in (run.out / "_commits").glob("*.json")}
    assert set(commits) == run.expected_ids
    assert all(c["status"] == "ok" and c["rows"] == 1 for c in commits.values())
    assert {c["shard"] for c in commits.values()} == {p.stem for p in (run.out / "_shards").glob("*.json")}

    # labels: the manifest's other columns, per video, as JSON; none for a plain folder
    labels = table.column("labels").to_pylist()
    if mode == "raw":
        assert labels == [None] * N_VIDEOS
    else:
        manifest = pd.read_parquet(corpus / "labels.parquet")
        rows = {os.path.basename(r["path"]): r for r in manifest.to_dict("records")}
        for uri, text in zip(table.column("source_uri").to_pylist(), labels, strict=True):
            got = json.loads(text)
            want = {k: (v.item() if hasattr(v, "item") else v) for k, v in rows[os.path.basename(uri)].items()}
            want.pop("path")  # it became the uri
            assert got == want


@pytest.mark.slow
@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_modes_store_the_features_the_method_says(mode_run, tiny_models):
    """raw = f_E(clip), prune = f_E(masked clip), aam = f_A(f_E(clip)), prune+aam = f_A(f_E(masked clip))."""
    import torch

    from anon_core.models.bundle import load_bundle

    tables = {m: read_features(mode_run(m).out) for m in MODES}
    feats = {m: by_clip(t) for m, t in tables.items()}
    keys = sorted(feats["raw"])
    assert all(sorted(f) == keys for f in feats.values())
    stack = {m: np.stack([feats[m][k] for k in keys]) for m in MODES}

    def differs(a, b):  # per clip
        return np.abs(a - b).max(axis=1) > 1e-3

    assert differs(stack["raw"], stack["prune"]).all()  # masking tubelets changes f_E
    assert differs(stack["raw"], stack["aam"]).all()
    assert differs(stack["prune"], stack["prune+aam"]).all()

    # the AAM stage applied exactly the bundle's f_A to the stored f_E of the same clips
    aam, _ = load_bundle(tiny_models["aam"], expect_kind="aam")
    vids = [name for name, _ in keys]
    with torch.inference_mode():
        for base, adapted in (("raw", "aam"), ("prune", "prune+aam")):
            expect = aam.forward_flat(torch.from_numpy(stack[base]), vids).numpy()
            np.testing.assert_allclose(stack[adapted], expect, rtol=1e-4, atol=1e-4)

    # the same pruner on the same clips: same kept tubelets and pruner features with or without the AAM after it
    for col in ("kept_tubelet_ids", "pruner_feature"):
        a, b = by_clip(tables["prune"], col), by_clip(tables["prune+aam"], col)
        np.testing.assert_allclose(np.stack([a[k] for k in keys]), np.stack([b[k] for k in keys]), atol=1e-5)

    # four configurations, four config hashes: their rows can never be mixed up in one folder
    assert len({mode_run(m).summary["output_config"]["config_hash"] for m in MODES}) == len(MODES)


# ---------------------------------------------------------------------------------------------------------------
# 2. read back with the usual readers


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT)
def test_output_reads_the_same_in_pyarrow_pandas_and_ray_data(mode_run):
    import ray.data

    out = mode_run("prune+aam").out / "features"
    t = pq.read_table(str(out))
    ref = {(v, int(c)): np.asarray(f, np.float32) for v, c, f in zip(
        t.column("video_id").to_pylist(), t.column("clip_index").to_pylist(), t.column("features").to_pylist(),
        strict=True)}  # fmt: skip
    assert len(ref) == t.num_rows == N_VIDEOS

    frames = {"pandas": pd.read_parquet(out), "ray": ray.data.read_parquet(str(out)).to_pandas()}
    for reader, df in frames.items():
        assert len(df) == len(ref), reader
        got = {
            (v, int(c)): np.asarray(f, np.float32)
            for v, c, f in zip(df["video_id"], df["clip_index"], df["features"], strict=True)
        }
        assert set(got) == set(ref), reader
        for k, f in got.items():
            assert f.shape == (DIM,), reader
            np.testing.assert_array_equal(f, ref[k], err_msg=reader)


# ---------------------------------------------------------------------------------------------------------------
# 3. re-runs: nothing twice, only what is new


def add_videos(folder: Path, tmp: Path, n: int) -> list[str]:
    """n new synthetic videos (another seed), under names the folder does not have yet."""
    from anon_core.synthetic import CorpusConfig, generate_corpus

    generate_corpus(tmp, CorpusConfig(videos=n, seed=11), workers=1)
    names = []
    for i, p in enumerate(sorted((tmp / "videos").glob("*.mp4"))):
        name = f"extra_{i}.mp4"
        shutil.copy2(p, folder / name)
        names.append(name)
    return names


@pytest.mark.slow
@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_rerun_skips_committed_videos_and_processes_only_new_ones(mode_run, folder_input, tmp_path):
    first = mode_run("raw")  # before the folder changes: its listing is the 12 videos
    out = tmp_path / "out"
    shutil.copytree(first.out, out)
    files, rows = feature_files(out), read_features(out).num_rows

    again = run_job(out, first.args, run_id="again")
    s = again.summary
    assert again.rc == 0 and s["ok"]
    assert (s["videos_ok"], s["videos_failed"], s["clips"]) == (0, 0, 0)
    assert s["videos_skipped_committed"] == s["videos_listed"] == N_VIDEOS
    assert feature_files(out) == files and read_features(out).num_rows == rows

    new = add_videos(folder_input, tmp_path / "more", 3)
    more = run_job(out, first.args, run_id="more")
    s = more.summary
    assert more.rc == 0 and s["ok"]
    assert (s["videos_listed"], s["videos_skipped_committed"], s["videos_ok"], s["videos_failed"]) == (15, 12, 3, 0)
    table = read_features(out)
    assert len(more.expected_ids) == N_VIDEOS + 3
    assert_exactly_once(table, more.expected_ids)
    by_run = {}
    for uri, run_id in zip(table.column("source_uri").to_pylist(), table.column("run_id").to_pylist(), strict=True):
        by_run.setdefault(run_id, set()).add(os.path.basename(uri))
    assert by_run["more"] == set(new)
    assert set(by_run) == {"more", first.summary["run_id"]} and len(by_run[first.summary["run_id"]]) == N_VIDEOS
    assert set(feature_files(out)) > set(files)  # the old shard untouched, one more beside it


# ---------------------------------------------------------------------------------------------------------------
# 4. bad input: the bad videos are data, not a crash

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
# 5. preflight: fail fast, exit 2, say what to do; no Ray work


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


# ---------------------------------------------------------------------------------------------------------------
# 6. a run killed between writing a shard and committing it


@pytest.mark.slow
@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_rerun_after_a_kill_mid_commit_leaves_every_video_exactly_once(mode_run, tmp_path):
    """Two leftovers of killed runs at once: an orphan shard whose rows are all committed elsewhere (a retried write),
    and a shard whose file landed but only some of its videos' markers and no shard record (killed mid-commit)."""
    first = mode_run("prune")
    out = tmp_path / "out"
    shutil.copytree(first.out, out)
    # the biggest shard (a slow first run may have flushed more than one)
    shard = max((out / "features").glob("part-*.parquet"), key=lambda p: pq.read_metadata(p).num_rows)
    stem = shard.name[len("part-") : -len(".parquet")]
    in_shard = sorted(set(pq.read_table(shard).column("video_id").to_pylist()))
    assert len(in_shard) >= 2
    shutil.copy2(shard, out / "features" / "part-fake.parquet")  # an orphan: no record, no marker points at it
    (out / "_shards" / f"{stem}.json").unlink()  # killed before the shard record ...
    uncommitted = in_shard[: min(3, len(in_shard) - 1)]
    for vid in uncommitted:  # ... and before these videos' markers
        (out / "_commits" / f"{vid}.json").unlink()

    rerun = run_job(out, first.args, run_id="after-kill")
    s = rerun.summary
    assert rerun.rc == 0 and s["ok"]
    assert (s["videos_ok"], s["videos_skipped_committed"]) == (len(uncommitted), N_VIDEOS - len(uncommitted))
    before = s["repaired"]["before"]
    assert before["shards_removed"] == 1 and before["shards_rewritten"] == 1  # the orphan went; the shard kept the rest
    assert before["rows_dropped"] == len(in_shard) + len(uncommitted)

    assert not (out / "features" / "part-fake.parquet").exists()
    table = read_features(out)
    assert_exactly_once(table, first.expected_ids)
    redone = {v for v, r in zip(table.column("video_id").to_pylist(), table.column("run_id").to_pylist(), strict=True)
              if r == "after-kill"}  # fmt: skip
    assert redone == set(uncommitted)
    # every file is whole again: each has its record, and every marker points at a file holding that video
    stems = {p.name[len("part-") : -len(".parquet")] for p in (out / "features").glob("part-*.parquet")}
    assert stems <= {p.stem for p in (out / "_shards").glob("*.json")}
    for p in (out / "_commits").glob("*.json"):
        c = json.loads(p.read_text())
        held = pq.read_table(out / "features" / f"part-{c['shard']}.parquet").column("video_id").to_pylist()
        assert p.stem in held
