"""`anonvid submit`: a job goes to a running Ray cluster through the Ray Jobs API, once per (job, config, run key).

The cluster is a real head started here with `ray start --head --block` (dashboard on 127.0.0.1), as a child
process in a session of its own with its own short --temp-dir: its address file lands there rather than in
/tmp/ray/ray_current_cluster, so no plain `ray.init()` on the machine (this session's shared `ray_session`, another
test session) joins it. It is ended by a signal to `ray start` (then, if need be, SIGKILL to its process group), never
with `ray stop`, which would end every Ray instance on the machine. The submit command itself only talks HTTP to the
dashboard; it never calls ray.init.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import ray.job_submission
import yaml
from ray.exceptions import AuthenticationError

# Imported now, at collection, and not first inside a test: `import ray` gives Ray's log handler the sys.stderr of
# that moment, and a test's capsys stream is closed after the test (see tests/pipeline_helpers.py)
from jobs.cli import main

pytestmark = pytest.mark.slow  # a Ray head (5-10 s to start) and an anonymize job (20-40 s) on 2 CPUs

N_VIDEOS = 12  # small_corpus
JOB_TIMEOUT_S = 300
VENV_BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def processes_of(head_pid: int, temp_dir: str) -> dict[int, str]:
    """pid -> command line of every process of the head: in its session, or naming or working in its temp dir (a job's
    driver runs in a working dir under it)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session ...
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                cwd = ""
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if fields[0] == b"Z":  # dead, only not reaped yet: holds nothing
            continue
        if int(fields[3]) == head_pid or temp_dir in cmdline or cwd.startswith(temp_dir):
            found[int(entry)] = cmdline
    return found


def wait_for(predicate, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class RayHead:
    """`ray start --head --block` on 127.0.0.1 with the dashboard, in its own session and temp dir."""

    def __init__(self, log: Path) -> None:
        # Unix socket paths live under the temp dir and must stay under ~107 bytes: a short dir in /tmp, not tmp_path
        self.temp_dir = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")
        self.dashboard_port = free_port()
        self.url = f"http://127.0.0.1:{self.dashboard_port}"
        self.log_path = log
        cmd = [
            os.path.join(VENV_BIN, "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
            "--port", "0", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
            "--include-dashboard", "true", "--dashboard-agent-listen-port", str(free_port()),
            "--ray-client-server-port", str(free_port()), "--num-cpus", "2",
            "--object-store-memory", str(300 << 20), "--temp-dir", self.temp_dir, "--disable-usage-stats",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("RAY_AUTH_")}
        # Ray 2.60's `ray start` turns token authentication on when a token file exists (a local ray.init() writes
        # ~/.ray/auth_token): off here, so that the submit client needs no token, whatever ran before in this process
        env["RAY_AUTH_MODE"] = "disabled"
        env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"  # no 30 s drain on SIGTERM (it waits for idle workers)
        env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")  # the job's entrypoint runs `anonvid` from there
        env["PYTHONUNBUFFERED"] = "1"
        self._log = open(log, "w")  # closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float) -> None:
        def answers() -> bool:
            assert self.proc.poll() is None, f"ray start exited with {self.proc.returncode}:\n{self.log_tail()}"
            try:
                with urllib.request.urlopen(f"{self.url}/api/version", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        if not wait_for(answers, timeout, step=1.0):
            raise AssertionError(f"the dashboard at {self.url} did not answer in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> dict[int, str]:
        """End the head; -> the processes of it still there afterwards (then killed by pid)."""
        try:
            # SIGTERM to `ray start` alone: it ends its children in order, the GCS last. A signal to the whole group
            # would take the GCS down first and leave the raylet and agents to time out talking to it.
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            if not wait_for(lambda: not processes_of(self.proc.pid, self.temp_dir), 15):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # our own child's session: nothing else
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=30)
                wait_for(lambda: not processes_of(self.proc.pid, self.temp_dir), 15)
            left = processes_of(self.proc.pid, self.temp_dir)
            for pid in left:  # the last resort, one by one: only processes of this head
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return left
        finally:
            self._log.close()
            shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    head = RayHead(tmp_path_factory.mktemp("rayhead") / "ray_start.log")
    try:
        head.wait_ready(120)
        yield head
    finally:
        left = head.stop()
    assert not left, f"processes of the head {head.temp_dir} left after it was stopped (now killed): {left}"


def write_config(path: Path, **fields) -> str:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def job_config(tmp_path_factory, tiny_models, small_corpus) -> dict:
    """An anonymize config with absolute paths only, as a submitted job needs (its output folder is unique)."""
    root = tmp_path_factory.mktemp("submit")
    return {
        "manifest": str(small_corpus / "labels.parquet"),
        "output": str(root / "out"),
        "mode": "prune+aam",
        "encoder": tiny_models["encoder"],
        "pruner": tiny_models["pruner"],
        "aam": tiny_models["aam"],
        "max_clips": 1,
        "commit_interval_s": 2.0,
        "model": {"batch_size": 16, "max_actors": 1, "cpus_per_actor": 0.5},
    }


def submit(*args: str) -> int:
    return main(["submit", *args])


def submitted_id(stdout: str) -> str:
    m = re.search(r"^submitted (anonvid-\S+):", stdout, re.M)
    assert m, stdout
    return m.group(1)


def jobs_with_id(url: str, sid: str) -> list:
    return [j for j in ray.job_submission.JobSubmissionClient(url).list_jobs() if j.submission_id == sid]


# ---------------------------------------------------------------------------------------------------------------
# against the cluster


@pytest.mark.timeout(JOB_TIMEOUT_S + 180)
def test_submit_runs_the_job_to_completion_once(ray_head, job_config, tmp_path, capsys):
    from jobs.commands.submit import submission_id
    from jobs.config import dump_config
    from jobs.jobconfigs import load_job_config
    from pipelines.store import OutputStore

    cfg = write_config(tmp_path / "anonymize.yaml", **job_config)
    argv = ["anonymize", "--address", ray_head.url, "--config", cfg, "--run-key", "r1", "--wait",
            "--timeout", str(JOB_TIMEOUT_S)]  # fmt: skip
    rc = submit(*argv)
    out, err = capsys.readouterr()
    assert rc == 0, f"rc {rc}\n{out}\n{err}\nhead log:\n{ray_head.log_tail()}"
    sid = submitted_id(out)
    assert sid == submission_id("anonymize", dump_config(load_job_config("anonymize", cfg)), "r1")
    assert f"{sid}: SUCCEEDED" in out
    output = Path(job_config["output"])
    assert len(OutputStore(str(output)).committed()) == N_VIDEOS
    assert len(list((output / "_commits").glob("*.json"))) == N_VIDEOS
    record = json.loads((output / "_runs" / f"{sid}.json").read_text())  # named after the submission
    assert record["status"] == "ok", record
    assert record["videos_ok"] == N_VIDEOS, record

    # the same job, config and run key again: the first submission is found, nothing new runs
    rc = submit(*argv[:-3])  # without --wait
    out, err = capsys.readouterr()
    assert rc == 0, f"{out}\n{err}"
    assert f"{sid} was already submitted (SUCCEEDED): not submitting it again" in out
    assert not re.search(r"^submitted ", out, re.M), out
    jobs = jobs_with_id(ray_head.url, sid)
    assert len(jobs) == 1, jobs
    assert str(jobs[0].status) == "SUCCEEDED"
    assert [p.name for p in (output / "_runs").glob("*.json")] == [f"{sid}.json"]

    # and with --wait it reports that submission's end at once
    t0 = time.monotonic()
    rc = submit(*argv)
    out, err = capsys.readouterr()
    assert rc == 0, f"{out}\n{err}"
    assert "already submitted (SUCCEEDED)" in out and f"{sid}: SUCCEEDED" in out
    assert time.monotonic() - t0 < 30
    assert len(jobs_with_id(ray_head.url, sid)) == 1
    assert len(list((output / "_runs").glob("*.json"))) == 1

    # a different run key is a different submission; --dry-run says which without contacting the cluster
    assert submit("anonymize", "--address", closed_url(), "--config", cfg, "--run-key", "r1", "--dry-run") == 0
    same = capsys.readouterr().out
    assert f"submission id: {sid}\n" in same
    assert submit("anonymize", "--address", closed_url(), "--config", cfg, "--run-key", "r2", "--dry-run") == 0
    other = re.search(r"^submission id: (\S+)$", capsys.readouterr().out, re.M).group(1)
    assert other.startswith("anonvid-anonymize-") and other != sid


@pytest.mark.timeout(JOB_TIMEOUT_S + 120)
def test_resubmit_replaces_a_failed_submission(ray_head, job_config, tmp_path, capsys):
    """A job that fails on the cluster (its encoder is not there: preflight exits 2) is FAILED; --resubmit runs it
    again under the same id, while a plain repeat only reports the failure."""
    JobSubmissionClient = ray.job_submission.JobSubmissionClient
    broken = {**job_config, "output": str(tmp_path / "out"), "encoder": str(tmp_path / "no-such-encoder")}
    cfg = write_config(tmp_path / "broken.yaml", **broken)
    argv = ["anonymize", "--address", ray_head.url, "--config", cfg, "--run-key", "r1", "--wait",
            "--timeout", str(JOB_TIMEOUT_S)]  # fmt: skip
    assert submit(*argv) == 1
    out = capsys.readouterr().out
    sid = submitted_id(out)
    assert f"{sid}: FAILED" in out and "no-such-encoder" in out  # the job's log tail names the missing model
    first = JobSubmissionClient(ray_head.url).get_job_info(sid)

    assert submit(*argv) == 1  # a plain repeat: the same failed submission, not a new run
    out = capsys.readouterr().out
    assert f"{sid} was already submitted (FAILED)" in out
    assert JobSubmissionClient(ray_head.url).get_job_info(sid).start_time == first.start_time

    assert submit(*argv, "--resubmit") == 1
    out = capsys.readouterr().out
    assert f"{sid} FAILED: --resubmit replaces it" in out and f"submitted {sid}:" in out
    jobs = jobs_with_id(ray_head.url, sid)
    assert len(jobs) == 1, jobs
    assert jobs[0].start_time > first.end_time  # it ran again
    assert str(jobs[0].status) == "FAILED"


# ---------------------------------------------------------------------------------------------------------------
# errors: exit 2 before anything is submitted, the message naming the fix


@pytest.mark.timeout(120)
def test_relative_paths_are_refused(job_config, tmp_path, capsys):
    cfg = write_config(tmp_path / "rel.yaml", **{**job_config, "output": "out/features"})
    assert submit("anonymize", "--address", closed_url(), "--config", cfg) == 2
    err = capsys.readouterr().err
    assert "output: 'out/features' is a relative local path" in err and "absolute" in err


@pytest.mark.timeout(120)
def test_unreachable_address_names_the_flag(job_config, tmp_path, capsys):
    cfg = write_config(tmp_path / "ok.yaml", **job_config)
    url = closed_url()
    assert submit("anonymize", "--address", url, "--config", cfg) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the Ray dashboard at {url}" in err and "--address" in err


@pytest.mark.timeout(120)
def test_a_cluster_wanting_a_token_names_the_settings(job_config, tmp_path, capsys, monkeypatch):
    def refusing(address):  # what JobSubmissionClient raises on the dashboard's 401 (no token) or 403 (wrong token)
        raise AuthenticationError("Authentication required: Unauthorized: Missing authentication token")

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", refusing)
    cfg = write_config(tmp_path / "ok.yaml", **job_config)
    assert submit("anonymize", "--address", "http://127.0.0.1:8265", "--config", cfg) == 2
    err = capsys.readouterr().err
    assert "Missing authentication token" in err and "RAY_AUTH_MODE=token" in err and "RAY_AUTH_TOKEN" in err


@pytest.mark.timeout(120)
def test_unknown_job_is_refused(job_config, tmp_path, capsys):
    cfg = write_config(tmp_path / "ok.yaml", **job_config)
    assert submit("anonymise", "--address", closed_url(), "--config", cfg) == 2
    err = capsys.readouterr().err
    assert "unknown job 'anonymise'" in err and "anonymize" in err.split("one of", 1)[1]


@pytest.mark.timeout(120)
def test_config_errors_are_listed(job_config, tmp_path, capsys):
    cfg = write_config(tmp_path / "bad.yaml", **{**job_config, "colour": "blue"})
    assert submit("anonymize", "--address", closed_url(), "--config", cfg, "clips_per_task=many") == 2
    err = capsys.readouterr().err  # every problem at once, each on a line of its own
    assert "config errors:" in err
    assert "  - " in err and "colour: unknown key" in err and "clips_per_task: expected int" in err


@pytest.mark.timeout(120)
def test_dry_run_resolves_environment_references(job_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANONVID_TEST_OUT", str(tmp_path / "from-env"))
    cfg = write_config(tmp_path / "env.yaml", **{**job_config, "output": "${ANONVID_TEST_OUT}"})
    assert submit("anonymize", "--address", closed_url(), "--config", cfg, "--run-key", "k", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "entrypoint: anonvid anonymize --config anonvid-job.yaml" in out
    shipped = yaml.safe_load(out.split("--- anonvid-job.yaml\n", 1)[1])
    assert shipped["output"] == str(tmp_path / "from-env")
    assert shipped["run_id"] == re.search(r"^submission id: (\S+)$", out, re.M).group(1)
