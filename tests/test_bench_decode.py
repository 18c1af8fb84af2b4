"""The decode bench on tiny generated sources: its shape, its arithmetic and its table. Never a timing threshold."""

import json
import math

import pytest

from jobs.bench import decode
from jobs.bench.decode import BACKENDS, decode_table, make_sources, measured_backends


def _check_figure(fig: dict, repeats: int) -> None:
    assert set(fig) == {"median", "min", "max", "spread", "n"}
    assert all(math.isfinite(fig[k]) for k in ("median", "min", "max", "spread"))
    assert 0 < fig["min"] <= fig["median"] <= fig["max"]
    assert fig["spread"] >= 0
    assert fig["n"] == repeats


@pytest.fixture(scope="module")
def result(tiny_bench):
    return tiny_bench[1]["decode"]  # `anonvid bench --tiny`'s decode section (tests/conftest.py)


def test_rows_cover_every_backend_size_and_gop(result):
    # every backend this machine can run: torchcodec only with FFmpeg's shared libraries (the result says why not)
    assert result["backends"] == list(measured_backends()) and set(result["unavailable"]) == set(BACKENDS) - set(
        result["backends"]
    )
    assert {"decord", "pyav"} <= set(result["backends"]) and result["settings"]["backend"] in BACKENDS
    keys = sorted((r["size"], r["gop"], r["backend"]) for r in result["rows"])
    assert keys == sorted((s, g, b) for s in (112, 720) for g in ("short", "long") for b in result["backends"])
    for r in result["rows"]:
        for name in ("frames_per_s", "sampled_frames_per_s", "clips_per_s", "limit_frames_per_s"):
            _check_figure(r[name], repeats=2)
        assert r["vs_limit"] == pytest.approx(r["frames_per_s"]["median"] / r["limit_frames_per_s"]["median"])
        assert math.isfinite(r["vs_limit"]) and r["vs_limit"] > 0
        assert math.isfinite(r["cores_used"]) and r["cores_used"] > 0
        assert r["decodes_per_timing"] >= 1
        # one clip decodes its span of source frames, and T of them are sampled
        assert r["source_frames"] >= r["clips"] * 16 > 0
        ratio = r["frames_per_s"]["median"] / r["clips_per_s"]["median"]
        assert ratio == pytest.approx(r["source_frames"] / r["clips"])


def test_limits_and_sources(result):
    assert len(result["limits"]) == len(result["sources"]) == 4
    for lim in result["limits"]:
        _check_figure(lim["frames_per_s"], repeats=2)
        _check_figure(lim["decode_only_frames_per_s"], repeats=2)
    for s in result["sources"]:
        assert s["frames"] == 75 and s["duration_s"] == pytest.approx(3.0, abs=0.1)
        assert (s["width"], s["height"]) == {112: (112, 112), 720: (1280, 720)}[s["size"]]
    assert all(result["threads"][b] for b in BACKENDS)


def test_memory_entry(result):
    m = result["memory"]
    assert m["long_frames"] == 4 * m["short_frames"] > 0
    assert m["long_file_mb"] > m["short_file_mb"] > 0
    for v in [m, *m["by_backend"].values()]:
        assert v["short_mb"] > 0 and v["long_mb"] > 0
        assert v["ratio"] == pytest.approx(v["long_mb"] / v["short_mb"])
    assert set(m["by_backend"]) == set(result["backends"])


def test_table_has_a_line_per_row(result):
    table = decode_table(result).split("\n\n")[0].splitlines()
    assert table[0].startswith("| source | GOP | backend |") and set(table[1]) <= set("|-: ")
    assert len(table) == 2 + len(result["rows"])
    for line, r in zip(table[2:], result["rows"], strict=True):
        assert line.startswith(f"| {r['size']}p | {r['gop']} | {r['backend']} |")
        assert line.count("|") == table[0].count("|")


def test_result_is_json(result):
    assert json.loads(json.dumps(result))["rows"] == result["rows"]


def test_sources_have_the_asked_gop(tmp_path):
    """Short GOP: a keyframe every 12 frames; long: one for the whole (short) video."""
    import av

    for src in make_sources(tmp_path, sizes=(112,), seconds=2.0):
        with av.open(src.path) as c:
            keys = [i for i, frame in enumerate(c.decode(video=0)) if frame.key_frame]
        assert keys == ([0] if src.gop == "long" else list(range(0, 50, 12)))


def test_without_an_ffmpeg_binary_the_limit_is_pyav(tmp_path):
    src = make_sources(tmp_path, sizes=(112,), gops=("short",), seconds=2.0)[0]
    rows, limit = decode._measure_source(src, decode.pipeline_settings(), None, repeats=1)
    assert limit["tool"] == "pyav-decode-only"
    assert limit["frames_per_s"] == limit["decode_only_frames_per_s"]
    assert [r["backend"] for r in rows] == list(measured_backends())


def test_a_failing_ffmpeg_is_an_error_that_shows_its_output(tmp_path):
    src = make_sources(tmp_path, sizes=(112,), gops=("short",), seconds=2.0)[0]
    with pytest.raises(RuntimeError, match="failed"):
        decode._ffmpeg_null("false", src.path)
