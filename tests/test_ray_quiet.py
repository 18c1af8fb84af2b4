"""A job's terminal shows the job's own lines: Ray's INFO chatter (executor plans, progress logging) stays in Ray's
log folder unless --verbose (ANONVID_VERBOSE=1) asks for it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
from pipelines.anonymize import connect
connect()
import ray.data  # after connect, as the training jobs' feature extraction imports it
print("rows", ray.data.range(8).map_batches(lambda b: b).count())
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("verbose", ["0", "1"])
def test_ray_data_info_lines_only_with_verbose(verbose):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray, ended with it
    env["ANONVID_VERBOSE"] = verbose
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240,
                         cwd=Path(__file__).parents[1], env=env)  # fmt: skip
    assert res.returncode == 0 and "rows 8" in res.stdout, res.stderr[-2000:]
    chatter = [ln for ln in res.stderr.splitlines() if re.search(r"\sINFO\s", ln)]  # "<time>\tINFO file.py:1 -- ..."
    assert bool(chatter) == (verbose == "1"), chatter[:5]
