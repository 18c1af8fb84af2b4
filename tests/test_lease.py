"""The output lease (pipelines.lease) on local disk and on S3 (a moto server): one holder at a time, under threads and
processes; a held lease blocks and times out with a message that names the holder; a dead holder's lease expires and
the next run takes generation + 1 while the old holder is fenced off; the heartbeat keeps a live lease; a stale view
never lets a run hold a cleaned-up generation; clean-up keeps the last two generations.

Timings are small (ttl 1 s, polls of 0.05 s) and every time assert is loose: the tests check behaviour, not speed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from pipelines.lease import LEASE, LeaseLost, LeaseTimeout, OutputLease, _gen_name, lease_check
from pipelines.store import OutputError, OutputStore

REPO = Path(__file__).resolve().parents[1]
BUCKET = "lease-bucket"
POLL = 0.05


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path) -> str:
    """A fresh output URI: a local folder, or a new prefix in a bucket on the session's moto server."""
    if request.param == "local":
        return str(tmp_path / "out")
    request.getfixturevalue("s3_endpoint")
    import fsspec

    fs = fsspec.filesystem("s3")
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


def lease(output: str, owner: str, ttl_s: float = 30.0, wait_s: float = 10.0, **kw) -> OutputLease:
    return OutputLease(OutputStore(output), owner, ttl_s=ttl_s, wait_s=wait_s, poll_s=POLL, **kw)


def record(output: str, gen: int) -> dict:
    store = OutputStore(output)
    return store.read_json(store.path(LEASE, _gen_name(gen)))


def die(held: OutputLease) -> None:
    """The holder stops renewing without releasing, as if its process had been killed."""
    held._stop.set()
    held._thread.join(timeout=10)
    assert not held._thread.is_alive()


def wait_until(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(POLL)
    return cond()


# -- taking and giving back ----------------------------------------------------------------------------------------
def test_acquire_writes_one_generation_and_release_frees_it(output):
    a = lease(output, "run-a")
    assert a.current() is None  # nobody ever took it
    a.acquire()
    try:
        assert a.generation == 0 and a.generations() == [0]
        rec = record(output, 0)
        assert rec["owner"] == "run-a" and rec["pid"] == os.getpid() and rec["host"]
        assert rec["released"] is False and rec["expires"] > time.time()
        assert not OutputLease.is_free(rec)
        a.check()
        lease_check(output, 0)
    finally:
        a.release()
    assert a.generation is None
    rec = record(output, 0)
    assert rec["released"] is True and OutputLease.is_free(rec)

    b = lease(output, "run-b", wait_s=0)  # a released lease is free at once: no waiting at all
    with b:
        assert b.generation == 1 and b.generations() == [0, 1]
        assert b.current()[1]["owner"] == "run-b"
        assert b.waited_s < 5
    assert record(output, 1)["released"] is True


def test_one_instance_can_take_the_lease_again(output):
    """After release, the same OutputLease can acquire again, and its heartbeat renews the new generation."""
    a = lease(output, "run-a", ttl_s=1.0)
    with a:
        pass
    with a:
        assert a.generation == 1
        assert a._thread.is_alive()
        first = record(output, 1)["expires"]
        assert wait_until(lambda: record(output, 1)["expires"] > first, timeout=5)  # renewed
        a.check()


# -- mutual exclusion ----------------------------------------------------------------------------------------------
def test_threads_hold_the_lease_one_at_a_time(output):
    n = 8
    guard = threading.Lock()
    holders, most, gens, errors = [0], [0], [], []

    def work(i: int) -> None:
        try:
            with lease(output, f"run-{i}", wait_s=120) as held:
                with guard:
                    holders[0] += 1
                    most[0] = max(most[0], holders[0])
                    gens.append(held.generation)
                time.sleep(0.02)
                held.check()
                with guard:
                    holders[0] -= 1
        except BaseException as e:  # noqa: BLE001 - reported below, with the thread's name
            errors.append(f"thread {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert most[0] == 1
    assert gens == list(range(n))  # in the order they were taken: one new generation per acquisition
    assert OutputLease(OutputStore(output), "").generations() == [n - 2, n - 1]


HOLDER = """
import json, os, sys, time
from pipelines.lease import OutputLease
from pipelines.store import OutputStore

out, log, go = sys.argv[1], sys.argv[2], sys.argv[3]
open(f"{go}.ready-{os.getpid()}", "w").close()
while not os.path.exists(go):  # every process starts contending at the same moment
    time.sleep(0.01)
with OutputLease(OutputStore(out), f"pid-{os.getpid()}", ttl_s=30, wait_s=120, poll_s=0.02) as lease:
    t_enter = time.time()
    time.sleep(0.1)
    t_exit = time.time()
    with open(log, "a") as f:
        f.write(json.dumps([os.getpid(), t_enter, t_exit, lease.generation]) + "\\n")
"""


def test_processes_hold_the_lease_one_at_a_time(tmp_path):
    out, log, go, n = tmp_path / "out", tmp_path / "held.jsonl", tmp_path / "go", 4
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(log), str(go)], cwd=REPO) for _ in range(n)]
    try:
        assert wait_until(lambda: len(list(tmp_path.glob("go.ready-*"))) == n, timeout=60)
        go.touch()
        assert [p.wait(timeout=120) for p in procs] == [0] * n
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    held = sorted(json.loads(line) for line in log.read_text().splitlines())
    assert sorted(h[0] for h in held) == sorted(p.pid for p in procs)
    held.sort(key=lambda h: h[1])
    for (_, _, exit_, gen), (_, enter, _, next_gen) in zip(held, held[1:], strict=False):
        assert exit_ < enter, f"two processes held the lease at once: {held}"
        assert next_gen == gen + 1
    assert [h[3] for h in held] == list(range(n))


# -- waiting -------------------------------------------------------------------------------------------------------
def test_a_held_lease_blocks_and_the_timeout_names_the_holder(output):
    with lease(output, "run-a") as a:
        said = io.StringIO()
        b = lease(output, "run-b", wait_s=0.5, log=said)
        t0 = time.monotonic()
        with pytest.raises(LeaseTimeout) as e:
            b.acquire()
        waited = time.monotonic() - t0
        assert isinstance(e.value, OutputError)
        msg = str(e.value)
        assert "run-a" in msg and output in msg
        assert "Run again later" in msg and "--lease-wait" in msg and "expire" in msg
        assert "run-a" in said.getvalue() and "waiting" in said.getvalue()
        assert 0.5 <= waited < 10  # it waited about wait_s (loosely: a busy machine is slow)
        assert b.generation is None and b._thread is None
        assert a.generations() == [0]
        a.check()


def test_heartbeat_keeps_a_live_lease(output):
    a = lease(output, "run-a", ttl_s=1.0)
    with a:
        first = record(output, 0)["expires"]
        t_end = time.monotonic() + 3.0  # three times the ttl: only renewals keep it
        timeouts = 0
        while time.monotonic() < t_end:
            with pytest.raises(LeaseTimeout):
                lease(output, "run-b", wait_s=0.5).acquire()
            timeouts += 1
        assert timeouts >= 2
        a.check()
        assert a.generations() == [0]
        assert record(output, 0)["expires"] > first + 1.0  # renewed more than a ttl later than it was taken
    with lease(output, "run-b", wait_s=0) as b:  # released: the waiter gets it at once
        assert b.generation == 1


# -- expiry and fencing --------------------------------------------------------------------------------------------
def test_a_dead_holder_expires_and_is_fenced_off(output):
    a = lease(output, "run-a", ttl_s=1.0)
    a.acquire()
    die(a)
    expires = record(output, 0)["expires"]  # its last renewal: nothing renews it now

    b = lease(output, "run-b", wait_s=20)
    b.acquire()
    try:
        assert time.time() >= expires  # it waited for the expiry, not less
        assert b.generation == 1 and b.generations() == [0, 1]
        with pytest.raises(LeaseLost, match="run-a lost the lease"):
            a.check()
        with pytest.raises(LeaseLost):
            a.check()  # and stays lost
        with pytest.raises(LeaseLost, match="generation 1"):
            lease_check(output, 0)
        lease_check(output, 1)
        b.check()

        a.release()  # the old holder giving up must not touch the new holder's lease
        assert record(output, 0)["released"] is False
        assert record(output, 1)["owner"] == "run-b" and record(output, 1)["released"] is False
        b.check()
    finally:
        b.release()


def test_heartbeat_notices_a_takeover(output):
    """A holder whose lease was taken over (it was paused past its ttl) learns it at its next beat."""
    a = lease(output, "run-a", ttl_s=1.0)
    with a:
        assert lease(output, "run-b")._create(1)  # the takeover, as another run's acquire would do it
        assert wait_until(lambda: not a._thread.is_alive(), timeout=10)
        assert a._lost
        with pytest.raises(LeaseLost):
            a.check()
        with pytest.raises(LeaseLost):
            lease_check(output, 0)
    assert record(output, 1)["owner"] == "run-b" and record(output, 1)["released"] is False


KILLED = """
import sys, time
from pipelines.lease import OutputLease
from pipelines.store import OutputStore

lease = OutputLease(OutputStore(sys.argv[1]), "run-killed", ttl_s=1.0, wait_s=60, poll_s=0.05)
lease.acquire()
print(lease.generation, flush=True)
time.sleep(600)
"""


def test_a_killed_process_loses_its_lease(tmp_path):
    """SIGKILL: no release, no clean-up, only the expiry frees the lease (local only: on S3 `die` above stands in)."""
    output = str(tmp_path / "out")
    p = subprocess.Popen([sys.executable, "-c", KILLED, output], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        gen = int(p.stdout.readline())
        b = lease(output, "run-b", wait_s=0.3)
        with pytest.raises(LeaseTimeout, match="run-killed"):
            b.acquire()  # alive and renewing: it holds
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        p.stdout.close()
    assert record(output, gen)["released"] is False
    with lease(output, "run-b", wait_s=20) as b:
        assert b.generation == gen + 1
        with pytest.raises(LeaseLost):
            lease_check(output, gen)
        lease_check(output, gen + 1)


# -- the ABA guard and clean-up ------------------------------------------------------------------------------------
def take_and_release(output: str, times: int) -> None:
    for i in range(times):
        with lease(output, f"run-{i}", wait_s=0):
            pass


def stale_once(monkeypatch, x: OutputLease, view) -> list[int]:
    """`x.current()` returns `view` once (a listing read before other runs moved on); records every create."""
    real_current, real_create, created = x.current, x._create, []
    views = [view]
    monkeypatch.setattr(x, "current", lambda: views.pop() if views else real_current())

    def create(gen: int) -> bool:
        made = real_create(gen)
        if made:
            created.append(gen)
        return made

    monkeypatch.setattr(x, "_create", create)
    return created


def test_a_stale_view_never_holds_a_cleaned_up_generation(output, monkeypatch):
    take_and_release(output, 4)  # generations 0..3 taken; 0 and 1 cleaned up
    x = lease(output, "run-x", wait_s=0)
    assert x.generations() == [2, 3]
    created = stale_once(monkeypatch, x, (0, {"owner": "run-0", "released": True}))
    x.acquire()
    try:
        assert created == [1, 4]  # it re-created cleaned-up generation 1, saw it was not the top, and gave it up
        assert x.generation == 4 and x.generations() == [3, 4]
        x.check()
    finally:
        x.release()


def test_a_stale_view_does_not_steal_a_held_lease(output, monkeypatch):
    take_and_release(output, 3)  # generations 0..2; 0 cleaned up
    with lease(output, "run-h") as h:
        assert h.generation == 3
        x = lease(output, "run-x", wait_s=0.2)
        created = stale_once(monkeypatch, x, (0, {"owner": "run-0", "released": True}))
        with pytest.raises(LeaseTimeout, match="run-h"):
            x.acquire()
        assert created == [1]
        assert x.generation is None and x._thread is None
        assert h.generations() == [2, 3]  # the re-created generation 1 is gone again
        h.check()
        lease_check(output, 3)


def test_clean_up_keeps_the_last_two_generations(output):
    store = OutputStore(output)
    for i in range(5):
        with lease(output, f"run-{i}", wait_s=0) as held:
            assert held.generations() == ([i - 1, i] if i else [0])
    assert OutputLease(store, "").generations() == [3, 4]
    assert sorted(store._ls_names(LEASE)) == [_gen_name(3), _gen_name(4)]  # no temporary files left behind


def test_a_dead_local_holder_frees_the_lease_at_once(tmp_path):
    """A run killed on this machine (its pid gone, or a zombie) leaves its lease free without waiting for the ttl;
    a live holder, or one on another host, still blocks until the ttl."""
    script = (
        "import sys, time\n"
        "from pipelines.store import OutputStore\n"
        "from pipelines.lease import OutputLease\n"
        "OutputLease(OutputStore(sys.argv[1]), 'run-doomed', ttl_s=600, wait_s=0).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LeaseTimeout, match="run-doomed"):  # alive: blocks, ttl 600 s or not
            OutputLease(OutputStore(str(out)), "run-next", ttl_s=5, wait_s=0.3, poll_s=0.05).acquire()
        proc.kill()  # not reaped yet: a zombie is dead too
        log = io.StringIO()
        lease = OutputLease(OutputStore(str(out)), "run-next", ttl_s=5, wait_s=5, poll_s=0.05, log=log)
        lease.acquire()
        assert lease.generation == 1 and "died holding the lease" in log.getvalue()
        lease.release()
    finally:
        proc.kill()
        proc.wait()
    # the same record from another host is not presumed dead
    record = json.loads((out / "_lease" / f"{0:012d}.json").read_text())
    assert OutputLease.holder_is_gone(record)
    assert not OutputLease.holder_is_gone({**record, "host": "elsewhere"})
