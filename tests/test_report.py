"""The evaluation report as Markdown and PNG plots, on a hand-made report dict (no models, no data)."""

from __future__ import annotations

import copy

import pytest

from pipelines.evaluate.report import (
    check_targets,
    fmt_figure,
    markdown_table,
    plot_attackers,
    plot_tradeoff,
    write_markdown,
    write_plots,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fig(value: float, half: float = 0.02) -> dict:
    return {"value": value, "low": value - half, "high": value + half}


def method(family, input, top1, attackers, worst, leakage, *, reid=None, bias=None, sweep=None) -> dict:
    """attackers: {name: cMAP}; worst: the attacker name, or None when privacy was not measured."""
    atk = {a: {"cmap": fig(c), "macro_f1": fig(c - 0.1), "best": "epoch 3"} for a, c in attackers.items()}
    privacy = {
        "attackers": atk,
        "worst": {"attacker": worst, "cmap": atk[worst]["cmap"], "macro_f1": atk[worst]["macro_f1"]} if worst else None,
        "normalized_leakage": None if leakage is None else fig(leakage, 0.03),
        "per_attribute_ap": {"skin_dark": 0.7, "gender_proxy": 0.6},
    }
    return {
        "family": family, "input": input, "sweep": sweep, "n_train": 800, "n_test": 200, "dim": 192,
        "utility": {"top1": None if top1 is None else fig(top1 - 0.05),
                    "video_top1": None if top1 is None else fig(top1, 0.03)},
        "privacy": privacy,
        "reid": None if reid is None else {"rank1": fig(reid, 0.01), "chance": 0.02, "ratio_to_chance": reid / 0.02,
                                   "matcher": "lda"},
        "bias": None if bias is None else {"gap": fig(bias[0]), "per_group": {"0": 0.8, "1": 0.6},
                                           "reduction_vs_reference": bias[1]},
    }  # fmt: skip


def make_report() -> dict:
    methods = {
        "raw": method("raw", "features", 0.82, {"linear": 0.74, "mlp": 0.78, "knn": 0.70}, "mlp", 1.0,
                      reid=0.25, bias=(0.20, None)),
        "prune": method("prune", "pixels", 0.80, {"linear": 0.50, "mlp": 0.51, "knn": 0.48, "video_model": 0.55},
                        "video_model", 0.38, reid=0.05, bias=(0.13, 0.35)),
        "aam": method("aam", "features", 0.812, {"linear": 0.45, "mlp": 0.47, "knn": 0.44}, "mlp", 0.16,
                      reid=0.03, bias=(0.11, 0.45)),
        "prune+aam": method("prune+aam", "features", 0.805, {"linear": 0.44, "mlp": 0.43, "knn": 0.45}, "knn", 0.108),
        "blur": method("baseline", "pixels", None, {}, None, None),
    }  # fmt: skip
    for w, (top1, cmap) in {0.5: (0.818, 0.60), 1.0: (0.812, 0.47), 2.0: (0.79, 0.44), 4.0: (0.74, 0.42)}.items():
        methods[f"aam@w_b={w:g}"] = method("aam", "features", top1, {"linear": cmap - 0.02, "mlp": cmap}, "mlp",
                                           (cmap - 0.41) / 0.37, sweep={"param": "w_b", "value": w})  # fmt: skip
    for lam, (top1, cmap) in {1.0: (0.79, 0.43), 0.25: (0.81, 0.50)}.items():  # out of value order on purpose
        methods[f"prune+aam@lambda_priv={lam:g}"] = method("prune+aam", "features", top1, {"mlp": cmap}, "mlp",
                                                           (cmap - 0.41) / 0.37,
                                                           sweep={"param": "lambda_priv", "value": lam})  # fmt: skip
    report = {
        "format": "anonvid-report/1", "created": "2026-11-22T10:00:00+00:00",
        "command": "anonvid evaluate --features out/ --labels labels.parquet", "labels": "labels.parquet",
        "reference": "raw", "chance": {"cmap": 0.41, "top1": 0.125, "rank1": 0.02},
        "attributes": ["skin_dark", "gender_proxy"], "methods": methods,
        "timings": {"load": 1.25, "attackers": 30.0},
    }  # fmt: skip
    report["targets"] = check_targets(report)
    return report


@pytest.fixture(scope="module")
def report() -> dict:
    return make_report()


def table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in text.splitlines() if line.startswith("| `")]


def test_fmt_figure():
    assert fmt_figure({"value": 0.723, "low": 0.701, "high": 0.74}) == "72.3 [70.1, 74.0]"
    assert fmt_figure({"value": 0.108, "low": 0.078, "high": 0.138}, scale=1, digits=2) == "0.11 [0.08, 0.14]"
    assert fmt_figure({"value": 0.5, "low": None, "high": None}) == "50.0"
    assert fmt_figure(None) == "—"


def test_main_table_has_one_row_per_non_sweep_method(report):
    text = markdown_table(report)
    rows = table_rows(text)
    assert [r[0] for r in rows] == ["`raw`", "`prune`", "`aam`", "`prune+aam`", "`blur`"]
    header = text.splitlines()[0]
    assert all(len(r) == header.count(" | ") + 1 == 8 for r in rows)
    raw, prune, _, both, blur = rows
    assert raw[1:] == ["features", "82.0 [79.0, 85.0]", "78.0 [76.0, 80.0] (mlp)", "68.0 [66.0, 70.0]",
                       "1.00 [0.97, 1.03]", "25.0 [24.0, 26.0] (12.5× chance, lda)", "20.0 [18.0, 22.0]"]  # fmt: skip
    assert prune[3] == "55.0 [53.0, 57.0] (video_model)" and prune[7] == "13.0 [11.0, 15.0] (-35%)"
    assert both[5] == "0.11 [0.08, 0.14]" and both[6] == both[7] == "—"
    assert blur[1:] == ["pixels"] + ["—"] * 6
    # it stands alone in a README: units, CIs and the chance floors are said under the table
    assert "95% bootstrap CI" in text and "attack cMAP 41.0, action top-1 12.5, re-id rank-1 2.0" in text


def test_main_table_sweep_points_when_asked(report):
    rows = table_rows(markdown_table(report, methods=["aam@w_b=2", "raw"]))
    assert [r[0] for r in rows] == ["`aam@w_b=2`", "`raw`"]
    with pytest.raises(ValueError, match="unknown method"):
        markdown_table(report, methods=["nope"])


def test_markdown_has_every_section(report, tmp_path):
    path = tmp_path / "report.md"
    plots = {"tradeoff": "tradeoff.png", "attackers": str(tmp_path / "plots" / "attackers.png")}
    text = write_markdown(report, str(path), plots)
    assert path.read_text() == text
    for heading in ["# anonvid evaluation report", "## Chance floors", "## Main results", "## Attackers",
                    "## Sweeps", "## Targets", "## Timings", "## Plots"]:  # fmt: skip
        assert f"\n{heading}\n" in f"\n{text}", heading
    assert report["command"] in text
    assert "](tradeoff.png)" in text and "](plots/attackers.png)" in text
    section = text.split("## Attackers")[1].split("## Sweeps")[0]
    prune = next(r for r in table_rows(section) if r[0] == "`prune`")
    assert prune[1:] == ["pixels", "50.0 [48.0, 52.0]", "51.0 [49.0, 53.0]", "48.0 [46.0, 50.0]",
                         "**55.0 [53.0, 57.0]**", "—"]  # fmt: skip (the last column: no pixel action model here)
    assert [r[0] for r in table_rows(section)][-2:] == ["`prune+aam@lambda_priv=0.25`", "`prune+aam@lambda_priv=1`"]
    sweeps = text.split("## Sweeps")[1].split("## Targets")[0]
    assert [r[2] for r in table_rows(sweeps.replace("| aam", "| `aam").replace("| prune+aam", "| `p"))] == [
        "0.5", "1", "2", "4", "0.25", "1"]  # fmt: skip
    targets = text.split("## Targets")[1].split("## Timings")[0]
    assert "**missed**" in targets and "| met |" in targets and "not measured" in targets
    assert "| normalized leakage <= 0.25 | `aam` | 0.16 [0.13, 0.19] | 0.25 | met |" in targets  # the value's CI
    assert "| **total** | **31.2** |" in text  # summed: the report has no total of its own
    with_total = write_markdown({**report, "timings": {"load": 1.0, "total": 5.0}}, str(path))
    assert "| **total** | **5.0** |" in with_total and "| total |" not in with_total
    nested = write_markdown({**report, "timings": {"train": 10.0, "evaluate": 4.0, "  evaluate raw": 3.0,
                                                   "  evaluate aam": 1.0}}, str(path))  # fmt: skip
    assert "| **total** | **14.0** |" in nested  # the indented parts of a step are not counted twice


def test_plots_are_png(report, tmp_path):
    files = write_plots(report, str(tmp_path / "out"))
    assert files == {"tradeoff": "tradeoff.png", "tradeoff_leakage": "tradeoff_leakage.png",
                     "attackers": "attackers.png"}  # fmt: skip
    for name in files.values():
        data = (tmp_path / "out" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 20_000, name


def test_render_without_bias_reid_or_targets(report, tmp_path):
    bare = copy.deepcopy(report)
    for m in bare["methods"].values():
        m["reid"] = m["bias"] = None
    del bare["targets"], bare["timings"], bare["chance"]["rank1"]
    plot_tradeoff(bare, str(tmp_path / "t.png"), x="normalized_leakage")
    plot_attackers(bare, str(tmp_path / "a.png"), methods=["blur"])  # no attacker at all
    for name in ("t.png", "a.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000
    text = write_markdown(bare, str(tmp_path / "report.md"))
    assert "## Plots" not in text and "Not recorded." in text
    assert "re-id rank-1" not in text.split("## Main results")[0]
    assert "bias gap reduction >= 40% | `aam` | — | 0.4 | not measured" in text  # computed: targets were absent


def test_bad_input_is_refused(report, tmp_path):
    with pytest.raises(ValueError, match="anonvid-report/1"):
        markdown_table({**report, "format": "anonvid-report/2"})
    with pytest.raises(ValueError, match="x must be"):
        plot_tradeoff(report, str(tmp_path / "t.png"), x="top1")


def judged(name: str, *, leakage=None, top1=None, reid_rank1=None, gap=None, family="aam", sweep=None) -> dict:
    m = method(family, "features", top1, {"mlp": 0.5}, "mlp", leakage, sweep=sweep)
    m["reid"] = None if reid_rank1 is None else {"rank1": fig(reid_rank1, 0), "chance": 0.02}  # ratio computed
    m["bias"] = None if gap is None else {"gap": fig(gap, 0), "reduction_vs_reference": None}  # reduction computed
    return m


def test_check_targets_boundaries():
    methods = {
        "raw": judged("raw", family="raw", leakage=1.0, top1=0.800, gap=0.20),
        "edge": judged("edge", leakage=0.25, top1=0.780, reid_rank1=0.04, gap=0.12),  # every target exactly met
        "over": judged("over", family="prune", leakage=0.250001, top1=0.779, reid_rank1=0.0401, gap=0.121),
        "unmeasured": judged("unmeasured", family="prune+aam"),
        "blur": judged("blur", family="baseline", leakage=0.9, top1=0.5),
        "aam@w_b=2": judged("aam@w_b=2", leakage=0.9, sweep={"param": "w_b", "value": 2.0}),
    }
    report = {"format": "anonvid-report/1", "reference": "raw", "methods": methods}
    targets = check_targets(report)
    by = {(t["method"], t["name"].split()[0]): t for t in targets}
    per_method = [t for t in targets if t["method"] != "raw" and not t["name"].startswith("best")]
    assert {t["method"] for t in per_method} == {"edge", "over", "unmeasured"}  # baseline and sweep points skipped
    assert len(per_method) == 12
    assert [by["edge", k]["met"] for k in ("normalized", "video", "rank-1", "bias")] == [True] * 4
    # the run's own two: raw's top-1 (0.80 >= 0.75) and the best method's leakage (edge's 0.25 > 0.15)
    assert by["raw", "reference"]["met"] is True and by["raw", "reference"]["value"] == pytest.approx(0.80)
    assert by["edge", "best"]["met"] is False and by["edge", "best"]["value"] == pytest.approx(0.25)
    assert [by["over", k]["met"] for k in ("normalized", "video", "rank-1", "bias")] == [False] * 4
    assert [by["unmeasured", k]["met"] for k in ("normalized", "video", "rank-1", "bias")] == [None] * 4
    assert by["edge", "video"]["value"] == pytest.approx(0.02) and by["edge", "video"]["threshold"] == 0.02
    assert by["edge", "rank-1"]["value"] == pytest.approx(2.0) and by["edge", "bias"]["value"] == pytest.approx(0.4)
    assert by["edge", "normalized"]["name"] == "normalized leakage <= 0.25"
    # stricter thresholds are the caller's to choose
    strict = check_targets(report, leakage_max=0.1, top1_drop_max=0.01, reid_max_ratio=1.5, bias_reduction_min=0.5)
    assert not any(t["met"] for t in strict if t["method"] == "edge")
    loose = check_targets(report, best_leakage_max=0.3, reference_top1_min=0.9)
    assert {(t["method"], t["name"]): t["met"] for t in loose}["edge", "best normalized leakage <= 0.3"] is True
    assert {(t["method"], t["name"]): t["met"] for t in loose}["raw", "reference video top-1 >= 90"] is False


def test_a_paired_top1_drop_decides_its_target_and_shows_its_ci():
    """With utility.video_top1_drop (the evaluation's paired figure) the target reads it, CI and all; without it the
    drop is the difference of the two top-1 points, with no CI."""
    methods = {"raw": judged("raw", family="raw", leakage=1.0, top1=0.80), "aam": judged("aam", leakage=0.1, top1=0.79),
               "prune": judged("prune", family="prune", leakage=0.2, top1=0.79)}  # fmt: skip
    methods["aam"]["utility"]["video_top1_drop"] = {"value": 0.025, "low": 0.005, "high": 0.045}  # videos in common
    report = {"format": "anonvid-report/1", "reference": "raw", "methods": methods}
    by = {(t["method"], t["name"].split()[0]): t for t in check_targets(report)}
    assert by["aam", "video"]["value"] == 0.025 and by["aam", "video"]["ci"] == [0.005, 0.045]
    assert by["aam", "video"]["met"] is False
    assert by["prune", "video"]["value"] == pytest.approx(0.01) and "ci" not in by["prune", "video"]
    assert by["prune", "normalized"]["ci"] == [pytest.approx(0.17), pytest.approx(0.23)]


def test_check_targets_on_full_report(report):
    met = {(t["method"], t["name"]): t["met"] for t in report["targets"]}
    assert met["aam", "normalized leakage <= 0.25"] is True  # 0.16
    assert met["prune+aam", "normalized leakage <= 0.25"] is True
    assert met["prune+aam", "best normalized leakage <= 0.15"] is True  # 0.108, the lowest
    assert met["aam", "video top-1 drop <= 2 points"] is True  # 0.82 -> 0.812
    assert met["prune", "rank-1 re-id <= 2x chance"] is False  # 2.5x
    assert met["aam", "bias gap reduction >= 40%"] is True and met["prune", "bias gap reduction >= 40%"] is False
    assert met["prune+aam", "bias gap reduction >= 40%"] is None


def test_a_test_split_too_small_to_read_targets_from_is_said(tmp_path):
    from pipelines.evaluate.report import small_sample_warnings, write_markdown

    def report_with(half: float) -> dict:
        raw = method("raw", "features", 0.5, {"mlp": 0.8}, "mlp", 1.0)
        raw["utility"]["video_top1"] = fig(0.5, half)
        raw["n_test_videos"] = 10
        aam = method("aam", "features", 0.5, {"mlp": 0.6}, "mlp", 0.3)
        return {"format": "anonvid-report/1", "reference": "raw", "methods": {"raw": raw, "aam": aam}}

    wide, narrow = report_with(0.24), report_with(0.04)  # CIs of 48 and 8 points
    (warning,) = small_sample_warnings(wide)
    assert "10 videos" in warning and "48 points" in warning
    assert small_sample_warnings(narrow) == []
    assert f"**Warning:** {warning}" in write_markdown(wide, str(tmp_path / "report.md"))
    assert "**Warning:**" not in write_markdown(narrow, str(tmp_path / "report2.md"))
