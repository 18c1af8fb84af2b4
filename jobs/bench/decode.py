"""Decode bench: clip sampling with decord, PyAV and torchcodec against the single-thread decode limit, and peak memory.

For each source (size x GOP) and in interleaved rounds: the pipeline's own decoding of every clip (the decode stage's
`decode_segment` calls, one per `clips_per_task` segment, with the pipeline's default ClipSpec), once per backend
(each first checked to decode the source itself, not through its PyAV fallback; torchcodec is left out, and the
result says why, where it cannot run);
`ffmpeg -threads 1 -i FILE -f null -` (the decode limit); the same with every stride-th frame scaled to the clip
size in RGB24 (the decode+convert limit: the least work that yields the frames clip sampling hands on); and PyAV
decoding every frame without converting any (the same libavcodec loop inside this process).
Ratios are taken of medians from the same rounds.

Throughput is counted three ways: clips/s, sampled frames/s (the T frames per clip), and source frames/s (frames up
to the last sampled one, all of which the decoder has to decode at stride 2). Source frames/s is what is compared
with the limit, the file's frame count over ffmpeg's own decode time (its `-benchmark` rtime: process start and
library loading are left out, they would otherwise dominate on 112-pixel sources).

Peak memory: fresh processes decode every clip of the largest long-GOP source repeated 2x and 8x (packets copied:
the same kind of video, 4x longer), one per backend and length, each reporting its own VmHWM (torchcodec's includes
the torch it imports: a fixed cost per decoding process, the same at both lengths).

Sources are x264 (veryfast, yuv420p) renders of lavfi's testsrc2, written with PyAV's bundled FFmpeg: the same
encoder on every machine, and no ffmpeg binary needed to make them. Without an ffmpeg binary on PATH, the limit
falls back to the in-process PyAV decode and says so (`limit_tool`).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .stats import interleaved, rate, summary, timed

GOPS = {"short": 12, "long": 250}  # x264 keyint: 0.5 s at 25 fps, and x264's default (10 s)
WIDTHS = {112: 112, 720: 1280}  # source height -> width
BACKENDS = ("decord", "pyav", "torchcodec")  # every backend anon_core.video has (anon_core.video.backends.BACKENDS)
# The memory check's short and long videos: the source repeated this many times. At 2x (40 s) the short one already
# fills one decode segment (clips_per_task clips), so what grows with length is not just a fuller segment buffer.
MEMORY_FACTORS, MEMORY_FACTORS_TINY = (2, 8), (1, 4)


@dataclass(frozen=True)
class Source:
    path: str
    size: int  # height label: 112 (112x112) or 720 (1280x720)
    gop: str  # "short" | "long"
    keyint: int
    width: int
    height: int
    frames: int  # as the pipeline's probe reports it
    duration_s: float


def _render_testsrc(path: Path, width: int, height: int, keyint: int, seconds: float, fps: int) -> None:
    import av

    graph = av.filter.Graph()
    src = graph.add("testsrc2", f"size={width}x{height}:rate={fps}:duration={seconds}")
    fmt = graph.add("format", "pix_fmts=yuv420p")
    sink = graph.add("buffersink")
    src.link_to(fmt)
    fmt.link_to(sink)
    graph.configure()
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = keyint
        while True:
            try:
                frame = sink.pull()
            except (EOFError, av.error.EOFError, BlockingIOError):
                break
            # testsrc2 marks every frame I, which x264 obeys as a forced keyframe: let the encoder choose
            frame.pts, frame.pict_type = None, av.video.frame.PictureType.NONE
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    os.replace(tmp, path)


def _repeat(src: str, dst: Path, times: int) -> None:
    """dst = src played `times` times in a row, packets copied: a longer video of exactly the same kind."""
    import av

    tmp = dst.with_suffix(".part.mp4")
    with av.open(src) as inp:
        ins = inp.streams.video[0]
        pts = [p.pts for p in inp.demux(ins) if p.pts is not None]
        span = max(pts) - min(pts) + round(1 / (ins.average_rate * ins.time_base))  # one copy, in ins.time_base
    with av.open(str(tmp), "w", options={"movflags": "+faststart"}) as out:
        for k in range(times):
            with av.open(src) as inp:  # a fresh demux per copy: a muxed packet is consumed
                ins = inp.streams.video[0]
                if k == 0:
                    outs = out.add_stream_from_template(ins)
                for p in inp.demux(ins):
                    if p.dts is None:  # the demuxer's flush packet
                        continue
                    p.pts, p.dts, p.stream = p.pts + k * span, p.dts + k * span, outs
                    out.mux(p)
    os.replace(tmp, dst)


def _source(path: Path, size: int, gop: str) -> Source:
    from anon_core.video import probe

    meta = probe(str(path))
    return Source(str(path), size, gop, GOPS[gop], meta.width, meta.height, meta.num_frames, meta.duration_s)


def make_sources(
    dir: str | Path, *, sizes=(112, 720), gops=("short", "long"), seconds: float = 20.0, fps: int = 25
) -> list[Source]:
    """One test video per (size, gop), reused when already in `dir` (the name holds every parameter)."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    sources = []
    for size in sizes:
        for gop in gops:
            path = d / f"testsrc2_{size}p_{gop}gop_{seconds:g}s_{fps}fps.mp4"
            if not path.exists():
                _render_testsrc(path, WIDTHS[size], size, GOPS[gop], seconds, fps)
            sources.append(_source(path, size, gop))
    return sources


def pipeline_settings() -> dict:
    """What the anonymize pipeline decodes with: its default ClipSpec, segment size and backend, reader threads."""
    from anon_core.video import VideoClipReader
    from pipelines.anonymize import AnonymizeConfig

    cfg = AnonymizeConfig(output="unused")
    threads = inspect.signature(VideoClipReader).parameters["num_threads"].default
    return {"spec": cfg.spec, "clips_per_task": cfg.clips_per_task, "backend": cfg.backend, "num_threads": threads}


def unavailable_backends() -> dict[str, str]:
    """Backends that cannot decode on this machine, and why (torchcodec without FFmpeg's shared libraries)."""
    from anon_core.video.backends import torchcodec_unavailable

    reason = torchcodec_unavailable()
    return {"torchcodec": reason} if reason else {}


def measured_backends() -> tuple[str, ...]:
    skip = unavailable_backends()
    return tuple(b for b in BACKENDS if b not in skip)


def segment_ranges(path: str, spec, clips_per_task: int) -> list[tuple[int, int]]:
    """The plan stage's segments of a video: clip ranges [a, b) of clips_per_task clips."""
    from anon_core.video.segments import probe_clip_count

    n = probe_clip_count(path, spec)
    return [(a, min(n, a + clips_per_task)) for a in range(0, n, clips_per_task)]


def _decode_clips(path: str, spec, segments: list[tuple[int, int]], backend: str) -> int:
    """The decode stage's work for one video (without its isolation process): every segment, as the plan made them."""
    from anon_core.video.segments import decode_segment

    return sum(len(decode_segment(path, spec, seg, backend)["clip_index"]) for seg in segments)


def _check_backend(path: str, spec, segments: list[tuple[int, int]], backend: str) -> None:
    """The backend decodes the file's first segment by itself (raises otherwise): its row is not PyAV's fallback."""
    from anon_core.video import VideoClipReader

    reader = VideoClipReader(path, spec, backend, fallback=False, clip_range=segments[0])
    for _ in reader.clips():
        pass


def _decode_only(path: str, num_threads: int) -> int:
    """Every frame through PyAV's decoder with the reader's thread settings, none converted: this process's limit."""
    import av

    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO" if num_threads > 1 else "SLICE"
        stream.codec_context.thread_count = num_threads
        return sum(1 for _ in c.decode(stream))


_BENCH = re.compile(r"bench: utime=([\d.]+)s stime=([\d.]+)s rtime=([\d.]+)s")


def _ffmpeg_null(ffmpeg: str, path: str, convert: tuple[int, int] | None = None) -> tuple[float, float]:
    """(seconds, cpu seconds) of `ffmpeg -threads 1 -f null` decoding the file, as its -benchmark line reports them.

    convert=(stride, size): also keep every stride-th frame and scale it to size x size RGB24 (bicubic, one filter
    thread): the least work that produces the frames clip sampling hands on, done by FFmpeg alone."""
    vf = []
    if convert:
        stride, size = convert
        vf = ["-filter_threads", "1", "-vf", f"select=not(mod(n\\,{stride})),scale={size}:{size}:flags=bicubic,"
              "format=rgb24", "-fps_mode", "passthrough"]  # fmt: skip
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-benchmark", "-threads", "1", "-i", path, *vf,
           "-f", "null", "-"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    m = _BENCH.search(out.stderr)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {out.returncode}): {out.stderr[-500:]}")
    utime, stime, rtime = map(float, m.groups())
    return rtime, utime + stime


def _with_cpu(fn: Callable[[], object], cpu: list[float]) -> Callable[[], object]:
    def run():
        c0 = time.process_time()  # all threads of this process: shows a decoder's helper threads
        out = fn()
        cpu.append(time.process_time() - c0)
        return out

    return run


def _measure_source(
    src: Source, settings: dict, ffmpeg: str | None, repeats: int, min_timing_s: float = 0.0
) -> tuple[list[dict], dict]:
    """Rows (one per backend) and the limit of one source. A short decode is repeated within each timing, up to
    `min_timing_s`, so that a 112-pixel file's few milliseconds are not lost in timer and scheduler noise."""
    from anon_core.video import plan_clip_starts

    spec, nt = settings["spec"], settings["num_threads"]
    backends = measured_backends()
    segments = segment_ranges(src.path, spec, settings["clips_per_task"])
    starts = plan_clip_starts(src.frames, spec)
    n_clips, source_frames = len(starts), int(starts[-1]) + spec.span
    main = settings["backend"] if settings["backend"] in backends else "pyav"  # what the pipeline decodes with here
    for b in backends:  # also pays for each backend's imports (torch, for torchcodec) and cold caches
        _check_backend(src.path, spec, segments, b)
    once = timed(lambda: _decode_clips(src.path, spec, segments, main))[0]
    loops = max(1, min(50, round(min_timing_s / once)))

    def looped(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(loops):
                fn()

        return run

    cpu: dict[str, list[float]] = {name: [] for name in (*backends, "decode_only")}
    variants = {b: _with_cpu(looped(lambda b=b: _decode_clips(src.path, spec, segments, b)), cpu[b]) for b in backends}
    variants["decode_only"] = _with_cpu(looped(lambda: _decode_only(src.path, nt)), cpu["decode_only"])
    ff: list[tuple[float, float]] = []
    ffc: list[tuple[float, float]] = []
    if ffmpeg:
        variants["ffmpeg"] = looped(lambda: ff.append(_ffmpeg_null(ffmpeg, src.path)))
        convert = (spec.stride, spec.size)
        variants["ffmpeg_convert"] = looped(lambda: ffc.append(_ffmpeg_null(ffmpeg, src.path, convert)))
    seconds = interleaved(variants, repeats)

    def per_s(work: int, name: str) -> dict:  # `work` per decode of the file; a timing holds `loops` decodes
        return rate(work * loops, seconds[name])

    def cores(name: str) -> float:
        return statistics.median(cpu[name][-repeats:]) / seconds[name]["median"]

    if ffmpeg:
        timings = [ff[i : i + loops] for i in range(len(ff) - repeats * loops, len(ff), loops)]  # timed rounds only
        seconds["ffmpeg"] = summary([sum(r for r, _ in t) for t in timings])  # its own decode time, not process start
        limit_cores = statistics.median(sum(c for _, c in t) for t in timings) / seconds["ffmpeg"]["median"]
        timings = [ffc[i : i + loops] for i in range(len(ffc) - repeats * loops, len(ffc), loops)]
        seconds["ffmpeg_convert"] = summary([sum(r for r, _ in t) for t in timings])
    else:
        limit_cores = cores("decode_only")
    limit = per_s(src.frames, "ffmpeg" if ffmpeg else "decode_only")
    convert_limit = per_s(src.frames, "ffmpeg_convert") if ffmpeg else None
    rows = []
    for b in backends:
        fps = per_s(source_frames, b)
        rows.append({
            "size": src.size, "gop": src.gop, "backend": b, "clips": n_clips, "source_frames": source_frames,
            "decodes_per_timing": loops, "frames_per_s": fps,
            "sampled_frames_per_s": per_s(n_clips * spec.num_frames, b), "clips_per_s": per_s(n_clips, b),
            "limit_frames_per_s": limit, "vs_limit": fps["median"] / limit["median"], "cores_used": cores(b),
            "convert_limit_frames_per_s": convert_limit,
            "vs_convert_limit": fps["median"] / convert_limit["median"] if convert_limit else None,
        })  # fmt: skip
    limit_entry = {
        "size": src.size, "gop": src.gop, "tool": "ffmpeg" if ffmpeg else "pyav-decode-only", "frames": src.frames,
        "frames_per_s": limit, "cores_used": limit_cores,
        "decode_only_frames_per_s": per_s(src.frames, "decode_only"), "decode_only_cores": cores("decode_only"),
    }  # fmt: skip
    return rows, limit_entry


_PEAK_RSS = textwrap.dedent("""
    import json, resource, sys
    from anon_core.video import ClipSpec
    from anon_core.video.segments import decode_segment
    path, spec, segments, backend = sys.argv[1:5]
    spec, segments = ClipSpec(*json.loads(spec)), json.loads(segments)
    clips = sum(len(decode_segment(path, spec, tuple(seg), backend)["clip_index"]) for seg in segments)
    try:  # VmHWM: this process's own peak; ru_maxrss would start at the RSS of the parent that forked it
        with open("/proc/self/status") as f:
            peak_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except OSError:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"clips": clips, "peak_kib": peak_kib}))
""")


def _peak_rss_mb(path: str, settings: dict, backend: str) -> float:
    """Peak RSS (MiB) of a fresh process that decodes every clip of the file as the decode stage does."""
    import anon_core

    spec = settings["spec"]
    segments = segment_ranges(path, spec, settings["clips_per_task"])
    root = str(Path(anon_core.__file__).resolve().parents[1])  # the anon_core this process imported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    args = [json.dumps([spec.num_frames, spec.stride, spec.size, spec.max_clips]), json.dumps(segments), backend]
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, path, *args], capture_output=True, text=True, env=env,
                         timeout=600)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"decoding {path} with {backend} in a child failed: {out.stderr[-800:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    expected = segments[-1][1] if segments else 0
    if res["clips"] != expected:
        raise RuntimeError(f"the memory child decoded {res['clips']} of {expected} clips of {path}")
    return res["peak_kib"] / 1024


def _repeated(src: Source, times: int) -> Source:
    if times == 1:
        return src
    path = Path(src.path).with_name(f"{Path(src.path).stem}_x{times}.mp4")
    if not path.exists():
        _repeat(src.path, path, times)
    return _source(path, src.size, src.gop)


def _measure_memory(src: Source, settings: dict, factors: tuple[int, int]) -> dict:
    """Peak RSS decoding the source repeated factors[0] and factors[1] times, each backend in fresh processes."""
    from anon_core.video import plan_clip_starts

    short, long = _repeated(src, factors[0]), _repeated(src, factors[1])
    by_backend = {}
    for b in measured_backends():
        short_mb, long_mb = _peak_rss_mb(short.path, settings, b), _peak_rss_mb(long.path, settings, b)
        by_backend[b] = {"short_mb": short_mb, "long_mb": long_mb, "ratio": long_mb / short_mb,
                         "growth_mb": long_mb - short_mb}  # fmt: skip
    spec = settings["spec"]
    clip_mb = spec.num_frames * spec.size**2 * 3 / 2**20
    main = settings["backend"] if settings["backend"] in by_backend else "pyav"  # the pipeline's fallback
    return {
        "size": src.size, "gop": src.gop, "backend": main, "short_frames": short.frames,
        "long_frames": long.frames, **by_backend[main], "by_backend": by_backend,
        # decord queues packets ahead of its decoding: its peak can follow the file's bytes rather than its frames;
        # torchcodec's process imports torch (hundreds of MiB at both lengths: growth, not size, is what is judged)
        "short_file_mb": os.path.getsize(short.path) / 2**20, "long_file_mb": os.path.getsize(long.path) / 2**20,
        # the scales "flat" is judged against: every clip of the long video at once, and one segment of clips
        "all_clips_mb": len(plan_clip_starts(long.frames, spec)) * clip_mb,
        "segment_mb": settings["clips_per_task"] * clip_mb,
    }  # fmt: skip


def run_decode(work_dir: str | Path, *, tiny: bool, repeats: int, log: Callable[[str], None] | None = None) -> dict:
    """The decode section of `anonvid bench`: throughput rows, the limit per source, peak memory (JSON-able)."""
    log = log or (lambda msg: None)
    work_dir = Path(work_dir)
    settings = pipeline_settings()
    ffmpeg = shutil.which("ffmpeg")
    t0 = time.perf_counter()
    sources = make_sources(work_dir / "sources", seconds=3.0 if tiny else 20.0)
    log(f"[decode] {len(sources)} sources ready ({time.perf_counter() - t0:.1f} s)")
    rows, limits = [], []
    for src in sources:
        r, lim = _measure_source(src, settings, ffmpeg, repeats, 0.05 if tiny else 0.25)
        rows += r
        limits.append(lim)
        log(f"[decode] {src.size}p {src.gop} GOP: " + ", ".join(f"{x['backend']} {x['vs_limit']:.2f}x" for x in r))
    mem_src = next(s for s in sources if (s.size, s.gop) == (max(s.size for s in sources), "long"))
    memory = _measure_memory(mem_src, settings, MEMORY_FACTORS_TINY if tiny else MEMORY_FACTORS)
    log(
        f"[decode] peak RSS {memory['short_mb']:.0f} MiB ({memory['short_frames']} frames) -> "
        f"{memory['long_mb']:.0f} MiB ({memory['long_frames']} frames)"
    )
    spec, nt = settings["spec"], settings["num_threads"]
    return {
        "settings": {"backend": settings["backend"], "num_threads": nt},
        "backends": list(measured_backends()),
        "unavailable": unavailable_backends(),
        "sources": [asdict(s) for s in sources],
        "clip_spec": {"num_frames": spec.num_frames, "stride": spec.stride, "size": spec.size,
                      "max_clips": spec.max_clips, "clips_per_task": settings["clips_per_task"]},
        "rows": rows,
        "limits": limits,
        "limit_tool": f"{ffmpeg} -threads 1 -f null (-benchmark rtime)" if ffmpeg
        else "no ffmpeg on PATH: PyAV decoding every frame in this process, nothing converted",
        "memory": memory,
        "threads": {
            "torchcodec": f"VideoDecoder(num_ffmpeg_threads={nt}), torch intra-op threads 1 while it decodes "
                          "(anon_core torchcodec_frames)",
            "decord": f"VideoReader(num_threads={nt}) (anon_core VideoClipReader default)",
            "pyav": f"codec thread_count={nt}, thread_type={'AUTO' if nt > 1 else 'SLICE'}; swscale and the crop/scale "
                    "filter graph one thread (anon_core pyav_frames)",
            "ffmpeg": "-threads 1 (decoder)",
            "cores_used": "process CPU seconds / wall seconds, medians; decoders may run helper threads",
        },
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip


def _fig(s: dict) -> str:
    return f"{s['median']:,.0f} ±{100 * s['spread']:.0f}%"


def decode_table(result: dict) -> str:
    """Markdown: one line per (size, GOP, backend); then peak memory at 1x and Nx video length."""
    lines = [
        "| source | GOP | backend | clips/s | sampled frames/s | source frames/s | limit frames/s | vs limit "
        "| decode+convert limit frames/s | vs it | cores |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        conv = r.get("convert_limit_frames_per_s")
        conv_cells = f"{_fig(conv)} | {r['vs_convert_limit']:.2f}x" if conv else "- | -"
        lines.append(f"| {r['size']}p | {r['gop']} | {r['backend']} | {_fig(r['clips_per_s'])} "
                     f"| {_fig(r['sampled_frames_per_s'])} | {_fig(r['frames_per_s'])} "
                     f"| {_fig(r['limit_frames_per_s'])} | {r['vs_limit']:.2f}x | {conv_cells} "
                     f"| {r['cores_used']:.2f} |")  # fmt: skip
    m = result["memory"]
    lines += ["", f"Peak RSS decoding every clip of a {m['size']}p {m['gop']}-GOP video ({m['short_frames']} frames, "
              f"{m['short_file_mb']:.1f} MiB file) and of {m['long_frames'] / m['short_frames']:.0f}x that length "
              f"({m['long_frames']} frames, {m['long_file_mb']:.1f} MiB file):", "",
              "| backend | short MiB | long MiB | ratio | growth MiB |",
              "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for b, v in m["by_backend"].items():
        lines.append(f"| {b} | {v['short_mb']:.0f} | {v['long_mb']:.0f} | {v['ratio']:.2f} | {v['growth_mb']:+.0f} |")
    for b, why in result.get("unavailable", {}).items():
        lines += ["", f"Not measured: {b} ({why})."]
    return "\n".join(lines)
