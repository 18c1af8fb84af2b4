"""The stages after decode, driven in sequence on plain dicts of NumPy arrays, without Ray:
prune -> encode -> gather -> AAM -> write. Plan and decode are in test_stages_decode.py."""

import json
import os
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import stage_helpers
from stage_helpers import DIM, ERRORS, GOOD_CLIPS, LABELS, SPEC, concat, copy_batch

from pipelines.stages import ApplyAam, EncodeClips, GatherVideos, PruneClips, WriteShards
from pipelines.stages.rows import OK, VideoRecord
from pipelines.store import OutputStore

# the shared fixtures, bound here so that pytest finds them in this module
videos, segments, segments4 = stage_helpers.videos, stage_helpers.segments, stage_helpers.segments4
decoded, decoded4 = stage_helpers.decoded, stage_helpers.decoded4

GRID, TUBELET = (8, 7, 7), (2, 16, 16)  # the tiny pruner's tubelet grid over a 16 x 112 x 112 clip


@pytest.fixture(scope="module")
def stages(tiny_models):
    return PruneClips(pruner_uri=tiny_models["pruner"]), EncodeClips(encoder_uri=tiny_models["encoder"])


@pytest.fixture(scope="module")
def processed(decoded4, stages):
    """(decoded, pruned, encoded) per decoded batch; each stage gets its own copy."""
    prune, encode = stages
    out = []
    for batch in decoded4:
        pruned = prune(copy_batch(batch))
        out.append((batch, pruned, encode(copy_batch(pruned))))
    return out


# -- prune and encode ----------------------------------------------------------------------------------------------


def _keep_mask(ids: np.ndarray) -> np.ndarray:
    """Kept tubelet ids -> (T, H, W) bool pixel mask."""
    m = np.zeros(np.prod(GRID), dtype=bool)
    m[ids] = True
    m = m.reshape(GRID)
    for axis, size in enumerate(TUBELET):
        m = m.repeat(size, axis=axis)
    return m


def test_prune_and_encode_shapes(processed, stages):
    prune, _ = stages
    k = prune.k
    assert 0 < k < np.prod(GRID)
    clip_batches = [(p, e) for d, p, e in processed if d["kind"][0] == "clip"]
    assert sum(len(e["video_id"]) for _, e in clip_batches) == GOOD_CLIPS
    for pruned, encoded in clip_batches:
        n = len(pruned["video_id"])
        assert pruned["kept_tubelet_ids"].shape == (n, k) and pruned["kept_tubelet_ids"].dtype == np.int32
        for ids in pruned["kept_tubelet_ids"]:
            assert np.all(np.diff(ids) > 0) and ids[0] >= 0 and ids[-1] < np.prod(GRID)
        assert pruned["pruner_feature"].shape == (n, DIM) and pruned["pruner_feature"].dtype == np.float32
        assert np.isfinite(pruned["pruner_feature"]).all() and np.abs(pruned["pruner_feature"]).sum(1).min() > 0
        assert encoded["features"].shape == (n, DIM) and encoded["features"].dtype == np.float32
        assert np.isfinite(encoded["features"]).all() and np.abs(encoded["features"]).sum(1).min() > 0
        assert "clip" not in encoded  # pixels end at the encoder
        assert set(encoded["error_type"]) == {OK}
        assert encoded["t_prune"].shape == encoded["t_encode"].shape == (n,)


def test_pruned_clip_is_black_exactly_outside_kept_tubelets(processed):
    checked = 0
    for decoded, pruned, _ in processed:
        if decoded["kind"][0] != "clip":
            continue
        for before, after, ids in zip(decoded["clip"], pruned["clip"], pruned["kept_tubelet_ids"], strict=True):
            keep = _keep_mask(ids)  # (T, H, W)
            assert before[~keep].any()  # the check below can fail: those pixels were not black before
            assert not after[~keep].any()
            np.testing.assert_array_equal(after[keep], before[keep])
            checked += 1
    assert checked == GOOD_CLIPS


def test_encoder_on_the_pruners_grid_reads_only_the_kept_tubelets(processed, tiny_models):
    """Given the pruner, a ViT encoder of the same tubelet grid reads the kept tubelets as tokens (kept_ids), not
    the black pixels; without the pruner (or on another grid) it reads the masked clip as before."""
    import torch

    from anon_core.models.bundle import normalize_clips

    reading = EncodeClips(encoder_uri=tiny_models["encoder"], pruner_uri=tiny_models["pruner"])
    plain = EncodeClips(encoder_uri=tiny_models["encoder"])
    reading.setup(), plain.setup()  # the model loads once, on setup (an actor's start) or on the first call
    assert reading.reads_kept and not plain.reads_kept
    _, pruned, encoded = next(t for t in processed if t[0]["kind"][0] == "clip")
    out = reading(copy_batch(pruned))
    x = normalize_clips(torch.from_numpy(pruned["clip"]), reading.info.input["mean"], reading.info.input["std"])
    ids = torch.from_numpy(pruned["kept_tubelet_ids"].astype(np.int64))
    with torch.no_grad():
        want = reading.model.forward_head(reading.model.forward_features(x, ids), pre_logits=True).numpy()
    np.testing.assert_allclose(out["features"], want, atol=1e-5)
    assert not np.allclose(out["features"], encoded["features"], atol=1e-3)  # not the masked-clip reading


def test_error_rows_pass_through_prune_and_encode_untouched(processed, stages):
    prune, _ = stages
    (decoded, pruned, encoded) = next(t for t in processed if t[0]["video_id"][0] == "missing")
    assert list(encoded["kind"]) == ["error"]
    assert (pruned["kept_tubelet_ids"] == -1).all() and pruned["kept_tubelet_ids"].shape == (1, prune.k)
    assert not pruned["pruner_feature"].any()
    assert encoded["features"].shape == (1, DIM) and not encoded["features"].any()
    for col in ("error_type", "error_stage", "error_message", "covers", "clip_index", "num_clips"):
        assert list(encoded[col]) == list(decoded[col])
    assert encoded["error_type"][0] == "not_found"


def test_encode_without_prune_on_a_mixed_batch(decoded4, stages):
    """raw mode: encode straight from decode; one batch holding a clip row and an error row."""
    _, encode = stages
    clip = next(b for b in decoded4 if b["video_id"][0] == "good")
    err = next(b for b in decoded4 if b["video_id"][0] == "missing")
    mixed = concat([{k: v[:1] for k, v in clip.items()}, err])
    out = encode(copy_batch(mixed))
    assert out["features"].shape == (2, DIM)
    assert np.abs(out["features"][0]).sum() > 0 and not out["features"][1].any()
    assert list(out["error_type"]) == [OK, "not_found"]


def test_clip_models_give_the_steps_outputs_bit_for_bit_in_one_actor(decoded4, tiny_models):
    """The fused clip-model stage (prune -> keep pixels -> encode in one process) gives exactly what the steps give
    run one after another, and still reports each step's busy seconds."""
    from pipelines.stages import ClipModels, KeepPixels

    fused = ClipModels(tiny_models["encoder"], tiny_models["pruner"], keep_pixels=16)
    assert fused.describe() == "prune -> keep pixels -> encode f_E"
    prune = PruneClips(tiny_models["pruner"])
    keep = KeepPixels(16)
    encode = EncodeClips(tiny_models["encoder"], pruner_uri=tiny_models["pruner"])
    for batch in decoded4:
        want = encode(keep(prune(copy_batch(batch))))
        got = fused(copy_batch(batch))
        assert sorted(got) == sorted(want)
        for k in want:
            if k.startswith("t_"):
                assert got[k].shape == want[k].shape and (got[k] >= 0).all()
            else:
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        assert {"t_prune", "t_pixels", "t_encode"} <= set(got) and "clip" not in got  # pixels end in the actor


def test_clip_models_decoding_segments_give_what_decode_then_models_give(segments4, tiny_models):
    """With `decode`, the clip-model actor takes segment rows (a good video and a missing one) and decodes them in
    its own decoder child: the feature rows, error rows included, are those of DecodeClips then the models, bit for
    bit, and the decode seconds still reach each row."""
    from pipelines.stages import ClipModels, DecodeClips

    decode = DecodeClips(SPEC, clips_per_block=3, segment_clips=4)
    fused = ClipModels(tiny_models["encoder"], tiny_models["pruner"], decode=decode)
    models = ClipModels(tiny_models["encoder"], tiny_models["pruner"])
    assert fused.describe() == "decode -> prune -> encode f_E"
    assert fused.ray_args()["batch_size"] == 1 and fused.ray_args()["memory"] == decode.ray_args()["memory"]
    want = [models(block) for block in decode(copy_batch(segments4))]
    got = list(fused(copy_batch(segments4)))
    assert len(got) == len(want) > 1
    for g, w in zip(got, want, strict=True):
        assert sorted(g) == sorted(w) and "clip" not in g
        for k in w:
            if k.startswith("t_"):
                assert (g[k] >= 0).all()
            else:
                np.testing.assert_array_equal(g[k], w[k], err_msg=k)
    assert {"not_found"} <= {e for g in got for e in g["error_type"]}
    assert sum(g["t_decode"].sum() for g in got) > 0


def test_a_decoder_crash_in_the_clip_model_actor_costs_one_video(segments4, tiny_models, monkeypatch):
    """The decoder child of a clip-model actor dies (SIGABRT, as a decoder bug would) on one video's segment: that
    video becomes a decoder_crash error row, the actor carries on with a fresh child, and the next video's features
    are those it gets without the crash."""
    import os

    from anon_core.video import DecoderProcess
    from pipelines.stages import ClipModels, DecodeClips, workers

    class CrashOn(DecoderProcess):
        def call(self, fn, *args, uri="", **kwargs):
            if uri.endswith("crash.mp4"):
                return super().call(os.abort, uri=uri, timeout_s=60)
            return super().call(fn, *args, uri=uri, **kwargs)

    crashing = CrashOn()
    monkeypatch.setitem(workers._DECODERS, os.getpid(), crashing)
    good = {k: v[segments4["video_id"] == "good"][:1] for k, v in segments4.items()}
    crash = {**copy_batch(good), "video_id": np.array(["crash"], dtype=object),
             "uri": np.array([good["uri"][0].replace(".mp4", "") + "_crash.mp4"], dtype=object)}  # fmt: skip
    batch = concat([crash, good])
    fused = ClipModels(tiny_models["encoder"], decode=DecodeClips(SPEC, segment_clips=4))
    try:
        out = concat(fused(copy_batch(batch)))
    finally:
        crashing.close()
    crashed = out["video_id"] == "crash"
    assert list(out["error_type"][crashed]) == ["decoder_crash"] and "SIGABRT" in out["error_message"][crashed][0]
    want = concat(ClipModels(tiny_models["encoder"], decode=DecodeClips(SPEC, segment_clips=4))(copy_batch(good)))
    np.testing.assert_array_equal(out["features"][~crashed], want["features"])
    assert (out["error_type"][~crashed] == OK).all()


def test_every_stage_is_one_shape_and_ray_map_places_it(tiny_models):
    """Task stages map as themselves; actor stages (a `compute` pool) run inside a StageActor named after them, which
    sets the stage up once; nothing is loaded in the process that builds the plan."""
    from pipelines.stages import ApplyAam, ClipModels
    from pipelines.stages.transform import TransformClips
    from pipelines.stages.workers import StageActor, ray_map

    task = TransformClips("blur")
    assert ray_map(task) == (task, task.ray_args())
    for stage in (ClipModels(tiny_models["encoder"]), ApplyAam(tiny_models["aam"]), GatherVideos(expected_videos=1)):
        fn, kwargs = ray_map(stage)
        assert issubclass(fn, StageActor) and fn.__name__ == f"{type(stage).__name__}Actor"
        assert kwargs["fn_constructor_args"] == (stage,) and kwargs["compute"] is not None
        assert not hasattr(stage, "model") and not hasattr(stage, "_steps")  # set up in the actor, not here
    actor = ray_map(ApplyAam(tiny_models["aam"]))[0](ApplyAam(tiny_models["aam"]))
    assert actor.stage.model is not None  # loaded once, when the actor starts


def wrong_size_clips(video_id: str, n: int) -> dict[str, np.ndarray]:
    """Clip rows the models cannot take (64 px, not 112): the model call raises inside the stage."""
    rows = feature_rows(video_id, range(n), n)
    del rows["features"]
    return rows | {"clip": np.full((n, 16, 64, 64, 3), 90, dtype=np.uint8)}


MODEL_ERROR = "does not match the model's (T, H, W) = (16, 112, 112)"


def test_a_prune_failure_fails_the_rows_and_encode_leaves_them_failed(stages):
    prune, encode = stages
    pruned = prune(wrong_size_clips("w", 2))
    assert list(pruned["error_type"]) == ["ValueError"] * 2 and list(pruned["error_stage"]) == ["prune"] * 2
    assert all(MODEL_ERROR in m for m in pruned["error_message"])
    assert (pruned["kept_tubelet_ids"] == -1).all() and not pruned["pruner_feature"].any()
    encoded = encode(copy_batch(pruned))
    assert list(encoded["error_stage"]) == ["prune"] * 2 and not encoded["features"].any()
    (status, num, p) = released(GatherVideos(expected_videos=1)(encoded))["w"]
    assert (status, num, p.error["type"], p.error["stage"]) == ("failed", 0, "ValueError", "prune")


def test_an_encode_failure_fails_the_rows(stages):
    _, encode = stages
    encoded = encode(wrong_size_clips("w", 2))
    assert list(encoded["error_type"]) == ["ValueError"] * 2 and list(encoded["error_stage"]) == ["encode"] * 2
    assert all(MODEL_ERROR in m for m in encoded["error_message"]) and not encoded["features"].any()


# -- gather --------------------------------------------------------------------------------------------------------


def clip_features(video_id: str, clip_index: int) -> np.ndarray:
    rng = np.random.default_rng([zlib.crc32(video_id.encode()), clip_index])
    return rng.standard_normal(DIM).astype(np.float32)


def feature_rows(video_id: str, clip_indices, num_clips: int, kind="clip", covers=1, error=(OK, OK, OK)):
    """Rows as the encode stage emits them: one per clip, or one error/gap row standing for `covers` clips."""
    idx = np.asarray(clip_indices, dtype=np.int64)
    n = len(idx)
    return {
        "kind": np.full(n, kind, dtype=object),
        "video_id": np.full(n, video_id, dtype=object),
        "uri": np.full(n, f"/data/{video_id}.mp4", dtype=object),
        "labels": np.full(n, json.dumps({"id": video_id}), dtype=object),
        "num_clips": np.full(n, num_clips, dtype=np.int64),
        "covers": np.full(n, covers, dtype=np.int64),
        "error_type": np.full(n, error[0], dtype=object),
        "error_stage": np.full(n, error[1], dtype=object),
        "error_message": np.full(n, error[2], dtype=object),
        "clip_index": idx,
        "start_s": idx * 1.28,
        "end_s": idx * 1.28 + 1.24,
        "t_decode": np.full(n, 0.5),
        "t_encode": np.full(n, 0.25),
        "features": np.stack([clip_features(video_id, int(i)) if kind == "clip" else np.zeros(DIM, np.float32)
                              for i in idx]).reshape(n, DIM),
    }  # fmt: skip


def whole_video(video_id: str, n: int) -> dict[str, np.ndarray]:
    return feature_rows(video_id, range(n), n)


def take(batch, idx) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in batch.items()}


def released(out: dict[str, np.ndarray]) -> dict[str, tuple[str, int, dict]]:
    """video_id -> (status, num_clips, unpacked payload) of one gather output."""
    cols = (out["video_id"], out["status"], out["num_clips"], out["payload"])
    return {v: (s, int(n), VideoRecord.unpack(p)) for v, s, n, p in zip(*cols, strict=True)}


def test_gather_releases_each_video_once_with_clips_in_order():
    sizes = {"a": 5, "b": 3, "c": 1}
    rows = concat(whole_video(v, n) for v, n in sizes.items())
    order = np.random.default_rng(0).permutation(len(rows["video_id"]))
    gather = GatherVideos(expected_videos=3)
    outs = [gather(take(rows, order[a:b])) for a, b in ((0, 2), (2, 5), (5, 9))]
    assert [len(o["video_id"]) for o in outs] == [0, 0, 3]  # all whole only with the last batch
    got = released(outs[-1])
    assert sorted(got) == ["a", "b", "c"]
    for vid, n in sizes.items():
        status, num, p = got[vid]
        assert (status, num, p.error) == ("ok", n, None)
        assert list(p.clips["clip_index"]) == list(range(n))
        np.testing.assert_array_equal(p.clips["features"], np.stack([clip_features(vid, i) for i in range(n)]))
        np.testing.assert_allclose(p.clips["start_s"], np.arange(n) * 1.28)
        assert p.uri == f"/data/{vid}.mp4" and p.labels == json.dumps({"id": vid})
        assert p.seconds["t_decode"] == pytest.approx(0.5 * n)
    assert len(gather(take(rows, order)).get("video_id")) == 0  # rows of released videos are ignored


def test_gather_counts_a_row_seen_twice_once():
    a, b = whole_video("a", 4), whole_video("b", 1)
    gather = GatherVideos(expected_videos=2, rows_per_shard=1)
    first = take(a, [0, 1])
    assert len(gather(first)["video_id"]) == 0
    assert len(gather(first)["video_id"]) == 0  # a retried task's rows: still 2 of 4 clips
    out = released(gather(take(a, [3, 2, 1])))
    assert list(out) == ["a"] and out["a"][1] == 4
    assert list(out["a"][2].clips["clip_index"]) == [0, 1, 2, 3]
    assert len(gather(a)["video_id"]) == 0  # all again, after release: nothing
    assert list(released(gather(b))) == ["b"]


def test_gather_releases_a_video_with_an_error_row_as_failed():
    ok_part = feature_rows("v", [0, 1], 5)
    err = feature_rows("v", [2], 5, kind="error", covers=3, error=("truncated", "decode", "ends early"))
    gather = GatherVideos(expected_videos=1)
    assert len(gather(ok_part)["video_id"]) == 0
    (status, num, p) = released(gather(err))["v"]
    assert (status, num) == ("failed", 0)
    assert p.error == {"type": "truncated", "stage": "decode", "message": "ends early"}
    assert p.clips == {} and p.num_clips == 0


def test_gather_counts_a_gap_row_without_failing_the_video():
    rows = concat([feature_rows("v", [0, 1], 4), feature_rows("v", [2], 4, kind="gap", covers=2)])
    (status, num, p) = released(GatherVideos(expected_videos=1)(rows))["v"]
    assert (status, num, p.error) == ("ok", 2, None)
    assert list(p.clips["clip_index"]) == [0, 1]


def test_gather_releases_at_rows_per_shard_or_when_all_videos_are_whole():
    gather = GatherVideos(expected_videos=4, rows_per_shard=5)
    c = whole_video("c", 2)
    steps = [
        (whole_video("a", 3), []),  # 3 rows ready, 1 of 4 videos
        (whole_video("b", 3), ["a", "b"]),  # 6 rows >= 5
        (take(c, [1]), []),  # c half-gathered: never released
        (take(c, [0]), []),  # c whole: 2 rows, 3 of 4 videos
        (whole_video("d", 1), ["c", "d"]),  # all 4 whole
    ]
    for batch, expect in steps:
        assert sorted(gather(batch)["video_id"]) == expect


def test_gather_on_real_encoded_batches(processed):
    encoded = [e for _, _, e in processed][::-1]  # arrival order is not clip order
    gather = GatherVideos(expected_videos=2)
    got = released(concat(gather(b) for b in encoded))
    assert sorted(got) == ["good", "missing"]
    status, num, p = got["good"]
    assert (status, num, p.error) == ("ok", GOOD_CLIPS, None)
    assert list(p.clips["clip_index"]) == list(range(GOOD_CLIPS))
    by_index = {int(i): f for _, _, e in processed for i, f in zip(e["clip_index"], e["features"], strict=True)
                if e["video_id"][0] == "good"}  # fmt: skip
    np.testing.assert_array_equal(p.clips["features"], np.stack([by_index[i] for i in range(GOOD_CLIPS)]))
    assert p.clips["kept_tubelet_ids"].shape[0] == p.clips["pruner_feature"].shape[0] == GOOD_CLIPS
    assert got["missing"][:2] == ("failed", 0) and got["missing"][2].error["type"] == "not_found"


# -- AAM -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aam(tiny_models):
    return ApplyAam(aam_uri=tiny_models["aam"])


def gathered(sizes: dict[str, int], failed=()) -> dict[str, np.ndarray]:
    rows = [whole_video(v, n) for v, n in sizes.items()]
    rows += [feature_rows(v, [0], 1, kind="error", covers=1, error=("corrupt", "decode", "bad")) for v in failed]
    return GatherVideos(expected_videos=len(sizes) + len(failed))(concat(rows))


def test_aam_replaces_ok_features_and_leaves_failed_videos_alone(aam):
    batch = gathered({"a": 4, "b": 2}, failed=["f"])
    before = {v: VideoRecord.unpack(p) for v, p in zip(batch["video_id"], batch["payload"], strict=True)}
    out = aam(copy_batch(batch))
    after = {v: VideoRecord.unpack(p) for v, p in zip(out["video_id"], out["payload"], strict=True)}
    assert list(out["status"]) == list(batch["status"])
    for vid in ("a", "b"):
        f0, f1 = before[vid].clips["features"], after[vid].clips["features"]
        assert f1.shape == f0.shape and f1.dtype == np.float32 and np.isfinite(f1).all()
        assert not np.allclose(f1, f0, atol=1e-3)
        assert after[vid].error is None
        np.testing.assert_array_equal(after[vid].clips["clip_index"], before[vid].clips["clip_index"])
    assert after["f"].error == before["f"].error == {"type": "corrupt", "stage": "decode", "message": "bad"}
    assert after["f"].clips == {}
    assert all("t_aam" in p.seconds for p in after.values())


def test_aam_output_for_a_video_does_not_depend_on_the_others_in_its_batch(aam):
    sizes = {"a": 1, "b": 4, "c": 6, "d": 3}
    alone = {}
    for vid, n in sizes.items():
        out = aam(gathered({vid: n}))
        alone[vid] = VideoRecord.unpack(out["payload"][0]).clips["features"]
    for order in (["a", "b", "c", "d"], ["d", "c", "b", "a"]):
        out = aam(gathered({v: sizes[v] for v in order}, failed=["f"]))
        for vid, p in zip(out["video_id"], out["payload"], strict=True):
            if vid != "f":
                np.testing.assert_allclose(VideoRecord.unpack(p).clips["features"], alone[vid], rtol=1e-4, atol=1e-5)


def test_gather_with_the_aam_gives_what_gather_then_aam_gives(aam, tiny_models):
    """The pipeline runs the AAM inside the gather actor: the same released groups, the same features bit for bit,
    failed videos untouched; the AAM is loaded when gather is set up, not at the first group."""
    sizes, failed = {"a": 4, "b": 2, "c": 5}, ["f"]
    rows = [whole_video(v, n) for v, n in sizes.items()]
    rows += [feature_rows(v, [0], 1, kind="error", covers=1, error=("corrupt", "decode", "bad")) for v in failed]
    fused = GatherVideos(expected_videos=4, rows_per_shard=6, aam=ApplyAam(tiny_models["aam"]))
    fused.setup()
    assert fused.aam.model is not None
    plain = GatherVideos(expected_videos=4, rows_per_shard=6)
    for batch in rows:
        want, got = plain(copy_batch(batch)), fused(copy_batch(batch))
        if len(want["video_id"]):
            want = aam(want)
        assert list(got["video_id"]) == list(want["video_id"]) and list(got["status"]) == list(want["status"])
        for p_got, p_want in zip(got["payload"], want["payload"], strict=True):
            g, w = VideoRecord.unpack(p_got), VideoRecord.unpack(p_want)
            assert g.error == w.error and g.clips.keys() == w.clips.keys()
            for k in w.clips:
                np.testing.assert_array_equal(g.clips[k], w.clips[k])
            assert ("t_aam" in g.seconds) == ("t_aam" in w.seconds)


def test_an_aam_failure_fails_that_batchs_ok_videos_and_keeps_other_errors(aam):
    bad_width = feature_rows("a", [0, 1], 2) | {"features": np.ones((2, DIM + 1), np.float32)}  # not 192-d
    failed = feature_rows("f", [0], 1, kind="error", error=("corrupt", "decode", "bad"))
    gather = GatherVideos(expected_videos=2)
    assert len(gather(failed)["video_id"]) == 0
    got = released(aam(gather(bad_width)))
    status, _, p = got["a"]
    assert (status, p.error["type"], p.error["stage"]) == ("failed", "ValueError", "aam")
    assert got["f"][0] == "failed" and got["f"][2].error == {"type": "corrupt", "stage": "decode", "message": "bad"}


# -- write ---------------------------------------------------------------------------------------------------------

ROW_FIELDS = {"mode": "prune+aam", "encoder_id": "enc-1", "pruner_id": "pr-1", "aam_id": "aam-1", "config_hash": "c0"}


@pytest.fixture(scope="module")
def videos_to_write(processed, decoded, aam):
    """The good video (pruned, encoded, AAM'd) and the three bad ones, as the sink receives them."""
    bad = [b for b in decoded if b["video_id"][0] in ERRORS]
    gather = GatherVideos(expected_videos=4)
    rows = [gather(e) for _, _, e in processed]
    rows += [gather({**b, "features": np.zeros((1, DIM), np.float32)}) for b in bad]
    return aam(concat(rows))


def test_write_shards_writes_features_errors_and_commits(tmp_path, videos_to_write, videos, stages):
    batch = videos_to_write
    payloads = {v: VideoRecord.unpack(p) for v, p in zip(batch["video_id"], batch["payload"], strict=True)}
    summary = WriteShards(output=str(tmp_path), run_id="r1", row_fields=ROW_FIELDS)(copy_batch(videos_to_write))

    ids = list(videos_to_write["video_id"])
    assert list(summary["video_id"]) == ids
    stem = summary["shard"][0]
    assert stem.startswith("r1-") and set(summary["shard"]) == {stem}
    expect = {"good": ("ok", GOOD_CLIPS, "")} | {n: ("failed", 0, e) for n, e in ERRORS.items()}
    got = zip(ids, summary["status"], summary["num_clips"], summary["error_type"], strict=True)
    assert {vid: (status, num, etype) for vid, status, num, etype in got} == expect
    assert (summary["t_write"] > 0).all() and (summary["t_aam"][ids.index("good")] > 0)

    features = pq.read_table(tmp_path / "features")  # the folder, as a reader would
    assert sorted(os.listdir(tmp_path / "features")) == [f"part-{stem}.parquet"]
    assert features.schema.field("features").type == pa.list_(pa.float32(), DIM)
    assert features.schema.field("kept_tubelet_ids").type == pa.list_(pa.int32(), stages[0].k)
    assert features.schema.field("pruner_feature").type == pa.list_(pa.float32(), DIM)
    assert features.num_rows == GOOD_CLIPS
    cols = features.to_pydict()
    assert cols["video_id"] == ["good"] * GOOD_CLIPS and cols["clip_index"] == list(range(GOOD_CLIPS))
    assert cols["source_uri"] == [videos["good"]] * GOOD_CLIPS
    assert cols["labels"] == [json.dumps(LABELS["good"])] * GOOD_CLIPS
    assert cols["run_id"] == ["r1"] * GOOD_CLIPS
    for k, v in ROW_FIELDS.items():
        assert cols[k] == [v] * GOOD_CLIPS
    np.testing.assert_array_equal(np.array(cols["features"], dtype=np.float32), payloads["good"].clips["features"])

    errors = pq.read_table(tmp_path / "errors").to_pydict()
    assert sorted(errors["video_id"]) == sorted(ERRORS)
    by_video = zip(errors["video_id"], errors["stage"], errors["error_type"], strict=True)
    assert {v: (s, e) for v, s, e in by_video} == {n: ("probe", e) for n, e in ERRORS.items()}
    assert errors["run_id"] == ["r1"] * 3 and sorted(errors["uri"]) == sorted(videos[n] for n in ERRORS)

    for vid in ids:
        rec = json.loads((tmp_path / "_commits" / f"{vid}.json").read_text())
        status, num, _ = expect[vid]
        assert rec == {"video_id": vid, "status": status, "shard": stem, "rows": num, "run_id": "r1",
                       "uri": videos[vid]}  # fmt: skip
    record = json.loads((tmp_path / "_shards" / f"{stem}.json").read_text())
    assert record == {"videos": ids, "rows": {"features": GOOD_CLIPS, "errors": 3}}

    store = OutputStore(str(tmp_path))
    assert store.committed() == set(ids)
    assert store.repair().shards_checked == 0  # a whole shard: nothing to repair


def test_write_shards_on_an_empty_batch_writes_nothing(tmp_path):
    empty = {"video_id": np.zeros(0, dtype=object), "payload": np.zeros(0, dtype=object)}
    summary = WriteShards(output=str(tmp_path / "out"), run_id="r1")(empty)
    assert {k: len(v) for k, v in summary.items()} == dict.fromkeys(summary, 0)
    assert "video_id" in summary and "status" in summary
    assert not (tmp_path / "out").exists()
