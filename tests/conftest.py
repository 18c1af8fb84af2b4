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
