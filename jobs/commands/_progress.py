"""A progress line for long work (stderr, so stdout stays parseable): done / total, the rate since the work began
and the time left at that rate."""

from __future__ import annotations

import sys
import threading
import time


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """Call with (done, total). The clock starts at the first call: the job calls (0, total) when the work begins,
    so set-up before it (preflight, model loading) neither counts nor inflates the first rate. On a terminal one
    line is rewritten in place; in a log (not a terminal) a full line is written every `log_every_s`, so Ray's own
    lines never land in the middle of one. `counts` adds what the stages before the commit did so far (clips decoded
    and encoded), each with its own rate, so the line moves before the first video is committed."""

    def __init__(self, label: str, total: int, stream=None, log_every_s: float = 10.0) -> None:
        self.label, self.total, self.stream = label, total, sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 0.5 if self.tty else log_every_s
        self.start: float | None = None
        self._last: float | None = None
        self.done, self.extra = 0, {}
        self._lock = threading.Lock()  # the job's loop and its counts reader both write

    def counts(self, extra: dict[str, int]) -> None:
        """What the stages report so far, e.g. {"decoded": 120, "encoded": 96} (clips); shown with the next line."""
        with self._lock:
            self.extra = dict(extra)
            finished = self.start is None or self.done >= self.total
        if not finished:
            self(self.done)

    def __call__(self, done: int, total: int | None = None) -> None:
        with self._lock:
            self._show(done, total)

    def _show(self, done: int, total: int | None) -> None:
        self.total = total = total or self.total
        self.done = done
        now = time.monotonic()
        if self.start is None:
            self.start = now
        if done < total and self._last is not None and now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self.start
        text = f"{self.label}: {done}/{total}"
        if done and elapsed > 0:
            rate = done / elapsed
            text += f", {rate:.2f}/s" + (f", {_duration((total - done) / rate)} left" if done < total else
                                         f", {_duration(elapsed)} in all")  # fmt: skip
        if self.extra and elapsed > 0:
            text += " | clips " + ", ".join(f"{k} {n} ({n / elapsed:.1f}/s)" for k, n in self.extra.items())
        if self.tty:
            self.stream.write(f"\r{text}" + ("\n" if done >= total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
