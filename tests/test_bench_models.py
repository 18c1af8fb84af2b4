"""`jobs/bench/models.py` on the tiny models: every figure present, finite and consistent. Never a timing threshold."""

from __future__ import annotations

import json
import math

import pytest
import torch

from jobs.bench.models import count_flops, models_table, run_models


@pytest.fixture(scope="module")
def result(tiny_bench):
    return tiny_bench[1]["models"]  # `anonvid bench --tiny`'s models section (tests/conftest.py)


def _row(result, model, variant=""):
    (row,) = [r for r in result["rows"] if r["model"] == model and r["variant"] == variant]
    return row


def test_rows_for_every_model_and_variant(result):
    names = [(r["model"], r["variant"]) for r in result["rows"]]
    assert names == [("encoder", ""), ("pruner", "dense"), ("pruner", "default"), ("pruner", "keep 0.5"), ("aam", "")]
    assert result["device"] == "cpu" and result["threads"] == torch.get_num_threads()


def test_every_figure_finite_and_positive(result):
    figures = [result["peak"]["gflops"]["median"], *result["pruning_speedup"].values()]
    for r in result["rows"]:
        figures += [r["gflops_per_clip"], r["clips_per_s"]["median"], r["clips_per_s"]["min"],
                    r["achieved_gflops"]["median"], r["fraction_of_peak"]]  # fmt: skip
    figures += [s["gflops"]["median"] for s in result["shapes"]]
    assert all(math.isfinite(f) and f > 0 for f in figures), figures


def test_fraction_of_peak_is_achieved_over_peak(result):
    peak = result["peak"]["gflops"]["median"]
    assert peak == max(result["peak"]["by_size"].values())
    for r in result["rows"]:
        assert r["fraction_of_peak"] == pytest.approx(r["achieved_gflops"]["median"] / peak, rel=1e-9)
        assert r["achieved_gflops"]["median"] == pytest.approx(r["clips_per_s"]["median"] * r["gflops_per_clip"])


def test_pruning_counts_fewer_flops_and_tokens(result):
    dense, default, half = (_row(result, "pruner", v) for v in ("dense", "default", "keep 0.5"))
    assert half["gflops_per_clip"] < default["gflops_per_clip"] < dense["gflops_per_clip"]
    assert half["tokens"] < default["tokens"] < dense["tokens"]
    assert dense["keep_ratios"] == [1.0] * 3 and half["keep_ratios"] == [0.5] * 3
    assert set(result["pruning_speedup"]) == {"default", "keep 0.5"}


def test_counted_flops_match_the_analytic_count_where_it_is_exact(result):
    # the encoder and the dense pruner run every block on every token: both counts agree up to norms and heads
    for r in (_row(result, "encoder"), _row(result, "pruner", "dense"), _row(result, "aam")):
        assert r["gflops_per_clip"] == pytest.approx(r["analytic_gflops_per_clip"], rel=0.02)


def test_cpu_attention_flops_are_counted():
    q = torch.randn(2, 3, 10, 8)
    flops, _ = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert flops == 4 * 2 * 3 * 10 * 10 * 8


def test_table_renders_and_result_is_json(result):
    table = models_table(result)
    assert "| encoder |" in table and "keep 0.5" in table and "Pruning speed-up" in table
    assert json.loads(json.dumps(result)) == result


def test_unknown_device_is_an_error():
    with pytest.raises(ValueError, match="device must be"):
        run_models(device="tpu", tiny=True, repeats=1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            run_models(device="cuda", tiny=True, repeats=1)
