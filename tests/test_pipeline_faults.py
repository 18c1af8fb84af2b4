"""Faults mid-run on a multi-node Ray cluster: a worker node dies, or the driver is SIGKILLed. Re-running the same
command must then leave every video exactly once: one marker each, its rows once, in the shard its marker names,
and no unrecorded shard file behind.

The job runs as a subprocess (`python -m jobs.cli anonymize ... --address ADDR`), as a user runs it; the test
process never joins the cluster. The cluster (`ray.cluster_utils.Cluster`: a head and two workers of 1 CPU and
200 MB object store each) lives in a child process of its own, for two reasons: a Cluster started in the pytest
process points that process's Ray internal KV at its GCS and clears it on shutdown, which breaks the session's
shared local Ray (`ray_session`) for the tests after these; and it writes /tmp/ray/ray_current_cluster, which a
plain `ray.init()` anywhere on the machine (another test session, an `anonvid` run without --address) would join.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
N_VIDEOS = 32
NODE = {"num_cpus": 1, "object_store_memory": 200 << 20}
JOB_TIMEOUT_S = 300

CLUSTER_SCRIPT = r"""
import json, sys
import ray._common.utils, ray._private.utils
ray._private.utils.write_ray_address = lambda *a, **k: None  # stay out of /tmp/ray/ray_current_cluster
ray._common.utils.reset_ray_address = lambda *a, **k: None
from ray.cluster_utils import Cluster

node_args = json.loads(sys.argv[1])
cluster = Cluster(initialize_head=True, head_node_args=node_args)
workers = [cluster.add_node(**node_args) for _ in range(int(sys.argv[2]))]
cluster.wait_for_nodes()
print("CTL address", cluster.address, json.dumps(sorted(cluster.global_state.cluster_resources())), flush=True)


def actors(node):  # the Ray Data actors (process titles "ray::MapWorker(...)") this node's raylet runs
    import psutil

    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    titles = []
    for p in raylet.children(recursive=True):
        try:
            titles.append(" ".join(p.cmdline()))
        except psutil.Error:
            pass
    return sorted(t.split()[0] for t in titles if t.startswith("ray::MapWorker"))


for line in sys.stdin:
    cmd = line.split()
    if cmd and cmd[0] == "remove":  # a crash, no graceful shutdown, of the worker node running the most actors
        index = max(range(len(workers)), key=lambda i: len(actors(workers[i])))
        lost = actors(workers[index])
        cluster.remove_node(workers.pop(index), allow_graceful=False)
        print("CTL removed", json.dumps(lost), flush=True)
    elif cmd and cmd[0] == "add":
        workers.append(cluster.add_node(**node_args))
        cluster.wait_for_nodes()
        print("CTL added", flush=True)
    elif cmd and cmd[0] == "shutdown":
        break
cluster.shutdown()
print("CTL bye", flush=True)
"""


class ClusterProcess:
    """A head and `workers` worker nodes, driven through the child's stdin: remove_worker(), add_worker()."""

    def __init__(self, workers: int, log: Path) -> None:
        self._log = open(log, "w")  # closed in shutdown()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLUSTER_SCRIPT, json.dumps(NODE), str(workers)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=REPO,
            env=job_env(), start_new_session=True,
        )  # fmt: skip
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        reply = self._expect("address", 120)
        _, _, self.address, resources = reply.split(" ", 3)
        self.resources = json.loads(resources)

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("CTL "):
                self._lines.put(line.strip())

    def _expect(self, word: str, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"cluster: no {word!r} in {timeout} s; see {self._log.name}") from None
        assert line.startswith(f"CTL {word}"), line
        return line

    def _send(self, cmd: str, word: str, timeout: float = 120) -> str:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._expect(word, timeout)

    def remove_worker(self) -> list[str]:
        """Kill the worker node running the most Ray Data actors; returns those actors' process titles."""
        return json.loads(self._send("remove", "removed").split(" ", 2)[2])

    def add_worker(self) -> None:
        self._send("add", "added")

    def shutdown(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("shutdown\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own child's session, nothing else
            self.proc.wait(timeout=30)
        finally:
            self._log.close()


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def cluster(tmp_path):
    c = ClusterProcess(workers=2, log=tmp_path / "cluster.log")
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """N_VIDEOS synthetic videos (32 frames: one clip each): enough work that a run can be interrupted mid-way."""
    from anon_core.synthetic import CorpusConfig, generate_corpus

    root = tmp_path_factory.mktemp("faults_corpus")
    generate_corpus(root, CorpusConfig(videos=N_VIDEOS, seed=21), workers=1)
    return root / "videos"


def job_cmd(videos: Path, out: Path, models: dict, address: str) -> list[str]:
    # small shards (encode batches of 4 clips, gathered into shards of about 4 rows), so markers appear all along
    return [
        sys.executable, "-m", "jobs.cli", "anonymize", str(videos), "--out", str(out), "--address", address,
        "--encoder", models["encoder"], "--pruner", models["pruner"], "--aam", models["aam"],
        "--batch-size", "4", "--rows-per-shard", "4", "--json",
    ]  # fmt: skip


def start_job(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, stdout=open(log.with_suffix(".json"), "w"), stderr=open(log.with_suffix(".err"), "w"),
        cwd=REPO, env=job_env(),
    )  # fmt: skip


def run_job(cmd: list[str], log: Path) -> tuple[int, dict | None]:
    proc = start_job(cmd, log)
    try:
        rc = proc.wait(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the job did not finish in {JOB_TIMEOUT_S} s; see {log.with_suffix('.err')}") from None
    return rc, summary_of(log)


def summary_of(log: Path) -> dict | None:
    return json_summary(log.with_suffix(".json").read_text())


def json_summary(text: str) -> dict | None:
    """The `--json` summary in the job's stdout. Ray prints raylet and task-failure messages to the driver's stdout
    too (a dead node's raylet log, for one), so the summary is the object that starts on a line of its own."""
    decoder = json.JSONDecoder()
    for line in re.finditer(r"^\{$", text, re.MULTILINE):
        try:
            obj, _ = decoder.raw_decode(text, line.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "run_id" in obj:
            return obj
    return None


def markers(out: Path) -> int:
    return len(list((out / "_commits").glob("*.json"))) if (out / "_commits").is_dir() else 0


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> bool:
    """True once predicate() holds; False if the job ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill_hard(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=30)


def expected_videos(videos: Path) -> pd.DataFrame:
    from pipelines.sources import list_input

    return list_input(str(videos)).videos[["video_id", "uri"]]


def stems(folder: Path) -> set[str]:
    return {p.name[len("part-") : -len(".parquet")] for p in folder.glob("part-*.parquet")}


def assert_exactly_once(out: Path, expected: pd.DataFrame) -> dict:
    """Every listed video: one ok marker, its rows once, all in the shard its marker names; no orphan shard."""
    commits = {p.stem: json.loads(p.read_text()) for p in (out / "_commits").glob("*.json")}
    want = set(expected["video_id"])
    assert set(commits) == want, f"missing {len(want - set(commits))}, unexpected {len(set(commits) - want)}"
    assert {c["status"] for c in commits.values()} == {"ok"}

    table = pq.read_table(out / "features")
    feats = table.to_pandas()
    dup = feats[feats.duplicated(["video_id", "clip_index"], keep=False)]
    assert dup.empty, f"{len(dup)} rows of {dup['video_id'].nunique()} videos more than once"
    assert set(feats["video_id"]) == want
    assert feats.groupby("video_id").size().to_dict() == {v: c["rows"] for v, c in commits.items()}
    assert dict(zip(feats["video_id"], feats["source_uri"], strict=True)) == dict(
        zip(expected["video_id"], expected["uri"], strict=True)
    )
    for stem in stems(out / "features"):  # each row sits in the shard its video's marker names
        ids = set(pq.read_table(out / "features" / f"part-{stem}.parquet").column("video_id").to_pylist())
        assert {commits[v]["shard"] for v in ids} == {stem}, f"shard {stem} holds rows its markers do not name"
    recorded = {p.stem for p in (out / "_shards").glob("*.json")}
    assert stems(out / "features") | stems(out / "errors") <= recorded, "an unrecorded (orphan) shard remains"
    assert not stems(out / "errors")

    # pandas reads the folder the same as pyarrow: same rows, same numbers
    by_pandas = pd.read_parquet(out / "features").sort_values(["video_id", "clip_index"], ignore_index=True)
    by_arrow = feats.sort_values(["video_id", "clip_index"], ignore_index=True)
    assert list(by_pandas.columns) == table.column_names
    for col in ("video_id", "clip_index", "source_uri", "run_id", "config_hash", "start_s", "end_s"):
        assert by_pandas[col].tolist() == by_arrow[col].tolist(), col
    for col in ("features", "kept_tubelet_ids", "pruner_feature"):
        assert np.array_equal(np.stack(by_pandas[col]), np.stack(by_arrow[col])), col
    assert np.isfinite(np.stack(by_arrow["features"])).all()
    return {"shards": len(stems(out / "features")), "runs": sorted(feats["run_id"].unique())}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_worker_node_dies_mid_run_then_rerun_leaves_every_video_exactly_once(cluster, corpus, tiny_models, tmp_path):
    assert "node:__internal_head__" in cluster.resources  # the gather stage is pinned there
    out = tmp_path / "out"
    cmd = job_cmd(corpus, out, tiny_models, cluster.address)
    t0 = time.monotonic()
    first = start_job(cmd, tmp_path / "run1")
    if not wait_for(lambda: markers(out) >= 8, first, JOB_TIMEOUT_S, "8 commit markers"):
        pytest.fail(f"run 1 ended (exit {first.returncode}) before 8 markers; see {tmp_path / 'run1.err'}")
    at_removal = markers(out)
    t_removal = time.monotonic() - t0
    lost_actors = cluster.remove_worker()
    try:
        rc1 = first.wait(timeout=JOB_TIMEOUT_S)
        outcome = "finished" if rc1 == 0 else f"failed (exit {rc1})"
    except subprocess.TimeoutExpired:
        rc1, outcome = kill_hard(first), f"hung for {JOB_TIMEOUT_S} s after the node died (killed)"
    s1 = summary_of(tmp_path / "run1")
    after_first = markers(out)
    t_first = time.monotonic() - t0

    cluster.add_worker()  # back to three nodes for the re-run
    rc2, s2 = run_job(cmd, tmp_path / "run2")
    assert rc2 == 0, (tmp_path / "run2.err").read_text()[-5000:]
    assert s2["videos_skipped_committed"] == after_first
    assert s2["videos_ok"] == N_VIDEOS - after_first and s2["videos_incomplete"] == 0
    result = assert_exactly_once(out, expected_videos(corpus))
    print(
        f"\nnode failure: removed a worker (actors {lost_actors}) at {t_removal:.0f} s with {at_removal}/{N_VIDEOS} "
        f"committed; run 1 "
        f"{outcome} at {t_first:.0f} s with {after_first} committed (summary: "
        f"{None if s1 is None else {k: s1[k] for k in ('videos_ok', 'videos_failed', 'videos_incomplete')}}); "
        f"re-run processed {s2['videos_ok']} in {s2['elapsed_s']} s, repaired {s2['repaired']['before']}; "
        f"{result['shards']} shards; total {time.monotonic() - t0:.0f} s"
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_driver_sigkilled_then_rerun_leaves_every_video_exactly_once(cluster, corpus, tiny_models, tmp_path):
    out = tmp_path / "out"
    cmd = job_cmd(corpus, out, tiny_models, cluster.address)
    t0 = time.monotonic()

    # 1. at start-up: the output is claimed, the driver is connecting to Ray / starting the pipeline
    proc = start_job(cmd, tmp_path / "run0")
    assert wait_for(lambda: (out / "_output.json").exists(), proc, JOB_TIMEOUT_S, "the output claim")
    assert kill_hard(proc) == -signal.SIGKILL
    at_startup_kill = markers(out)

    # 2. mid-run: some videos committed, many not
    proc = start_job(cmd, tmp_path / "run1")
    if not wait_for(lambda: markers(out) >= at_startup_kill + 8, proc, JOB_TIMEOUT_S, "8 more markers"):
        pytest.fail(f"run 1 ended (exit {proc.returncode}) before 8 markers; see {tmp_path / 'run1.err'}")
    assert kill_hard(proc) == -signal.SIGKILL
    at_kill = markers(out)
    t_kill = time.monotonic() - t0
    assert at_kill < N_VIDEOS, "the run finished before it could be killed: use more videos"

    rc, s = run_job(cmd, tmp_path / "run2")
    assert rc == 0, (tmp_path / "run2.err").read_text()[-5000:]
    assert s["videos_skipped_committed"] >= at_kill  # a write in flight at the kill may still have landed
    assert s["videos_skipped_committed"] + s["videos_ok"] == N_VIDEOS and s["videos_incomplete"] == 0
    result = assert_exactly_once(out, expected_videos(corpus))
    assert len(result["runs"]) == 2  # rows from the killed run 1 and from the re-run, none from run 0
    print(
        f"\ndriver kill: {at_startup_kill} committed at the start-up kill; killed run 1 at {t_kill:.0f} s with "
        f"{at_kill}/{N_VIDEOS} committed; re-run skipped {s['videos_skipped_committed']}, processed {s['videos_ok']}"
        f" in {s['elapsed_s']} s, repaired {s['repaired']['before']}; total {time.monotonic() - t0:.0f} s"
    )


def test_a_sink_task_run_twice_leaves_each_video_once(tmp_path):
    """Ray runs a task again when its worker or node dies after the task's writes but before its result was kept,
    or when its output block is lost with a node before the driver read it (lineage reconstruction). A sink run
    twice on one batch of whole videos must still leave each video once."""
    from pipelines.stages.rows import VideoRecord
    from pipelines.stages.sink import WriteShards
    from pipelines.store import OutputStore

    def video(vid: str, n: int) -> bytes:
        rng = np.random.default_rng(len(vid))
        clips = {"clip_index": np.arange(n), "start_s": np.arange(n) * 1.0, "end_s": np.arange(n) + 1.0,
                 "features": rng.standard_normal((n, 8)).astype(np.float32)}  # fmt: skip
        return VideoRecord(f"/videos/{vid}.mp4", clips=clips).pack()

    def batch() -> dict:
        return {
            "video_id": np.array(["a", "b"], dtype=object),
            "status": np.array(["ok", "ok"], dtype=object),
            "num_clips": np.array([2, 1]),
            "payload": np.array([video("a", 2), video("b", 1)], dtype=object),
        }

    sink = WriteShards(str(tmp_path), "run1", {"mode": "raw"})
    sink(batch())
    sink(batch())  # the re-executed task: same input, every step of the protocol done again
    OutputStore(str(tmp_path)).repair()  # what the end of the run, and the next run, do
    feats = pq.read_table(tmp_path / "features").to_pandas()
    assert feats.groupby("video_id").size().to_dict() == {"a": 2, "b": 1}
