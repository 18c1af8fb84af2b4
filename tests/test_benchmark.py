"""The benchmark recipe end to end on a tiny corpus (train, anonymize with every kind of method, evaluate, README
table), then `anonvid evaluate` on its outputs: the real entrypoints on tiny models and data, no timing asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def bench(ray_session, tmp_path_factory):
    from jobs.recipes.benchmark import BenchmarkConfig, run_benchmark

    tmp = tmp_path_factory.mktemp("bench")
    readme = tmp / "README.md"
    readme.write_text("intro\n<!-- benchmark:begin -->\nold table\n<!-- benchmark:end -->\nrest\n")
    # the other drawing style (6 actions, its own attributes and bias group): nothing in the recipe may assume the
    # default corpus's classes or columns
    cfg = BenchmarkConfig(
        out=str(tmp / "b"), videos=32, bias_videos=40, style="blocks", encoder_epochs=1, pruner_epochs=1,
        aam_epochs=2, epochs=5, pixel_epochs=1, n_boot=20, sweep_lambda_priv=[3.0], sweep_keep_ratio=[], sweep_w_b=[],
        baselines=["blur"], bias_methods=["raw", "aam"], readme=str(readme),
    )  # fmt: skip
    report = run_benchmark(cfg, log=lambda msg: None)
    return cfg, report, readme


def figures(entry: dict):
    """Every {"value", "low", "high"} figure of a method's entry."""
    stack = [entry]
    while stack:
        d = stack.pop()
        if isinstance(d, dict):
            if {"value", "low", "high"} <= set(d):
                yield d
            else:
                stack.extend(d.values())


@pytest.mark.timeout(1500)
def test_the_benchmark_writes_a_complete_report_and_the_readme_table(bench):
    cfg, report, readme = bench
    out = f"{cfg.out}/report"
    saved = json.load(open(f"{out}/report.json"))
    assert saved["format"] == "anonvid-report/1" and saved["reference"] == "raw"
    from anon_core.synthetic import STYLES

    assert saved["attributes"] == list(STYLES["blocks"].attributes) and "style=blocks" in saved["command"]
    methods = saved["methods"]
    assert set(methods) == {"raw", "prune", "aam", "prune+aam", "blur", "prune lambda=3"}
    assert methods["prune lambda=3"]["sweep"] == {"param": "lambda_priv", "value": 3.0}
    assert methods["blur"]["family"] == "baseline" and methods["aam"]["family"] == "aam"
    # pixel outputs were also attacked by a freshly trained video model
    assert "video_model" in methods["prune"]["privacy"]["attackers"]
    assert "video_model" not in methods["aam"]["privacy"]["attackers"]
    for name, entry in methods.items():
        assert {"linear", "mlp", "knn"} <= set(entry["privacy"]["attackers"]), name
        worst = entry["privacy"]["worst"]
        assert worst["cmap"]["value"] == max(a["cmap"]["value"] for a in entry["privacy"]["attackers"].values())
        for fig in figures(entry):
            assert fig["low"] - 1e-9 <= fig["value"] <= fig["high"] + 1e-9 or not np.isfinite(fig["low"]), name
    assert methods["raw"]["privacy"]["normalized_leakage"]["value"] == pytest.approx(1.0)
    assert methods["raw"]["bias"] is not None and methods["aam"]["bias"] is not None  # the bias corpus was probed
    assert methods["prune"].get("bias") is None  # only bias_methods run on it
    assert 0 < saved["chance"]["cmap"] < 1 and len(saved["targets"]) >= 4
    assert any(k.startswith("2 train") for k in saved["timings"])
    for png in ("tradeoff.png", "tradeoff_leakage.png", "attackers.png", "pruned_tubelets_prune.png"):
        assert open(f"{out}/{png}", "rb").read(8) == b"\x89PNG\r\n\x1a\n", png
    md = open(f"{out}/report.md").read()
    assert "prune lambda=3" in md and "tradeoff.png" in md
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "| `prune+aam` |" in text and "anonvid benchmark" in text
    # the run's trade-off plot beside the README (no docs/ folder there), shown under the table
    assert "](benchmark_tradeoff.png)" in text.split("<!-- benchmark:end -->")[0]
    assert (readme.parent / "benchmark_tradeoff.png").read_bytes() == Path(f"{out}/tradeoff_leakage.png").read_bytes()


@pytest.mark.timeout(300)
def test_pixel_outputs_keep_small_anonymized_clips(bench):
    cfg, _, _ = bench
    raw = pq.read_table(f"{cfg.out}/features/raw/features", columns=["video_id", "clip_index", "pixels",
                                                                       "pixels_shape"]).to_pandas()  # fmt: skip
    blur = pq.read_table(f"{cfg.out}/features/blur/features", columns=["video_id", "clip_index", "pixels"]).to_pandas()
    assert tuple(raw["pixels_shape"].iloc[0]) == (8, 56, 56, 3)
    both = raw.merge(blur, on=["video_id", "clip_index"], suffixes=("_raw", "_blur"))
    assert len(both) == len(raw) > 0
    a = np.frombuffer(both["pixels_raw"].iloc[0], np.uint8).astype(float)
    b = np.frombuffer(both["pixels_blur"].iloc[0], np.uint8).astype(float)
    assert a.std() > 0 and np.abs(a - b).mean() > 1  # the blur baseline's pixels are not the raw ones
    aam_shard = next(Path(f"{cfg.out}/features/aam/features").glob("*.parquet"))
    assert "pixels" not in pq.read_schema(aam_shard).names  # kept only where asked (--keep-pixels)


@pytest.mark.timeout(600)
def test_evaluate_cli_on_anonymize_outputs(bench, tmp_path, capsys):
    from anon_core.synthetic import STYLES
    from jobs.cli import main

    cfg, _, _ = bench
    f = f"{cfg.out}/features"
    labels = f"{cfg.out}/corpus/labels.parquet"
    schema = f"label_schema.attributes=[{','.join(STYLES['blocks'].attributes)}]"  # not the default corpus's columns
    stdout = sys.stdout
    code = main(["evaluate", "--labels", labels, "--out", str(tmp_path / "r"), "--method", f"raw={f}/raw",
                 "--method", f"aam={f}/aam", "--epochs", "3", "--attacker-seeds", "2", "--json", schema])  # fmt: skip
    sys.stdout = stdout  # --json leaves everything else on stderr for the rest of the process; this test goes on
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert set(json.loads(captured.out)["methods"]) == {"raw", "aam"}  # --json: stdout is the report alone
    report = json.load(open(tmp_path / "r" / "report.json"))
    assert set(report["methods"]) == {"raw", "aam"} and report["command"].startswith("anonvid evaluate")
    assert report["methods"]["aam"]["privacy"]["attackers"]["mlp"]["best"].startswith("epochs ")  # two fits each

    # --dry-run: the same inputs checked, the plan printed, nothing trained or written
    code = main(["evaluate", "--labels", labels, "--out", str(tmp_path / "dry"), "--method", f"raw={f}/raw",
                 "--method", f"aam={f}/aam", "--dry-run", schema])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "dry run: 2 methods against 'raw'" in out and f"aam: {f}/aam (mode aam)" in out
    assert not (tmp_path / "dry").exists()

    # every input problem exits 2 with the fix named, before any attacker trains
    code = main(["evaluate", "--labels", labels, "--out", str(tmp_path / "r2"), "--method", f"aam={f}/aam"])
    assert code == 2 and "reference 'raw' is not one of the methods" in capsys.readouterr().err
    code = main(["evaluate", "--labels", labels, "--out", str(tmp_path / "r5"), "--method", f"raw={f}/raw",
                 "--attacker-seeds", "0"])  # fmt: skip
    assert code == 2 and "attacker_seeds=0: need an integer >= 1" in capsys.readouterr().err
    code = main(["evaluate", "--labels", labels, "--out", str(tmp_path / "r3"), "--method", f"raw={tmp_path}", schema])
    assert code == 2 and "not an anonvid output" in capsys.readouterr().err
    code = main(["evaluate", "--out", str(tmp_path / "r4"), "--method", "raw", "--sweep", "x=lambda_priv:1"])
    err = capsys.readouterr().err
    assert code == 2 and "--labels is required" in err and "expected NAME=VALUE" in err and "no --method" in err


def test_a_dry_run_shows_what_a_run_would_do_and_what_is_already_done(bench, tmp_path, capsys):
    from jobs.cli import main
    from jobs.recipes.benchmark import BenchmarkConfig, dry_run

    cfg, _, _ = bench
    done = dry_run(cfg, log=lambda msg: None)  # the folder of a finished run: every step would be reused
    assert all(done["trainings"].values()) and all(done["anonymize"].values())
    assert set(done["anonymize"]) == {"raw", "prune", "aam", "prune+aam", "blur", "prune lambda=3"}
    fresh = tmp_path / "fresh"
    assert main(["benchmark", "--out", str(fresh), "videos=32", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"train encoder: {BenchmarkConfig().encoder_epochs} epochs\n" in out
    assert "anonymize prune+aam\n" in out and "evaluate:" in out
    assert not fresh.exists()
    assert main(["benchmark", "--out", str(fresh), "videos=3", "--dry-run"]) == 2  # config errors first


def test_a_pruner_started_from_the_encoder_must_share_its_stem():
    from jobs.recipes.benchmark import BenchmarkConfig

    assert not BenchmarkConfig().validate()
    errors = BenchmarkConfig(pruner_options={"stem": "linear"}).validate()
    assert any("pruner_from_encoder" in e and "same stem" in e for e in errors), errors
    assert not BenchmarkConfig(pruner_options={"stem": "linear"}, pruner_from_encoder=False).validate()
    assert any("pruner_lr" in e for e in BenchmarkConfig(pruner_lr=0.0).validate())
    assert any("style='anime'" in e for e in BenchmarkConfig(style="anime").validate())
