"""The anonymize job's modes, each described once: which models it needs, which stage changes its pixels, and its
family in the evaluation. Every other module asks `MODES[name]` (or a list below) instead of testing the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ModeName = Literal["prune", "aam", "prune+aam", "raw", "blur", "down2", "down4", "blacken"]
Family = Literal["prune", "aam", "prune+aam", "raw", "baseline"]


@dataclass(frozen=True)
class Mode:
    name: str
    family: Family  # how the evaluation groups and judges it
    pruner: bool  # the tubelet pruner runs (and masks the pixels); f_E reads what it kept
    aam: bool  # the AAM runs on f_E's features
    baseline: bool  # a pixel transform of the papers' comparisons (anon_core.baselines): not for release

    @property
    def needs(self) -> dict[str, bool]:
        """The model bundles the mode loads."""
        return {"encoder": True, "pruner": self.pruner, "aam": self.aam}

    @property
    def changes_pixels(self) -> bool:
        """A stage (the pruner's mask, a baseline's transform) changes each clip before --keep-pixels stores it;
        otherwise stored pixels are raw (table in docs/privacy.md)."""
        return self.pruner or self.baseline

    @property
    def judged(self) -> bool:
        """The benchmark's targets apply to it (the methods, not raw or the baselines)."""
        return self.family in ("prune", "aam", "prune+aam")


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("prune", "prune", pruner=True, aam=False, baseline=False),
        Mode("aam", "aam", pruner=False, aam=True, baseline=False),
        Mode("prune+aam", "prune+aam", pruner=True, aam=True, baseline=False),
        Mode("raw", "raw", pruner=False, aam=False, baseline=False),
        *(Mode(b, "baseline", pruner=False, aam=False, baseline=True) for b in ("blur", "down2", "down4", "blacken")),
    )
}
METHOD_MODES = tuple(n for n, m in MODES.items() if m.judged)  # ("prune", "aam", "prune+aam")
PRUNING_FAMILIES = frozenset(m.family for m in MODES.values() if m.pruner)  # {"prune", "prune+aam"}


def mode(name: str) -> Mode:
    """MODES[name], or a ValueError naming the modes there are."""
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown mode {name!r}: one of {', '.join(MODES)}") from None
