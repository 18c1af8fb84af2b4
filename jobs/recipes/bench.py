"""The throughput recipe (`anonvid bench`): every stage and the whole pipeline against its limit, in one run.

    1. decode: decord and PyAV clip sampling vs `ffmpeg -threads 1 -f null` on the same files (jobs/bench/decode.py)
    2. models: encoder, pruner (default keep, keep 0.5) and AAM clips/s and FLOP/s vs measured matmul FLOP/s
       (jobs/bench/models.py)
    3. pipeline: `anonymize` end to end vs the stage bound and a plain loop, at 1x 2x 4x (jobs/bench/pipeline.py)
    4. targets, bench.json, the tables (and docs/benchmarks.md with --docs)

Every figure is the median of `repeats` runs with its spread; each ratio is taken within this run.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal


@dataclass
class BenchConfig:
    out: str = "bench_perf"
    device: Literal["cpu", "cuda"] = "cpu"
    tiny: bool = False  # a smoke run: small inputs, 2 repeats, the pipeline once (what the tests run)
    repeats: int = 5  # decode and model figures
    pipeline_repeats: int = 3  # each pipeline repeat runs the job at 1x, 2x and 4x plus the plain loop: minutes
    pipeline_videos: int = 64  # the 1x corpus; 2x and 4x are its first 2x and 4x videos
    video_frames: int = 160  # frames per synthetic video (6.4 s at 25 fps: 5 clips at the default ClipSpec)
    sections: list[str] = field(default_factory=lambda: ["decode", "models", "pipeline"])
    docs: str | None = None  # write the tables into this markdown file (docs/benchmarks.md), this device's section

    def validate(self) -> list[str]:
        errors = []
        unknown = sorted(set(self.sections) - {"decode", "models", "pipeline"})
        if unknown:
            errors.append(f"sections: {unknown} unknown; choose from decode, models, pipeline")
        if min(self.repeats, self.pipeline_repeats) < 1:
            errors.append(f"repeats and pipeline_repeats must be >= 1, got {self.repeats}, {self.pipeline_repeats}")
        if self.pipeline_videos < 1 or self.video_frames < 32:
            errors.append(f"need pipeline_videos >= 1 and video_frames >= 32 (one clip), got {self.pipeline_videos}, "
                          f"{self.video_frames}")  # fmt: skip
        return errors


def machine(device: str) -> dict:
    import ray
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__, "device": device}  # fmt: skip
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def targets(result: dict) -> list[dict]:
    """The issue's targets, each met / missed / not measured, from the figures of this run."""
    out = []

    def add(name, value, goal, ok):
        out.append({"target": name, "value": value, "goal": goal, "met": None if value is None else bool(ok)})

    dec = result.get("decode")
    if dec:
        # the goals bind the default backend (the one the job decodes with); the others are printed beside it
        default = dec["settings"]["backend"]  # what jobs/bench/decode.py measured as the job's backend
        for size, goal in ((720, 0.9), (112, 0.7)):
            rows = [r["vs_limit"] for r in dec["rows"] if r["backend"] == default and r["size"] == size]
            if rows:
                add(f"decode ({default}, the default) vs ffmpeg -threads 1 at {size}p, worst GOP", min(rows),
                    f">= {goal}", min(rows) >= goal)  # fmt: skip
        mem = dec.get("memory", {}).get("by_backend", {}).get(default)
        if mem:
            add(f"decode ({default}) peak memory, 4x longer video / video", mem["ratio"], "<= 1.1 (flat)",
                mem["ratio"] <= 1.1)  # fmt: skip
    mod = result.get("models")
    if mod:
        goal = 0.4 if mod["device"] == "cuda" else 0.5
        worst = min(r["fraction_of_peak"] for r in mod["rows"])
        add("model stages, fraction of matmul peak (worst)", worst, f">= {goal}", worst >= goal)
    pipe = result.get("pipeline")
    if pipe:
        add("pipeline / stage bound", pipe["pipeline_vs_bound"], "<= 1.2", pipe["pipeline_vs_bound"] <= 1.2)
        add("plain loop / pipeline, largest size", pipe["loop_vs_pipeline"], ">= 1.0", pipe["loop_vs_pipeline"] >= 1.0)
    return out


def run_bench(cfg: BenchConfig, log=print, command: str = "anonvid bench") -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    repeats = 2 if cfg.tiny else cfg.repeats
    pipeline_repeats = 1 if cfg.tiny else cfg.pipeline_repeats
    result: dict = {"format": "anonvid-bench/1", "config": asdict(cfg), "machine": machine(cfg.device),
                    "date": datetime.now(UTC).isoformat(timespec="seconds"), "timings": {},
                    "repeats": {"figures": repeats, "pipeline": pipeline_repeats}}  # fmt: skip
    if "decode" in cfg.sections:  # 1
        from jobs.bench.decode import decode_table, run_decode

        t0 = time.perf_counter()
        result["decode"] = run_decode(out / "decode", tiny=cfg.tiny, repeats=repeats)
        result["timings"]["decode"] = time.perf_counter() - t0
        log(decode_table(result["decode"]))
    if "models" in cfg.sections:  # 2
        from jobs.bench.models import models_table, run_models

        t0 = time.perf_counter()
        result["models"] = run_models(device=cfg.device, tiny=cfg.tiny, repeats=repeats)
        result["timings"]["models"] = time.perf_counter() - t0
        log(models_table(result["models"]))
    if "pipeline" in cfg.sections:  # 3
        from jobs.bench.pipeline import corpus_sizes, make_corpus, pipeline_table, run_pipeline_bench
        from pipelines.anonymize import connect

        t0 = time.perf_counter()
        sizes, frames = corpus_sizes(cfg.tiny, cfg.pipeline_videos, cfg.video_frames)
        make_corpus(out / "pipeline", sizes[-1], frames)  # before Ray: it renders in a process pool
        result["timings"]["pipeline_corpus"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        connect(None)
        result["timings"]["ray_start"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        result["pipeline"] = run_pipeline_bench(out / "pipeline", tiny=cfg.tiny, repeats=pipeline_repeats,
                                                videos=cfg.pipeline_videos, frames=cfg.video_frames,
                                                device=cfg.device)  # fmt: skip
        result["timings"]["pipeline"] = time.perf_counter() - t0
        log(pipeline_table(result["pipeline"]))
    result["targets"] = targets(result)  # 4
    (out / "bench.json").write_text(json.dumps(result, indent=2, default=str))
    if cfg.docs:
        from jobs.bench.report import write_docs

        log(f"wrote the {write_docs(cfg.docs, result, command)} section of {cfg.docs}")
    return result
