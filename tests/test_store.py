"""The output folder's exactly-once protocol on a local folder: commits, repair after a crash at any step, the
one-configuration claim, the writability check, and temporary files no reader ever sees."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.store import OutputError, OutputStore, RepairReport

CONFIG = {"format": "anonvid-features/1", "mode": "prune+aam", "models": {"encoder": "enc-1"}, "config_hash": "aaaa"}


def table(rows: dict[str, int]) -> pa.Table:
    """video_id -> its number of rows (clips), in that order."""
    ids = [vid for vid, n in rows.items() for _ in range(n)]
    clip = [i for n in rows.values() for i in range(n)]
    return pa.table({"video_id": pa.array(ids, pa.string()), "clip_index": pa.array(clip, pa.int32())})


def commit(vid: str, stem: str, rows: int = 1, status: str = "ok") -> dict:
    return {"video_id": vid, "status": status, "shard": stem, "rows": rows, "run_id": "r1"}


def write_files(store: OutputStore, stem: str, features: dict | None = None, errors: dict | None = None) -> None:
    """Step 1 of the protocol only: the shard's Parquet files, as a sink killed right after it leaves them."""
    for kind, rows in (("features", features), ("errors", errors)):
        if rows:
            store.put_bytes(store.shard_file(kind, stem), _parquet(table(rows)))


def _parquet(t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink)
    return sink.getvalue().to_pybytes()


def write_markers(store: OutputStore, commits: list[dict]) -> None:
    for c in commits:
        store.put_json(store.path("_commits", f"{c['video_id']}.json"), c)


def ids_in(root, kind: str, stem: str) -> list[str] | None:
    path = root / kind / f"part-{stem}.parquet"
    return pq.read_table(path).column("video_id").to_pylist() if path.exists() else None


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path) -> OutputStore:
    return OutputStore(str(tmp_path))


def test_write_shard_commits_every_video(store, tmp_path):
    commits = [commit("a", "s1", 2), commit("b", "s1", 3), commit("c", "s1", 0, "failed")]
    store.write_shard("s1", table({"a": 2, "b": 3}), table({"c": 1}), commits)
    assert store.committed() == {"a", "b", "c"}
    assert store.read_commits(["a", "c", "zz"]) == {"a": commits[0], "c": commits[2]}
    assert ids_in(tmp_path, "features", "s1") == ["a", "a", "b", "b", "b"]
    assert ids_in(tmp_path, "errors", "s1") == ["c"]
    record = json.loads((tmp_path / "_shards" / "s1.json").read_text())
    assert record == {"videos": ["a", "b", "c"], "rows": {"features": 5, "errors": 1}}
    assert store.repair() == RepairReport()


def test_write_shard_without_errors_writes_no_errors_file(store, tmp_path):
    store.write_shard("s1", table({"a": 2}), None, [commit("a", "s1", 2)])
    assert not (tmp_path / "errors").exists()
    assert json.loads((tmp_path / "_shards" / "s1.json").read_text())["rows"] == {"features": 2}


def test_repair_removes_a_shard_whose_markers_were_never_written(store, tmp_path):
    store.write_shard("s0", table({"a": 2}), None, [commit("a", "s0", 2)])
    whole = snapshot(tmp_path)
    write_files(store, "s1", features={"b": 3, "c": 1}, errors={"d": 1})  # killed before step 2
    report = store.repair()
    assert report == RepairReport(shards_checked=2, shards_removed=2, rows_dropped=5)
    assert ids_in(tmp_path, "features", "s1") is None and ids_in(tmp_path, "errors", "s1") is None
    assert store.committed() == {"a"}
    assert snapshot(tmp_path) == whole  # nothing else changed, and no record for a shard that is gone


def test_repair_keeps_only_the_committed_rows_of_a_partly_committed_shard(store, tmp_path):
    write_files(store, "s1", features={"a": 2, "b": 3, "c": 1}, errors={"d": 1, "e": 1})
    write_markers(store, [commit("a", "s1", 2), commit("c", "s1", 1), commit("e", "s1", 0, "failed")])  # b, d: killed
    report = store.repair()
    assert report == RepairReport(shards_checked=2, shards_rewritten=2, rows_dropped=4)
    assert ids_in(tmp_path, "features", "s1") == ["a", "a", "c"]
    assert ids_in(tmp_path, "errors", "s1") == ["e"]
    rewritten = pq.read_table(tmp_path / "features" / "part-s1.parquet")
    assert rewritten.schema == table({}).schema and rewritten.column("clip_index").to_pylist() == [0, 1, 0]
    assert store.committed() == {"a", "c", "e"}
    assert json.loads((tmp_path / "_shards" / "s1.json").read_text())["repaired"] is True


def test_repair_drops_rows_of_videos_committed_to_a_newer_shard(store, tmp_path):
    """A retried sink: the first try wrote s1 and some markers, the retry wrote s2 and re-committed them there."""
    write_files(store, "s1", features={"a": 2, "b": 1, "c": 1})
    write_markers(store, [commit("a", "s1", 2), commit("b", "s1", 1)])
    store.write_shard("s2", table({"b": 1, "c": 1}), None, [commit("b", "s2"), commit("c", "s2")])
    s2 = (tmp_path / "features" / "part-s2.parquet").read_bytes()
    report = store.repair()
    assert report == RepairReport(shards_checked=1, shards_rewritten=1, rows_dropped=2)
    assert ids_in(tmp_path, "features", "s1") == ["a", "a"]
    assert (tmp_path / "features" / "part-s2.parquet").read_bytes() == s2
    shards = {vid: rec["shard"] for vid, rec in store.read_commits(["a", "b", "c"]).items()}
    assert shards == {"a": "s1", "b": "s2", "c": "s2"}


def test_repair_removes_an_old_shard_all_of_whose_videos_moved(store, tmp_path):
    write_files(store, "s1", features={"a": 1, "b": 1})
    store.write_shard("s2", table({"a": 1, "b": 1}), None, [commit("a", "s2"), commit("b", "s2")])
    assert store.repair() == RepairReport(shards_checked=1, shards_removed=1, rows_dropped=2)
    assert ids_in(tmp_path, "features", "s1") is None
    assert ids_in(tmp_path, "features", "s2") == ["a", "b"]


def test_repair_completes_a_shard_whose_record_alone_is_missing(store, tmp_path):
    write_files(store, "s1", features={"a": 2})
    write_markers(store, [commit("a", "s1", 2)])  # killed before step 3
    before = (tmp_path / "features" / "part-s1.parquet").read_bytes()
    assert store.repair() == RepairReport(shards_checked=1, shards_completed=1)
    assert (tmp_path / "features" / "part-s1.parquet").read_bytes() == before
    assert (tmp_path / "_shards" / "s1.json").exists()


def test_repair_leaves_a_whole_shard_alone_and_a_second_repair_is_a_no_op(store, tmp_path):
    store.write_shard("s0", table({"a": 2}), table({"f": 1}), [commit("a", "s0", 2), commit("f", "s0", 0, "failed")])
    write_files(store, "s1", features={"b": 1, "c": 1}, errors={"g": 1})
    write_markers(store, [commit("b", "s1")])
    write_files(store, "s2", features={"d": 1})
    first = store.repair()
    assert first == RepairReport(shards_checked=3, shards_rewritten=1, shards_removed=2, rows_dropped=3)
    after = snapshot(tmp_path)
    assert store.repair() == RepairReport()
    assert snapshot(tmp_path) == after
    assert ids_in(tmp_path, "features", "s0") == ["a", "a"] and ids_in(tmp_path, "errors", "s0") == ["f"]
    assert ids_in(tmp_path, "features", "s1") == ["b"]
    assert store.committed() == {"a", "f", "b"}


def test_claim_accepts_the_same_configuration_and_refuses_another(store, tmp_path):
    store.claim(CONFIG)
    assert json.loads((tmp_path / "_output.json").read_text()) == CONFIG
    OutputStore(str(tmp_path)).claim(dict(CONFIG))  # a second run of the same configuration
    other = {**CONFIG, "mode": "raw", "config_hash": "bbbb"}
    with pytest.raises(OutputError) as info:
        OutputStore(str(tmp_path)).claim(other)
    msg = str(info.value)
    assert "aaaa" in msg and "bbbb" in msg and "'mode': ('prune+aam', 'raw')" in msg
    assert str(tmp_path) in msg and "new output folder" in msg
    assert json.loads((tmp_path / "_output.json").read_text()) == CONFIG  # the held one stays


def test_check_writable_creates_the_folder_and_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "out"
    OutputStore(str(out)).check_writable()
    assert out.is_dir() and list(out.iterdir()) == []


def test_check_writable_refuses_a_folder_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "out"
    with pytest.raises(OutputError) as info:
        OutputStore(str(out)).check_writable()
    assert str(out) in str(info.value) and "not writable" in str(info.value)


@pytest.mark.parametrize("stem", ["../../../../X", "/tmp/X-abc", "a/b", "a\\b"])
def test_no_name_reaches_outside_the_output_root(stem, tmp_path):
    """A shard stem or run id that skipped the config's check (a caller without validate()) still writes nothing
    outside: every name under the output is one plain entry."""
    store = OutputStore(str(tmp_path / "deep" / "out"))
    with pytest.raises(OutputError, match="cannot name a file under"):
        store.write_shard(stem, table({"v1": 1}), None, [commit("v1", stem)])
    with pytest.raises(OutputError, match="--run-id"):
        store.write_run(stem, {"run_id": stem})
    for part in (stem, "..", ".", ""):
        with pytest.raises(OutputError):
            store.path("_commits", part)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_temporary_files_are_hidden_from_readers(store, tmp_path, monkeypatch):
    real_replace = os.replace
    renames = []

    def recording_replace(src, dst):
        renames.append((src, dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    store.write_shard("s1", table({"a": 2}), table({"f": 1}), [commit("a", "s1", 2), commit("f", "s1", 0, "failed")])
    assert len(renames) == 5  # two Parquet files, two markers, one shard record
    for src, dst in renames:
        assert os.path.dirname(src) == os.path.dirname(dst)
        assert os.path.basename(src).startswith(".") and not os.path.exists(src)

    def dying_replace(src, dst):
        raise OSError("killed mid-write")

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(OSError):
        store.write_shard("s2", table({"b": 3}), None, [commit("b", "s2", 3)])
    leftovers = [n for n in os.listdir(tmp_path / "features") if n != "part-s1.parquet"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".part-s2.parquet.")
    monkeypatch.setattr(os, "replace", real_replace)
    assert pq.read_table(tmp_path / "features").column("video_id").to_pylist() == ["a", "a"]
    assert store.repair() == RepairReport()
    assert store.committed() == {"a", "f"}
