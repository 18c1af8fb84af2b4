"""The tiny configs' header commands, run as written and in order in a copy of the repository, as a newcomer on a
fresh clone would (only sizes made small through key=value words): make demo's corpus, the three trainings, the
anonymize runs and the evaluation. Each command must appear verbatim in its config's header."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# (config whose header holds the command, the command as written there, small sizes appended)
STEPS = [
    ("anonymize_tiny.yaml", "make demo", ["--videos", "24"]),
    ("train_encoder_tiny.yaml", "anonvid train encoder --config jobs/configs/train_encoder_tiny.yaml",
     ["epochs=1", "depth=2"]),
    ("train_pruner_tiny.yaml", "anonvid train pruner --config jobs/configs/train_pruner_tiny.yaml", ["epochs=1"]),
    ("train_aam_tiny.yaml", "anonvid train aam --config jobs/configs/train_aam_tiny.yaml", ["epochs=3"]),
    ("train_aam_tiny.yaml", "anonvid train aam --config jobs/configs/train_aam_tiny.yaml "
     "pruner=demo_out/models/pruner-trained name=aam-tiny-pruned out=demo_out/models/aam-trained-pruned", ["epochs=2"]),
    ("anonymize_tiny.yaml", "anonvid anonymize --config jobs/configs/anonymize_tiny.yaml", []),
    ("evaluate_tiny.yaml", "anonvid anonymize --config jobs/configs/anonymize_tiny.yaml mode=raw allow_raw=true "
     "output=demo_out/features-raw", []),
    ("evaluate_tiny.yaml", "anonvid evaluate --config jobs/configs/evaluate_tiny.yaml", ["epochs=3", "n_boot=20"]),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_tiny_configs_header_commands_run_in_order_from_a_fresh_copy(ray_session, tmp_path):
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    copy = tmp_path / "anonvid"
    for f in files:  # what a clone holds: no demo_out, no bench_out, no caches
        (copy / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, copy / f)
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    for config, command, small in STEPS:
        header = (copy / "jobs" / "configs" / config).read_text().split("\n\n")[0]
        assert command in header.replace("\n#   ", " "), f"{config}'s header no longer says {command!r}"
        argv = ["demo", "--out", "demo_out"] if command == "make demo" else shlex.split(command)[1:]  # what make runs
        res = subprocess.run([sys.executable, "-m", "jobs.cli", *argv, *small], cwd=copy, env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
        assert res.returncode == 0, f"{command} {' '.join(small)}\n{res.stderr[-3000:]}"
    report = json.loads((copy / "demo_out" / "report" / "report.json").read_text())
    assert set(report["methods"]) == {"raw", "prune+aam"}
    assert (copy / "demo_out" / "models" / "aam-trained" / "config.json").exists()
