"""The evaluation job: anonymize outputs (features, and pixels when kept) + corpus labels -> report.json, report.md and
plots. Pure driver-side work (the attackers are small); see anon_core.evaluation for what each figure means.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from anon_core.evaluation import (
    Evaluation,
    evaluate_bias,
    evaluate_pixels,
    evaluate_split,
    merge_pixels,
    paired_leakage,
    paired_top1_drop,
    task_probe,
)

from ..modes import MODES, PRUNING_FAMILIES
from ..train.schema import LabelSchema
from .load import corpus_labels, feature_splits, output_config, pixel_splits, probe_classes


@dataclass
class Sweep:
    param: str  # lambda_priv | keep_ratio | w_b
    value: float


@dataclass
class EvalMethod:
    name: str
    output: str  # an `anonvid anonymize --out` folder or URI
    sweep: Sweep | None = None
    bias_output: str | None = None  # the same method's output on the --bias-protocol corpus


@dataclass
class EvaluateConfig:
    labels: str
    methods: list[EvalMethod]
    out: str
    reference: str = "raw"  # normalized leakage and the bias reduction are measured against this method
    bias_labels: str | None = None
    bias_group: str = "gender_proxy"
    label_schema: LabelSchema = field(default_factory=LabelSchema)  # which manifest columns hold what
    seed: int = 0
    epochs: int = 60  # most epochs of a feature attacker or probe; the count is chosen on a training-split hold-out
    # Seeded fits (each its own hold-out, initialisation and batch order) whose test probabilities make one feature
    # attacker or probe: a single fit's cMAP moves by several points with its seed, which the CIs do not show.
    attacker_seeds: int = 5
    pixel_epochs: int = 12  # the video-model attacker's schedule, scored after its last epoch
    n_boot: int = 500
    # Manifest columns for utility probes on tasks no model was trained for (the latent-consistency claim): a numeric
    # column with more than two values is split at its training-split median, anything else is one class per value.
    probes: list[str] = field(default_factory=list)
    command: str = ""

    def validate(self) -> list[str]:
        errors = []
        names = [m.name for m in self.methods]
        if not names:
            errors.append("methods: give at least one NAME=OUTPUT")
        if len(set(names)) != len(names):
            errors.append(f"methods: names must be unique, got {names}")
        if self.reference not in names:
            errors.append(f"reference {self.reference!r} is not one of the methods {names}: add it (e.g. a raw run)")
        if any(m.bias_output for m in self.methods) and not self.bias_labels:
            errors.append("bias outputs given without bias_labels (the --bias-protocol corpus's labels.parquet)")
        if self.epochs < 1 or self.pixel_epochs < 1 or self.n_boot < 10:
            errors.append("epochs and pixel_epochs must be >= 1 and n_boot >= 10")
        if isinstance(self.attacker_seeds, bool) or not isinstance(self.attacker_seeds, int) or self.attacker_seeds < 1:
            errors.append(f"attacker_seeds={self.attacker_seeds!r}: need an integer >= 1 (fits averaged into one "
                          "attacker; 1 is the fastest and noisiest)")  # fmt: skip
        return errors


def preflight(cfg: EvaluateConfig) -> list[dict]:
    """Everything the evaluation reads, checked before any attacker trains (EvalInputError names the fix): the
    labels (through the schema, with the probe columns), and each method's output (an anonymize output with
    committed rows; its bias output too). Returns one line of facts per method: what --dry-run prints."""
    from .load import _committed_table

    corpus_labels(cfg.labels, cfg.label_schema, extra=tuple(cfg.probes))
    if cfg.bias_labels:
        corpus_labels(cfg.bias_labels, cfg.label_schema, extra=(cfg.bias_group,))
    plan = []
    for m in cfg.methods:
        held = output_config(m.output)
        rows = _committed_table(m.output, ["video_id", "clip_index"])
        if m.bias_output:
            _committed_table(m.bias_output, ["video_id", "clip_index"])
        plan.append({"method": m.name, "output": m.output, "mode": held.get("mode"), "rows": rows.num_rows,
                     "videos": len(set(rows.column("video_id").to_pylist())),
                     "pixels": bool(held.get("keep_pixels")), "sweep": asdict(m.sweep) if m.sweep else None,
                     "bias_output": m.bias_output})  # fmt: skip
    return plan


def run_evaluation(cfg: EvaluateConfig, log=print) -> dict:
    """Evaluate every method, write OUT/report.json, report.md and the PNG plots; returns the report."""
    from .report import check_targets, write_plots

    t_start = time.monotonic()
    labels, attributes = corpus_labels(cfg.labels, cfg.label_schema, extra=tuple(cfg.probes))
    tasks = {c: probe_classes(labels, c) for c in cfg.probes}  # {column: (classes by uri, class names)}
    num_actions = int(labels["action_id"].max()) + 1
    kw = {"attributes": attributes, "num_actions": num_actions, "seed": cfg.seed, "n_boot": cfg.n_boot}
    evals: dict[str, Evaluation] = {}
    methods, timings = {}, {}
    for m in cfg.methods:
        t0 = time.monotonic()
        held = output_config(m.output)
        splits = feature_splits(m.output, labels, attributes)
        ev = evaluate_split(splits["train"], splits["test"], epochs=cfg.epochs, seeds=cfg.attacker_seeds, **kw)
        ev.figures["utility"]["probes"] = {
            c: {**task_probe(splits["train"], splits["test"], by_uri.loc[splits["train"].video].to_numpy(),
                             by_uri.loc[splits["test"].video].to_numpy(), seed=cfg.seed, epochs=cfg.epochs,
                             n_boot=cfg.n_boot, seeds=cfg.attacker_seeds), "classes": names}
            for c, (by_uri, names) in tasks.items()
        }  # fmt: skip
        entry_input = "features"
        if held.get("keep_pixels"):
            px = pixel_splits(m.output, labels, attributes)
            ev = merge_pixels(ev, evaluate_pixels(px["train"], px["test"], epochs=cfg.pixel_epochs, **kw))
            entry_input = "features+pixels"
        evals[m.name] = ev
        family = MODES[held["mode"]].family if held.get("mode") in MODES else "baseline"
        methods[m.name] = {"family": family, "input": entry_input, "output": m.output,
                           "sweep": asdict(m.sweep) if m.sweep else None, **ev.figures, "bias": None}  # fmt: skip
        timings[f"evaluate {m.name}"] = time.monotonic() - t0
        w = ev.figures["privacy"]["worst"]
        log(f"  {m.name}: video top-1 {ev.figures['utility']['video_top1']['value']:.3f}, worst cMAP "
            f"{w['cmap']['value']:.3f} ({w['attacker']}) in {timings[f'evaluate {m.name}']:.0f} s")  # fmt: skip
    ref = evals[cfg.reference]
    for name, ev in evals.items():
        methods[name]["privacy"]["normalized_leakage"] = paired_leakage(ev, ref, n_boot=cfg.n_boot, seed=cfg.seed)
        methods[name]["utility"]["video_top1_drop"] = paired_top1_drop(ev, ref, n_boot=cfg.n_boot, seed=cfg.seed)
    if cfg.bias_labels:
        t0 = time.monotonic()
        bias_table, _ = corpus_labels(cfg.bias_labels, cfg.label_schema, extra=(cfg.bias_group,))
        for m in cfg.methods:
            if m.bias_output:
                b = feature_splits(m.bias_output, bias_table, attributes, group=cfg.bias_group)
                methods[m.name]["bias"] = evaluate_bias(
                    b["train"], b["test"], num_actions=num_actions, seed=cfg.seed, epochs=cfg.epochs, n_boot=cfg.n_boot,
                    seeds=cfg.attacker_seeds,
                )
        ref_bias = methods[cfg.reference]["bias"]
        for entry in methods.values():
            if entry["bias"] and entry["bias"]["gap"] and ref_bias and ref_bias["gap"] and ref_bias["gap"]["value"] > 0:
                entry["bias"]["reduction_vs_reference"] = 1 - entry["bias"]["gap"]["value"] / ref_bias["gap"]["value"]
            elif entry["bias"]:
                entry["bias"]["reduction_vs_reference"] = None
        timings["bias protocol"] = time.monotonic() - t0
    from anon_core.metrics import chance_cmap

    test = labels[labels["split"] == "test"]
    report = {
        "format": "anonvid-report/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": cfg.command,
        "labels": cfg.labels,
        "reference": cfg.reference,
        "chance": {
            "cmap": chance_cmap(test[attributes].to_numpy()),
            "top1": float(test["action_id"].value_counts(normalize=True).max()),  # the majority-class guess
            "rank1": next((e["reid"]["chance"] for e in methods.values() if e.get("reid")), None),
        },
        "attributes": attributes,
        "methods": methods,
        "config": asdict(cfg),
    }
    report["targets"] = check_targets(report)
    t0 = time.monotonic()
    plots = write_plots(report, cfg.out)
    plots.update(_copy_overlays(cfg, methods))
    timings["report and plots"] = time.monotonic() - t0
    timings["total"] = time.monotonic() - t_start
    report["timings"], report["plots"] = timings, plots
    write_report(report, cfg.out)
    return report


def write_report(report: dict, out: str) -> None:
    """OUT/report.json and OUT/report.md (linking the plots named in report["plots"]); OUT is a local folder or any
    fsspec URI, as every file of the report is (report._write_bytes)."""
    from .report import _write_bytes, write_markdown

    base = out.rstrip("/")
    _write_bytes(f"{base}/report.json", json.dumps(report, indent=2, default=float).encode("utf-8"))
    write_markdown(report, f"{base}/report.md", report.get("plots"))


def _copy_overlays(cfg: EvaluateConfig, methods: dict) -> dict[str, str]:
    """The pruned-tubelet contact sheets that `anonymize --preview N` wrote beside prune outputs."""
    import fsspec

    from .report import _write_bytes

    found = {}
    for m in cfg.methods:
        if methods[m.name]["family"] not in PRUNING_FAMILIES or m.sweep:
            continue
        src = f"{m.output.rstrip('/')}/preview/contact_sheet.png"
        fs, path = fsspec.core.url_to_fs(src)
        if fs.exists(path):
            name = f"pruned_tubelets_{m.name.replace('+', '_')}.png"
            _write_bytes(f"{cfg.out.rstrip('/')}/{name}", fs.cat_file(path))  # a contact sheet is a few hundred kB
            found[f"pruned tubelets ({m.name})"] = name
    return found

