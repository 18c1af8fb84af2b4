"""Training data without Ray: the label schema on manifests with other column names, the validation split, the seeded
per-epoch order over the clip cache and label-safe augmentation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.train.schema import LabelError, LabelSchema, carve_validation, check_num_classes, resolve_labels

SCHEMA = LabelSchema(action="activity", attributes=["has_face", "is_female"], identity="person", split="subset",
                     train_split="training", test_split="testing")  # fmt: skip


def archive_manifest(tmp_path, fmt: str) -> str:
    """A VISPR/PA-HMDB-style manifest: string actions, other column names, true/false attributes."""
    rows = []
    for i in range(12):
        (tmp_path / f"v{i}.mp4").write_bytes(b"not decoded here")
        rows.append({"path": f"v{i}.mp4", "activity": ["run", "drink", "sit"][i % 3], "has_face": i % 2 == 0,
                     "is_female": int(i % 4 < 2), "person": f"p{i // 2}",
                     "subset": "testing" if i >= 9 else "training"})  # fmt: skip
    df = pd.DataFrame(rows)
    path = tmp_path / f"labels.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_schema_reads_an_archive_with_its_own_columns_and_string_actions(tmp_path, fmt):
    labelled = resolve_labels(archive_manifest(tmp_path, fmt), SCHEMA)
    assert labelled.classes == ["drink", "run", "sit"]  # sorted names -> ids
    v = labelled.videos.sort_values("uri")
    by_name = dict(zip(v["uri"].str.rsplit("/", n=1).str[-1], v["action"], strict=True))
    assert by_name["v0.mp4"] == 1 and by_name["v1.mp4"] == 0 and by_name["v2.mp4"] == 2  # run, drink, sit
    assert set(v["split"]) == {"train", "test"} and (v["split"] == "test").sum() == 3
    assert sorted(v["has_face"].unique()) == [0.0, 1.0] and v["identity"].nunique() == 6
    counts = labelled.class_counts()
    assert sum(counts["train"].values()) == 9 and set(counts["test"]) == {"drink", "run", "sit"}


def test_schema_errors_name_the_columns_and_the_fix(tmp_path):
    manifest = archive_manifest(tmp_path, "csv")
    with pytest.raises(LabelError, match=r"no column 'action_id'.*label_schema\.action"):
        resolve_labels(manifest, LabelSchema(attributes=["has_face"], identity=None, split="subset"))
    bad = pd.read_csv(manifest).assign(has_face="maybe")
    bad.to_csv(manifest, index=False)
    with pytest.raises(LabelError, match="has_face.*0/1.*'maybe'"):
        resolve_labels(manifest, SCHEMA)
    assert check_num_classes(None, 3, "num_classes") == [] and check_num_classes(3, 3, "num_classes") == []
    (err,) = check_num_classes(5, 3, "num_classes")
    assert "num_classes=5" in err and "has 3" in err


def test_validation_is_carved_from_train_by_video_or_by_identity(tmp_path):
    videos = resolve_labels(archive_manifest(tmp_path, "parquet"), SCHEMA).videos
    by_video = carve_validation(videos, 0.25, "video", seed=0)
    assert (by_video == "val").sum() == 2 and (by_video[videos["split"] == "test"] == "test").all()
    assert by_video.equals(carve_validation(videos, 0.25, "video", seed=0))  # seeded
    by_id = carve_validation(videos, 0.3, "identity", seed=1)
    val_ids = set(videos.loc[by_id == "val", "identity"])
    train_ids = set(videos.loc[by_id == "train", "identity"])
    assert val_ids and not val_ids & train_ids  # no person on both sides
    assert (carve_validation(videos, 0.0, "video", 0) == videos["split"]).all()


class FakeStore:
    """The part of ClipStore the epoch order reads: which file each clip lies in."""

    def __init__(self, n: int, per_file: int) -> None:
        self.file = np.arange(n) // per_file


def test_epoch_order_is_seeded_per_epoch_and_splits_ranks_into_equal_disjoint_steps():
    from pipelines.train.clips import epoch_positions, steps_per_epoch

    store, pos = FakeStore(103, 16), np.arange(103)
    a = [epoch_positions(store, pos, seed=0, epoch=0, rank=r, world=2) for r in range(2)]
    again = [epoch_positions(store, pos, seed=0, epoch=0, rank=r, world=2) for r in range(2)]
    other = epoch_positions(store, pos, seed=0, epoch=1, rank=0, world=2)
    assert all((x == y).all() for x, y in zip(a, again, strict=True))  # a resumed run sees the same order
    assert not (a[0] == other).all()  # another epoch, another order
    assert len(a[0]) == len(a[1]) == 51 and steps_per_epoch(103, 4, 2) == 13  # 51 clips: 12 batches of 4 and 1 of 3
    assert not set(a[0]) & set(a[1])


def test_augmentation_keeps_left_and_right_apart_and_is_reproducible():
    from anon_core.augment import augment_clips

    clip = torch.zeros(2, 4, 32, 32, 3, dtype=torch.uint8)
    clip[:, :, :, :8] = 255  # a bright left edge: a flip would put it on the right
    out = augment_clips(clip, torch.Generator().manual_seed(0))
    same = augment_clips(clip, torch.Generator().manual_seed(0))
    assert out.shape == clip.shape and torch.equal(out, same)
    left, right = out[..., :, :10, :].mean(), out[..., :, -10:, :].mean()
    assert left > right + 50
    assert (out[:, 0] - out[:, 3]).abs().max() < 1e-4  # one crop box and one jitter for every frame


def test_evaluation_reads_labels_through_the_same_schema(tmp_path):
    from pipelines.evaluate.load import EvalInputError, corpus_labels

    manifest = archive_manifest(tmp_path, "parquet")
    table, attributes = corpus_labels(manifest, SCHEMA, extra=("person",))
    assert attributes == ["has_face", "is_female"] and set(table["split"]) == {"train", "test"}
    assert table["action_id"].dtype == np.int64 and sorted(table["action_id"].unique()) == [0, 1, 2]
    assert table["person"].str.startswith("p").all()  # an extra manifest column (the bias group) travels along
    with pytest.raises(EvalInputError, match="no column"):
        corpus_labels(manifest, LabelSchema())  # the synthetic defaults do not fit this archive: named, not a crash


def test_model_options_reach_the_builder_and_unknown_ones_are_refused():
    from anon_core.models.bundle import BUILDERS
    from pipelines.train.loop import TrainConfig

    cfg = TrainConfig(kind="encoder", manifest="m.csv", storage_path="s", name="n", clip_size=64, motion_input=True,
                      model_options={"stem": "conv", "global_pool": "avg", "num_cls_tokens": 0})  # fmt: skip
    assert cfg.validate() == []
    model = BUILDERS[cfg.builder][1](**cfg.model_kwargs(8, 5))
    assert model.motion_input and model.global_pool == "avg" and model(torch.zeros(1, 3, 16, 64, 64)).shape == (1, 8)
    bad = TrainConfig(kind="pruner", manifest="m.csv", storage_path="s", name="n",
                      model_options={"stem": "conv", "num_cls_tokens": 1, "depht": 2})  # fmt: skip
    (err,) = bad.validate()
    assert "depht" in err and "num_cls_tokens" in err and "drop_path_rate" in err


def test_a_relative_storage_path_is_resolved_against_the_working_directory(tmp_path, monkeypatch):
    """Ray Train refuses relative storage paths (ArrowInvalid after a minute of start-up); the shipped tiny configs
    use demo_out/train."""
    from pipelines.train.common import local_or_uri, run_config

    monkeypatch.chdir(tmp_path)
    assert run_config("x", "demo_out/train", 0).storage_path == str(tmp_path / "demo_out" / "train")
    assert local_or_uri("s3://bucket/runs") == "s3://bucket/runs"
