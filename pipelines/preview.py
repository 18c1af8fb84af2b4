"""`--preview N`: show a person what the pruner removed, for the first N videos the run committed ok.

    OUT/preview/<video_id>.mp4      the masked clips, concatenated: exactly what the encoder saw (pruned tubelets black)
    OUT/preview/contact_sheet.png   one row per video; for the first, middle and last frame of its first clip:
                                    the masked frame on the tubelet grid (removed tubelets black)
                                    with allow_raw: original | removed tubelets tinted red on the grid | masked

A preview sits in the output beside the features, so by default it shows only anonymized pixels: the original frame
and the red tint (under which the content stays recognisable) need the same --allow-raw as raw pixels do.

The clips go through the pipeline's own PruneClips stage (called on a plain dict, no Ray), so the masks are the ones
the run applied, not a re-implementation of them. It runs on the driver's CPU in fp32: a run on GPUs (bf16) may
differ in the odd near-tied tubelet, which does not matter for looking at it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace

import numpy as np

from .store import OutputStore

CLIPS_PER_VIDEO = 4  # a preview is for looking at, not for coverage: a few clips spread over the video are enough
SEP = 2  # px between the tiles of one frame
GAP = 8  # px between frames and between videos: wider than SEP, so the triplets read as groups
HEADER = 16  # px of captions above the first row
LABEL = 12  # px above each row for its video: the id and the share of tubelets kept
RED = np.array([255, 0, 0], dtype=np.float32)
TINT = 0.5  # alpha of the red over removed tubelets: the content stays recognisable under it
GRID_SHADE = 0.5  # grid lines: the pixel darkened by half, visible on bright and tinted areas alike
BACKGROUND = 255
CAPTIONS = ("frame {t}, masked",)  # the tiles of one frame
CAPTIONS_RAW = ("frame {t}", "removed (red)", "masked")  # with allow_raw


def write_preview(plan, n: int, *, clips_per_video: int = CLIPS_PER_VIDEO) -> dict:
    """Masked preview videos and a mask contact sheet for the first `n` videos (by uri) committed ok.

    Returns {"contact_sheet": uri or None when no video qualifies, "videos": [uri per video], "video_ids": [...],
    "kept_fraction": mean fraction of tubelets kept over the previewed clips, "skipped": [{video_id, reason}]}.
    """
    from anon_core.video import VideoDecodeError, read_clips

    cfg = plan.config
    if not cfg.needs()["pruner"]:
        raise ValueError(
            f"--preview shows the tubelets the pruner removed, and --mode {cfg.mode} runs no pruner: "
            "use --mode prune or --mode prune+aam, or drop --preview"
        )
    if n < 1:
        raise ValueError(f"--preview N needs N >= 1, got {n}")
    store = OutputStore(cfg.output)
    chosen = _first_ok(store, plan.listing.videos, n)
    prune = _Pruner(cfg)
    # The run's own clip plan, capped: with max_clips the reader spreads the clips over the whole video.
    cap = min(clips_per_video, cfg.max_clips or clips_per_video)
    spec = replace(cfg.spec, max_clips=cap)

    rows, labels, videos, video_ids, kept, skipped = [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="anonvid-preview-") as tmp:
        for vid, uri in chosen:
            try:
                decoded = read_clips(uri, spec, cfg.backend)
            except VideoDecodeError as e:  # it decoded in the run; if not now, say so rather than lose the preview
                skipped.append({"video_id": vid, "reason": str(e)})
                continue
            clips = decoded.clips  # (C, T, S, S, 3) uint8
            masked, keep_tubelets, error = prune(vid, clips)
            if error:
                skipped.append({"video_id": vid, "reason": error})
                continue
            kept.extend(keep_tubelets.reshape(len(clips), -1).mean(axis=1).tolist())
            # Clips are every stride-th frame, so the source rate over the stride plays them at real speed.
            fps = max(1, round(decoded.meta.fps / spec.stride)) if decoded.meta.fps > 0 else 25
            local = os.path.join(tmp, f"{vid}.mp4")
            _write_mp4(masked.reshape(-1, *masked.shape[2:]), local, fps)  # (C * T, S, S, 3)
            videos.append(_upload(store, local, f"{vid}.mp4"))
            video_ids.append(vid)
            rows.append(_sheet_row(clips[0], masked[0], keep_tubelets[0], prune.tubelet, cfg.allow_raw))
            # the id names the row (the file name could itself be private: shown only with allow_raw)
            name = f"  {uri.rsplit('/', 1)[-1]}" if cfg.allow_raw else ""
            labels.append(f"{vid[:16]}{name}  kept {keep_tubelets[0].mean():.0%} of tubelets")
        sheet = None
        if rows:
            local = os.path.join(tmp, "contact_sheet.png")
            _sheet(rows, labels, spec, CAPTIONS_RAW if cfg.allow_raw else CAPTIONS).save(local, optimize=True)
            sheet = _upload(store, local, "contact_sheet.png")
    return {
        "contact_sheet": sheet,
        "videos": videos,
        "video_ids": video_ids,
        "kept_fraction": round(float(np.mean(kept)), 6) if kept else None,
        "skipped": skipped,
    }


def _first_ok(store: OutputStore, listing, n: int) -> list[tuple[str, str]]:
    """(video_id, uri) of the first n listed videos, by uri, whose commit marker says ok. Markers are read a few
    at a time in uri order, so a preview of 8 videos from a million-video run reads about 8 markers, not a million."""
    committed = store.committed()
    candidates = listing[listing["video_id"].isin(committed)].sort_values("uri")
    chosen: list[tuple[str, str]] = []
    step = max(2 * n, 16)
    for start in range(0, len(candidates), step):
        part = candidates.iloc[start : start + step]
        records = store.read_commits(list(part["video_id"]))
        for vid, uri in zip(part["video_id"], part["uri"], strict=True):
            if records.get(vid, {}).get("status") == "ok":
                chosen.append((vid, uri))
                if len(chosen) == n:
                    return chosen
    return chosen


class _Pruner:
    """The pipeline's PruneClips stage on a plain dict: masked clips and the (C, T', Hp, Wp) kept-tubelet mask."""

    def __init__(self, cfg) -> None:
        import torch

        from .stages.prune import PruneClips
        from .stages.workers import ModelResources

        # CPU, and as many threads as torch already uses here: ModelRunner sets the count from the CPUs given.
        resources = ModelResources(cpus_per_actor=torch.get_num_threads())
        self.stage = PruneClips(cfg.pruner, cfg.keep_ratio, cfg.lambda_priv, resources=resources)
        self.stage.setup()
        self.grid = self.stage.model.grid_size  # (T', Hp, Wp)
        self.tubelet = self.stage.model.patch_embed.tubelet  # (t, p, p)

    def __call__(self, vid: str, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        import torch

        from anon_core.models.pruner import tubelet_mask_from_ids

        from .stages.rows import error_fields

        c = len(clips)
        batch = {"video_id": np.array([vid] * c, dtype=object), "kind": np.array(["clip"] * c, dtype=object)}
        out = self.stage({**batch, **error_fields(c), "clip": clips})
        if out["error_type"][0]:
            return clips, np.zeros(0), f"{out['error_type'][0]}: {out['error_message'][0]}"
        ids = torch.from_numpy(out["kept_tubelet_ids"].astype(np.int64))  # (C, k)
        return out["clip"], tubelet_mask_from_ids(ids, self.grid).numpy(), ""


def _write_mp4(frames: np.ndarray, path: str, fps: int) -> None:
    from anon_core.synthetic import write_video

    # Clip sides are whole multiples of the patch size (preflight checks the pruner fits), hence even as yuv420p needs.
    write_video(frames, path, "h264", fps)


def _upload(store: OutputStore, local: str, name: str) -> str:
    """Local files are made in a temp dir either way; put_bytes makes them appear whole, locally or on a store."""
    with open(local, "rb") as f:
        store.put_bytes(store.path("preview", name), f.read())
    return f"{store.uri}/preview/{name}"


def _frames_shown(num_frames: int) -> list[int]:
    return sorted({0, num_frames // 2, num_frames - 1})


def _sheet_row(clip: np.ndarray, masked: np.ndarray, keep: np.ndarray, tubelet, allow_raw: bool) -> list[np.ndarray]:
    """For each shown frame, each (S, S, 3): the masked frame on the tubelet grid; with allow_raw the original, the
    original with the removed tubelets tinted red on the grid, and the masked frame."""
    t_size, p_h, p_w = tubelet
    tiles = []
    for t in _frames_shown(len(clip)):
        removed = ~keep[t // t_size].repeat(p_h, axis=0).repeat(p_w, axis=1)  # (Hp, Wp) -> (S, S)
        if allow_raw:
            over = clip[t].astype(np.float32)
            over[removed] = (1 - TINT) * over[removed] + TINT * RED
        else:  # the masked frame, with the removed tubelets black whatever the mask left there
            over = masked[t].astype(np.float32)
            over[removed] = 0
        over[p_h::p_h, :] *= GRID_SHADE  # one-pixel lines on the tubelet boundaries
        over[:, p_w::p_w] *= GRID_SHADE
        over = over.round().clip(0, 255).astype(np.uint8)
        tiles += [clip[t], over, masked[t]] if allow_raw else [over]
    return tiles


def _sheet(rows: list[list[np.ndarray]], labels: list[str], spec, captions: tuple[str, ...]):
    """Rows of tiles -> one PIL image: SEP between the tiles of a frame, GAP between frames and between videos, a
    label line above each row naming its video."""
    from PIL import Image, ImageDraw

    s, k, per_row = spec.size, len(captions), len(rows[0])
    frames = _frames_shown(spec.num_frames)
    width = len(frames) * (k * s + (k - 1) * SEP) + (len(frames) - 1) * GAP
    height = row_top(len(rows) - 1, s) + s
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for r, tiles in enumerate(rows):
        top = row_top(r, s)
        for i, tile in enumerate(tiles):
            left = _tile_left(i, s, k)
            canvas[top : top + s, left : left + s] = tile
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for i in range(per_row):
        caption = captions[i % k].format(t=frames[i // k])
        draw.text((_tile_left(i, s, k) + 2, 2), caption, fill=(0, 0, 0))
    for r, label in enumerate(labels):
        draw.text((2, row_top(r, s) - LABEL), label, fill=(0, 0, 0))
    return image


def row_top(r: int, s: int) -> int:
    """Top edge of the r-th row's tiles (its label line sits just above)."""
    return HEADER + r * (LABEL + s + GAP) + LABEL


def _tile_left(i: int, s: int, k: int) -> int:
    """Left edge of the i-th tile of a row with k tiles per frame."""
    group, j = divmod(i, k)
    return group * (k * s + (k - 1) * SEP + GAP) + j * (s + SEP)
