"""A progress line for long work (stderr, so stdout stays parseable): done / total, the rate since the work began
and the time left at that rate."""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """Call with (done, total). The clock starts at the first call: the job calls (0, total) when the work begins,
    so set-up before it (preflight, model loading) neither counts nor inflates the first rate. On a terminal one
    line is rewritten in place; in a log (not a terminal) a full line is written every `log_every_s`, so Ray's own
    lines never land in the middle of one."""

    def __init__(self, label: str, total: int, stream=None, log_every_s: float = 10.0) -> None:
        self.label, self.total, self.stream = label, total, sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 0.5 if self.tty else log_every_s
        self.start: float | None = None
        self._last: float | None = None

    def __call__(self, done: int, total: int | None = None) -> None:
        total = total or self.total
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
        if self.tty:
            self.stream.write(f"\r{text}" + ("\n" if done >= total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
