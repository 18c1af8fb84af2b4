"""The output lease: one run at a time writes (and repairs) an output folder, on local disk or an object store.

Overlapping runs of the same job (a schedule firing while the last run still works, an operator re-running by hand)
must never write the same video twice, and `OutputStore.repair()` must never run beside a run whose shard is half
written. So a run holds the output's lease from before its repair until its final record, and a second run waits.

    OUT/_lease/<generation>.json   {"owner": run_id, "host", "pid", "expires": unix time, "released": bool}

The highest generation is the lease. It is taken by *creating* the next generation's file, which only one process
can do (create-if-absent: O_EXCL-style link on local disk, `If-None-Match: *` on S3): no read-modify-write races.
The holder renews its own file every ttl/5 s from a heartbeat thread and marks it released on exit. If the holder
dies, its file expires `ttl` seconds after the last renewal and the next run takes generation + 1. A holder that
finds a higher generation than its own has lost the lease (it was paused longer than the ttl): `check()` raises,
and the sink calls it before every commit, so a run that lost its lease stops before writing anything more.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from .store import OutputError, OutputStore

LEASE = "_lease"


class LeaseTimeout(OutputError):
    """Another run held the lease for longer than this run would wait."""


class LeaseLost(RuntimeError):
    """This run's lease was taken over (it missed its renewals for longer than the ttl); it must stop writing."""


def _gen_name(gen: int) -> str:
    return f"{gen:012d}.json"


class OutputLease:
    def __init__(self, store: OutputStore, owner: str, ttl_s: float = 300.0, wait_s: float = 3600.0,
                 log=None, poll_s: float | None = None) -> None:  # fmt: skip
        self.store, self.owner, self.ttl_s, self.wait_s = store, owner, float(ttl_s), float(wait_s)
        self.poll_s = poll_s if poll_s is not None else min(10.0, max(0.5, self.ttl_s / 20))
        self.log = log
        self.generation: int | None = None
        self.waited_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None

    # -- reading ---------------------------------------------------------------------------------------------------
    def generations(self) -> list[int]:
        return sorted(int(n[: -len(".json")]) for n in self.store._ls_names(LEASE) if n[:-5].isdigit())

    def current(self) -> tuple[int, dict] | None:
        """(generation, record) of the lease as it stands, or None when no run ever took it."""
        for _ in range(5):  # the newest file may be deleted under us by a holder's clean-up: look again
            gens = self.generations()
            if not gens:
                return None
            try:
                return gens[-1], self.store.read_json(self.store.path(LEASE, _gen_name(gens[-1])))
            except FileNotFoundError:
                continue
        return None

    @staticmethod
    def is_free(record: dict, now: float | None = None) -> bool:
        return bool(record.get("released")) or float(record.get("expires", 0)) < (now or time.time())

    @staticmethod
    def holder_is_gone(record: dict) -> bool:
        """True when the holder certainly died: it ran on this machine, in this process namespace, and its process
        is gone (or its pid now belongs to a younger process). A killed local run's lease is then free at once
        instead of after the ttl. Anything less certain (another host or container, no /proc) says False: the ttl
        decides."""
        me = _process_identity(os.getpid())
        if not me or record.get("host") != me["host"] or record.get("pidns") != me["pidns"]:
            return False
        if "pid_start" not in record:
            return False
        alive = _process_identity(int(record.get("pid", -1)))
        return alive is None or alive["pid_start"] != record["pid_start"]

    # -- taking and giving back ------------------------------------------------------------------------------------
    def acquire(self) -> None:
        t0 = time.monotonic()
        said = False
        self._stop, self._lost = threading.Event(), None  # a fresh start: this instance may have held it before
        while True:
            cur = self.current()
            gone = cur is not None and not self.is_free(cur[1]) and self.holder_is_gone(cur[1])
            if gone and self.log:
                print(f"run {cur[1].get('owner')} (pid {cur[1].get('pid')} on this machine) died holding the lease "
                      f"of {self.store.uri}: taking it over", file=self.log)  # fmt: skip
            if cur is None or self.is_free(cur[1]) or gone:
                gen = 0 if cur is None else cur[0] + 1
                if self._create(gen):
                    self.generation = gen
                    if not self._still_mine():  # we saw an old listing and re-created a cleaned-up generation
                        self.store.fs.rm_file(self.store.path(LEASE, _gen_name(gen)))
                        self.generation = None
                        continue
                    self.waited_s = time.monotonic() - t0
                    self._clean_up(gen)
                    self._thread = threading.Thread(
                        target=self._heartbeat, args=(self._stop,), name="anonvid-lease", daemon=True
                    )
                    self._thread.start()
                    return
                continue  # another run created it first: look at its record
            gen, held = cur
            waited = time.monotonic() - t0
            if waited >= self.wait_s:
                raise LeaseTimeout(
                    f"output {self.store.uri} is in use by run {held.get('owner')} (host {held.get('host')}, pid "
                    f"{held.get('pid')}; its lease expires in {float(held.get('expires', 0)) - time.time():.0f} s "
                    f"unless renewed); waited {waited:.0f} s. Run again later, raise lease_wait_s (--lease-wait), "
                    f"or, if that run is certainly dead, wait for its lease to expire"
                )
            if not said and self.log:
                print(f"output {self.store.uri} is in use by run {held.get('owner')} on {held.get('host')}: waiting "
                      f"up to {self.wait_s:.0f} s for its lease", file=self.log)  # fmt: skip
                said = True
            time.sleep(self.poll_s)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.generation is not None and self._still_mine():
            self._write(self.generation, released=True)
        self.generation = None

    def check(self) -> None:
        """Raise LeaseLost unless this run still holds the lease (called before every commit)."""
        if self._lost:
            raise LeaseLost(self._lost)
        if self.generation is not None and not self._still_mine():
            self._lost = (f"run {self.owner} lost the lease of {self.store.uri} (generation {self.generation} was "
                          "taken over after it expired); it stops writing: run the job again to finish")  # fmt: skip
            raise LeaseLost(self._lost)

    def __enter__(self) -> OutputLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # -- internals -------------------------------------------------------------------------------------------------
    def _record(self, released: bool = False) -> dict:
        now = time.time()
        record = {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "renewed": now,
                  "expires": now + self.ttl_s, "ttl_s": self.ttl_s, "released": released}  # fmt: skip
        return {**record, **(_process_identity(os.getpid()) or {})}

    def _create(self, gen: int) -> bool:
        """Create generation `gen`'s file if nobody has: True when this process made it."""
        path = self.store.path(LEASE, _gen_name(gen))
        data = json.dumps(self._record()).encode()
        if self.store.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, and fails when the name exists: the whole record or nothing
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        try:
            self.store.fs.pipe_file(path, data, mode="create")  # S3: PUT with If-None-Match: *
            return True
        except FileExistsError:
            return False
        except (TypeError, NotImplementedError, ValueError) as e:
            raise OutputError(
                f"{self.store.uri}: this store cannot create a file only if it is absent ({type(e).__name__}: {e}), "
                "which the output lease needs; use local disk or S3 (or an S3-compatible store with conditional "
                "writes)"
            ) from None

    def _write(self, gen: int, released: bool = False) -> None:
        self.store.put_json(self.store.path(LEASE, _gen_name(gen)), self._record(released))

    def _still_mine(self) -> bool:
        gens = self.generations()
        return bool(gens) and gens[-1] == self.generation

    def _clean_up(self, gen: int) -> None:
        for old in self.generations():
            if old < gen - 1:  # the previous holder's record stays, for the curious
                try:
                    self.store.fs.rm_file(self.store.path(LEASE, _gen_name(old)))
                except FileNotFoundError:
                    pass

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl_s / 5):
            try:
                if not self._still_mine():
                    self._lost = f"run {self.owner} lost the lease of {self.store.uri}: it stops writing"
                    return
                self._write(self.generation)
            except Exception as e:  # a flaky store: try again at the next beat; the ttl leaves four more chances
                if self.log:
                    print(f"lease renewal failed ({type(e).__name__}: {e}); retrying", file=self.log)


def _process_identity(pid: int) -> dict | None:
    """host, pid namespace and start time (clock ticks since boot) of a live process; None if it does not exist or
    this is not Linux. Together with the pid they name one process, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
        pidns = os.readlink(f"/proc/{pid}/ns/pid")
    except (OSError, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces and parentheses
    if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent: dead all the same
        return None
    return {"host": socket.gethostname(), "pidns": pidns, "pid_start": int(fields[19])}  # field 22: starttime


def lease_check(output: str, generation: int, storage_options: dict | None = None) -> None:
    """The sink's fence, from any Ray worker: raise LeaseLost when a newer generation than `generation` exists."""
    store = OutputStore(output, storage_options)
    gens = OutputLease(store, owner="").generations()
    if gens and gens[-1] != generation:
        raise LeaseLost(
            f"the lease of {store.uri} moved to generation {gens[-1]} (this run holds {generation}): another run took "
            "over after this one missed its renewals; this run stops writing. Run the job again to finish"
        )
