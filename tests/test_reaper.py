"""A local Ray started by a job ends with the job, even when the job is SIGKILLed (pipelines/reaper.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.reaper import _stat

JOB = """
import json, os, time
from pipelines.anonymize import connect
from pipelines.reaper import ray_descendants
connect()
print(json.dumps(ray_descendants(os.getpid())), flush=True)
time.sleep(600)
"""


def _alive(procs) -> list[int]:
    return [pid for pid, start in procs if (st := _stat(str(pid))) and st[1] == start]


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the reaper reads /proc")
def test_every_ray_process_of_a_killed_job_ends():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    job = subprocess.Popen([sys.executable, "-c", JOB], stdout=subprocess.PIPE, text=True, env=env,
                           cwd=Path(__file__).parents[1])  # fmt: skip
    procs = json.loads(job.stdout.readline())
    names = " ".join(open(f"/proc/{pid}/cmdline").read() for pid in _alive(procs))
    assert "raylet" in names and "DashboardAgent" in names  # the agents are what used to outlive the job
    job.send_signal(signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + 60
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _alive(procs), [open(f"/proc/{p}/cmdline").read() for p in _alive(procs)]
