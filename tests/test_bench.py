"""`anonvid bench --tiny` end to end (tests/conftest.py: tiny_bench): it runs, writes valid JSON with every section
and target, and writes its section of the docs. Figures are checked for shape and arithmetic, never for speed."""

from __future__ import annotations

import json
import math

from jobs.bench.report import write_docs
from jobs.recipes.bench import BenchConfig


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def test_bench_json_has_every_section_and_target(tiny_bench):
    out, result = tiny_bench
    assert result["format"] == "anonvid-bench/1"
    assert {"decode", "models", "pipeline", "targets", "machine", "date", "timings"} <= set(result)
    assert result["machine"]["device"] == "cpu" and result["machine"]["cpus"] >= 1
    names = [t["target"] for t in result["targets"]]
    for needed in ("vs ffmpeg", "peak memory", "fraction of matmul peak", "stage bound", "plain loop"):
        assert any(needed in n for n in names), (needed, names)
    for t in result["targets"]:
        assert t["met"] in (True, False) and _finite(t["value"]), t
    assert json.loads(json.dumps(result)) == result  # plain JSON all the way down


def test_pipeline_section_runs_every_size_and_fits_the_scaling(tiny_bench):
    p = tiny_bench[1]["pipeline"]
    n1 = p["sizes"][0]
    assert p["sizes"] == [n1, 2 * n1, 4 * n1]
    clips = [p["clips"][str(n)] for n in p["sizes"]]
    assert clips[0] > 0 and clips == [clips[0], 2 * clips[0], 4 * clips[0]]  # every video of every size processed
    for n in p["sizes"]:
        s = p["pipeline_s"][str(n)]
        assert 0 < s["min"] <= s["median"] <= s["max"]
    assert set(p["stage_costs_s"]) == {"decode", "prune", "encode", "aam"}
    assert all(v > 0 for v in p["stage_costs_s"].values())
    assert p["stage_bound_s"] == sum(p["stage_costs_s"].values()) / p["cores"]
    largest = p["pipeline_s"][str(p["sizes"][-1])]["median"]
    assert math.isclose(p["pipeline_vs_bound"], largest / p["stage_bound_s"])
    assert math.isclose(p["loop_vs_pipeline"], p["plain_loop_s"]["median"] / largest)
    fit = p["scaling"]
    assert _finite(fit["fixed_s"]) and _finite(fit["per_video_s"]) and fit["max_deviation_from_linear"] >= 0


def test_docs_section_is_written_and_replaced_not_duplicated(tiny_bench, tmp_path):
    out, result = tiny_bench
    docs = (out / "benchmarks.md").read_text()
    assert docs.count("<!-- bench:cpu:begin -->") == 1 and docs.count("<!-- bench:cpu:end -->") == 1
    assert "anonvid bench --tiny" in docs and result["date"] in docs
    assert result["repeats"] == {"figures": 2, "pipeline": 1}  # what --tiny ran, not the config's defaults
    assert "median of 2 runs (1 for the pipeline)" in docs
    for heading in ("#### Decode", "#### Models", "#### Pipeline and scaling", "| target |"):
        assert heading in docs

    # a hand-written page keeps its text; a second run replaces its device's section in place
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nWhy the pipeline is where it is.\n")
    write_docs(page, result, "anonvid bench (first)")
    write_docs(page, {**result, "date": "2000-01-01T00:00:00+00:00"}, "anonvid bench (second)")
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nWhy the pipeline is where it is.\n")
    assert text.count("<!-- bench:cpu:begin -->") == 1 and "(second)" in text and "(first)" not in text
    gpu = {**result, "machine": {**result["machine"], "device": "cuda", "gpu": "a GPU"}}
    write_docs(page, gpu, "anonvid bench --device cuda")
    text = page.read_text()
    assert "<!-- bench:cuda:begin -->" in text and "(second)" in text  # one section per device


def test_bad_bench_configs_are_refused():
    errors = BenchConfig(sections=["decode", "gpu"], repeats=0, video_frames=8).validate()
    assert any("gpu" in e for e in errors) and any("repeats" in e for e in errors)
    assert any("video_frames" in e for e in errors)


def test_stage_bound_spreads_cpu_work_and_serialises_the_gpu():
    from jobs.bench.pipeline import stage_bound

    costs = {"decode": 8.0, "prune": 3.0, "encode": 4.0, "aam": 1.0}
    assert stage_bound(costs, cores=2, on_gpu=False) == 8.0  # 16 CPU-seconds over 2 cores
    assert stage_bound(costs, cores=2, on_gpu=True) == 8.0  # decode 4 s on the cores, models 8 s on the GPU
    assert stage_bound(costs, cores=16, on_gpu=True) == 8.0  # the GPU is the bound
    assert stage_bound({**costs, "decode": 160.0}, cores=16, on_gpu=True) == 10.0  # decode is


def test_cuda_without_a_gpu_exits_2_before_measuring(tmp_path, capsys):
    import pytest
    import torch

    from jobs.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path / "b")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "b").exists()
