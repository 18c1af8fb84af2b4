"""The evaluation report (the `anonvid-report/1` dict the evaluate job saves as report.json) as Markdown and plots.

    report.md              title, command, chance floors, main table, per-attacker cMAP, sweeps, targets, timings
    tradeoff.png           privacy-utility trade-off: worst-case attack cMAP against video action top-1
    tradeoff_leakage.png   the same against normalized leakage (0 = chance, 1 = leaks like the reference)
    attackers.png          cMAP of every attacker for every method, the chance floor as a line

Every figure in the report is {"value", "low", "high"}: a point estimate and its 95% bootstrap CI, or None when it
was not measured; the renderers show "—" for None and never fail on it. `check_targets` judges the targets of the
issue (docs/methods.md section 3) for the anonymizers proper: prune, aam and prune+aam, sweep points left out.

Plots are drawn on a bare `Figure` with the Agg canvas, never through pyplot: no backend is switched, no figure is
registered anywhere, nothing global is touched, so this is safe inside a notebook or a Ray worker. Output paths may
be local or any fsspec URI.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable
from typing import Literal

from ..modes import METHOD_MODES

FORMAT = "anonvid-report/1"
TARGET_FAMILIES = METHOD_MODES  # raw, baselines and sweep points are not judged
# display order; unknown attackers follow, sorted
ATTACKERS = ("linear", "mlp", "knn", "mlp_whitened", "knn_whitened", "video_model")
ATTACKER_LABELS = {"linear": "linear", "mlp": "MLP (2 layers)", "knn": "k-NN", "mlp_whitened": "MLP, whitened",
                   "knn_whitened": "k-NN, whitened", "video_model": "video model"}  # fmt: skip
FAMILY_COLORS = {"raw": "black", "prune": "tab:blue", "aam": "tab:orange", "prune+aam": "tab:green",
                 "baseline": "tab:gray"}  # fmt: skip
PARAM_LABELS = {"lambda_priv": "λ_priv", "keep_ratio": "keep ratio", "w_b": "w_B"}
PLOT_FILES = {"tradeoff": "tradeoff.png", "tradeoff_leakage": "tradeoff_leakage.png", "attackers": "attackers.png"}
PLOT_TITLES = {"tradeoff": "Privacy-utility trade-off (worst-case attack cMAP)",
               "tradeoff_leakage": "Privacy-utility trade-off (normalized leakage)",
               "attackers": "Attack cMAP of every attacker"}  # fmt: skip
DPI = 150
EPS = 1e-9  # targets are met at their boundary: 0.800 - 0.785 must count as a drop of exactly 0.015
NA = "—"


# -- reading the dict ------------------------------------------------------------------------------------------------
def _methods(report: dict) -> dict:
    if report.get("format") != FORMAT:
        raise ValueError(f"report format is {report.get('format')!r}; this renderer reads {FORMAT!r}")
    return report.get("methods") or {}


def _get(d, *keys):
    """d[k0][k1]..., or None as soon as a level is missing or None."""
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def _value(fig) -> float | None:
    return None if fig is None or fig.get("value") is None else float(fig["value"])


def _rows(report: dict, methods: Iterable[str] | None) -> list[tuple[str, dict]]:
    """The named methods in the order given; by default every non-sweep method in the order of the dict."""
    all_methods = _methods(report)
    if methods is None:
        return [(n, m) for n, m in all_methods.items() if not m.get("sweep")]
    names = list(methods)
    unknown = [n for n in names if n not in all_methods]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; the report has {list(all_methods)}")
    return [(n, all_methods[n]) for n in names]


def _sweeps(report: dict) -> dict[tuple[str, str], list[tuple[str, dict]]]:
    """Sweep points grouped by (family, param), each group in value order."""
    groups: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for name, m in _methods(report).items():
        if m.get("sweep"):
            groups.setdefault((m.get("family", "?"), m["sweep"]["param"]), []).append((name, m))
    return {k: sorted(v, key=lambda nm: nm[1]["sweep"]["value"]) for k, v in sorted(groups.items())}


def _attackers(methods: Iterable[dict]) -> list[str]:
    seen = {a for m in methods for a in (_get(m, "privacy", "attackers") or {})}
    return [a for a in ATTACKERS if a in seen] + sorted(seen - set(ATTACKERS))


# -- text ------------------------------------------------------------------------------------------------------------
def fmt_figure(fig: dict | None, scale: float = 100, digits: int = 1) -> str:
    """Text "72.3 [70.1, 74.0]": the value and its 95% CI, times `scale` (percent by default); "—" when not measured."""
    if fig is None or fig.get("value") is None:
        return NA

    def num(v: float) -> str:
        return f"{round(v * scale, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.00"

    text = num(fig["value"])
    if fig.get("low") is not None and fig.get("high") is not None:
        text += f" [{num(fig['low'])}, {num(fig['high'])}]"
    return text


def _num(x, fmt: str = ".3g") -> str:
    return NA if x is None else format(x, fmt)


def _code(name: str) -> str:
    return "`" + str(name).replace("|", "\\|") + "`"


def _table(header: list[str], rows: list[list[str]], align: str) -> str:
    """GitHub-flavoured Markdown; `align` is one 'l' or 'r' per column."""
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = [header, sep, *rows]
    return "\n".join("| " + " | ".join(c.replace("\n", " ") for c in line) + " |" for line in lines)


def _chance_line(report: dict) -> str:
    chance = report.get("chance") or {}
    parts = [f"{label} {chance[k] * 100:.1f}" for k, label in (("cmap", "attack cMAP"), ("top1", "action top-1"),
             ("rank1", "re-id rank-1")) if chance.get(k) is not None]  # fmt: skip
    return ", ".join(parts) if parts else "not recorded"


def markdown_table(report: dict, methods: Iterable[str] | None = None) -> str:
    """The main results table, one row per method (by default the non-sweep ones), with a note that makes it stand
    alone (units, CIs, what leakage is normalised by, the chance floors), so it can be pasted into a README as is."""
    ref = report.get("reference") or "raw"
    probes = list((report.get("config") or {}).get("probes") or [])
    rows = []
    for name, m in _rows(report, methods):
        worst = _get(m, "privacy", "worst") or {}
        cmap = fmt_figure(worst.get("cmap"))
        if worst.get("cmap") and worst.get("attacker"):
            cmap += f" ({worst['attacker']})"
        reid = m.get("reid") or {}
        rank1 = fmt_figure(reid.get("rank1"))
        if reid.get("rank1") and reid.get("ratio_to_chance") is not None:
            matcher = f", {reid['matcher']}" if reid.get("matcher") else ""
            rank1 += f" ({reid['ratio_to_chance']:.1f}× chance{matcher})"
        bias = m.get("bias") or {}
        gap = fmt_figure(bias.get("gap"))
        if bias.get("gap") and bias.get("reduction_vs_reference") is not None:
            gap += f" ({-bias['reduction_vs_reference']:+.0%})"
        rows.append([_code(name), str(m.get("input", NA)), fmt_figure(_get(m, "utility", "video_top1")), cmap,
                     fmt_figure(worst.get("macro_f1")), fmt_figure(_get(m, "privacy", "normalized_leakage"), 1, 2),
                     rank1, gap, *(fmt_figure(_get(m, "utility", "probes", p, "video_top1")) for p in probes)])
    header = ["method", "input", "action top-1 (video)", "worst-case cMAP (attacker)", "macro-F1",
              "normalized leakage", "rank-1 re-id (× chance)", "bias gap",
              *(f"`{p}` probe top-1" for p in probes)]  # fmt: skip
    note = (
        "Point estimate [95% bootstrap CI], in percent except normalized leakage; — = not measured. "
        "Worst case over the attacker pool (linear, MLP, k-NN, the MLP and k-NN on whitened features, and a "
        "re-trained video model on pixel outputs), "
        "each trained on the anonymized training split: lower cMAP and macro-F1 = more private. "
        f"Normalized leakage = (cMAP − chance) / (cMAP of {_code(ref)} − chance): 1 = leaks like {_code(ref)}, "
        "0 = at chance. Re-id: every video queries all other videos; the stronger of cosine on the features and "
        "cosine after a discriminant learned on the training split's people (lda). "
        "Bias gap: accuracy gap between groups in points (its change vs the reference). "
        f"Chance: {_chance_line(report)}."
    )
    if probes:
        note += (" Probe columns: video-level top-1 of a linear probe on the features for a label no model was "
                 f"trained on ({_probe_line(report, probes)}): utility beyond the trained action.")  # fmt: skip
    return _table(header, rows, "llrrrrrr" + "r" * len(probes)) + "\n\n" + note + "\n"


def _probe_line(report: dict, probes: list[str]) -> str:
    """'gen_omega: above / below the training median, chance 51.0' for each probe, from any method that ran it."""
    parts = []
    for p in probes:
        entry = next((m["utility"]["probes"][p] for m in _methods(report).values()
                      if p in (_get(m, "utility", "probes") or {})), None)  # fmt: skip
        if entry:
            parts.append(f"`{p}`: {' / '.join(entry['classes'])}, chance {entry['chance'] * 100:.1f}")
    return "; ".join(parts) or "not measured"


def _attacker_table(report: dict) -> str:
    rows_in = _rows(report, None) + [nm for group in _sweeps(report).values() for nm in group]
    attackers = _attackers(m for _, m in rows_in)
    if not attackers:
        return "No attacker was run."
    rows = []
    for name, m in rows_in:
        worst = _get(m, "privacy", "worst", "attacker")
        cells = []
        for a in attackers:
            text = fmt_figure(_get(m, "privacy", "attackers", a, "cmap"))
            cells.append(f"**{text}**" if a == worst and text != NA else text)
        pixel_top1 = fmt_figure(_get(m, "utility", "pixel_video_top1"))
        rows.append([_code(name), str(m.get("input", NA)), *cells, pixel_top1])
    header = ["method", "input", *(ATTACKER_LABELS.get(a, a) for a in attackers), "video model: action top-1"]
    note = ("Attack cMAP in percent [95% CI]; the worst case (strongest attacker) of each method in bold. The last "
            "column is the utility side of the pixel evaluation: a fresh video model trained for the action on the "
            "anonymized pixels (video-level top-1).")  # fmt: skip
    return _table(header, rows, "ll" + "r" * (len(attackers) + 1)) + "\n\n" + note


def _sweep_table(report: dict) -> str:
    rows = [[family, PARAM_LABELS.get(param, param), _num(m["sweep"]["value"], "g"), _code(name),
             fmt_figure(_get(m, "utility", "video_top1")), fmt_figure(_get(m, "privacy", "worst", "cmap")),
             fmt_figure(_get(m, "privacy", "normalized_leakage"), 1, 2)]
            for (family, param), group in _sweeps(report).items() for name, m in group]  # fmt: skip
    if not rows:
        return "No sweep in this report."
    header = ["family", "param", "value", "method", "action top-1 (video)", "worst-case cMAP", "normalized leakage"]
    return _table(header, rows, "llrlrrr")


def _targets_table(report: dict) -> str:
    targets = report.get("targets")
    if targets is None:
        targets = check_targets(report)
    if not targets:
        return "No targets."
    result = {True: "met", False: "**missed**", None: "not measured"}
    rows = [[t["name"], _code(t["method"]), _num(t.get("value")) + _ci_text(t.get("ci")), _num(t.get("threshold")),
             result[t.get("met")]] for t in targets]  # fmt: skip
    met = sum(t.get("met") is True for t in targets)
    unknown = sum(t.get("met") is None for t in targets)
    summary = f"{met} of {len(targets)} targets met" + (f" ({unknown} not measured)." if unknown else ".")
    note = ("Value [95% CI] where it has one: normalized leakage's as in the main table; the top-1 drop's is paired "
            "(each resample draws test videos and scores both the method and the reference on them), over the test "
            "videos both answered. The point decides met or missed.")  # fmt: skip
    return _table(["target", "method", "value", "threshold", "result"], rows, "llrrl") + f"\n\n{note}\n\n{summary}"


def _ci_text(ci) -> str:
    return f" [{_num(ci[0])}, {_num(ci[1])}]" if ci else ""


def _timings_table(report: dict) -> str:
    timings = report.get("timings") or {}
    if not timings:
        return "Not recorded."
    steps = {k: float(v) for k, v in timings.items() if k != "total"}
    # the job's own wall time wins; else the top-level steps (indented ones are parts of the step above them)
    total = float(timings["total"]) if "total" in timings else sum(v for k, v in steps.items() if k == k.lstrip())
    rows = [[str(step), f"{s:.1f}"] for step, s in steps.items()] + [["**total**", f"**{total:.1f}**"]]
    return _table(["step", "seconds"], rows, "lr")


def _relative(file: str, md_path: str) -> str:
    """A plot's link relative to report.md: write_plots' file names are kept; an absolute local path is made
    relative to the folder of report.md."""
    if "://" in file or "://" in md_path or not os.path.isabs(file):
        return file
    return os.path.relpath(file, os.path.dirname(os.path.abspath(md_path)))


def write_markdown(report: dict, path: str, plots: dict[str, str] | None = None) -> str:
    """Writes report.md (local path or fsspec URI); returns its text. `plots` is write_plots' {name: file}, linked
    relative to report.md."""
    _methods(report)
    attributes = report.get("attributes") or []
    lines = [
        "# anonvid evaluation report",
        "",
        f"Created {report.get('created', NA)}; labels {_code(report.get('labels', NA))}; "
        f"normalized leakage against {_code(report.get('reference', NA))}; format `{FORMAT}`.",
        "",
        "```",
        str(report.get("command", NA)),
        "```",
        "",
        "## Chance floors",
        "",
        f"What a random guess scores: {_chance_line(report)} (percent). A random attacker's cMAP is the expected "
        "average precision of a random ranking of the test rows, over "
        + (f"the {len(attributes)} attributes ({', '.join(attributes)})" if attributes else "the attributes")
        + ": a little above their mean prevalence on a finite test set.",  # fmt: skip
        "",
        "## Main results",
        "",
        markdown_table(report).rstrip("\n"),
        "",
        "## Attackers",
        "",
        _attacker_table(report),
        "",
        "## Sweeps",
        "",
        _sweep_table(report),
        "",
        "## Targets",
        "",
        *(f"**Warning:** {w}\n" for w in small_sample_warnings(report)),
        _targets_table(report),
        "",
        "## Timings",
        "",
        _timings_table(report),
        "",
    ]
    if plots:
        lines += ["## Plots", ""]
        for name, file in plots.items():
            lines += [f"![{PLOT_TITLES.get(name, name)}]({_relative(file, path)})", ""]
    text = "\n".join(lines)
    _write_bytes(path, text.encode("utf-8"))
    return text


# -- targets ---------------------------------------------------------------------------------------------------------
def small_sample_warnings(report: dict, max_ci_points: float = 20.0) -> list[str]:
    """A warning when the test split is too small to read a target from: the reference's video top-1 CI spans more
    than max_ci_points points (a 10-video split gives CIs like [0, 48] and "met" means nothing)."""
    ref = _methods(report).get(report.get("reference"))
    ci = _get(ref, "utility", "video_top1")
    if not ci or ci.get("low") is None or ci.get("high") is None:
        return []
    width = 100 * (ci["high"] - ci["low"])
    if width <= max_ci_points:
        return []
    n = (ref or {}).get("n_test_videos", "few")
    return [f"the test split has {n} videos: the reference's top-1 95% CI spans {width:.0f} points, so a target "
            "met or missed here says little; evaluate on more test videos (hundreds) before reading one"]  # fmt: skip


def _target(name: str, method: str, value, threshold: float, at_most: bool, ci: dict | None = None) -> dict:
    """ci: the value's figure ({value, low, high}) when it has a 95% CI; shown beside the value, the point decides."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        met = None
    else:
        met = bool(value <= threshold + EPS) if at_most else bool(value >= threshold - EPS)
    out = {"name": name, "method": method, "value": value, "threshold": threshold, "met": met}
    if ci and ci.get("low") is not None and ci.get("high") is not None:
        out["ci"] = [ci["low"], ci["high"]]
    return out


def _reid_ratio(m: dict) -> float | None:
    reid = m.get("reid") or {}
    if reid.get("ratio_to_chance") is not None:
        return float(reid["ratio_to_chance"])
    rank1 = _value(reid.get("rank1"))
    return rank1 / reid["chance"] if rank1 is not None and reid.get("chance") else None


def _bias_reduction(m: dict, ref_gap: float | None) -> float | None:
    bias = m.get("bias") or {}
    if bias.get("reduction_vs_reference") is not None:
        return float(bias["reduction_vs_reference"])
    gap = _value(bias.get("gap"))
    return 1.0 - gap / ref_gap if gap is not None and ref_gap else None


def check_targets(report: dict, *, leakage_max: float = 0.25, top1_drop_max: float = 0.02,
                  reid_max_ratio: float = 2.0, bias_reduction_min: float = 0.40, best_leakage_max: float = 0.15,
                  reference_top1_min: float = 0.75) -> list[dict]:  # fmt: skip
    """The targets, as {name, method, value, threshold, met} entries; met is None when the value could not be
    measured. Boundaries count as met. For every prune / aam / prune+aam method that is not a sweep point:

    - normalized leakage of the worst attacker <= leakage_max
    - video action top-1 at most top1_drop_max below the reference's (value: the drop, as a fraction)
    - rank-1 re-identification at most reid_max_ratio x chance
    - bias gap at least bias_reduction_min smaller than the reference's (value: the relative reduction)

    and two for the run: the reference's own video top-1 >= reference_top1_min (a defence can only be judged against
    an encoder that does the task), and the best of those methods at normalized leakage <= best_leakage_max.
    """
    methods = _methods(report)
    ref_name = report.get("reference")
    ref = methods.get(ref_name)
    ref_top1 = _value(_get(ref, "utility", "video_top1"))
    ref_gap = _value(_get(ref, "bias", "gap"))
    out = []
    for name, m in methods.items():
        if m.get("family") not in TARGET_FAMILIES or m.get("sweep") or name == ref_name:
            continue
        top1 = _value(_get(m, "utility", "video_top1"))
        drop = None if top1 is None or ref_top1 is None else ref_top1 - top1
        paired = _get(m, "utility", "video_top1_drop")  # over the videos both answered, with a paired CI
        leak = _get(m, "privacy", "normalized_leakage")
        out += [
            _target(f"normalized leakage <= {leakage_max:g}", name, _value(leak), leakage_max, at_most=True, ci=leak),
            _target(f"video top-1 drop <= {top1_drop_max * 100:g} points", name,
                    _value(paired) if paired else drop, top1_drop_max, at_most=True, ci=paired),
            _target(f"rank-1 re-id <= {reid_max_ratio:g}x chance", name, _reid_ratio(m), reid_max_ratio,
                    at_most=True),
            _target(f"bias gap reduction >= {bias_reduction_min:.0%}", name, _bias_reduction(m, ref_gap),
                    bias_reduction_min, at_most=False),
        ]  # fmt: skip
    if ref is not None:
        out.insert(0, _target(f"reference video top-1 >= {reference_top1_min * 100:g}", ref_name, ref_top1,
                              reference_top1_min, at_most=False))  # fmt: skip
    judged = {t["method"]: t["value"] for t in out if t["name"].startswith("normalized leakage")}
    measured = {k: v for k, v in judged.items() if v is not None}
    if judged:
        best = min(measured, key=measured.get) if measured else next(iter(judged))
        out.append(_target(f"best normalized leakage <= {best_leakage_max:g}", best, judged[best], best_leakage_max,
                           at_most=True))  # fmt: skip
    return out


# -- plots -----------------------------------------------------------------------------------------------------------
def _write_bytes(path: str, data: bytes) -> None:
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    parent = p.rsplit("/", 1)[0] if "/" in p else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(p, "wb") as f:
        f.write(data)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")  # a legend outside the axes stays in the image
    _write_bytes(path, buf.getvalue())


def _ci(figs: list[dict], scale: float) -> list[list[float]]:
    """Asymmetric error bar lengths for errorbar(xerr=..., yerr=...); a figure without a CI gets none."""
    lo = [max(0.0, (f["value"] - (f.get("low") if f.get("low") is not None else f["value"])) * scale) for f in figs]
    hi = [max(0.0, ((f.get("high") if f.get("high") is not None else f["value"]) - f["value"]) * scale) for f in figs]
    return [lo, hi]


_NEAR = [
    (6, 5, "left", "bottom"),
    (6, -5, "left", "top"),
    (-6, 5, "right", "bottom"),
    (-6, -5, "right", "top"),
    (0, 9, "center", "bottom"),
    (0, -9, "center", "top"),
    (12, 0, "left", "center"),
    (-12, 0, "right", "center"),
]
_FAR = [
    (20, 18, "left", "bottom"),
    (-20, 18, "right", "bottom"),
    (20, -18, "left", "top"),
    (-20, -18, "right", "top"),
    (0, 24, "center", "bottom"),
    (0, -24, "center", "top"),
    (30, 0, "left", "center"),
    (-30, 0, "right", "center"),
]
_FAR_COST = 150.0  # px²: a far spot (with a leader line) beats covering a marker, not crossing a thin error bar
_BAR_WEIGHT = 0.15  # a label may cross an error bar; it should not cover a marker or another label


def _place_labels(ax, labels: list[tuple[float, float, str, str, int]], taken: list, segments=()) -> None:
    """Greedy: each label takes the first spot near its point that overlaps no marker, no error bar (`segments`,
    (x0, y0, x1, y1) in data), no earlier label and stays inside the axes; failing that the cheapest spot, near or
    a little farther with a leader line. Axis limits must be final."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)

    def area(a, b) -> float:
        return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))

    def cost(box) -> float:
        return sum(w * area(box, t) for t, w in weighted) + 4 * (box.width * box.height - area(box, inside))

    weighted = [(t, 1.0) for t in taken]
    for x0, y0, x1, y1 in segments:
        (ax0, ay0), (ax1, ay1) = ax.transData.transform([(x0, y0), (x1, y1)])
        box = Bbox.from_extents(min(ax0, ax1) - 2, min(ay0, ay1) - 2, max(ax0, ax1) + 2, max(ay0, ay1) + 2)
        weighted.append((box, _BAR_WEIGHT))
    for x, y, _, _, _ in labels:
        px, py = ax.transData.transform((x, y))
        weighted.append((Bbox.from_extents(px - 7, py - 7, px + 7, py + 7), 1.0))
    for x, y, text, color, size in labels:
        best = None
        for far, (dx, dy, ha, va) in [(False, o) for o in _NEAR] + [(True, o) for o in _FAR]:
            arrow = {"arrowstyle": "-", "color": color, "lw": 0.6, "alpha": 0.6, "shrinkA": 0, "shrinkB": 4}
            t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                            fontsize=size, color=color, arrowprops=arrow if far else None)  # fmt: skip
            box = t.get_window_extent(renderer)
            c = cost(box) + (_FAR_COST if far else 0.0)
            if best is None or c < best[0]:
                if best is not None:
                    best[1].remove()
                best = (c, t, box)
            else:
                t.remove()
            if c == 0:
                break
        weighted.append((best[2], 1.0))


def plot_tradeoff(report: dict, path: str, x: Literal["worst_cmap", "normalized_leakage"] = "worst_cmap") -> None:
    """Worst-case attack cMAP (x="worst_cmap") or normalized leakage (x="normalized_leakage") against video action
    top-1: every method a labelled point with CI bars on both axes, sweeps joined in value order, chance dashed."""
    if x not in ("worst_cmap", "normalized_leakage"):
        raise ValueError(f"x must be 'worst_cmap' or 'normalized_leakage', not {x!r}")
    from matplotlib.lines import Line2D

    methods = _methods(report)
    ref = report.get("reference")
    chance = report.get("chance") or {}
    xkeys, xscale = (("privacy", "worst", "cmap"), 100) if x == "worst_cmap" else (("privacy", "normalized_leakage"), 1)
    fig = _figure(10, 6)
    fig.subplots_adjust(left=0.08, right=0.69, top=0.92, bottom=0.10)
    ax = fig.add_subplot()
    labels, bars, missing, drawn = [], [], [], set()

    def draw(name: str, m: dict, size: float, alpha: float):
        fx, fy = _get(m, *xkeys), _get(m, "utility", "video_top1")
        if _value(fx) is None or _value(fy) is None:
            missing.append(name)
            return None
        color = FAMILY_COLORS.get(m.get("family"), "tab:purple")
        marker = "*" if name == ref else ("s" if m.get("input") == "pixels" else "o")
        px, py = fx["value"] * xscale, fy["value"] * 100
        (xlo,), (xhi,) = _ci([fx], xscale)
        (ylo,), (yhi,) = _ci([fy], 100)
        ax.errorbar([px], [py], xerr=[[xlo], [xhi]], yerr=[[ylo], [yhi]], fmt=marker, color=color,
                    markersize=size * (1.8 if name == ref else 1), capsize=2, elinewidth=0.9, alpha=alpha,
                    markeredgecolor="black" if name == ref else color, zorder=3)  # fmt: skip
        bars.extend([(px - xlo, py, px + xhi, py), (px, py - ylo, px, py + yhi)])
        drawn.add(name)
        return px, py, color

    for name, m in methods.items():
        if not m.get("sweep") and (p := draw(name, m, 7, 1.0)):
            labels.append((p[0], p[1], name, "black", 8))
    handles, styles = [], {}
    for (family, param), group in _sweeps(report).items():
        color = FAMILY_COLORS.get(family, "tab:purple")
        style = ["-", "-.", ":"][styles.get(family, 0) % 3]  # two sweeps of one family: same colour, other line
        styles[family] = styles.get(family, 0) + 1
        pts = []
        for n, m in group:
            if p := draw(n, m, 5, 0.55):
                pts.append((p, m["sweep"]["value"]))
        if pts:
            ax.plot([p[0] for p, _ in pts], [p[1] for p, _ in pts], style, color=color, alpha=0.7, lw=1.2, zorder=2)
            labels += [(p[0], p[1], f"{v:g}", color, 7) for p, v in pts]
            label = f"{family} sweep: {PARAM_LABELS.get(param, param)}"
            handles.append(Line2D([], [], ls=style, marker="o", ms=4, color=color, label=label))

    # Limits follow the data; a chance line is drawn where it is near the data, else named at the edge: top-1 far
    # above chance is the normal case, and stretching the axis to chance would squash the differences that matter.
    cx = (chance.get("cmap") * 100 if chance.get("cmap") is not None else None) if x == "worst_cmap" else 0.0
    cy = chance.get("top1") * 100 if chance.get("top1") is not None else None
    off_scale, chance_drawn = [], False
    for axis, c, what in ((0, cx, "x"), (1, cy, "y")):
        vals = [v for b in bars for v in (b[axis], b[axis + 2])] or [0.0, 1.0]
        lo, hi = min(vals), max(vals)
        span = (hi - lo) or 1.0
        if c is not None and lo - 0.6 * span <= c <= hi + 0.6 * span:
            (ax.axvline if what == "x" else ax.axhline)(c, ls="--", color="0.45", lw=1, zorder=1)
            chance_drawn = True
            lo, hi = min(lo, c), max(hi, c)
        elif c is not None:
            name = {"y": f"chance top-1 {c:.1f}%", "x": f"chance cMAP {c:.1f}%" if x == "worst_cmap" else "chance (0)"}
            side = {("x", True): "left", ("x", False): "right", ("y", True): "below", ("y", False): "above"}
            off_scale.append(f"{name[what]}: off the axis ({side[what, c < lo]})")
        pad = (hi - lo) * 0.07 or 1.0
        (ax.set_xlim if what == "x" else ax.set_ylim)(lo - pad, hi + pad * (2.5 if what == "y" else 1))

    xlabel = ("worst-case attack cMAP (%)" if x == "worst_cmap" else
              f"normalized leakage (0 = chance, 1 = {ref})")  # fmt: skip
    ax.set_xlabel(xlabel + "  → less private")
    ax.set_ylabel("video action top-1 (%)  → more useful")
    ax.set_title(PLOT_TITLES["tradeoff" if x == "worst_cmap" else "tradeoff_leakage"], fontsize=11)
    ax.grid(alpha=0.25)
    # headroom on top (limits above) keeps the arrow clear of the points
    better = ax.annotate("better", xy=(0.015, 0.985), xycoords="axes fraction", xytext=(0.09, 0.89),
                         textcoords="axes fraction", ha="left", va="top", fontsize=9, color="0.25",
                         arrowprops={"arrowstyle": "->", "color": "0.25", "lw": 1.2})  # fmt: skip
    fig.canvas.draw()
    _place_labels(ax, labels, [better.get_window_extent(fig.canvas.get_renderer())], bars)

    present = {methods[n].get("family") for n in drawn if n != ref}  # the reference has its own entry
    legend = [Line2D([], [], ls="", marker="o", color=c, label=f) for f, c in FAMILY_COLORS.items() if f in present]
    legend.append(Line2D([], [], ls="", marker="*", ms=11, color="black", label=f"reference ({ref})"))
    if "pixels" in {methods[n].get("input") for n in drawn}:
        legend += [
            Line2D([], [], ls="", marker="o", mfc="none", color="0.3", label="features"),
            Line2D([], [], ls="", marker="s", mfc="none", color="0.3", label="pixels (+ video-model attacker)"),
        ]
    legend += handles
    if chance_drawn:
        legend.append(Line2D([], [], ls="--", color="0.45", label="chance (random guess)"))
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    notes = ["bars: 95% bootstrap CI", *(["sweep points labelled by value"] if handles else []), *off_scale]
    if missing:
        notes.append("not measured, not drawn: " + ", ".join(missing))
    fig.text(0.71, 0.10, "\n".join(notes), fontsize=7, color="0.35", va="bottom", wrap=True)
    _save(fig, path)


def plot_attackers(report: dict, path: str, methods: Iterable[str] | None = None) -> None:
    """Grouped bars: per method (by default the non-sweep ones), the cMAP of each attacker with CI whiskers; the
    worst case outlined in black; the chance floor as a dashed line."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = _rows(report, methods)
    handles = []  # proxies: a bar container's own handle would carry the first bar's worst-case outline
    attackers = _attackers(m for _, m in rows)
    chance = _get(report, "chance", "cmap")
    fig = _figure(max(7.0, 1.25 * len(rows) + 3.5), 5)
    fig.subplots_adjust(left=0.08, right=0.78, top=0.90, bottom=0.16)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(attackers))
    top = [chance * 100 if chance is not None else 0.0]
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for j, a in enumerate(attackers):
        xs, figs, edges = [], [], []
        for i, (_, m) in enumerate(rows):
            f = _get(m, "privacy", "attackers", a, "cmap")
            if _value(f) is not None:
                xs.append(i - 0.4 + width * (j + 0.5))
                figs.append(f)
                edges.append(a == _get(m, "privacy", "worst", "attacker"))
        if not xs:
            continue
        ys = [f["value"] * 100 for f in figs]
        top += [y + e for y, e in zip(ys, _ci(figs, 100)[1], strict=True)]
        ax.bar(xs, ys, width * 0.92, yerr=_ci(figs, 100), capsize=2, color=colors[j % len(colors)],
               edgecolor=["black" if e else "none" for e in edges], linewidth=[1.6 if e else 0 for e in edges],
               error_kw={"elinewidth": 0.9, "ecolor": "0.2"}, zorder=2)  # fmt: skip
        handles.append(Patch(facecolor=colors[j % len(colors)], label=ATTACKER_LABELS.get(a, a)))
    for i, (_, m) in enumerate(rows):
        if all(_value(_get(m, "privacy", "attackers", a, "cmap")) is None for a in attackers):
            ax.text(i, 2, "not measured", ha="center", va="bottom", fontsize=8, color="0.4", rotation=90)
    if chance is not None:
        ax.axhline(chance * 100, ls="--", color="0.35", lw=1.1, zorder=3)
        handles.append(Line2D([], [], ls="--", color="0.35", label="chance (random attacker)"))
    ax.set_xticks(range(len(rows)), [f"{n}\n({m.get('input', '?')})" for n, m in rows], fontsize=8,
                  rotation=20 if len(rows) > 6 else 0)  # fmt: skip
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylim(0, min(105.0, max(top) * 1.12) or 1.0)
    ax.set_ylabel("attack cMAP (%)  → less private")
    ax.set_title(PLOT_TITLES["attackers"] + " (bars: 95% CI)", fontsize=11)
    ax.grid(axis="y", alpha=0.25, zorder=0)
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=1.6, label="worst case of the method"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _save(fig, path)


def write_plots(report: dict, out_dir: str) -> dict[str, str]:
    """tradeoff.png, tradeoff_leakage.png and attackers.png in `out_dir` (local or fsspec URI); {name: file name}."""
    _methods(report)
    base = out_dir.rstrip("/")
    plot_tradeoff(report, f"{base}/{PLOT_FILES['tradeoff']}", x="worst_cmap")
    plot_tradeoff(report, f"{base}/{PLOT_FILES['tradeoff_leakage']}", x="normalized_leakage")
    plot_attackers(report, f"{base}/{PLOT_FILES['attackers']}")
    return dict(PLOT_FILES)
