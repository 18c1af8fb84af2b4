"""The progress line: a true rate from when the work began, and the time left."""

from __future__ import annotations

import io

from jobs.commands import _progress
from jobs.commands._progress import Progress


def test_rate_and_time_left_count_from_when_the_work_began(monkeypatch):
    clock = iter([100.0, 156.0, 157.0, 180.0])  # work begins at 100; the first 48 videos arrive at 156
    monkeypatch.setattr(_progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    p = Progress("videos", 0, stream=out, log_every_s=10)
    p(0, 96)
    p(48, 96)
    p(50, 96)  # 1 s later: a log gets no new line yet
    p(96, 96)  # the end is always written
    lines = out.getvalue().splitlines()
    assert lines == ["videos: 0/96", "videos: 48/96, 0.86/s, 0m56s left", "videos: 96/96, 1.20/s, 1m20s in all"]


def test_a_terminal_gets_one_line_rewritten():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    p = Progress("synth", 3, stream=out)
    for i in range(4):
        p(i)
    text = out.getvalue()  # updates within 0.5 s are dropped, the end is always written, on the same line
    assert text.startswith("\rsynth: 0/3\rsynth: 3/3, ") and text.endswith(" in all\n") and text.count("\n") == 1


def test_stage_counts_move_the_line_before_the_first_commit(monkeypatch):
    clock = iter([100.0, 120.0, 140.0, 141.0, 160.0])
    monkeypatch.setattr(_progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    p = Progress("videos committed", 0, stream=out, log_every_s=10)
    p.counts({"decoded": 5})  # before the work begins: kept, not written
    p(0, 10)
    p.counts({"decoded": 40, "encoded": 20})  # 20 s in, nothing committed yet: a line all the same
    p(2, 10)
    p.counts({"decoded": 80, "encoded": 60})  # 1 s later: a log gets no new line yet
    p(10, 10)
    p.counts({"decoded": 99, "encoded": 99})  # after the last line: nothing more
    assert out.getvalue().splitlines() == [
        "videos committed: 0/10",  # the work begins: no rate yet
        "videos committed: 0/10 | clips decoded 40 (2.0/s), encoded 20 (1.0/s)",
        "videos committed: 2/10, 0.05/s, 2m40s left | clips decoded 40 (1.0/s), encoded 20 (0.5/s)",
        "videos committed: 10/10, 0.17/s, 1m00s in all | clips decoded 80 (1.3/s), encoded 60 (1.0/s)",
    ]
