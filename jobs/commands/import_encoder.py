"""`anonvid import-encoder`: a torchvision video classifier's weights (.pth) -> a frozen-encoder model bundle."""

from __future__ import annotations

import argparse
import sys

from . import add_command

EXAMPLES = """examples:
  anonvid import-encoder --arch r2plus1d_18 --weights ~/.cache/torch/hub/checkpoints/r2plus1d_18-91a641e6.pth \\
      --out models/r2plus1d                             # 16 x 112 clips, torchvision's Kinetics recipe
  anonvid import-encoder --arch s3d --weights s3://models/s3d-d76dad2f.pth --out s3://models/s3d --frames 32
  anonvid train aam --config jobs/configs/train_aam_tiny.yaml encoder=models/r2plus1d out=models/aam-r2plus1d
  anonvid anonymize VIDEOS --out feats --mode aam --encoder models/r2plus1d --aam models/aam-r2plus1d

The weights are the user's (nothing is downloaded); the classifier head is dropped. The bundle takes the arch's
Kinetics normalisation and --frames x --size clips: run the jobs with the same --clip-frames/--clip-size.
These encoders serve modes aam, raw and the pixel baselines; the pruning modes need a video_vit encoder.
"""
# anon_core.models.torchvision_video.ARCHS, named here so that building the CLI imports no torch (a test checks both)
ARCHS = ("r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t")


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "turn torchvision video weights (.pth) into a frozen-encoder bundle", EXAMPLES)
    p.add_argument("--arch", required=True, choices=list(ARCHS), help="the torchvision.models.video architecture")
    p.add_argument("--weights", required=True, metavar="PATH_OR_URI", help="its state dict (.pth), local or fsspec")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="where to write the bundle (folder or URI)")
    p.add_argument("--frames", type=int, help="clip length the weights were trained on (default: the arch's, 16)")
    p.add_argument("--size", type=int, help="clip side in px (default: 112 for r2plus1d_18, else 224)")
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (else AWS_ENDPOINT_URL / AWS config)")
    p.add_argument("--aws-profile", help="credentials profile from ~/.aws (else AWS_PROFILE / the default chain)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from anon_core.models.torchvision_video import import_torchvision_encoder

    from ..recipes.anonymize import s3_endpoint

    s3_endpoint(args.s3_endpoint, args.aws_profile)
    try:
        info = import_torchvision_encoder(args.arch, args.weights, args.out, args.frames, args.size)
    except (ValueError, FileNotFoundError) as e:
        print(f"anonvid import-encoder: {e}", file=sys.stderr)
        return 2
    i = info.input
    dropped = len(info.extra["imported"]["dropped_keys"])
    print(f"wrote {info.uri}: {info.model_id}, {info.embed_dim}-d features from {i['num_frames']} x {i['size']} px "
          f"clips (Kinetics normalisation); {dropped} classifier keys dropped")  # fmt: skip
    print(f"use it with --clip-frames {i['num_frames']} --clip-size {i['size']}: `anonvid train aam ... "
          f"encoder={info.uri}`, then `anonvid anonymize ... --mode aam --encoder {info.uri}`")  # fmt: skip
    return 0
