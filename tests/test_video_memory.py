"""Memory stays bounded while sampling a long video: peak RSS of a decoding process, measured."""

import json
import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest

pytestmark = pytest.mark.slow

FPS = 25
MINUTES = 10
SIZE = 112


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """10 minutes at 112 px (15000 frames), x264 with its default long GOP (keyint 250), written frame by frame."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    c = av.open(str(path), "w", options={"movflags": "+faststart"})
    s = c.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "28"})
    s.width = s.height = SIZE
    s.pix_fmt = "yuv420p"
    texture = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE * 4, 3), dtype=np.uint8)
    for i in range(FPS * 60 * MINUTES):
        off = (i * 2) % (SIZE * 3)
        for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[:, off : off + SIZE]), "rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return str(path)


def _peak_rss_of_decode(path: str, backend: str, max_clips) -> dict:
    """Decode every clip in a fresh process and report its peak RSS: VmHWM of its own address space, in KiB.
    (Not ru_maxrss: on Linux a child's ru_maxrss starts at the RSS of the parent it was forked from, so under a
    large pytest process short and long decodes could read the same number and the test would measure nothing.)"""
    code = textwrap.dedent(f"""
        import json
        from anon_core.video import ClipSpec, iter_clips
        spec = ClipSpec(num_frames=16, stride=2, size={SIZE}, max_clips={max_clips!r})
        n = 0
        for clip in iter_clips({path!r}, spec, {backend!r}, fallback=False):
            n += 1
        hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print(json.dumps({{"clips": n, "peak_kib": int(hwm.split()[1])}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["torchcodec", "decord", "pyav"])
def test_long_video_decodes_in_bounded_memory(long_video, indexed_videos, backend):
    short = _peak_rss_of_decode(str(indexed_videos["h264"]), backend, None)
    long = _peak_rss_of_decode(long_video, backend, None)
    n_frames = FPS * 60 * MINUTES
    assert long["clips"] == n_frames // 32  # every clip of the 10 minutes was produced
    all_clips_mib = long["clips"] * 16 * SIZE * SIZE * 3 / 2**20  # what holding them all would cost: ~280 MiB
    growth_mib = (long["peak_kib"] - short["peak_kib"]) / 1024
    print(f"\n{backend}: peak RSS short {short['peak_kib'] / 1024:.0f} MiB, 10-min {long['peak_kib'] / 1024:.0f} MiB "
          f"(+{growth_mib:.0f} MiB; all clips at once would be {all_clips_mib:.0f} MiB)")
    assert growth_mib < 64, f"decoding a 10-minute video grew peak RSS by {growth_mib:.0f} MiB"


@pytest.mark.parametrize("backend", ["torchcodec", "decord"])  # the two that seek forward to a keyframe
def test_sparse_sampling_of_a_long_video_jumps_forward(long_video, backend):
    """max_clips over a long-GOP file: few clips spread over all 10 minutes, still bounded."""
    res = _peak_rss_of_decode(long_video, backend, 8)
    assert res["clips"] == 8
