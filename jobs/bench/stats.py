"""Repeated measurements: every figure `anonvid bench` prints is the median of repeated runs, with its spread.

Variants compared in one ratio are measured in interleaved rounds (A B A B ...), so a burst of outside load lands
on both instead of one; the ratio is taken of the medians.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def summary(values: list[float]) -> dict:
    """median, min, max and the relative spread (max - min) / median of repeated measurements."""
    if not values:
        raise ValueError("no measurements")
    med = statistics.median(values)
    return {
        "median": med,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / med if med else 0.0,
        "n": len(values),
    }


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, dict]:
    """Seconds per call of each variant: `warmup` untimed rounds, then `repeats` rounds in turn."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            seconds[name].append(timed(fn)[0])
    return {name: summary(v) for name, v in seconds.items()}


def rate(work: float, seconds: dict) -> dict:
    """A throughput (work per second) from a seconds summary: its median, and the range the runs span."""
    return {"median": work / seconds["median"], "min": work / seconds["max"], "max": work / seconds["min"],
            "spread": seconds["spread"], "n": seconds["n"]}  # fmt: skip
