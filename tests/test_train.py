"""Ray Train loops: tiny configurations train with 2 workers on CPU, their losses fall; a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.slow]

RUNNER = """
import sys, json
from pipelines.train.loop import TrainConfig, run_training
cfg = TrainConfig(**json.loads(sys.argv[1]))
r = run_training(cfg)
print("RESULT", json.dumps(r.metrics))
"""


def config(corpus: Path, store: Path, name: str, kind: str = "encoder", epochs: int = 3) -> dict:
    return {
        "kind": kind,
        "manifest": str(corpus / "labels.parquet"),
        "storage_path": str(store),
        "name": name,
        "builder": "video_vit_tiny" if kind == "encoder" else "pruner_tiny",
        "depth": 2 if kind == "encoder" else None,
        "epochs": epochs,
        "batch_size": 2,
        "lr": 1e-3,
    }


def dropping(*args) -> dict:
    return {**config(*args), "tubelet_drop": 0.5}


@pytest.fixture
def cluster_env(ray_session) -> dict:
    """Each training runs as its own driver process, as a job does, on the session's shared Ray cluster."""
    return {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}


def run(cfg: dict, env: dict, timeout: int = 300) -> dict:
    res = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(cfg)], capture_output=True, text=True,
                         timeout=timeout, cwd=Path(__file__).parents[1], env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def epoch_metrics(store: Path, name: str) -> list[dict]:
    """Every checkpoint's metrics (the bundle config carries them), in epoch order."""
    from anon_core.models.bundle import read_bundle_config

    ckpts = [p for p in (store / name).glob("checkpoint_*") if p.is_dir()]
    metrics = [read_bundle_config(str(p))["metrics"] for p in ckpts]  # extra fields sit at the top level
    return sorted(metrics, key=lambda m: m["epoch"])


def final_weights(store: Path, name: str):
    from anon_core.models.bundle import load_bundle

    ckpts = sorted(p for p in (store / name).glob("checkpoint_*") if p.is_dir())
    model, info = load_bundle(str(ckpts[-1]))
    return model.state_dict(), info


@pytest.mark.timeout(900)
def test_a_killed_training_run_resumes_to_the_weights_of_an_uninterrupted_one(small_corpus, tmp_path, cluster_env):
    """With tubelet_drop on, so the random kept tubelets of every step are also the same after the resume."""
    store = tmp_path / "store"
    clean = run(dropping(small_corpus, store, "clean"), cluster_env)
    assert clean["epoch"] == 2
    losses = [m["loss"] for m in epoch_metrics(store, "clean")]
    assert len(losses) == 3 and losses[-1] < losses[0], losses  # the encoder learns (memorizes) its tiny corpus
    cfg = dropping(small_corpus, store, "killed")
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, json.dumps(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).parents[1],
        env=cluster_env,
        start_new_session=True,  # the driver alone dies, like a dead driver pod; Ray cleans up its job
    )
    deadline = time.time() + 300
    while time.time() < deadline and not any(p.is_dir() for p in (store / "killed").glob("checkpoint_*")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(p.is_dir() for p in (store / "killed").glob("checkpoint_*")), "no checkpoint before the kill"
    resumed = run(cfg, cluster_env)
    assert resumed["epoch"] == 2
    a, info_a = final_weights(store, "clean")
    b, info_b = final_weights(store, "killed")
    assert info_a.trained and info_a.extra["step"] == info_b.extra["step"]
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


@pytest.mark.timeout(600)
def test_pruner_trains_with_two_workers_and_its_checkpoint_is_a_bundle(small_corpus, tmp_path, cluster_env):
    """Started from imported weights (--init-from: an encoder checkpoint with another label set, as from timm or
    VideoMAE): the backbone loads, the heads keep their own initialisation."""
    import torch
    from safetensors.torch import save_file

    from anon_core.models.video_vit import video_vit_tiny

    torch.manual_seed(1)
    imported = {k: v.contiguous() for k, v in video_vit_tiny(num_classes=400).state_dict().items()}
    save_file(imported, tmp_path / "imported.safetensors")
    cfg = {**config(small_corpus, tmp_path / "store", "pruner", kind="pruner", epochs=3),
           "init_from": str(tmp_path / "imported.safetensors")}  # fmt: skip
    metrics = run(cfg, cluster_env)
    assert metrics["epoch"] == 2 and metrics["loss"] > 0
    losses = [m["loss"] for m in epoch_metrics(tmp_path / "store", "pruner")]
    assert losses[-1] < losses[0], losses  # CE + BCE: the privacy head minimizes its BCE; the GRL reverses it below
    _, info = final_weights(tmp_path / "store", "pruner")
    assert info.kind == "pruner" and info.trained


AAM_RUNNER = """
import sys, json
from pipelines.train.aam_loop import AamTrainConfig, run_aam_training
r = run_aam_training(AamTrainConfig(**json.loads(sys.argv[1])))
print("RESULT", json.dumps(r.metrics))
"""


@pytest.mark.timeout(600)
def test_aam_trains_on_extracted_features_and_fits_its_encoder(small_corpus, tiny_models, tmp_path, cluster_env):
    from anon_core.models.bundle import load_bundle

    store = tmp_path / "store"
    cfg = {"manifest": str(small_corpus / "labels.parquet"), "encoder": tiny_models["encoder"],
           "storage_path": str(store), "name": "aam", "epochs": 5, "batch_size": 4, "lr": 1e-3}  # fmt: skip
    res = subprocess.run([sys.executable, "-c", AAM_RUNNER, json.dumps(cfg)], capture_output=True, text=True,
                         timeout=500, cwd=Path(__file__).parents[1], env=cluster_env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    # after the warm-start epoch the joint objective is reported part by part
    assert metrics["epoch"] == 4 and {"l_lc", "l_t", "l_b", "total"} <= set(metrics)
    joint = [m for m in epoch_metrics(store, "aam") if "l_t" in m]
    assert len(joint) == 4 and joint[-1]["l_t"] < joint[0]["l_t"], joint  # the utility (action) loss falls
    assert metrics["total"] == pytest.approx(100 * metrics["l_lc"] + metrics["l_t"] - metrics["l_b"], rel=1e-4)
    assert "AAM features extracted to" in res.stdout
    # a second run (another L_B weight, say) on the same corpus and encoder reads the Parquet features back
    sweep_point = {**cfg, "name": "aam-wb2", "w_b": 2.0, "epochs": 2}
    again = subprocess.run([sys.executable, "-c", AAM_RUNNER, json.dumps(sweep_point)], capture_output=True,
                           text=True, timeout=500, cwd=Path(__file__).parents[1], env=cluster_env)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "AAM features reused from" in again.stdout
    assert len(list((store / "aam_features").iterdir())) == 1
    ckpt = sorted(p for p in (store / "aam").glob("checkpoint_*") if p.is_dir())[-1]
    aam, info = load_bundle(str(ckpt), expect_kind="aam")
    assert info.trained and info.extra["embed_dim"] == 192  # fits the tiny encoder: anonymize's preflight accepts it
    # the default erase="attributes": every checkpoint carries an eraser fitted on that epoch's adapter outputs
    assert aam.eraser is not None and aam.eraser.fitted
    assert metrics["erased_dims"] >= 1


def test_train_cli_lists_every_config_error(capsys):
    from jobs.cli import main

    code = main(["train", "encoder", "--config", "jobs/configs/train_encoder_tiny.yaml", "epochz=1", "lr=abc"])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'epochs'" in err and "lr: expected float" in err
    code = main(["train", "aam", "--config", "jobs/configs/train_aam_tiny.yaml", "erase_keep_variance=0",
                 "erase_mlp_fraction=1.5"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "erase_mlp_fraction must be in [0, 1)" in err
    assert "erase_keep_variance must be in (0, 1]" in err


@pytest.mark.timeout(600)
def test_checkpoints_and_the_exported_bundle_can_live_on_s3(small_corpus, s3_endpoint, cluster_env):
    """storage_path and out on an S3-compatible server (moto on 127.0.0.1): checkpoints go there through fsspec,
    a re-run resumes from them, and anonymize's bundle loader reads the exported model from the bucket."""
    import fsspec

    from anon_core.models.bundle import load_bundle

    fs = fsspec.filesystem("s3")
    if not fs.exists("train-bucket"):
        fs.mkdir("train-bucket")
    cfg = {**config(small_corpus, Path("unused"), "enc-s3", epochs=1), "storage_path": "s3://train-bucket/runs",
           "out": "s3://train-bucket/models/encoder"}  # fmt: skip
    first = run(cfg, cluster_env)
    assert first["epoch"] == 0
    fs.invalidate_cache()
    assert [p for p in fs.ls("train-bucket/runs/enc-s3") if "checkpoint_" in p], "no checkpoint in the bucket"
    resumed = run({**cfg, "epochs": 2}, cluster_env)  # the same run name: continues from the epoch-0 checkpoint
    assert resumed["epoch"] == 1 and resumed["step"] == 2 * first["step"]
    model, info = load_bundle("s3://train-bucket/models/encoder", expect_kind="encoder")
    assert info.trained and info.extra["epoch"] == 1  # the resumed run exported its final model over the first


def archive_manifest(root: Path, corpus: Path) -> Path:
    """The corpus as a user's archive: a CSV with its own column names, string actions, and one broken video."""
    import pandas as pd

    from anon_core.synthetic import ACTIONS

    df = pd.read_parquet(corpus / "labels.parquet")
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    table = pd.DataFrame({
        "uri": [str(corpus / p) for p in df["path"]] + [str(broken)],
        "activity": [ACTIONS[a] for a in df["action_id"]] + ["jump"],
        "wears_hat": list(df["accessory_hat"]) + [0],
        "dark_skin": list(df["skin_dark"]) + [1],
        "subset": list(df["split"].map({"train": "fit", "test": "holdout"})) + ["fit"],
    })  # fmt: skip
    table.to_csv(root / "archive.csv", index=False)
    return root / "archive.csv"


def train_cli(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", "train", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parents[1], env=env)  # fmt: skip


@pytest.mark.timeout(900)
def test_pruner_trains_on_an_archive_of_multi_clip_videos_with_its_own_schema(tmp_path, cluster_env):
    """Videos of 4 clips each (the schedules count clips, not videos), a CSV manifest with other column names and
    string actions, one video that does not decode (counted, logged, an error row), validation in every
    checkpoint and the best one exported with the class names; then a stricter failure budget stops a run with
    exit 1 before training, reading the clips already decoded."""
    from anon_core.models.bundle import read_bundle_config
    from anon_core.synthetic import CorpusConfig, generate_corpus

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, CorpusConfig(videos=12, seed=5, frames=64), workers=1)
    manifest = archive_manifest(tmp_path, corpus)
    common = [
        "--config", "jobs/configs/train_pruner_tiny.yaml", f"manifest={manifest}", f"storage_path={tmp_path}/st",
        "label_schema.action=activity", "label_schema.attributes=[wears_hat,dark_skin]", "label_schema.identity=null",
        "label_schema.split=subset", "label_schema.train_split=fit", "label_schema.test_split=holdout",
        "clip_frames=8", "depth=2", "batch_size=2", "epochs=2", "val_fraction=0.2",
    ]  # fmt: skip
    dry = train_cli(["pruner", *common, "--dry-run"], cluster_env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "schema: action='activity'" in dry.stdout and "clips:" in dry.stdout and "plan: 2 epochs" in dry.stdout

    run_args = ["pruner", *common, "name=archive", f"out={tmp_path}/pruner", "max_failed_fraction=0.2"]
    res = train_cli(run_args, cluster_env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "failed video " + str(tmp_path / "broken.mp4") in out
    import pandas as pd

    (errors,) = [pd.read_parquet(p) for p in (tmp_path / "st" / "clips").glob("*/errors.parquet")]
    assert errors["uri"].tolist() == [str(tmp_path / "broken.mp4")] and errors["error_type"].iloc[0]
    metrics = epoch_metrics(tmp_path / "st", "archive")
    assert len(metrics) == 2 and all("val_top1" in m and "val_attr_cmap" in m for m in metrics)
    assert all(-1 <= m["val_score_agreement"] <= 1 for m in metrics)
    index = pd.read_parquet(next((tmp_path / "st" / "clips").glob("*/index.parquet")))
    assert index.groupby("video").size().min() == 4  # every decoded video gave 4 clips
    from pipelines.train.schema import LabelSchema, carve_validation, resolve_labels

    schema = LabelSchema(action="activity", attributes=["wears_hat", "dark_skin"], identity=None, split="subset",
                         train_split="fit", test_split="holdout")  # fmt: skip
    videos = resolve_labels(str(manifest), schema).videos
    split = carve_validation(videos, 0.2, "video", seed=0)
    used = int(split.isin(["train", "val"]).sum())
    train_clips = len(index[index["video"].isin(videos["index"][split == "train"])])
    assert train_clips == 4 * (int((split == "train").sum()) - int(split[videos["uri"].str.endswith("broken.mp4")]
                                                                      .eq("train").sum()))  # fmt: skip
    assert metrics[-1]["step"] == 2 * -(-(train_clips // 2) // 2)  # 2 epochs of ceil(clips per worker / batch 2)
    assert "[train pruner] epoch 2/2" in out and "exporting epoch" in out
    cfg = read_bundle_config(str(tmp_path / "pruner"))
    assert cfg["classes"] == sorted(set(pd.read_csv(manifest)["activity"])) and cfg["kwargs"]["num_classes"] == 8
    assert cfg["kwargs"]["num_privacy_classes"] == 2

    strict = train_cli(["pruner", *common, "name=strict", "max_failed_fraction=0.01"], cluster_env)
    assert strict.returncode == 1, strict.stderr[-3000:]
    assert "clips reused from" in strict.stdout and f"1 of {used} videos failed to decode" in strict.stderr
    mismatch = train_cli(["pruner", *common, "name=mismatch", "num_classes=5"], cluster_env)
    assert mismatch.returncode == 2 and "num_classes=5 but the manifest has 8" in mismatch.stderr


@pytest.mark.timeout(900)
def test_mae_pretrains_an_encoder_on_unlabelled_videos_and_a_supervised_run_starts_from_it(
    small_corpus, tmp_path, cluster_env
):
    """`anonvid train encoder objective=mae` on a manifest of bare uris (no label column at all): the validation
    reconstruction loss is in every checkpoint, the lowest is exported as a head-less encoder bundle that gives
    features, and a supervised encoder starts from its weights with --init-from."""
    import pandas as pd
    import torch

    from anon_core.models.bundle import load_bundle, read_bundle_config

    labels = pd.read_parquet(small_corpus / "labels.parquet")
    bare = tmp_path / "videos.csv"
    pd.DataFrame({"uri": [str(small_corpus / p) for p in labels["path"]]}).to_csv(bare, index=False)
    common = ["--config", "jobs/configs/train_encoder_tiny.yaml", f"storage_path={tmp_path}/st", "depth=2",
              "clip_size=32", "batch_size=2", "epochs=2", "val_fraction=0.25", "motion_input=true",
              "model_options={stem: conv, global_pool: avg, num_cls_tokens: 0, fc_norm: true}"]  # fmt: skip
    res = train_cli(["encoder", *common, f"manifest={bare}", "objective=mae", "mask_ratio=0.75", "decoder_depth=1",
                     "name=mae", f"out={tmp_path}/mae"], cluster_env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "[train encoder mae] epoch 2/2" in out and "best val_loss" in out
    metrics = epoch_metrics(tmp_path / "st", "mae")
    assert len(metrics) == 2 and all(m["val_loss"] > 0 for m in metrics)
    cfg = read_bundle_config(str(tmp_path / "mae"))
    assert cfg["kind"] == "encoder" and cfg["objective"] == "mae" and cfg["kwargs"]["num_classes"] == 0
    encoder, _ = load_bundle(str(tmp_path / "mae"), expect_kind="encoder")
    feats = encoder.forward_head(encoder.forward_features(torch.randn(2, 3, 16, 32, 32)))
    assert feats.shape == (2, 192) and torch.isfinite(feats).all()

    labelled = small_corpus / "labels.parquet"
    wrong = train_cli(["pruner", "--config", "jobs/configs/train_pruner_tiny.yaml", f"manifest={labelled}",
                       f"storage_path={tmp_path}/st", "objective=mae"], cluster_env)  # fmt: skip
    assert wrong.returncode == 2 and "objective=mae pre-trains an encoder" in wrong.stderr
    tuned = train_cli(["encoder", *common, f"manifest={labelled}", "epochs=1", "name=tuned", f"out={tmp_path}/tuned",
                       "--init-from", f"{tmp_path}/mae"], cluster_env)  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    start = load_bundle(str(tmp_path / "tuned"), expect_kind="encoder")[0]
    assert start.head.out_features == 8  # a fresh action head on the pre-trained body


def test_prune_aam_features_are_the_encoders_features_of_the_kept_tubelets(tiny_models):
    """An AAM for prune+aam (AamTrainConfig.pruner) learns from the anonymize job's own prune -> encode stages: the
    encoder reads exactly the tubelets the pruner keeps, on the masked clip."""
    from anon_core.models.bundle import load_bundle, normalize_clips
    from pipelines.train.aam_data import clip_features, feature_steps

    clips = np.random.default_rng(0).integers(0, 256, (2, 16, 112, 112, 3), dtype=np.uint8)
    plain = clip_features(feature_steps(tiny_models["encoder"]), clips.copy())
    pruned = clip_features(feature_steps(tiny_models["encoder"], tiny_models["pruner"]), clips.copy())
    encoder, e_info = load_bundle(tiny_models["encoder"], expect_kind="encoder")
    pruner, p_info = load_bundle(tiny_models["pruner"], expect_kind="pruner")
    x = torch.from_numpy(clips)
    with torch.inference_mode():
        out = pruner.eval()(normalize_clips(x, p_info.input["mean"], p_info.input["std"]))
        masked = torch.where(out.pixel_mask()[:, 0, ..., None], x, torch.zeros((), dtype=x.dtype))  # (B, T, H, W, 3)
        xe = normalize_clips(masked, e_info.input["mean"], e_info.input["std"])
        by_hand = encoder.eval().forward_head(encoder.forward_features(xe, kept_ids=out.kept_ids), pre_logits=True)
    assert out.kept_ids.shape[1] < encoder.patch_embed.num_patches  # something was pruned
    np.testing.assert_allclose(pruned, by_hand.numpy(), atol=1e-5)
    assert np.abs(pruned - plain).max() > 1e-3


def test_an_aam_for_prune_aam_refuses_a_pruner_that_is_not_one(tiny_models, small_corpus):
    from pipelines.train.aam_loop import AamTrainConfig

    cfg = AamTrainConfig(manifest=str(small_corpus / "labels.parquet"), encoder=tiny_models["encoder"],
                         storage_path="-", name="aam", pruner=tiny_models["aam"])  # fmt: skip
    (error,) = cfg.encoder_errors()
    assert "not a tubelet pruner" in error and tiny_models["aam"] in error
