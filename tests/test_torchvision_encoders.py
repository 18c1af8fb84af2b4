"""torchvision video classifiers as frozen encoders: a user's .pth imported (by the function and by `anonvid
import-encoder`) gives a bundle whose features are torchvision's own pooled pre-classifier features; weights of
another arch, a clip the arch cannot take and a file that is not a state dict are refused with the fix; pruning
refuses such an encoder; and an imported R(2+1)D-18 runs the anonymize job in mode aam.

Every torchvision model is built with weights=None: nothing is downloaded. S3D and MViTv2-S only run at 224 px, so
their tests do one clip and are marked slow."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pipeline_helpers  # noqa: F401  (imports the CLI's modules at collection; see pipeline_helpers)
import pytest
import torch
from pipeline_helpers import N_VIDEOS, RUN_TIMEOUT, read_features, run_job

from anon_core.models.bundle import load_bundle, normalize_clips, save_bundle
from anon_core.models.torchvision_video import ARCHS, KINETICS_MEAN, KINETICS_STD, import_torchvision_encoder
from jobs.cli import main

# the smallest clip each arch takes (S3D: 14 x 224 at least; MViTv2-S: exactly 16 x 224)
CLIPS = {"r2plus1d_18": (4, 32), "s3d": (14, 224), "mvit_v2_s": (16, 224), "swin3d_t": (4, 64)}
DIMS = {"r2plus1d_18": 512, "s3d": 1024, "mvit_v2_s": 768, "swin3d_t": 768}
SLOW = {"s3d", "mvit_v2_s"}


def torchvision_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """torchvision's own model, random weights and BatchNorm statistics (so a buffer lost on the way would show)."""
    from torchvision.models import video

    torch.manual_seed(seed)
    model = getattr(video, arch)(weights=None).eval()
    for name, buf in model.named_buffers():  # near the init's (0, 1): larger mean shifts leave every ReLU dead
        if name.endswith("running_mean"):
            buf.uniform_(-0.1, 0.1)
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 1.5)
    return model


def save_pth(model: torch.nn.Module, path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in CLIPS])
def test_imported_bundle_gives_torchvisions_pooled_features(arch, tmp_path, capsys):
    frames, size = CLIPS[arch]
    ref = torchvision_model(arch)
    pth = save_pth(ref, tmp_path / f"{arch}.pth")

    info = import_torchvision_encoder(arch, pth, str(tmp_path / "by_function"), num_frames=frames, size=size)
    argv = ["import-encoder", "--arch", arch, "--weights", pth, "--out", str(tmp_path / "by_cli"),
            "--frames", str(frames), "--size", str(size)]  # fmt: skip
    assert main(argv) == 0
    assert f"{DIMS[arch]}-d features from {frames} x {size} px" in capsys.readouterr().out
    model, loaded = load_bundle(str(tmp_path / "by_cli"), expect_kind="encoder")
    assert loaded.model_id == info.model_id  # the same weights both ways
    assert (loaded.builder, loaded.kind, loaded.trained, loaded.embed_dim) == (f"tv_{arch}", "encoder", True,
                                                                               DIMS[arch])  # fmt: skip
    assert loaded.input == {"num_frames": frames, "size": size, "mean": list(KINETICS_MEAN),
                            "std": list(KINETICS_STD)}  # fmt: skip
    head = ARCHS[arch].head
    assert loaded.extra["imported"]["dropped_keys"] and all(
        k.startswith(head + ".") for k in loaded.extra["imported"]["dropped_keys"]
    )

    # what the encode stage computes, against torchvision's forward with its classifier replaced by the identity
    batch = 2 if arch == "r2plus1d_18" else 1
    clips = torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8)
    x = normalize_clips(clips, loaded.input["mean"], loaded.input["std"])  # (B, 3, T, S, S)
    setattr(ref, head, torch.nn.Identity())
    with torch.inference_mode():
        want = ref(x)
        got = model.forward_head(model.forward_features(x), pre_logits=True)
    assert got.shape == (batch, DIMS[arch]) and got.abs().sum(1).min() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_weights_of_another_arch_are_refused_by_name(tmp_path, capfd):
    pth = save_pth(torchvision_model("r2plus1d_18"), tmp_path / "r2plus1d.pth")
    with pytest.raises(ValueError, match=r"do not fit torchvision's swin3d_t .*look like r2plus1d_18 weights: pass "
                                         r"--arch r2plus1d_18"):  # fmt: skip
        import_torchvision_encoder("swin3d_t", pth, str(tmp_path / "out"), num_frames=4, size=64)
    assert not (tmp_path / "out" / "config.json").exists()

    # a key the arch does not have is not silently dropped (only the classifier's are)
    sd = torch.load(pth, weights_only=True)
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pth")
    rc = main(["import-encoder", "--arch", "r2plus1d_18", "--weights", str(tmp_path / "extra.pth"),
               "--out", str(tmp_path / "out")])  # fmt: skip
    err = capfd.readouterr().err
    assert rc == 2 and "unexpected 1: extra.weight" in err and "--arch" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


CLI_ERRORS = {  # case -> (arguments, what the one-line message must say)
    "mvit_other_clip": (["--arch", "mvit_v2_s", "--frames", "8"], ["exactly 16 frames at 224 px",
                                                                   "--frames 16 --size 224"]),
    "s3d_too_small": (["--arch", "s3d", "--size", "112"], ["at least 14 frames at 224 px", "--size >= 224"]),
    "no_such_file": (["--arch", "r2plus1d_18"], ["no weights file at", "--weights"]),
    "not_a_state_dict": (["--arch", "r2plus1d_18"], ["torch.load(weights_only=True)", "model.state_dict()"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_import_errors_exit_2_with_the_fix(case, tmp_path, capfd):
    args, needles = CLI_ERRORS[case]
    weights = tmp_path / "w.pth"
    if case == "not_a_state_dict":  # a training checkpoint with its argparse arguments: not loadable weights_only
        torch.save({"model": {}, "args": argparse.Namespace(lr=0.1)}, weights)
    elif case != "no_such_file":
        weights.write_bytes(b"never read: the clip is refused first")
    rc = main(["import-encoder", *args, "--weights", str(weights), "--out", str(tmp_path / "out")])
    err = capfd.readouterr().err
    assert rc == 2, err
    assert all(n in err for n in needles), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_cli_names_every_arch_without_importing_torch():
    from jobs.commands import import_encoder

    assert import_encoder.ARCHS == tuple(ARCHS)


@pytest.fixture(scope="module")
def r2plus1d_aam(tmp_path_factory) -> dict[str, str]:
    """An imported R(2+1)D-18 on 8 x 64 clips (cheap on CPU) and an untrained AAM for its 512-d features."""
    from anon_core.models import aam_for_dim

    root = tmp_path_factory.mktemp("tv_models")
    pth = save_pth(torchvision_model("r2plus1d_18", seed=1), root / "r2plus1d_18.pth")
    import_torchvision_encoder("r2plus1d_18", pth, str(root / "encoder"), num_frames=8, size=64)
    torch.manual_seed(2)
    save_bundle(aam_for_dim(512), str(root / "aam"), "aam_for_dim", {"dim": 512}, trained=False)
    return {"encoder": str(root / "encoder"), "aam": str(root / "aam")}


def test_pruning_modes_refuse_a_torchvision_encoder(r2plus1d_aam, tiny_models, small_corpus, tmp_path):
    from pipelines.anonymize import AnonymizeConfig, PreflightError, preflight

    cfg = AnonymizeConfig(output=str(tmp_path / "out"), input=str(small_corpus / "videos"), mode="prune+aam",
                          encoder=r2plus1d_aam["encoder"], pruner=tiny_models["pruner"], aam=r2plus1d_aam["aam"],
                          clip_frames=8, clip_size=64)  # fmt: skip
    with pytest.raises(PreflightError, match=r"mode prune\+aam needs a tubelet ViT encoder .* is tv_r2plus1d_18.*"
                                             r"--mode aam"):  # fmt: skip
        preflight(cfg)


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT)
def test_anonymize_mode_aam_runs_on_an_imported_encoder(ray_session, r2plus1d_aam, small_corpus, tmp_path):
    args = [str(small_corpus / "videos"), "--mode", "aam", "--encoder", r2plus1d_aam["encoder"], "--aam",
            r2plus1d_aam["aam"], "--clip-frames", "8", "--clip-size", "64", "--max-clips", "1"]  # fmt: skip
    run = run_job(tmp_path / "out", args, run_id="tv-aam")
    s = run.summary
    assert run.rc == 0 and s["ok"], s
    assert (s["videos_ok"], s["videos_failed"], s["clips"]) == (N_VIDEOS, 0, N_VIDEOS)
    _, encoder = load_bundle(r2plus1d_aam["encoder"])
    assert s["models"]["encoder"]["id"] == encoder.model_id and s["models"]["encoder"]["trained"]
    table = read_features(run.out)
    feats = np.asarray(table.column("features").to_pylist(), dtype=np.float32)
    assert feats.shape == (N_VIDEOS, 512) and np.isfinite(feats).all() and np.abs(feats).sum(1).min() > 0
    assert set(table.column("encoder_id").to_pylist()) == {encoder.model_id}
    assert json.loads((run.out / "_output.json").read_text())["mode"] == "aam"


def test_train_aam_takes_an_imported_encoder_on_its_own_clips(r2plus1d_aam, small_corpus, tmp_path, capfd):
    """The AAM's training refuses clips the encoder was not imported for (an R(2+1)D would run on them, silently
    making features the anonymize job never makes), and plans a run on the right ones."""
    argv = ["train", "aam", f"manifest={small_corpus / 'labels.parquet'}", f"encoder={r2plus1d_aam['encoder']}",
            f"storage_path={tmp_path / 'store'}", "name=tv", "--dry-run"]  # fmt: skip
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert "takes 8 frames at 64px" in err and "set clip_frames=8 clip_size=64" in err and "Traceback" not in err
    assert main([*argv, "clip_frames=8", "clip_size=64"]) == 0
    assert "plan: " in capfd.readouterr().out
