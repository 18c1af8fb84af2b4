"""A one-line progress indicator for long work (stderr, so stdout stays parseable)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Call with (done, total). The clock starts at the first call, so set-up before the work is not counted."""

    def __init__(self, label: str, total: int, stream=None) -> None:
        self.label, self.total, self.stream = label, total, sys.stderr if stream is None else stream
        self.start: float | None = None
        self._last = 0.0

    def __call__(self, done: int, total: int | None = None) -> None:
        total = total or self.total
        now = time.monotonic()
        if self.start is None:
            self.start = now
        if done < total and now - self._last < 0.5:
            return
        self._last = now
        elapsed = now - self.start
        rate = f" ({done / elapsed:.1f}/s)" if elapsed > 0 else ""
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{self.label}: {done}/{total}{rate}{end}")
        self.stream.flush()
