"""The anonymize job end to end, against its stage bound and a plain loop, at 1x, 2x and 4x the corpus size.

    stage costs   each stage alone, in one process, one thread (the pipeline's own stage classes on plain dicts):
                  CPU-seconds of decode, prune, encode and AAM for the corpus
    stage bound   those seconds spread perfectly over the hardware: sum(stage costs) / cores on CPU; with --device
                  cuda the model stages run on the GPU (bf16 autocast, as the job runs them) and the bound is
                  max(decode CPU-seconds / cores, model GPU-seconds), the three model stages sharing one GPU
    plain loop    the same work in one process without Ray: decode a video, prune, encode, AAM, write, next video
                  (torch uses every core inside each model call; nothing overlaps decode with the models)
    pipeline      `anonvid anonymize` (mode prune+aam) on a Ray already started; a fresh output each run

Ratios, each from one run: pipeline / stage bound (target <= 1.2) and plain loop / pipeline (target >= 1.0 at the
largest size). Scaling: the pipeline's seconds at 1x, 2x, 4x fitted to t = a + b n; `a` is the fixed cost of a run
(actor start-up, model loading, the first and last batches), `n*` the size from which it is under 10% of a run.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .stats import summary

MODE = "prune+aam"


def make_corpus(work: Path, videos: int, frames: int, seed: int = 0) -> Path:
    """The synthetic corpus of the largest size; smaller sizes are manifests of its first videos. Best called before
    Ray starts: it then renders in a process pool (forking once Ray's gRPC threads run can hang; then it does not)."""
    import sys

    from anon_core.synthetic import CorpusConfig, generate_corpus

    root = work / f"corpus_{videos}x{frames}"
    ray_started = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    workers = 1 if ray_started else os.cpu_count() or 1
    if not (root / "labels.parquet").exists():
        generate_corpus(root, CorpusConfig(videos=videos, frames=frames, seed=seed), workers=workers)
    return root


def corpus_sizes(tiny: bool, videos: int, frames: int) -> tuple[list[int], int]:
    """(the 1x, 2x and 4x sizes in videos, frames per video)."""
    return ([2, 4, 8], 64) if tiny else ([videos, 2 * videos, 4 * videos], frames)


def manifest(corpus: Path, n: int, work: Path) -> str:
    """A manifest of the corpus's first n videos (absolute URIs, so it may live anywhere)."""
    labels = pd.read_parquet(corpus / "labels.parquet")
    labels = labels.sort_values("path").head(n).reset_index(drop=True)
    labels["uri"] = [str((corpus / p).resolve()) for p in labels["path"]]
    path = work / f"manifest_{n}.parquet"
    labels.drop(columns=["path"]).to_parquet(path)
    return str(path)


def _video_files(manifest_path: str) -> list[str]:
    table = pd.read_parquet(manifest_path)
    return list(table["uri"])


def _stages(models: dict, threads: int, batch_size: int, gpus: float = 0.0):
    from pipelines.stages import ApplyAam, EncodeClips, PruneClips
    from pipelines.stages.workers import ModelResources

    # the stages set torch's threads from cpus_per_actor, and run on CUDA when given a GPU share
    res = ModelResources(batch_size=batch_size, cpus_per_actor=threads, gpus_per_actor=gpus)
    return (PruneClips(models["pruner"], resources=res), EncodeClips(models["encoder"], resources=res),
            ApplyAam(models["aam"], resources=res))  # fmt: skip


def _clip_batch(clips: np.ndarray) -> dict[str, np.ndarray]:
    from pipelines.stages.rows import error_fields

    n = len(clips)
    return {"video_id": np.arange(n).astype(str).astype(object), "kind": np.full(n, "clip", dtype=object),
            **error_fields(n), "clip": clips}  # fmt: skip


def _decode(path: str, settings: dict) -> np.ndarray:
    """Every clip of the video, decoded as the pipeline's decode stage does (its spec, backend and segments)."""
    from anon_core.video.segments import decode_segment

    from .decode import segment_ranges

    spec, backend = settings["spec"], settings["backend"]
    ranges = segment_ranges(path, spec, settings["clips_per_task"])
    return np.concatenate([decode_segment(path, spec, r, backend)["clip"] for r in ranges])


def _models_per_video(stages, clips: np.ndarray, batch_size: int) -> tuple[np.ndarray, dict]:
    """prune -> encode -> AAM for one video's clips; seconds per stage."""
    from pipelines.stages.rows import VideoRecord

    prune, encode, aam = stages
    t = {}
    t0 = time.perf_counter()
    pruned = [prune(_clip_batch(clips[i : i + batch_size])) for i in range(0, len(clips), batch_size)]
    t["prune"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats = np.concatenate([encode(p)["features"] for p in pruned])
    t["encode"] = time.perf_counter() - t0
    payload = VideoRecord("", clips={"features": feats}).pack()
    t0 = time.perf_counter()
    out = aam({"video_id": np.array(["v"]), "status": np.array(["ok"], dtype=object),
               "payload": np.array([payload], dtype=object)})  # fmt: skip
    t["aam"] = time.perf_counter() - t0
    return out, t


def stage_costs(manifest_path: str, models: dict, batch_size: int = 16, gpus: float = 0.0) -> dict:
    """CPU-seconds of each stage alone, one thread: what the pipeline must spend at least, on any number of cores.
    Measured on one manifest; every stage's work is per clip, so the caller scales it to other sizes by clips."""
    from .decode import pipeline_settings

    settings, stages = pipeline_settings(), _stages(models, 1, batch_size, gpus)
    seconds = {"decode": 0.0, "prune": 0.0, "encode": 0.0, "aam": 0.0}
    clips_total = 0
    for path in _video_files(manifest_path):
        t0 = time.perf_counter()
        clips = _decode(path, settings)
        seconds["decode"] += time.perf_counter() - t0
        clips_total += len(clips)
        _, t = _models_per_video(stages, clips, batch_size)
        for k, v in t.items():
            seconds[k] += v
    return {"seconds": seconds, "clips": clips_total}


def plain_loop(manifest_path: str, models: dict, out: Path, threads: int, batch_size: int = 16,
               gpus: float = 0.0) -> float:  # fmt: skip
    """The same work as the pipeline, one process, no Ray: what a user would write first. -> seconds."""
    from .decode import pipeline_settings

    settings, stages = pipeline_settings(), _stages(models, threads, batch_size, gpus)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for i, path in enumerate(_video_files(manifest_path)):
        clips = _decode(path, settings)
        result, _ = _models_per_video(stages, clips, batch_size)
        pq.write_table(pa.table({"video": [path], "rows": [len(clips)]}), out / f"part-{i:06d}.parquet")
        del result
    return time.perf_counter() - t0


def pipeline_once(manifest_path: str, models: dict, out: Path, actors: int, cpus_per_actor: float,
                  gpus_per_actor: float = 0.0) -> dict:  # fmt: skip
    from jobs.recipes.anonymize import run_anonymize
    from pipelines.anonymize import AnonymizeConfig
    from pipelines.stages.workers import ModelResources

    shutil.rmtree(out, ignore_errors=True)
    cfg = AnonymizeConfig(output=str(out), manifest=manifest_path, mode=MODE, encoder=models["encoder"],
                          pruner=models["pruner"], aam=models["aam"],
                          model=ModelResources(max_actors=actors, cpus_per_actor=cpus_per_actor,
                                               gpus_per_actor=gpus_per_actor))  # fmt: skip
    with open(os.devnull, "w") as quiet:
        t0 = time.perf_counter()
        summary_ = run_anonymize(cfg, log=quiet)
        seconds = time.perf_counter() - t0
    if not summary_["ok"]:
        raise RuntimeError(f"the anonymize run under test failed: {summary_.get('aborted') or summary_}")
    return {"seconds": seconds, "videos": summary_["videos_ok"], "clips": summary_["clips"]}


def stage_bound(costs: dict[str, float], cores: int, on_gpu: bool) -> float:
    """The least time the stages' work can take: on CPU every stage's single-thread seconds spread over the cores; with
    the model stages on one GPU, decode on the cores and the model stages one after another on the GPU, overlapped."""
    if not on_gpu:
        return sum(costs.values()) / cores
    return max(costs["decode"] / cores, sum(v for k, v in costs.items() if k != "decode"))


def fit_scaling(sizes: list[int], seconds: list[float]) -> dict:
    """Least squares t = a + b n; n* = the size from which the fixed cost a is under 10% of a run (a <= 0.1 t)."""
    b, a = np.polyfit(np.asarray(sizes, float), np.asarray(seconds, float), 1)
    linear_max_dev = max(abs(t - (a + b * n)) / t for n, t in zip(sizes, seconds, strict=True))
    n_star = 9 * a / b if b > 0 and a > 0 else 0.0
    return {"fixed_s": float(a), "per_video_s": float(b), "max_deviation_from_linear": float(linear_max_dev),
            "overhead_under_10pct_from_videos": float(n_star),
            "overhead_share": {str(n): float(max(a, 0) / t) for n, t in zip(sizes, seconds, strict=True)}}  # fmt: skip


def run_pipeline_bench(work: Path, *, tiny: bool, repeats: int, videos: int = 64, frames: int = 160,
                       cores: int | None = None, device: str = "cpu") -> dict:  # fmt: skip
    """The pipeline section of `anonvid bench`. Make the corpus (make_corpus) before Ray starts, and connect Ray
    before calling this: the job's start-up is not a run's cost, each run's own actors and tasks are."""
    from anon_core.synthetic import ACTIONS, ATTRIBUTES
    from jobs.recipes.demo import untrained_models
    from pipelines.stages.workers import ModelResources

    cores = cores or os.cpu_count() or 1
    sizes, frames = corpus_sizes(tiny, videos, frames)
    work.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(work, sizes[-1], frames)
    models = untrained_models(work / "models", 0, len(ACTIONS), len(ATTRIBUTES))  # speed does not need training
    manifests = {n: manifest(corpus, n, work) for n in sizes}
    # the job's own defaults (two clip-model actors of half a CPU each; the AAM runs in the gather actor): model
    # actors holding a whole CPU each would leave decode no CPU on a 2-core machine
    actors, cpus = ModelResources().max_actors, ModelResources().cpus_per_actor
    gpus = 0.33 if device == "cuda" else 0.0  # the three model stages share one GPU, as a one-GPU node runs them

    runs: dict[int, list[float]] = {n: [] for n in sizes}
    clips: dict[int, int] = {}
    for _ in range(repeats):  # sizes interleaved round by round
        for n in sizes:
            r = pipeline_once(manifests[n], models, work / f"out_{n}", actors, cpus, gpus)
            runs[n].append(r["seconds"])
            clips[n] = r["clips"]
    largest = sizes[-1]
    import torch

    threads = torch.get_num_threads()  # the in-process stages set torch's threads (ModelRunner): put them back after
    try:
        costs = stage_costs(manifests[sizes[0]], models, gpus=gpus)  # per-clip work at 1x, scaled to the largest size
        loop = summary([plain_loop(manifests[largest], models, work / "loop_out", cores, gpus=gpus)
                        for _ in range(repeats)])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    scale = clips[largest] / costs["clips"]
    largest_costs = {k: v * scale for k, v in costs["seconds"].items()}
    pipe = {n: summary(runs[n]) for n in sizes}
    bound_s = stage_bound(largest_costs, cores, on_gpu=gpus > 0)
    return {
        "mode": MODE,
        "cores": cores,
        "device": device,
        "gpus_per_actor": gpus,
        "sizes": sizes,
        "frames_per_video": frames,
        "clips": {str(n): clips[n] for n in sizes},
        "pipeline_s": {str(n): pipe[n] for n in sizes},
        "stage_costs_s": largest_costs,
        "stage_costs_measured_on_clips": costs["clips"],
        "stage_bound_s": bound_s,
        "plain_loop_s": loop,
        "pipeline_vs_bound": pipe[largest]["median"] / bound_s,
        "loop_vs_pipeline": loop["median"] / pipe[largest]["median"],
        "scaling": fit_scaling(sizes, [pipe[n]["median"] for n in sizes]),
        "actors_per_model_stage": actors,
        "cpus_per_actor": cpus,
    }


def pipeline_table(r: dict) -> str:
    rows = ["| videos | clips | pipeline s (median, spread) | clips/s | fixed cost share |", "|---|---|---|---|---|"]
    for n in r["sizes"]:
        p = r["pipeline_s"][str(n)]
        c = r["clips"][str(n)]
        share = r["scaling"]["overhead_share"][str(n)]
        rows.append(f"| {n} | {c} | {p['median']:.1f} ({p['spread']:.0%}) | {c / p['median']:.2f} | {share:.0%} |")
    loop = r["plain_loop_s"]
    rows.append(f"| plain loop, {r['sizes'][-1]} videos | {r['clips'][str(r['sizes'][-1])]} | {loop['median']:.1f} "
                f"({loop['spread']:.0%}) | {r['clips'][str(r['sizes'][-1])] / loop['median']:.2f} | |")  # fmt: skip
    s = r["scaling"]
    gpu = r.get("gpus_per_actor", 0) > 0
    rows += [
        "",
        f"stage costs ({'models on the GPU, ' if gpu else ''}1 thread, {r['sizes'][-1]} videos; measured on "
        f"{r['stage_costs_measured_on_clips']} clips, scaled by clips): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in r["stage_costs_s"].items())
        + f"; bound on {r['cores']} cores{' and one GPU' if gpu else ''} "
        f"{r['stage_bound_s']:.1f} s",
        f"pipeline / stage bound: {r['pipeline_vs_bound']:.2f} (target <= 1.2); plain loop / pipeline: "
        f"{r['loop_vs_pipeline']:.2f} (target >= 1.0)",
        f"scaling: t = {s['fixed_s']:.1f} s + {s['per_video_s']:.3f} s x videos (largest deviation from linear "
        f"{s['max_deviation_from_linear']:.0%}); the fixed cost is under 10% of a run from about "
        f"{s['overhead_under_10pct_from_videos']:.0f} videos",
    ]
    return "\n".join(rows)
