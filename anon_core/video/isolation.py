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


def _child(conn, fn, args, kwargs) -> None:
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except BaseException as e:  # every error goes back to the parent, typed
        try:
            conn.send(("err", e))
        except Exception:  # unpicklable exception
            conn.send(("err", RuntimeError(f"{type(e).__name__}: {e}")))
    finally:
        conn.close()


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
            proc.join()
            code = proc.exitcode
            name = signal.Signals(-code).name if code is not None and code < 0 else f"exit code {code}"
            raise VideoDecodeError(DecodeFailure.DECODER_CRASH, uri, f"decoder process died: {name}") from None
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
