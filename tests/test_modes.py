"""The modes, described once (pipelines/modes.py), and the places that read them."""

from __future__ import annotations

import pytest

from pipelines.modes import METHOD_MODES, MODES, mode


def test_each_mode_says_what_it_runs_and_what_its_stored_pixels_are():
    table = {name: (m.needs["pruner"], m.needs["aam"], m.changes_pixels, m.family) for name, m in MODES.items()}
    assert table == {
        "prune": (True, False, True, "prune"),
        "aam": (False, True, False, "aam"),
        "prune+aam": (True, True, True, "prune+aam"),
        "raw": (False, False, False, "raw"),
        **{b: (False, False, True, "baseline") for b in ("blur", "down2", "down4", "blacken")},
    }
    assert METHOD_MODES == ("prune", "aam", "prune+aam")
    with pytest.raises(ValueError, match="unknown mode 'prnue': one of prune, aam"):
        mode("prnue")


def test_the_cli_and_the_config_offer_exactly_these_modes():
    import typing

    from jobs.cli import build_parser
    from pipelines.anonymize import AnonymizeConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    flag = next(a for a in sub.choices["anonymize"]._actions if a.dest == "mode")
    assert list(flag.choices) == list(MODES)
    hint = typing.get_type_hints(AnonymizeConfig)["mode"]
    assert set(typing.get_args(hint)) == set(MODES)
