"""Scheduled incremental runs: a prefix that grows between runs is processed once, video by video, and two runs
started at once over the same output serialise on its lease, leaving every video exactly once.

Runs on the shared local Ray (`ray_session`); the concurrent runs are two `anonvid anonymize` processes connected to
it, as two scheduled runs would be two drivers on one cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from pipeline_helpers import N_VIDEOS, RUN_TIMEOUT, mode_args, read_features

from jobs.cli import main

pytestmark = [pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def _runs(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "_runs").glob("*.json")}


def _commits(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "_commits").glob("*.json")}


def _assert_each_video_once(out: Path, video_ids: set[str]) -> None:
    commits = _commits(out)
    assert set(commits) == video_ids
    rows = Counter(read_features(out).column("video_id").to_pylist())
    assert set(rows) == video_ids
    assert all(rows[v] == commits[v]["rows"] for v in video_ids), "a video has rows from more than one commit"


@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_three_scheduled_runs_over_a_growing_prefix_process_each_video_once(
    ray_session, small_corpus, tiny_models, tmp_path, capsys
):
    from pipelines.sources import list_input

    videos = sorted((small_corpus / "videos").iterdir())
    prefix, out = tmp_path / "archive", tmp_path / "out"
    prefix.mkdir()
    batches = [videos[:4], videos[4:8], videos[8:]]
    args = [*mode_args("raw", tiny_models, [str(prefix)]), "--out", str(out), "--lease-ttl", "20"]
    seen: dict[str, str] = {}  # video_id -> the run that committed it
    for i, batch in enumerate(batches):
        for v in batch:
            shutil.copy2(v, prefix / v.name)
        if i == 2:  # a video replaced in place (new bytes, same name) counts as new: its id follows its bytes
            changed = prefix / batches[0][0].name
            changed.write_bytes(videos[-1].read_bytes())
        listed = set(list_input(str(prefix)).videos["video_id"])
        new = listed - set(seen)
        assert main(["anonymize", *args, "--run-id", f"sched-{i}"]) == 0
        record = _runs(out)[f"sched-{i}"]
        assert record["status"] == "ok"
        assert record["videos_ok"] == len(new) and record["videos_skipped_committed"] == len(listed & set(seen))
        for vid, c in _commits(out).items():
            if vid in new:
                assert c["run_id"] == f"sched-{i}", "a new video was committed by another run"
            else:
                assert c["run_id"] == seen[vid], "a video was processed a second time"
        seen.update({vid: f"sched-{i}" for vid in new})
    assert sum(r["videos_ok"] for r in _runs(out).values()) == len(seen) == N_VIDEOS + 1  # 12 + the replaced one
    _assert_each_video_once(out, set(seen))

    # `anonvid runs` lists the three runs with their counts
    capsys.readouterr()
    assert main(["runs", str(out)]) == 0
    table = capsys.readouterr().out
    assert "3 runs" in table and all(f"sched-{i}" in table for i in range(3))
    assert main(["runs", str(out), "--json"]) == 0
    listed_runs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed_runs] == ["sched-2", "sched-1", "sched-0"]  # newest first
    assert [r["videos_ok"] for r in listed_runs] == [5, 4, 4]


@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_two_runs_started_at_once_write_every_video_exactly_once(ray_session, small_corpus, tiny_models, tmp_path):
    out = tmp_path / "out"
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "jobs.cli", "anonymize",
           *mode_args("raw", tiny_models, [str(small_corpus / "videos")]),
           "--out", str(out), "--lease-ttl", "20", "--json"]  # fmt: skip
    procs = [
        subprocess.Popen([*cmd, "--run-id", f"overlap-{i}"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
        for i in range(2)
    ]
    results = []
    deadline = time.monotonic() + 2 * RUN_TIMEOUT
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, stdout, stderr))
    for rc, _, stderr in results:
        assert rc == 0, stderr[-3000:]
    summaries = [json.loads(stdout) for _, stdout, _ in results]
    # one run did the work, the other waited for the lease and then found everything committed
    assert sorted(s["videos_ok"] for s in summaries) == [0, N_VIDEOS]
    waited = next(stderr for (_, _, stderr), s in zip(results, summaries, strict=True) if s["videos_ok"] == 0)
    assert "is in use by run overlap-" in waited and "waiting" in waited
    idle = next(s for s in summaries if s["videos_ok"] == 0)
    assert idle["videos_skipped_committed"] == N_VIDEOS and idle["status"] == "ok"
    gens = [s["lease_generation"] for s in summaries]
    assert sorted(gens) == [0, 1]  # one after the other, never both at once
    from pipelines.sources import list_input

    _assert_each_video_once(out, set(list_input(str(small_corpus / "videos")).videos["video_id"]))
    # both released: a third run takes the next generation at once and has nothing to do
    lease_files = sorted(p.name for p in (out / "_lease").glob("*.json"))
    assert lease_files[-1] == f"{1:012d}.json"
    assert json.loads((out / "_lease" / lease_files[-1]).read_text())["released"] is True
