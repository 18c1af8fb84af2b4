"""Run a decode in a child process, so a decoder that segfaults costs one video instead of the whole worker.

decord is unmaintained and public trackers report segfaults on some corrupt streams; a segfault cannot be caught as
a Python exception, only survived from another process.

Each child writes its temporary files (open_source spools remote videos to local disk: raw, un-anonymized bytes) into
a folder its parent made for it, and the parent removes that folder once the child has ended. A child killed on a
timeout or by a crash cannot clean up after itself; its parent always can.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import shutil
import signal
import socket
import tempfile
import weakref
from collections.abc import Callable
from typing import Any

from .errors import DecodeFailure, VideoDecodeError


def _send(conn, message: Any) -> None:
    """Pickle `message` with its arrays' memory out of band: a header, then each buffer as it lies in memory. A
    segment's clips are megabytes; pickled whole they were copied into one bytes object here and out of another in
    the parent, which doubled the decode's cost in the pipeline's clip-model actors (7 ms against 3.5 ms a segment of
    five 112-pixel clips, measured on 2 cores)."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    conn.send_bytes(pickle.dumps((head, [v.nbytes for v in views]), protocol=5))
    for v in views:
        conn.send_bytes(v)


def _recv(conn) -> Any:
    """The other end of _send: each buffer read straight into memory the result then owns (writable arrays)."""
    head, sizes = pickle.loads(conn.recv_bytes())
    buffers = [bytearray(n) for n in sizes]
    for b in buffers:
        if b:
            conn.recv_bytes_into(b)
        else:
            conn.recv_bytes()
    return pickle.loads(head, buffers=buffers)


def _reply(conn, fn, args, kwargs) -> None:
    try:
        _send(conn, ("ok", fn(*args, **kwargs)))
    except BaseException as e:  # every error goes back to the parent, typed
        try:
            _send(conn, ("err", e))
        except Exception:  # unpicklable exception
            _send(conn, ("err", RuntimeError(f"{type(e).__name__}: {e}")))


def _tempdir_prefix() -> str:
    # The host too: containers sharing a temp volume have their own process ids
    return f"anonvid-decoder-{socket.gethostname()}-"


def _child_tempdir() -> str:
    """A new folder for one child's temporary files, in the system temp dir, named after this (the parent) process;
    the parent removes it. First the folders of parents that died before they could remove theirs go (Ray kills its
    worker processes at shutdown, and an OOM kill spares no one): a copy there outlived every process that knew it."""
    prefix = _tempdir_prefix()
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        pid = name[len(prefix) :].split("-", 1)[0] if name.startswith(prefix) else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


def _use_tempdir(tmpdir: str) -> None:
    # In the child, first thing: Python's tempfile (and native code reading TMPDIR) write into the parent's folder.
    tempfile.tempdir = tmpdir
    os.environ["TMPDIR"] = tmpdir


def _end(proc, tmpdir: str) -> None:
    """Wait for the child (kill it if it does not end), then remove its temp folder: nothing it copied survives."""
    proc.join(timeout=5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    shutil.rmtree(tmpdir, ignore_errors=True)


def _child(conn, tmpdir, fn, args, kwargs) -> None:
    _use_tempdir(tmpdir)
    try:
        _reply(conn, fn, args, kwargs)
    finally:
        conn.close()


def _serve(conn, tmpdir) -> None:
    """A long-lived child: answer (fn, args, kwargs) requests until the parent closes the pipe."""
    _use_tempdir(tmpdir)
    try:
        while True:
            try:
                fn, args, kwargs = conn.recv()
            except (EOFError, OSError):  # the parent is gone or closed us: exit quietly
                return
            _reply(conn, fn, args, kwargs)
    finally:
        conn.close()


def _death_error(proc, uri: str) -> VideoDecodeError:
    proc.join(timeout=5)
    code = proc.exitcode
    name = signal.Signals(-code).name if code is not None and code < 0 else f"exit code {code}"
    return VideoDecodeError(DecodeFailure.DECODER_CRASH, uri, f"decoder process died: {name}")


def _spawn(target: Callable[..., None], args: tuple, duplex: bool):
    """(process, parent end of its pipe, its temp folder): a started "spawn" child running
    target(child end, temp folder, *args). A child that fails to start leaves no folder and no open pipe."""
    ctx = mp.get_context("spawn")
    tmpdir = _child_tempdir()
    parent, child = ctx.Pipe(duplex=duplex)
    proc = ctx.Process(target=target, args=(child, tmpdir, *args), daemon=True)
    try:
        proc.start()
    except BaseException:
        parent.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    finally:
        child.close()
    return proc, parent, tmpdir


def run_isolated(fn: Callable[..., Any], *args: Any, uri: str = "", timeout_s: float = 600.0, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) in a fresh process ("spawn": safe next to threads, Ray and torch). fn must be importable.

    A crash (death by signal) or a hang past `timeout_s` becomes VideoDecodeError; fn's own exceptions are re-raised.
    """
    proc, parent, tmpdir = _spawn(_child, (fn, args, kwargs), duplex=False)
    try:
        if not parent.poll(timeout_s):
            if proc.is_alive():
                proc.kill()
                proc.join()
                raise VideoDecodeError(DecodeFailure.TIMEOUT, uri, f"no result after {timeout_s:.0f} s")
        try:
            status, value = _recv(parent)
        except EOFError:
            raise _death_error(proc, uri) from None
    finally:
        parent.close()
        _end(proc, tmpdir)
    if status == "err":
        raise value
    return value


def read_clips_isolated(uri: str, spec=None, backend: str | None = None, timeout_s: float = 600.0, **kwargs):
    """read_clips in a child process: same result, but a decoder crash raises VideoDecodeError(DECODER_CRASH).
    backend None: the reader's default."""
    from .reader import DEFAULT_BACKEND, read_clips

    return run_isolated(read_clips, uri, spec, backend or DEFAULT_BACKEND, uri=uri, timeout_s=timeout_s, **kwargs)


class DecoderProcess:
    """run_isolated without a process start per call: one child serves calls until it dies or hangs.

    A pipeline worker decodes thousands of short videos; spawning a Python process for each would cost more than the
    decoding. A crash or a timeout fails only the call in flight; the next call starts a fresh child.
    """

    def __init__(self, timeout_s: float = 600.0) -> None:
        self.timeout_s = timeout_s
        self._proc = None
        self._conn = None
        self._tmpdir = None

    def start(self) -> None:
        """Start the child now (it starts on the first call otherwise): its imports then overlap the caller's work."""
        if self._proc is None or not self._proc.is_alive():
            self.close()
            self._start()

    def _start(self) -> None:
        proc, conn, tmpdir = _spawn(_serve, (), duplex=True)
        self._proc, self._conn = proc, conn  # only a started child: close() may join it
        # close() removes the folder; this covers a worker that exits without calling it (Ray reuses its processes)
        self._tmpdir = weakref.finalize(self, shutil.rmtree, tmpdir, ignore_errors=True)

    def call(
        self, fn: Callable[..., Any], *args: Any, uri: str = "", timeout_s: float | None = None, **kwargs: Any
    ) -> Any:
        """fn(*args, **kwargs) in the child; timeout_s (default: the instance's) bounds this call only."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        self.start()
        try:
            self._conn.send((fn, args, kwargs))
            if not self._conn.poll(timeout_s):
                self.close()
                raise VideoDecodeError(DecodeFailure.TIMEOUT, uri, f"no result after {timeout_s:.0f} s")
            status, value = _recv(self._conn)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            proc = self._proc
            self.close()
            raise _death_error(proc, uri) from None
        if status == "err":
            raise value
        return value

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            self._proc.join(timeout=1)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        if self._tmpdir is not None:
            self._tmpdir()  # the child has ended: remove its temp folder, whatever it left there
        self._proc = self._conn = self._tmpdir = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
