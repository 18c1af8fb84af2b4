"""The output folder (local or any fsspec URI) and its exactly-once protocol.

    OUT/_output.json                 what this folder holds: mode, models, config hash (a folder holds one config)
    OUT/features/part-<stem>.parquet feature rows, one row per clip (zstd)
    OUT/errors/part-<stem>.parquet   one row per failed video
    OUT/_commits/<video_id>.json     per-video commit marker: {status, shard, rows, run_id}
    OUT/_shards/<stem>.json          the shard is whole: every video in it is committed to it
    OUT/_runs/<run_id>.json          one record per run: config, model ids, counts, timings

Protocol, per batch of whole videos: (1) write the shard's Parquet files (atomic: temp + rename locally, one PUT on
object stores); (2) write each video's commit marker, naming the shard; (3) write the shard record. A video counts as
done exactly when its marker exists, and its rows are the ones in the shard its marker names. A crash between the
steps leaves a shard without a record; `repair()` (run before and after every run) keeps only the rows whose
videos' markers point at that shard, so re-running after a kill at any point leaves every video exactly once.
Readers see only whole files (temporary names start with '.', which pyarrow and Ray Data skip).
"""

from __future__ import annotations

import io
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES, ERRORS, COMMITS, SHARDS, RUNS = "features", "errors", "_commits", "_shards", "_runs"


class OutputError(ValueError):
    """The output cannot be used as asked; the message says what to fix."""


@dataclass
class RepairReport:
    shards_checked: int = 0
    shards_completed: int = 0  # every row was committed: only the record was missing
    shards_rewritten: int = 0  # kept the committed rows, dropped the others
    shards_removed: int = 0  # nothing committed: the files went
    rows_dropped: int = 0


class OutputStore:
    def __init__(self, uri: str, storage_options: dict | None = None) -> None:
        self.uri = uri.rstrip("/") if "://" in uri else os.path.abspath(uri)
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **(storage_options or {}))
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    # -- paths -----------------------------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """root/part/...: each part one plain name, so no run id, video id or shard stem reaches outside the root."""
        for part in parts:
            if part in ("", ".", "..") or "/" in part or "\\" in part:
                raise OutputError(
                    f"{part!r} cannot name a file under {self.uri}: it is empty, '.', '..' or holds a path separator; "
                    "names under the output (run ids: --run-id) must be plain names such as nightly-2026-11-22"
                )
        return "/".join([self.root.rstrip("/"), *parts])

    def shard_file(self, kind: str, stem: str) -> str:
        return self.path(kind, f"part-{stem}.parquet")

    # -- primitive writes ------------------------------------------------------------------------------------------
    def put_bytes(self, path: str, data: bytes) -> None:
        """Atomic: readers see the old object or the whole new one, never a part."""
        parent = path.rsplit("/", 1)[0]
        if self.local:
            self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{parent}/.{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # durable before the marker that points at it
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)  # one PUT (multipart completes atomically)

    def put_json(self, path: str, obj) -> None:
        self.put_bytes(path, json.dumps(obj, sort_keys=True, default=str).encode())

    def read_json(self, path: str):
        return json.loads(self.fs.cat_file(path))

    def exists(self, path: str) -> bool:
        self.fs.invalidate_cache(path.rsplit("/", 1)[0])  # written by other processes: never trust a cached listing
        return self.fs.exists(path)

    def _ls_names(self, sub: str) -> list[str]:
        path = self.path(sub)
        self.fs.invalidate_cache(path)  # Ray workers and other runs write here: a cached listing is stale
        try:
            return sorted(os.path.basename(p) for p in self.fs.ls(path, detail=False, refresh=True))
        except FileNotFoundError:
            return []

    # -- preflight -------------------------------------------------------------------------------------------------
    def check_writable(self) -> None:
        probe = self.path(f".write-check-{uuid.uuid4().hex[:8]}")
        try:
            if self.local:
                self.fs.makedirs(self.root, exist_ok=True)
            self.put_bytes(probe, b"ok")
            self.fs.rm_file(probe)
        except Exception as e:
            raise OutputError(
                f"output {self.uri} is not writable ({type(e).__name__}: {e}); choose a folder you can write, or "
                "check the bucket, endpoint and credentials (AWS_* variables or --s3-endpoint)"
            ) from None

    def claim(self, output_config: dict) -> None:
        """A folder holds one configuration: rows from different models or modes must never mix in one table."""
        path = self.path("_output.json")
        if self.exists(path):
            held = self.read_json(path)
            if held.get("config_hash") != output_config["config_hash"]:
                diff = {k: (held.get(k), v) for k, v in output_config.items() if held.get(k) != v}
                raise OutputError(
                    f"{self.uri} already holds features of another configuration (held vs now: {diff}); write to a "
                    "new output folder, or rerun with the configuration it holds"
                )
        else:
            self.put_json(path, output_config)

    # -- commits ---------------------------------------------------------------------------------------------------
    def committed(self) -> set[str]:
        return {n[: -len(".json")] for n in self._ls_names(COMMITS) if n.endswith(".json")}

    def read_commits(self, video_ids) -> dict[str, dict]:
        def one(vid):
            try:
                return vid, self.read_json(self.path(COMMITS, f"{vid}.json"))
            except FileNotFoundError:
                return vid, None

        with ThreadPoolExecutor(16) as pool:
            return {vid: rec for vid, rec in pool.map(one, video_ids) if rec is not None}

    def write_shard(self, stem: str, features: pa.Table | None, errors: pa.Table | None, commits: list[dict]) -> None:
        """Steps 1-3 of the protocol for one batch of whole videos."""
        files = {}
        for kind, table in ((FEATURES, features), (ERRORS, errors)):
            if table is not None and table.num_rows:
                self.put_bytes(self.shard_file(kind, stem), _parquet_bytes(table))
                files[kind] = table.num_rows
        with ThreadPoolExecutor(16) as pool:  # object stores: one PUT each, in parallel
            list(pool.map(lambda c: self.put_json(self.path(COMMITS, f"{c['video_id']}.json"), c), commits))
        self.put_json(self.path(SHARDS, f"{stem}.json"), {"videos": [c["video_id"] for c in commits], "rows": files})

    # -- repair ----------------------------------------------------------------------------------------------------
    def repair(self) -> RepairReport:
        report = RepairReport()
        whole = {n[: -len(".json")] for n in self._ls_names(SHARDS)}
        remaining: set[str] = set()  # unrecorded shards with a file left after the repair
        for kind in (FEATURES, ERRORS):
            for name in self._ls_names(kind):
                if not (name.startswith("part-") and name.endswith(".parquet")):
                    continue
                stem = name[len("part-") : -len(".parquet")]
                if stem in whole:
                    continue
                report.shards_checked += 1
                if self._repair_file(kind, stem, report):
                    remaining.add(stem)
        # a shard whose files are all repaired gets its record, so the next run does not look again
        for stem in remaining:
            self.put_json(self.path(SHARDS, f"{stem}.json"), {"videos": [], "rows": {}, "repaired": True})
        return report

    def _repair_file(self, kind: str, stem: str, report: RepairReport) -> bool:
        """Keep the rows of videos committed to this shard; True when the file is still there afterwards."""

        def committed_here(ids: set[str]) -> set[str]:
            return {vid for vid, rec in self.read_commits(sorted(ids)).items() if rec.get("shard") == stem}

        before, after = self._filter_shard_file(self.shard_file(kind, stem), committed_here)
        if after == before:
            report.shards_completed += 1
            return True
        report.rows_dropped += before - after
        if after == 0:
            report.shards_removed += 1
            return False
        report.shards_rewritten += 1
        return True

    def _filter_shard_file(self, path: str, choose) -> tuple[int, int]:
        """Keep the rows of the videos `choose(video ids in the file)` returns: the file is left alone when every row
        stays, removed when none does, else rewritten atomically. -> (rows before, rows after)."""
        table = pq.read_table(io.BytesIO(self.fs.cat_file(path)))
        ids = table.column("video_id").to_pylist()
        keep = choose(set(ids))
        kept = table.filter(pa.array([v in keep for v in ids]))
        if kept.num_rows == table.num_rows:
            return table.num_rows, table.num_rows
        if kept.num_rows == 0:
            self.fs.rm_file(path)
        else:
            self.put_bytes(path, _parquet_bytes(kept))
        return table.num_rows, kept.num_rows

    def forget_failed(self, commits: dict[str, dict]) -> int:
        """--retry-failed: drop the error rows of these failed videos, then their markers, so a retried video never
        shows up both as failed and as done. In that order: a crash in between leaves a failed marker whose error row
        is gone, which the next --retry-failed run forgets again."""
        by_shard: dict[str, set[str]] = {}
        for vid, rec in commits.items():
            by_shard.setdefault(rec["shard"], set()).add(vid)
        for stem, vids in by_shard.items():
            path = self.shard_file(ERRORS, stem)
            if self.exists(path):
                self._filter_shard_file(path, lambda ids, vids=vids: ids - vids)
        paths = [self.path(COMMITS, f"{vid}.json") for vid in commits]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(self.fs.rm_file, paths))
        return len(paths)

    # -- runs ------------------------------------------------------------------------------------------------------
    def write_run(self, run_id: str, record: dict) -> str:
        path = self.path(RUNS, f"{run_id}.json")
        self.put_json(path, record)
        return path

    def runs(self) -> list[dict]:
        return [self.read_json(self.path(RUNS, n)) for n in self._ls_names(RUNS) if n.endswith(".json")]


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()
