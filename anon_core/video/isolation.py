"""Run a decode in a child process, so a decoder that segfaults costs one video instead of the whole worker.

decord is unmaintained and public trackers report segfaults on some corrupt streams; a segfault cannot be caught as
a Python exception, only survived from another process.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable
from typing import Any

from .errors import DecodeFailure, VideoDecodeError


def _reply(conn, fn, args, kwargs) -> None:
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except BaseException as e:  # every error goes back to the parent, typed
        try:
            conn.send(("err", e))
        except Exception:  # unpicklable exception
            conn.send(("err", RuntimeError(f"{type(e).__name__}: {e}")))


def _child(conn, fn, args, kwargs) -> None:
    try:
        _reply(conn, fn, args, kwargs)
    finally:
        conn.close()


def _serve(conn) -> None:
    """A long-lived child: answer (fn, args, kwargs) requests until the parent closes the pipe."""
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


def run_isolated(fn: Callable[..., Any], *args: Any, uri: str = "", timeout_s: float = 600.0, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) in a fresh process ("spawn": safe next to threads, Ray and torch). fn must be importable.

    A crash (death by signal) or a hang past `timeout_s` becomes VideoDecodeError; fn's own exceptions are re-raised.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, kwargs), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            if proc.is_alive():
                proc.kill()
                proc.join()
                raise VideoDecodeError(DecodeFailure.TIMEOUT, uri, f"no result after {timeout_s:.0f} s")
        try:
            status, value = parent.recv()
        except EOFError:
            raise _death_error(proc, uri) from None
    finally:
        parent.close()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
    if status == "err":
        raise value
    return value


def read_clips_isolated(uri: str, spec=None, backend: str = "decord", timeout_s: float = 600.0, **kwargs):
    """read_clips in a child process: same result, but a decoder crash raises VideoDecodeError(DECODER_CRASH)."""
    from .reader import read_clips

    return run_isolated(read_clips, uri, spec, backend, uri=uri, timeout_s=timeout_s, **kwargs)


class DecoderProcess:
    """run_isolated without a process start per call: one child serves calls until it dies or hangs.

    A pipeline worker decodes thousands of short videos; spawning a Python process for each would cost more than the
    decoding. A crash or a timeout fails only the call in flight; the next call starts a fresh child.
    """

    def __init__(self, timeout_s: float = 600.0) -> None:
        self.timeout_s = timeout_s
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        try:
            proc.start()
        except BaseException:
            conn.close()
            raise
        finally:
            child.close()
        self._proc, self._conn = proc, conn  # only a started child: close() may join it

    def call(
        self, fn: Callable[..., Any], *args: Any, uri: str = "", timeout_s: float | None = None, **kwargs: Any
    ) -> Any:
        """fn(*args, **kwargs) in the child; timeout_s (default: the instance's) bounds this call only."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        if self._proc is None or not self._proc.is_alive():
            self.close()
            self._start()
        try:
            self._conn.send((fn, args, kwargs))
            if not self._conn.poll(timeout_s):
                self.close()
                raise VideoDecodeError(DecodeFailure.TIMEOUT, uri, f"no result after {timeout_s:.0f} s")
            status, value = self._conn.recv()
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
        self._proc = self._conn = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
