"""Shared fixtures. Test data is made here, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "1")


def indexed_frame(i: int, width: int, height: int) -> np.ndarray:
    """A frame whose index is readable after resize + centre crop: one lit cell of an 8x8 grid in the centre square."""
    side = min(width, height)
    img = np.full((height, width, 3), 40, np.uint8)
    top, left, cell = (height - side) // 2, (width - side) // 2, side // 8
    r, c = divmod(i % 64, 8)
    img[top + r * cell : top + (r + 1) * cell, left + c * cell : left + (c + 1) * cell] = 230
    return img


def index_of(frame: np.ndarray) -> int:
    """Inverse of indexed_frame on a decoded, centre-cropped square frame."""
    s = frame.shape[0] // 8
    cells = frame[: s * 8, : s * 8, 1].reshape(8, s, 8, s).mean(axis=(1, 3))
    r, c = np.unravel_index(int(cells.argmax()), cells.shape)
    return int(r * 8 + c)


def write_indexed_video(path: Path, n: int, width: int = 160, height: int = 96, codec: str = "h264", fps: int = 25):
    from anon_core.synthetic import write_video

    frames = np.stack([indexed_frame(i, width, height) for i in range(n)])
    write_video(frames, str(path), codec, fps)
    return path


@pytest.fixture(scope="session")
def indexed_videos(tmp_path_factory) -> dict[str, Path]:
    """One 64-frame, 160x96 indexed video per codec the generator writes."""
    from anon_core.synthetic import CODECS

    d = tmp_path_factory.mktemp("indexed")
    return {codec: write_indexed_video(d / f"idx_{codec}{ext}", 64, codec=codec) for codec, (_, ext) in CODECS.items()}


# ---------------------------------------------------------------------------------------------------------------
# Pipeline fixtures: one S3-compatible server, one local Ray, tiny models and a small corpus per test session.


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto) on 127.0.0.1; AWS_* variables point every client (and Ray worker) at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def ray_session(s3_endpoint):
    """The one local Ray instance Ray tests share (2 CPUs, like CI). Its workers inherit this process's environment,
    the S3 settings included; a runtime env would write the credentials into Ray's logs (docs/credentials.md)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """Untrained tiny encoder / pruner / AAM bundles (16 x 112 clips, 192-d features)."""
    from anon_core.synthetic import ACTIONS, ATTRIBUTES
    from jobs.recipes.demo import untrained_models

    return untrained_models(tmp_path_factory.mktemp("models"), 0, len(ACTIONS), len(ATTRIBUTES))


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """12 synthetic videos (112 px, 32 frames: one 16x2 clip each) with labels.parquet."""
    from anon_core.synthetic import CorpusConfig, generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, CorpusConfig(videos=12, seed=3), workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory, ray_session) -> tuple[Path, dict]:
    """`anonvid bench --tiny --docs ...` run once, in this process, on the shared Ray: (output folder, bench.json).
    The bench tests read its figures; none of them asserts a timing."""
    import json

    import torch

    from jobs.cli import main

    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    assert main(["bench", "--tiny", "--out", str(out), "--docs", str(out / "benchmarks.md")]) == 0
    assert torch.get_num_threads() == threads, "the bench must leave torch's thread count as it found it"
    return out, json.loads((out / "bench.json").read_text())
