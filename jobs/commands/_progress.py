"""A one-line progress indicator for long work (stderr, so stdout stays parseable)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, stream=sys.stderr) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.start = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int | None = None) -> None:
        total = total or self.total
        now = time.monotonic()
        if done < total and now - self._last < 0.5:
            return
        self._last = now
        rate = done / max(now - self.start, 1e-9)
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{self.label}: {done}/{total} ({rate:.1f}/s){end}")
        self.stream.flush()
