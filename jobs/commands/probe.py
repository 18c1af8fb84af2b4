"""`anonvid probe`: metadata and clip count of videos (local paths or fsspec URIs), or why they cannot be decoded."""

from __future__ import annotations

import argparse
import json
import sys

from . import add_command

EXAMPLES = """examples:
  anonvid probe data/corpus/videos/v000000.mp4
  anonvid probe --decode --frames 16 --stride 2 s3://bucket/archive/cam1.mp4
"""


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "show video metadata (and optionally decode the clips)", EXAMPLES)
    p.add_argument("uris", nargs="+", help="local paths or fsspec URIs")
    p.add_argument("--decode", action="store_true", help="decode every clip, not just the header")
    p.add_argument("--backend", choices=["decord", "pyav", "torchcodec"], default=None,
                   help="decoder (default: anon_core.video.reader.DEFAULT_BACKEND)")  # fmt: skip
    p.add_argument("--frames", type=int, default=16, help="frames per clip (%(default)s)")
    p.add_argument("--stride", type=int, default=2, help="frame step within a clip (%(default)s)")
    p.add_argument("--size", type=int, default=112, help="clip side in pixels (%(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from anon_core.video import ClipSpec, VideoClipReader, VideoDecodeError, probe
    from anon_core.video.reader import DEFAULT_BACKEND
    from anon_core.video.source import open_source

    failed = 0
    spec = ClipSpec(num_frames=args.frames, stride=args.stride, size=args.size)
    for uri in args.uris:
        try:
            if args.decode:
                reader = VideoClipReader(uri, spec, args.backend or DEFAULT_BACKEND)
                n = sum(1 for _ in reader.clips())
                row = {**asdict(reader.meta), "clips": n, "backend": reader.used_backend}
            else:
                with open_source(uri, need_path=False) as src:
                    row = asdict(probe(src, uri))
            print(json.dumps(row))
        except VideoDecodeError as e:
            failed += 1
            print(json.dumps({"uri": uri, "error": e.reason.value, "message": str(e)}))
    if failed:
        print(f"anonvid probe: {failed} of {len(args.uris)} videos cannot be decoded", file=sys.stderr)
    return 1 if failed else 0
