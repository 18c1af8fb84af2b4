"""The benchmark recipe: the whole privacy/utility protocol on a generated corpus, in one command. Reads top to bottom:

    1. generate the corpus and a --bias-protocol corpus (OUT/corpus, OUT/bias)
    2. train on Ray Train: the encoder (action pretraining), the pruner (2603.26336), the AAM (2511.08666), the AAM
       for prune+aam (on the features of the pruner's kept tubelets) and the AAMs of the L_B-weight sweep, on the
       corpus's train split
    3. anonymize every video with the real job: raw (the reference), prune, aam, prune+aam, the papers' pixel
       baselines (blur, downsample x2 / x4, blackening) and the sweep points (lambda_priv, keep ratio, w_b); pixel
       outputs keep a small copy of their pixels for the video-model attacker; the main methods also on the bias
       corpus
    4. evaluate (attackers trained on each output's train split, tested on its test split) -> OUT/report
    5. with readme=true, write the result table into README.md between the benchmark markers

Every step is resumable: finished trainings are reused, the anonymize job skips committed videos.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipelines.modes import METHOD_MODES, MODES

BEGIN, END = "<!-- benchmark:begin -->", "<!-- benchmark:end -->"
AAM_OF_MODE = {"prune+aam": "aam_pruned"}  # the AAM bundle each mode uses (the one trained on its features)


@dataclass
class BenchmarkConfig:
    out: str = "bench_out"
    videos: int = 1000
    bias_videos: int = 1000  # its test split (200 videos) measures a per-group accuracy gap of a few points
    seed: int = 0
    size: int = 112
    frames: int = 32
    # the corpus's drawing style, actions and attributes (anon_core.synthetic.STYLES): "blocks" runs the same recipe
    # on another style, to see that nothing in it is fitted to the default one
    style: str = "puppet"
    encoder_epochs: int = 40
    pruner_epochs: int = 20
    aam_epochs: int = 30
    batch_size: int = 8  # per training worker
    lr: float = 1e-3
    # The encoder recipe of docs/training.md §5: models see motion (each clip minus its temporal mean) through a
    # convolutional tubelet stem, which trains from scratch on a few hundred videos where plain RGB stays at chance.
    clip_size: int = 64  # the models' input side (clips are decoded at it); the corpus is rendered at `size`
    motion_input: bool = True  # encoder and pruner see each clip minus its temporal mean
    encoder_options: Any = field(default_factory=lambda: {
        "stem": "conv", "global_pool": "avg", "num_cls_tokens": 0, "fc_norm": True, "drop_path_rate": 0.1})
    pruner_options: Any = field(default_factory=lambda: {"stem": "conv", "drop_path_rate": 0.1})
    # the pruner is fine-tuned from the trained encoder (the paper fine-tunes a pretrained backbone), at a lower lr
    pruner_from_encoder: bool = True
    pruner_lr: float = 1e-4
    label_smoothing: float = 0.1  # encoder's action cross-entropy
    # the encoder's second half trains on random subsets of each clip's tubelets (keep share in [1 - tubelet_drop, 1]),
    # so it reads what the pruner keeps (prune mode feeds it only the kept tubelets) as well as whole clips
    tubelet_drop: float = 0.5
    tubelet_drop_start: float = 0.5
    grad_clip: float = 1.0  # encoder and pruner; 0: off
    num_workers: int = 2
    keep_pixels: int = 56
    sweep_lambda_priv: list[float] = field(default_factory=lambda: [0.0, 3.0])
    sweep_keep_ratio: list[float] = field(default_factory=lambda: [0.25, 0.5])
    sweep_w_b: list[float] = field(default_factory=lambda: [0.3, 3.0])
    baselines: list[str] = field(default_factory=lambda: ["blur", "down2", "down4", "blacken"])
    bias_methods: list[str] = field(default_factory=lambda: ["raw", "prune", "aam", "prune+aam"])  # on the bias corpus
    # utility probes for labels no model is trained on: limb speed and the camera's horizontal pan (generator params)
    probes: list[str] = field(default_factory=lambda: ["gen_omega", "gen_bg_pan_x"])
    epochs: int = 60  # evaluation attackers and probes
    pixel_epochs: int = 8
    n_boot: int = 500
    readme: str | None = None  # a README.md to write the table into

    def validate(self) -> list[str]:
        errors = []
        from anon_core.synthetic import STYLES

        if self.style not in STYLES:
            errors.append(f"style={self.style!r}: choose one of {list(STYLES)}")
        if self.videos < 16 or self.bias_videos < 16:
            errors.append("videos and bias_videos must be >= 16 (both splits need every action)")
        if min(self.encoder_epochs, self.pruner_epochs, self.aam_epochs) < 1:
            errors.append("training epochs must be >= 1")
        enc, pru = dict(self.encoder_options or {}), dict(self.pruner_options or {})
        if self.pruner_from_encoder and enc.get("stem", "linear") != pru.get("stem", "linear"):
            errors.append(f"pruner_from_encoder: the encoder's stem ({enc.get('stem', 'linear')}) and the pruner's "
                          f"({pru.get('stem', 'linear')}) differ, so its weights do not fit; give both the same stem "
                          "in encoder_options and pruner_options, or set pruner_from_encoder=false")  # fmt: skip
        if self.pruner_lr <= 0:
            errors.append(f"pruner_lr must be > 0, got {self.pruner_lr}")
        unknown = sorted(set(self.bias_methods) - {"raw", *METHOD_MODES})
        if unknown:
            errors.append(f"bias_methods: {unknown} are not among raw, prune, aam, prune+aam")
        from pipelines.train.loop import TrainConfig

        for kind, options in (("encoder", self.encoder_options), ("pruner", self.pruner_options)):
            train = TrainConfig(kind=kind, manifest="-", storage_path="-", name="-", clip_size=self.clip_size,
                                model_options=options, label_smoothing=self.label_smoothing, grad_clip=self.grad_clip)
            errors += [f"{kind} training: {e}" for e in train.validate()]  # refused before anything is generated
        return errors


class Steps:
    """Times each step and logs it; the timings go into the report and the README."""

    def __init__(self, log) -> None:
        self.log, self.times = log, {}

    def __call__(self, title: str, fn, /, *args, **kwargs):
        self.log(f"[benchmark] {title} ...")
        t0 = time.monotonic()
        result = fn(*args, **kwargs)
        self.times[title] = round(time.monotonic() - t0, 1)
        self.log(f"[benchmark] {title}: {self.times[title]:.1f} s")
        return result


def _bundle_exists(uri: str) -> bool:
    """An exported bundle is there (a damaged one raises: the run would not reuse it either)."""
    from anon_core.models.bundle import read_bundle_config

    try:
        read_bundle_config(uri)
        return True
    except FileNotFoundError:
        return False


def _train(kind: str, cfg: BenchmarkConfig, out: str, **fields) -> str:
    """A Ray Train run whose exported bundle is reused when it exists (the run itself also resumes)."""
    if _bundle_exists(out):
        return out
    if kind == "aam":
        from pipelines.train.aam_loop import AamTrainConfig, run_aam_training

        tc = AamTrainConfig(storage_path=os.path.abspath(f"{cfg.out}/train"), out=out, seed=cfg.seed,
                            num_workers=cfg.num_workers, lr=1e-3, warm_start_epochs=2, clip_size=cfg.clip_size,
                            **fields)  # fmt: skip
        result = run_aam_training(tc)
    else:
        from pipelines.train.loop import TrainConfig, run_training

        tc = TrainConfig(kind=kind, storage_path=os.path.abspath(f"{cfg.out}/train"), out=out, seed=cfg.seed,
                         num_workers=cfg.num_workers, batch_size=cfg.batch_size, lr=fields.pop("lr", cfg.lr),
                         clip_size=cfg.clip_size,
                         motion_input=cfg.motion_input, grad_clip=cfg.grad_clip, **fields)  # fmt: skip
        result = run_training(tc)
    if result.error is not None or result.checkpoint is None:
        raise RuntimeError(f"training {kind} ({fields.get('name')}) failed: {result.error}")
    return out


def _anonymize(output: str, manifest: str, models: dict, mode: str, **kw) -> dict:
    from pipelines.anonymize import AnonymizeConfig

    from .anonymize import run_anonymize

    job = AnonymizeConfig(output=output, manifest=manifest, mode=mode, allow_raw=mode == "raw",
                          encoder=models["encoder"], pruner=models["pruner"] if MODES[mode].pruner else None,
                          aam=kw.pop("aam", models[AAM_OF_MODE.get(mode, "aam")]) if MODES[mode].aam else None,
                          **kw)  # fmt: skip
    with open(os.devnull, "w") as quiet:
        summary = run_anonymize(job, log=quiet)
    if summary.get("videos_failed"):
        raise RuntimeError(f"anonymize {output}: {summary['videos_failed']} videos failed; see {output}/errors")
    return summary


def run_benchmark(cfg: BenchmarkConfig, log=print) -> dict:
    from anon_core.synthetic import STYLES, CorpusConfig, generate_corpus
    from pipelines.anonymize import connect
    from pipelines.evaluate.run import EvalMethod, EvaluateConfig, run_evaluation, write_report
    from pipelines.train.schema import LabelSchema

    out, step, style = cfg.out, Steps(log), STYLES[cfg.style]
    corpus, bias = f"{out}/corpus", f"{out}/bias"
    step("1 generate corpus", generate_corpus, corpus, CorpusConfig(videos=cfg.videos, seed=cfg.seed,
         size=cfg.size, frames=cfg.frames, style=cfg.style))  # fmt: skip
    step("1 generate bias corpus", generate_corpus, bias, CorpusConfig(videos=cfg.bias_videos, seed=cfg.seed + 1,
         size=cfg.size, frames=cfg.frames, bias_protocol=True, style=cfg.style))  # fmt: skip
    labels, bias_labels = f"{corpus}/labels.parquet", f"{bias}/labels.parquet"
    schema = LabelSchema(attributes=list(style.attributes))
    connect()

    m = f"{out}/models"
    common = {"manifest": labels, "num_classes": len(style.actions), "label_schema": schema}
    models = {
        "encoder": step("2 train encoder", _train, "encoder", cfg, f"{m}/encoder", name="encoder",
                        builder="video_vit_tiny", epochs=cfg.encoder_epochs, model_options=cfg.encoder_options,
                        label_smoothing=cfg.label_smoothing, tubelet_drop=cfg.tubelet_drop,
                        tubelet_drop_start=cfg.tubelet_drop_start, **common),  # fmt: skip
    }
    start = {"init_from": f"{m}/encoder/model.safetensors", "lr": cfg.pruner_lr} if cfg.pruner_from_encoder else {}
    models["pruner"] = step("2 train pruner", _train, "pruner", cfg, f"{m}/pruner", name="pruner",
                            builder="pruner_tiny", epochs=cfg.pruner_epochs, num_privacy_classes=len(style.attributes),
                            model_options=cfg.pruner_options, **start, **common)  # fmt: skip
    aam = {"manifest": labels, "encoder": models["encoder"], "epochs": cfg.aam_epochs,
           "num_actions": len(style.actions), "label_schema": schema}  # fmt: skip
    models["aam"] = step("2 train aam", _train, "aam", cfg, f"{m}/aam", name="aam", **aam)
    # prune+aam's AAM learns the features prune+aam hands it: those of the pruner's kept tubelets
    models["aam_pruned"] = step("2 train aam for prune+aam", _train, "aam", cfg, f"{m}/aam_pruned", name="aam-pruned",
                                pruner=models["pruner"], **aam)  # fmt: skip
    sweep_aams = {w: step(f"2 train aam w_b={w}", _train, "aam", cfg, f"{m}/aam_wb{w}", name=f"aam-wb{w}", w_b=w,
                          **aam) for w in cfg.sweep_w_b}  # fmt: skip

    f = f"{out}/features"
    methods = []
    for name, kw, sweep in anonymize_runs(cfg, sweep_aams):
        folder = f"{f}/{_folder(name)}"
        step(f"3 anonymize {name}", _anonymize, folder, labels, models, clip_size=cfg.clip_size, **kw)
        methods.append(EvalMethod(name, folder, sweep))
        if sweep is None and name in cfg.bias_methods:
            bias_folder = f"{out}/bias_features/{os.path.basename(folder)}"
            step(f"3 anonymize {name} (bias corpus)", _anonymize, bias_folder, bias_labels, models, mode=kw["mode"],
                 clip_size=cfg.clip_size)  # fmt: skip
            methods[-1].bias_output = bias_folder
    step("3 tubelet overlays", _overlays, f"{f}/prune", labels, models, cfg.clip_size)

    ecfg = EvaluateConfig(labels=labels, methods=methods, out=f"{out}/report", bias_labels=bias_labels,
                          epochs=cfg.epochs, pixel_epochs=cfg.pixel_epochs, n_boot=cfg.n_boot, seed=cfg.seed,
                          probes=cfg.probes, label_schema=schema, bias_group=style.group,
                          command=_command(cfg))  # fmt: skip
    report = step("4 evaluate", run_evaluation, ecfg, log=log)
    report["timings"] = {**step.times, **{f"  {k}": v for k, v in report["timings"].items()}}
    report["benchmark"] = {"config": asdict(cfg), "machine": _machine(), "date": datetime.now(UTC).date().isoformat()}
    write_report(report, f"{out}/report")  # again, now with the benchmark's own steps and machine
    if cfg.readme:
        write_readme_table(cfg.readme, report, plot=f"{out}/report/tradeoff_leakage.png")
    return report


def anonymize_runs(cfg: BenchmarkConfig, sweep_aams: dict) -> list[tuple[str, dict, object]]:
    """(name, anonymize job fields, sweep point or None) of every anonymize run: the methods, the baselines and the
    sweep points. sweep_aams: the AAM bundle of each L_B weight."""
    from pipelines.evaluate.run import Sweep

    px = {"keep_pixels": cfg.keep_pixels}
    return [
        ("raw", {"mode": "raw", **px}, None),
        ("prune", {"mode": "prune", **px}, None),
        ("aam", {"mode": "aam"}, None),
        ("prune+aam", {"mode": "prune+aam"}, None),
        *[(b, {"mode": b, **px}, None) for b in cfg.baselines],
        # pruning's sweep points keep their pixels too: the masked video is released beside the features
        *[(f"prune lambda={v:g}", {"mode": "prune", "lambda_priv": v, **px}, Sweep("lambda_priv", v))
          for v in cfg.sweep_lambda_priv],
        *[(f"prune keep={v:g}", {"mode": "prune", "keep_ratio": v, **px}, Sweep("keep_ratio", v))
          for v in cfg.sweep_keep_ratio],
        *[(f"aam w_b={w:g}", {"mode": "aam", "aam": sweep_aams[w]}, Sweep("w_b", w)) for w in cfg.sweep_w_b],
    ]  # fmt: skip


def _folder(name: str) -> str:
    return name.replace(" ", "_").replace("=", "").replace("+", "_")


def dry_run(cfg: BenchmarkConfig, log=print) -> dict:
    """What a run would do, and what an earlier run into the same folder already did (it resumes): nothing is
    generated, trained or anonymized."""
    m = f"{cfg.out}/models"
    trainings = {"encoder": cfg.encoder_epochs, "pruner": cfg.pruner_epochs, "aam": cfg.aam_epochs,
                 "aam_pruned": cfg.aam_epochs, **{f"aam_wb{w}": cfg.aam_epochs for w in cfg.sweep_w_b}}  # fmt: skip
    trained = {name: _bundle_exists(f"{m}/{name}") for name in trainings}
    runs = [name for name, _, _ in anonymize_runs(cfg, {w: f"{m}/aam_wb{w}" for w in cfg.sweep_w_b})]
    done = {n: os.path.exists(f"{cfg.out}/features/{_folder(n)}/_output.json") for n in runs}
    log(f"corpus: {cfg.videos} {cfg.style} videos + {cfg.bias_videos} for the bias protocol, {cfg.size} px, "
        f"{cfg.frames} frames "
        f"(models see {cfg.clip_size} px clips{', motion only' if cfg.motion_input else ''})")  # fmt: skip
    for name, epochs in trainings.items():
        log(f"train {name}: {epochs} epochs" + (" (bundle exists: reused)" if trained[name] else ""))
    for name in runs:
        log(f"anonymize {name}" + (" (output exists: resumed)" if done[name] else ""))
    log(f"evaluate: {len(runs)} outputs, {cfg.epochs} attacker epochs, probes {cfg.probes} -> {cfg.out}/report")
    return {"trainings": trained, "anonymize": done}


def _command(cfg: BenchmarkConfig) -> str:
    """The command that reproduces this run: the output folder plus every field that differs from its default."""
    default = BenchmarkConfig()
    changed = [shlex.quote(f"{k}={json.dumps(v) if isinstance(v, list | dict) else v}")
               for k, v in asdict(cfg).items() if k not in ("out", "readme") and v != getattr(default, k)]  # fmt: skip
    return " ".join(["anonvid benchmark --out", cfg.out, *changed])


def _overlays(output: str, manifest: str, models: dict, clip_size: int) -> dict:
    """Example frames with the pruned tubelets overlaid: the anonymize job's own --preview on a few videos, beside
    the original frames (allow_raw: the corpus is generated, nobody is in it)."""
    from pipelines.anonymize import AnonymizeConfig, preflight
    from pipelines.preview import write_preview

    plan = preflight(AnonymizeConfig(output=output, manifest=manifest, mode="prune", encoder=models["encoder"],
                                     pruner=models["pruner"], clip_size=clip_size, allow_raw=True))  # fmt: skip
    return write_preview(plan, 6)


def _machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), {gpu}, {platform.system()}"


README_PLOT = "benchmark_tradeoff.png"  # beside the README, in its docs/ folder where it has one


def write_readme_table(readme: str, report: dict, plot: str | None = None) -> None:
    """Replace the text between the benchmark markers in README with this run's table and the command; with `plot`
    (the run's trade-off PNG), copy it beside the README (into its docs/ folder where there is one) and show it
    under the table, so the README shows the sweeps' curves of the same run, not one point per method."""
    import shutil

    from pipelines.evaluate.report import markdown_table

    image = ""
    if plot is not None and os.path.exists(plot):  # a run whose plotting failed still writes its table
        home = os.path.dirname(os.path.abspath(readme))
        rel = f"docs/{README_PLOT}" if os.path.isdir(os.path.join(home, "docs")) else README_PLOT
        shutil.copyfile(plot, os.path.join(home, rel))
        image = f"![Privacy-utility trade-off of this run: each method, baseline and sweep point, 95% CIs]({rel})\n\n"
    b = report["benchmark"]
    c = b["config"]
    met = sum(t["met"] is True for t in report["targets"])
    text = (
        f"{BEGIN}\nFrom `{report['command']}` on {b['date']}, {b['machine']}: {c['videos']} videos "
        f"({c['bias_videos']} more for the bias protocol), tiny models trained here; 95% bootstrap CIs over test "
        f"videos; worst case over the attacker pool. Chance: cMAP {100 * report['chance']['cmap']:.1f}, top-1 "
        f"{100 * report['chance']['top1']:.1f}. Targets met: {met} of {len(report['targets'])} (see "
        f"`{c['out']}/report/report.md`).\n\n{markdown_table(report)}\n{image}{END}"
    )
    with open(readme) as fh:
        body = fh.read()
    if BEGIN not in body or END not in body:
        raise ValueError(f"{readme} has no {BEGIN} ... {END} markers to write the table between")
    head, rest = body.split(BEGIN, 1)
    with open(readme, "w") as fh:
        fh.write(head + text + rest.split(END, 1)[1])
