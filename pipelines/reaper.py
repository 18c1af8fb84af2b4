"""A local Ray started by a job ends with that job, even when the job is killed (SIGKILL, the OOM killer).

Ray ties its head processes (GCS, raylet) and workers to the driver that started them, but the raylet's agents
(ray::DashboardAgent, ray::RuntimeEnvAgent) are re-parented to init and live on after a killed driver, one pair per
killed run. So when `connect` starts a local Ray it also starts a tiny reaper process holding the read end of a
pipe from the job: the pipe reaches EOF when the job ends, however it ends, and the reaper then stops whatever of
that Ray is still running. It knows those processes by pid and start time (read from /proc right after ray.init),
so a recycled pid is never touched; where there is no /proc (macOS) there is no reaper.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_REAPER = r"""
import json, os, signal, sys, time

procs = json.loads(sys.argv[1])  # [[pid, start time], ...]
sys.stdin.read()  # returns at EOF: the job has ended, normally or not
time.sleep(2)  # a job that ended normally has shut its Ray down by now; what is left was orphaned


def alive(pid, start):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19] == start
    except (OSError, IndexError):
        return False


for sig in (signal.SIGTERM, signal.SIGKILL):
    left = [(pid, start) for pid, start in procs if alive(pid, start)]
    for pid, _ in left:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    if not left:
        break
    time.sleep(3)
"""
_running: subprocess.Popen | None = None  # held for the job's lifetime: its stdin pipe is the job's heartbeat


def _stat(pid: str) -> tuple[int, str] | None:
    """(parent pid, start time in clock ticks) of a live process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ... starttime is 20th
        return int(rest[1]), rest[19]
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ray_descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below `root` that belongs to Ray (its command line names ray)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(entry)) is not None:
            children.setdefault(st[0], []).append((int(entry), st[1]))
    found, todo = [], [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            todo.append(pid)
            if "ray" in _cmdline(pid):
                found.append((pid, start))
    return found


def start_reaper() -> list[tuple[int, str]]:
    """After ray.init started a local Ray from this process: the reaper for it. Returns what it watches."""
    global _running
    if not os.path.isdir("/proc") or _running is not None:
        return []
    procs = ray_descendants(os.getpid())
    # its own session: a Ctrl-C to the job's process group must not stop the reaper before it has done its work
    _running = subprocess.Popen([sys.executable, "-c", _REAPER, json.dumps(procs)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return procs
