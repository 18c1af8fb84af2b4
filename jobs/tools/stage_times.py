"""Standalone time of the anonymize job's stages on a demo output, one process, no Ray: the bound the pipeline's
end-to-end time is compared against (its overhead over its stages).

    .venv/bin/anonvid demo --out demo_out                     # corpus + models + the pipeline's own figures
    .venv/bin/python jobs/tools/stage_times.py demo_out --threads 1

Decode reads every video of OUT/corpus/videos in-process (the clip plan the pipeline uses); prune, encode and AAM
run the pipeline's own stage classes on plain dicts, in batches of the pipeline's default size. Each video's clips
go through the AAM as one video.
"""

from __future__ import annotations

import argparse
import glob
import json
import time

import numpy as np

from anon_core.video import ClipSpec
from anon_core.video.reader import DEFAULT_BACKEND
from anon_core.video.segments import decode_segment, probe_clip_count
from pipelines.stages import ApplyAam, EncodeClips, PruneClips
from pipelines.stages.rows import VideoRecord
from pipelines.stages.workers import ModelResources


def clip_batch(clips: np.ndarray) -> dict[str, np.ndarray]:
    n = len(clips)
    empty = np.full(n, "", dtype=object)
    return {"video_id": np.arange(n).astype(str).astype(object), "kind": np.full(n, "clip", dtype=object),
            "error_type": empty, "error_stage": empty.copy(), "error_message": empty.copy(), "clip": clips}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo_out", help="an `anonvid demo --out` folder (corpus/ and models/)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=ModelResources().batch_size)
    args = ap.parse_args()

    res = ModelResources(cpus_per_actor=args.threads)  # the stages set torch's threads from it, as in an actor
    spec = ClipSpec()
    files = sorted(glob.glob(f"{args.demo_out}/corpus/videos/*"))
    t0 = time.perf_counter()
    per_video = [decode_segment(f, spec, (0, probe_clip_count(f, spec)), DEFAULT_BACKEND)["clip"] for f in files]
    t_decode = time.perf_counter() - t0
    clips = np.concatenate(per_video)

    models = f"{args.demo_out}/models"
    prune, encode = PruneClips(f"{models}/pruner", resources=res), EncodeClips(f"{models}/encoder", resources=res)
    aam = ApplyAam(f"{models}/aam", resources=res)
    b = args.batch_size
    t0 = time.perf_counter()
    pruned = [prune(clip_batch(clips[i : i + b])) for i in range(0, len(clips), b)]
    t_prune = time.perf_counter() - t0
    t0 = time.perf_counter()
    features = np.concatenate([encode(p)["features"] for p in pruned])
    t_encode = time.perf_counter() - t0
    bounds = np.cumsum([0] + [len(v) for v in per_video])
    payload = [VideoRecord("", clips={"features": features[a:z]}).pack()
               for a, z in zip(bounds[:-1], bounds[1:], strict=True)]  # fmt: skip
    t0 = time.perf_counter()
    aam({"video_id": np.arange(len(files)), "status": np.full(len(files), "ok", dtype=object),
         "payload": np.array(payload, dtype=object)})  # fmt: skip
    t_aam = time.perf_counter() - t0
    print(json.dumps({"videos": len(files), "clips": int(len(clips)), "threads": args.threads,
                      "decode_s": round(t_decode, 3), "prune_s": round(t_prune, 3), "encode_s": round(t_encode, 3),
                      "aam_s": round(t_aam, 3)}))  # fmt: skip


if __name__ == "__main__":
    main()
