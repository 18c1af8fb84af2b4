"""`--preview N` on tiny models and a small corpus, without Ray: commit markers are faked, then previews written."""

from __future__ import annotations

import io
import uuid

import av
import fsspec
import numpy as np
import pytest
import torch
from PIL import Image

from anon_core.models.bundle import load_bundle, normalize_clips
from anon_core.models.pruner import num_kept
from anon_core.video import read_clips
from pipelines import preview
from pipelines.anonymize import AnonymizeConfig, preflight
from pipelines.preview import write_preview
from pipelines.store import OutputStore


def make_plan(out: str, corpus, models, mode="prune", **kw):
    kw.setdefault("allow_raw", mode == "raw")
    cfg = AnonymizeConfig(
        output=out, input=str(corpus / "videos"), mode=mode,
        encoder=models["encoder"], pruner=models["pruner"], aam=models["aam"], **kw,
    )  # fmt: skip
    return preflight(cfg)


def sheet_tiles(result: dict, plan, per_frame: int) -> dict[str, list[np.ndarray]]:
    """video_id -> the contact sheet's tiles of its row, left to right, each (S, S, 3)."""
    s = plan.config.clip_size
    frames = len(preview._frames_shown(plan.config.clip_frames))
    with fsspec.open(result["contact_sheet"], "rb") as f:
        sheet = np.asarray(Image.open(f).convert("RGB"))
    n = len(result["video_ids"])
    assert sheet.shape[:2] == (
        preview.HEADER + n * (preview.LABEL + s) + (n - 1) * preview.GAP,
        frames * (per_frame * s + (per_frame - 1) * preview.SEP) + (frames - 1) * preview.GAP,
    )
    tiles = {}
    for r, vid in enumerate(result["video_ids"]):
        top = preview.HEADER + r * (preview.LABEL + s + preview.GAP) + preview.LABEL
        label = sheet[top - preview.LABEL : top]
        assert (label < 128).any(), "every row is labelled with its video"  # text drawn in the label band
        lefts = [g * (per_frame * s + (per_frame - 1) * preview.SEP + preview.GAP) + j * (s + preview.SEP)
                 for g in range(frames) for j in range(per_frame)]  # fmt: skip
        tiles[vid] = [sheet[top : top + s, left : left + s] for left in lefts]
    return tiles


def first_clip_and_mask(plan, vid: str, pruner_uri: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The video's first clip (T, S, S, 3), its kept-pixel mask (T, S, S) as the pruner computes it, and the pixels
    off the tubelet grid lines the sheet draws (S, S)."""
    listed = plan.listing.videos
    clips = read_clips(listed.loc[listed["video_id"] == vid, "uri"].item(), plan.config.spec).clips
    model, info = load_bundle(pruner_uri, expect_kind="pruner")
    with torch.inference_mode():
        out = model(normalize_clips(torch.from_numpy(clips), info.input["mean"], info.input["std"]))
    s, p = plan.config.clip_size, model.patch_embed.tubelet[1]
    off_grid = np.ones((s, s), bool)
    off_grid[p::p] = off_grid[:, p::p] = False
    return clips[0], out.pixel_mask()[:, 0].reshape(len(clips), -1, s, s).numpy()[0], off_grid


def commit(plan, statuses: dict[int, str]) -> None:
    """Fake the sink: commit markers for the i-th listed video (by uri) with the given status."""
    store = OutputStore(plan.config.output)
    videos = plan.listing.videos.sort_values("uri", ignore_index=True)
    for i, status in statuses.items():
        vid = videos["video_id"][i]
        store.put_json(store.path("_commits", f"{vid}.json"), {"video_id": vid, "status": status, "shard": "s"})


def decode_all(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def expected_kept_fraction(pruner_uri: str, keep_ratio: float | None) -> float:
    model, _ = load_bundle(pruner_uri, expect_kind="pruner")
    n = total = model.patch_embed.num_patches
    for r in model.keep_ratios if keep_ratio is None else model._keep_ratios(keep_ratio):
        n = num_kept(n, r)
    return n / total


def test_preview_shows_what_was_removed(tmp_path, tiny_models, small_corpus):
    plan = make_plan(str(tmp_path / "out"), small_corpus, tiny_models)
    commit(plan, {0: "failed", 1: "ok", 2: "ok", 3: "ok"})  # a failed video is never previewed
    result = write_preview(plan, 2)

    listed = plan.listing.videos.sort_values("uri", ignore_index=True)
    assert result["video_ids"] == list(listed["video_id"][1:3])
    assert result["skipped"] == []
    assert result["kept_fraction"] == pytest.approx(expected_kept_fraction(tiny_models["pruner"], None), abs=1e-6)

    s = plan.config.clip_size
    assert len(sheet_tiles(result, plan, per_frame=1)) == 2  # one row per video, one tile per frame (no allow_raw)

    model, info = load_bundle(tiny_models["pruner"], expect_kind="pruner")
    for vid, uri in zip(result["video_ids"], result["videos"], strict=True):
        assert uri == f"{plan.config.output}/preview/{vid}.mp4"
        with open(uri, "rb") as f:
            shown = decode_all(f.read())
        source = listed.loc[listed["video_id"] == vid, "uri"].item()
        clips = read_clips(source, plan.config.spec).clips  # 32 frames: one 16 x 2 clip
        assert shown.shape == (len(clips) * plan.config.clip_frames, s, s, 3)
        with torch.inference_mode():
            out = model(normalize_clips(torch.from_numpy(clips), info.input["mean"], info.input["std"]))
        keep = out.pixel_mask()[:, 0].reshape(-1, s, s).numpy()  # (C * T, S, S)
        assert (~keep).any() and keep.any()
        assert shown[~keep].mean() < 8  # pruned tubelets are black, up to h264's error at their edges
        original = clips.reshape(-1, s, s, 3)
        assert np.abs(shown[keep].astype(int) - original[keep]).mean() < 8  # kept ones are the clip itself


def test_preview_without_allow_raw_shows_only_the_anonymized_pixels(tmp_path, tiny_models, small_corpus):
    """The preview sits in the output: by default its contact sheet holds no original frame and no tint under which
    a removed tubelet stays recognisable, only the masked frame with the removed tubelets black."""
    plan = make_plan(str(tmp_path / "out"), small_corpus, tiny_models, mode="prune+aam")
    assert not plan.config.allow_raw
    commit(plan, {0: "ok", 1: "ok"})
    result = write_preview(plan, 2)
    shown = preview._frames_shown(plan.config.clip_frames)
    for vid, tiles in sheet_tiles(result, plan, per_frame=1).items():
        clip, keep, off_grid = first_clip_and_mask(plan, vid, tiny_models["pruner"])
        assert (~keep).any() and keep.any()
        for tile, t in zip(tiles, shown, strict=True):
            assert not tile[~keep[t]].any(), "a removed tubelet shows through"
            inside = keep[t] & off_grid
            assert np.array_equal(tile[inside], clip[t][inside])  # kept tubelets are the clip itself


def test_preview_with_allow_raw_shows_the_original_beside_the_mask(tmp_path, tiny_models, small_corpus):
    plan = make_plan(str(tmp_path / "out"), small_corpus, tiny_models, allow_raw=True)
    commit(plan, {0: "ok"})
    result = write_preview(plan, 1)
    shown = preview._frames_shown(plan.config.clip_frames)
    ((vid, tiles),) = sheet_tiles(result, plan, per_frame=3).items()
    clip, keep, _ = first_clip_and_mask(plan, vid, tiny_models["pruner"])
    for g, t in enumerate(shown):
        original, tinted, masked = tiles[3 * g : 3 * g + 3]
        assert np.array_equal(original, clip[t])
        assert tinted[~keep[t]].any()  # the content under the red tint
        assert not masked[~keep[t]].any()


def test_keep_ratio_override_reaches_the_pruner(tmp_path, tiny_models, small_corpus):
    plan = make_plan(str(tmp_path / "out"), small_corpus, tiny_models, keep_ratio=0.5)
    commit(plan, {0: "ok"})
    result = write_preview(plan, 3)  # more asked than committed: what there is
    assert len(result["videos"]) == 1
    assert result["kept_fraction"] == pytest.approx(expected_kept_fraction(tiny_models["pruner"], 0.5), abs=1e-6)


def test_preview_to_an_fsspec_output(tiny_models, small_corpus):
    out = f"memory://preview-test-{uuid.uuid4().hex[:8]}"
    plan = make_plan(out, small_corpus, tiny_models)
    commit(plan, {0: "ok"})
    result = write_preview(plan, 1)
    assert result["contact_sheet"] == f"{out}/preview/contact_sheet.png"
    with fsspec.open(result["contact_sheet"], "rb") as f:
        assert Image.open(f).size[1] == preview.HEADER + preview.LABEL + plan.config.clip_size
    with fsspec.open(result["videos"][0], "rb") as f:
        assert len(decode_all(f.read())) == plan.config.clip_frames


def test_no_committed_video_writes_nothing(tmp_path, tiny_models, small_corpus):
    plan = make_plan(str(tmp_path / "out"), small_corpus, tiny_models)
    commit(plan, {0: "failed"})
    result = write_preview(plan, 2)
    assert result["contact_sheet"] is None and result["videos"] == [] and result["kept_fraction"] is None


@pytest.mark.parametrize("mode", ["aam", "raw"])
def test_modes_without_a_pruner_are_refused(tmp_path, tiny_models, small_corpus, mode):
    plan = make_plan(str(tmp_path / "out"), small_corpus, tiny_models, mode=mode)
    with pytest.raises(ValueError, match="--mode prune or --mode prune\\+aam"):
        write_preview(plan, 1)
