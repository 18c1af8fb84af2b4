"""End to end: `anonvid anonymize` run in-process (jobs.cli.main) on the shared local Ray: every mode, reading the
output back, re-runs and a killed run's leftovers. Bad input and preflight failures are in test_pipeline_errors.py.

Each pipeline run costs 20-40 s on a 2-core machine, so every mode runs once (lazily, cached per module) and the
tests that need an output of their own start from a copy of one of those. Every test that uses that cache lives in
this module, so that no mode runs twice.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pipeline_helpers
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import (
    N_VIDEOS,
    RUN_TIMEOUT,
    Run,
    copy_videos,
    mode_args,
    read_errors,
    read_features,
    run_job,
)

from pipelines.modes import MODES

# the shared fixture, bound here so that pytest finds it in this module
corpus = pipeline_helpers.corpus

RUN_MODES = ("prune", "aam", "prune+aam", "raw")
DIM = 192  # the tiny encoder's feature size
BASE_COLUMNS = {
    "video_id", "source_uri", "clip_index", "start_s", "end_s", "features", "mode", "encoder_id", "pruner_id",
    "aam_id", "config_hash", "run_id", "labels", "source_id",
}  # fmt: skip
PRUNE_COLUMNS = {"kept_tubelet_ids", "pruner_feature"}


# ---------------------------------------------------------------------------------------------------------------
# helpers


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


# ---------------------------------------------------------------------------------------------------------------
# inputs and the one run per mode


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
@pytest.mark.parametrize("mode", RUN_MODES)
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
    # what the progress line counted, stage by stage, ends as every clip decoded and encoded once
    assert s["clips_by_stage"] == {"decoded": N_VIDEOS, "encoded": N_VIDEOS}

    # schema: fixed-size float vectors any Parquet reader takes; prune columns only where a pruner ran
    assert table.schema.field("features").type == pa.list_(pa.float32(), DIM)
    feats = np.asarray(table.column("features").to_pylist(), dtype=np.float32)
    assert feats.shape == (N_VIDEOS, DIM) and np.isfinite(feats).all()
    assert np.abs(feats).sum(axis=1).min() > 0  # a real feature, not the zeros a failed row starts as
    expected_cols = BASE_COLUMNS | (PRUNE_COLUMNS if MODES[mode].pruner else set())
    assert set(table.column_names) == expected_cols
    if MODES[mode].pruner:
        kept = np.asarray(table.column("kept_tubelet_ids").to_pylist())
        assert kept.min() >= 0 and all(len(set(r)) == len(r) for r in kept)  # real, distinct tubelets
        assert np.isfinite(np.asarray(table.column("pruner_feature").to_pylist())).all()

    # provenance columns: constant and equal to what the run record says
    constants = {
        "mode": mode,
        "encoder_id": s["models"]["encoder"]["id"],
        "pruner_id": s["models"]["pruner"]["id"] if MODES[mode].pruner else "",
        "aam_id": s["models"]["aam"]["id"] if MODES[mode].aam else "",
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

    # labels: by default only the manifest's own id, per video, as JSON (its private columns stay out); none for a
    # plain folder
    labels = table.column("labels").to_pylist()
    if mode == "raw":
        assert labels == [None] * N_VIDEOS
        assert table.column("source_id").to_pylist() == [None] * N_VIDEOS
    else:
        manifest = pd.read_parquet(corpus / "labels.parquet")
        own_id = {os.path.basename(p): v for p, v in zip(manifest["path"], manifest["video_id"], strict=True)}
        for uri, text, own in zip(table.column("source_uri").to_pylist(), labels, table.column("source_id").to_pylist(),
                                  strict=True):  # fmt: skip
            assert json.loads(text) == {"video_id": own_id[os.path.basename(uri)]}
            assert own == own_id[os.path.basename(uri)]  # its own column too: a join needs no JSON


@pytest.mark.slow
@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_modes_store_the_features_the_method_says(mode_run, tiny_models):
    """raw = f_E(clip), prune = f_E(kept tubelets), aam = f_A(f_E(clip)), prune+aam = f_A(f_E(kept tubelets))."""
    import torch

    from anon_core.models.bundle import load_bundle

    tables = {m: read_features(mode_run(m).out) for m in RUN_MODES}
    feats = {m: by_clip(t) for m, t in tables.items()}
    keys = sorted(feats["raw"])
    assert all(sorted(f) == keys for f in feats.values())
    stack = {m: np.stack([feats[m][k] for k in keys]) for m in RUN_MODES}

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
    assert len({mode_run(m).summary["output_config"]["config_hash"] for m in RUN_MODES}) == len(RUN_MODES)


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
# 4. a run killed between writing a shard and committing it


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
