"""The synthetic corpus: config errors, the plan's balance, determinism, codecs, and benchmark validity measured.

The validity tests render 1600 single frames and 480 clips at 64x64 (no encoding) and fit probes on generic
features, so the corpus's central claim (attributes in appearance only, actions in motion only) is measured, not
assumed; a leaky counterfactual shows the static probe could see an action if frames carried one. Run with -s to
see the measured accuracies.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from anon_core.synthetic import (
    ACTIONS,
    ATTRIBUTES,
    CODECS,
    STYLES,
    CorpusConfig,
    frame_features_motion,
    frame_features_static,
    generate_corpus,
    render_video,
    sample_videos,
    write_video,
)
from anon_core.synthetic_render import DRIVERS

# ---------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codec": "h265"}, r"codec='h265': choose one of \['h264', 'mpeg4', 'vp9'\]"),
        ({"size": 63}, r"size=63: need an even integer >= 32 \(yuv420p needs even sides"),
        ({"size": 16}, r"size=16: need an even integer >= 32"),
        ({"videos": 0}, r"videos=0: need an integer >= 1"),
        ({"bias_action": "run"}, r"bias_action='run': choose one of \['walk_left'"),
        ({"style": "blocks", "bias_action": "jump"}, r"bias_action='jump': choose one of \['march'.*\(style blocks\)"),
        ({"style": "anime"}, r"style='anime': choose one of \['puppet', 'blocks'\]"),
        ({"frames": 1}, r"frames=1: need an integer >= 2"),
        ({"test_fraction": 1.0}, r"test_fraction=1.0: need 0 <= test_fraction < 1"),
        ({"split_by": "person"}, r"split_by='person': choose 'video' or 'identity'"),
    ],
)
def test_config_rejects_bad_values_naming_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CorpusConfig(**{"videos": 10, **kwargs})


def test_config_reports_every_error_at_once():
    with pytest.raises(ValueError) as e:
        CorpusConfig(videos=0, size=33, codec="av1")
    assert all(f"{field}=" in str(e.value) for field in ("videos", "size", "codec"))


# ---------------------------------------------------------------------------------------------------- the plan


def _attrs(specs) -> np.ndarray:
    return np.array([s.appearance.attributes for s in specs])


def test_actions_balanced_attributes_half_of_identities_identities_reused():
    specs = sample_videos(CorpusConfig(videos=403, seed=3))
    counts = pd.Series([s.action for s in specs]).value_counts()
    assert set(counts.index) == set(ACTIONS) and counts.max() - counts.min() <= 1

    people = {s.appearance.identity: s.appearance for s in specs}
    assert len(people) == 81  # ceil(403 / 5)
    per_identity = np.array([p.attributes for p in people.values()])
    assert np.all(np.abs(per_identity.sum(axis=0) - len(people) / 2) <= 0.5), "each attribute on exactly half"
    # Independent by design: full blocks of 32 identities hold every combination once, so only the 17 others can
    # correlate two attributes, by at most about 17/81.
    corr = np.corrcoef(per_identity.T)[np.triu_indices(len(ATTRIBUTES), 1)]
    assert np.abs(corr).max() <= 17 / 81
    exact = np.array([s.appearance.attributes for s in sample_videos(CorpusConfig(videos=320, seed=3))])
    assert np.allclose(np.corrcoef(exact.T)[np.triu_indices(len(ATTRIBUTES), 1)], 0)  # 64 identities: 2 blocks
    # Over videos too, since every identity has 4 or 5 videos.
    assert np.all(np.abs(_attrs(specs).mean(axis=0) - 0.5) <= 0.05)
    videos_per_person = pd.Series([s.appearance.identity for s in specs]).value_counts()
    assert videos_per_person.min() >= 4 and videos_per_person.max() <= 5
    # The same identity looks the same in all its videos; another identity does not share its details.
    first = {}
    for s in specs:
        assert first.setdefault(s.appearance.identity, s.appearance) == s.appearance
    assert len({p.skin_rgb for p in people.values()}) == len(people)


def test_split_by_video_is_stratified_by_action():
    specs = sample_videos(CorpusConfig(videos=400, seed=4, test_fraction=0.2))
    test = pd.Series([s.action for s in specs if s.split == "test"]).value_counts()
    assert sum(test) == 80
    assert test.min() >= 9 and test.max() <= 11  # 50 videos per action, 10 of them in test


def test_split_by_identity_keeps_each_identity_on_one_side():
    specs = sample_videos(CorpusConfig(videos=400, seed=5, split_by="identity", test_fraction=0.2))
    train = {s.appearance.identity for s in specs if s.split == "train"}
    test = {s.appearance.identity for s in specs if s.split == "test"}
    assert train and test and not train & test
    assert abs(sum(s.split == "test" for s in specs) / len(specs) - 0.2) <= 0.03


def test_tiny_corpus_still_has_both_splits():
    for split_by in ("video", "identity"):
        specs = sample_videos(CorpusConfig(videos=6, seed=0, split_by=split_by))
        assert {s.split for s in specs} == {"train", "test"}


@pytest.mark.parametrize("split_by", ["video", "identity"])
def test_bias_protocol_has_exactly_the_95_5_shape(split_by):
    cfg = CorpusConfig(videos=400, seed=6, bias_protocol=True, bias_action="jump", split_by=split_by)
    specs = sample_videos(cfg)
    df = pd.DataFrame({"action": [s.action for s in specs], "gender": [s.attribute("gender_proxy") for s in specs]})
    bias, rest = df[df.action == "jump"], df[df.action != "jump"]
    assert (bias.gender == 1).sum() == int(np.floor(0.95 * len(bias) + 0.5))
    assert (rest.gender == 0).sum() == int(np.floor(0.95 * len(rest) + 0.5))
    assert 0 < (bias.gender == 0).sum() and 0 < (rest.gender == 1).sum()  # the 5 % exists


def test_the_blocks_style_has_its_own_actions_attributes_and_bias_group(tmp_path):
    blocks = STYLES["blocks"]
    assert not set(blocks.actions) & set(ACTIONS) and not set(blocks.attributes) & set(ATTRIBUTES)
    specs = sample_videos(CorpusConfig(videos=300, seed=3, style="blocks"))
    counts = pd.Series([s.action for s in specs]).value_counts()
    assert set(counts.index) == set(blocks.actions) and counts.max() - counts.min() <= 1
    assert np.all(np.abs(_attrs(specs).mean(axis=0) - 0.5) <= 0.05) and _attrs(specs).shape[1] == 5
    hops = [s for s in specs if s.action.startswith("hop_")]
    assert all(s.walk_dir == (-1 if s.action == "hop_left" else 1) for s in hops)
    # the bias protocol ties the style's group attribute to its first action by default
    cfg = CorpusConfig(videos=200, seed=6, style="blocks", bias_protocol=True)
    assert cfg.bias_action == "march"
    df = pd.DataFrame([{"action": s.action, "group": s.attribute("hair_long")} for s in sample_videos(cfg)])
    assert df[df.action == "march"].group.mean() > 0.9 and df[df.action != "march"].group.mean() < 0.1
    labels = generate_corpus(tmp_path, CorpusConfig(videos=6, size=32, frames=4, style="blocks"), workers=1)
    assert (labels["action"].map(blocks.actions.index) == labels["action_id"]).all()
    assert all(labels[a].dtype == np.int8 for a in blocks.attributes) and "gen_style" not in labels
    manifest = json.loads((tmp_path / "corpus.json").read_text())
    assert manifest["actions"] == list(blocks.actions) and manifest["attributes"] == list(blocks.attributes)
    assert manifest["config"]["style"] == "blocks" and manifest["config"]["bias_action"] == "march"


def test_a_corpus_made_before_a_config_field_existed_is_still_resumed(tmp_path):
    # corpus.json of an older anonvid has no `style`: it was a puppet corpus, so the default config still fits it
    cfg = CorpusConfig(videos=3, size=32, frames=4)
    generate_corpus(tmp_path, cfg, workers=1)
    manifest = json.loads((tmp_path / "corpus.json").read_text())
    del manifest["config"]["style"]
    (tmp_path / "corpus.json").write_text(json.dumps(manifest))
    generate_corpus(tmp_path, cfg, workers=1)
    (tmp_path / "corpus.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="style='puppet' there, 'blocks' now"):
        generate_corpus(tmp_path, CorpusConfig(videos=3, size=32, frames=4, style="blocks"), workers=1)


def test_nuisances_do_not_depend_on_the_action():
    # Drawn from the video's own stream in a fixed order: only a walker's direction follows its action.
    from anon_core.synthetic import STYLES, _nuisance

    for index in range(20):
        draws = {action: _nuisance(3, index, action, 16, STYLES["puppet"]) for action in ACTIONS}
        without_direction = [{k: v for k, v in d.items() if k != "walk_dir"} for d in draws.values()]
        assert all(d == without_direction[0] for d in without_direction)
        assert draws["walk_left"]["walk_dir"] == -1 and draws["walk_right"]["walk_dir"] == 1


# ---------------------------------------------------------------------------------------------------- files


def _hashes(root: Path, labels: pd.DataFrame) -> list[str]:
    return [hashlib.sha256((root / p).read_bytes()).hexdigest() for p in labels["path"]]


def test_generate_is_byte_deterministic_across_runs_and_workers(tmp_path):
    cfg = CorpusConfig(videos=6, size=64, frames=16, seed=5)
    seen = []
    one = generate_corpus(tmp_path / "a", cfg, workers=1, progress=lambda done, total: seen.append((done, total)))
    two = generate_corpus(tmp_path / "b", cfg, workers=2)
    other = generate_corpus(tmp_path / "c", replace(cfg, seed=6), workers=1)

    assert seen[-1] == (6, 6)
    pd.testing.assert_frame_equal(one, two)
    pd.testing.assert_frame_equal(one, pd.read_parquet(tmp_path / "a" / "labels.parquet"))
    assert _hashes(tmp_path / "a", one) == _hashes(tmp_path / "b", two)
    assert not set(_hashes(tmp_path / "a", one)) & set(_hashes(tmp_path / "c", other))
    assert sorted(os.listdir(tmp_path / "a" / "videos")) == [f"v{i:06d}.mp4" for i in range(6)]

    manifest = json.loads((tmp_path / "a" / "corpus.json").read_text())
    assert manifest["config"]["seed"] == 5 and manifest["actions"] == list(ACTIONS)
    assert manifest["attributes"] == list(ATTRIBUTES) and manifest["generator_version"]


def test_labels_columns(tmp_path):
    labels = generate_corpus(tmp_path, CorpusConfig(videos=3, size=32, frames=4, codec="mpeg4"), workers=1)
    assert "gen_identity" not in labels and not labels.columns.duplicated().any()
    for column in ("video_id", "path", "split", "action", "action_id", "identity", "codec", "fps", "frames", "size"):
        assert column in labels
    assert all(labels[a].dtype == np.int8 for a in ATTRIBUTES)
    assert list(labels["video_id"]) == ["v000000", "v000001", "v000002"]
    assert labels["path"].iloc[0] == "videos/v000000.mp4"
    assert (labels["action"].map(ACTIONS.index) == labels["action_id"]).all()
    gen = [c for c in labels if c.startswith("gen_")]
    for expected in (
        "gen_scale",
        "gen_x_center",
        "gen_omega",
        "gen_phase_gait",
        "gen_noise_sigma",
        "gen_gain",
        "gen_jitter_sigma",
        "gen_bg_pan_x",
        "gen_skin_r",
        "gen_height_factor",
    ):
        assert expected in gen


def test_rerun_keeps_finished_videos_and_refuses_another_config(tmp_path):
    cfg = CorpusConfig(videos=4, size=32, frames=4)
    generate_corpus(tmp_path, cfg, workers=1)
    first = tmp_path / "videos" / "v000000.mp4"
    stamp = first.stat().st_mtime_ns
    (tmp_path / "videos" / "v000001.mp4").unlink()  # as if interrupted before this one
    (tmp_path / "videos" / ".v000001.partial-999.mp4").write_bytes(b"half")
    labels = generate_corpus(tmp_path, cfg, workers=1)
    assert first.stat().st_mtime_ns == stamp
    assert all((tmp_path / p).exists() for p in labels["path"])
    assert not list((tmp_path / "videos").glob(".*partial*"))
    with pytest.raises(ValueError, match="made another way.*choose a new --out directory"):
        generate_corpus(tmp_path, replace(cfg, seed=1), workers=1)
    with pytest.raises(ValueError, match="workers=-1: pass 0 for one process per CPU"):
        generate_corpus(tmp_path, cfg, workers=-1)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_codec_decodes_back_to_the_same_frames_and_repeats_bytes(tmp_path, codec):
    cfg = CorpusConfig(videos=2, size=64, frames=12, codec=codec)
    frames, other = (render_video(s, cfg) for s in sample_videos(cfg))
    ext = CODECS[codec][1]
    write_video(frames, tmp_path / f"a{ext}", codec, cfg.fps)
    write_video(other, tmp_path / f"b{ext}", codec, cfg.fps)  # encoder history must not leak into the next file
    write_video(frames, tmp_path / f"c{ext}", codec, cfg.fps)
    assert (tmp_path / f"a{ext}").read_bytes() == (tmp_path / f"c{ext}").read_bytes()
    with av.open(str(tmp_path / f"a{ext}")) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 8  # lossy, but the same pictures


def test_write_video_rejects_odd_sides(tmp_path):
    with pytest.raises(ValueError, match="must be even for yuv420p"):
        write_video(np.zeros((2, 33, 32, 3), np.uint8), tmp_path / "x.mp4", "h264", 25)


def test_any_frame_renders_alone_exactly_as_in_the_clip():
    cfg = CorpusConfig(videos=2, size=32, frames=6)
    spec = sample_videos(cfg)[1]
    assert np.array_equal(render_video(spec, cfg, [4, 1]), render_video(spec, cfg)[[4, 1]])
    with pytest.raises(ValueError, match="out of range"):
        render_video(spec, cfg, [6])


def test_feature_shapes_and_errors():
    clip = np.random.default_rng(0).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    assert frame_features_static(clip[0]).shape == (723,)
    assert frame_features_motion(clip).shape == (252,)
    with pytest.raises(ValueError, match="at least 2 frames"):
        frame_features_motion(clip[:1])
    # Motion features see nothing in a still clip.
    assert np.allclose(frame_features_motion(np.repeat(clip[:1], 4, axis=0)), 0)


# ---------------------------------------------------------------------------------------------------- validity

# Single frames are cheap to render alone, so the static probes see 1600 videos (480 in test); the motion probe
# needs whole clips and sees the first 480. Both drawing styles are held to the same rules.
VALIDITY = {"videos": 1600, "seed": 11, "size": 64, "frames": 16, "test_fraction": 0.3}
MOTION_VIDEOS = 480


def _features(job):
    spec, cfg = job
    frame = [int(np.random.default_rng([cfg.seed, spec.index, 99]).integers(cfg.frames))]
    # The counterfactual this design avoids: drivers the action does not use resting at phase 0 instead of a
    # random phase. Its single frames do carry the action, so the static probe must be able to see it.
    active = STYLES[spec.style].drivers[spec.action]
    resting = replace(spec, phases=tuple(p if d in active else 0.0 for d, p in zip(DRIVERS, spec.phases, strict=True)))
    static = frame_features_static(render_video(spec, cfg, frame)[0])
    leaky = frame_features_static(render_video(resting, cfg, frame)[0])
    motion = frame_features_motion(render_video(spec, cfg)) if spec.index < MOTION_VIDEOS else None
    return static, leaky, motion


@pytest.fixture(scope="module", params=list(STYLES))
def validity(request):
    """Features of one random frame of every video and of the whole clip of the first ones, rendered (not
    encoded) on 2 cores, for each drawing style."""
    cfg = CorpusConfig(**VALIDITY, style=request.param)
    style = STYLES[cfg.style]
    specs = sample_videos(cfg)
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(2) as pool:
        feats = pool.map(_features, [(s, cfg) for s in specs], chunksize=50)
    return {
        "style": style,
        "static": np.stack([f[0] for f in feats]),
        "leaky_static": np.stack([f[1] for f in feats]),
        "motion": np.stack([f[2] for f in feats[:MOTION_VIDEOS]]),
        "test": np.array([s.split == "test" for s in specs]),
        "action": np.array([style.actions.index(s.action) for s in specs]),
        "attrs": _attrs(specs),
    }


def _linear_probe(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def _forest_probe():
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=150, random_state=0, n_jobs=2)


def _accuracy(probe, x, y, test) -> float:
    return float(probe.fit(x[~test], y[~test]).score(x[test], y[test]))


def test_one_frame_reveals_every_private_attribute(validity):
    for j, name in enumerate(validity["style"].attributes):
        acc = _accuracy(_linear_probe(0.05), validity["static"], validity["attrs"][:, j], validity["test"])
        print(f"static linear probe  {name:<15} accuracy {acc:.3f}  (chance 0.5, n_test={validity['test'].sum()})")
        style = validity["style"].name
        assert acc >= 0.75, f"{name} ({style}) is not visible enough in a single frame: strengthen its appearance cue"


def _no_information_limit(n_test: int, classes: int) -> float:
    """With no action information, accuracy is at most Binomial(n_test, 1/classes) / n_test: its 99.9 % quantile."""
    from scipy.stats import binom

    return float(binom.ppf(0.999, n_test, 1 / classes) / n_test)


def test_one_frame_does_not_reveal_the_action(validity):
    limit = _no_information_limit(int(validity["test"].sum()), len(validity["style"].actions))
    for name, probe in (("linear", _linear_probe(0.05)), ("forest", _forest_probe())):
        acc = _accuracy(probe, validity["static"], validity["action"], validity["test"])
        chance = 1 / len(validity["style"].actions)
        print(f"static {name} probe  action          accuracy {acc:.3f}  (chance {chance:.3f}, limit {limit:.3f})")
        assert acc <= limit, "single frames carry action information: some pose or position depends on the action"


def test_the_static_probe_would_see_an_action_leak(validity):
    """Without this, passing the test above could mean a blind probe rather than a clean corpus."""
    limit = _no_information_limit(int(validity["test"].sum()), len(validity["style"].actions))
    acc = {
        name: _accuracy(probe, validity["leaky_static"], validity["action"], validity["test"])
        for name, probe in (("linear", _linear_probe(0.05)), ("forest", _forest_probe()))
    }
    print(
        "static probes on a leaky counterfactual (unused drivers at rest): "
        + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
        + f"  (limit {limit:.3f})"
    )
    assert max(acc.values()) > limit


def test_motion_reveals_the_action(validity):
    action, test = validity["action"][:MOTION_VIDEOS], validity["test"][:MOTION_VIDEOS]
    acc = _accuracy(_linear_probe(0.3), validity["motion"], action, test)
    chance = 1 / len(validity["style"].actions)
    print(f"motion linear probe  action          accuracy {acc:.3f}  (chance {chance:.3f}, n_test={test.sum()})")
    assert acc >= 0.6


# ---------------------------------------------------------------------------------------------------- looking


def test_contact_sheet(tmp_path):
    """Writes a sheet to look at ($SYNTH_SHEET, e.g. /tmp/synth_sheet.png): rows are videos, columns time."""
    from PIL import Image

    cfg = CorpusConfig(videos=8, seed=3, size=112, frames=24)
    rows = [np.concatenate(list(render_video(s, cfg)[::4]), axis=1) for s in sample_videos(cfg)]
    sheet = np.concatenate(rows, axis=0)
    assert sheet.shape == (8 * 112, 6 * 112, 3)
    assert all(np.abs(r[:, :112].astype(int) - r[:, -112:]).mean() > 1 for r in rows), "every video moves"
    Image.fromarray(sheet).save(os.environ.get("SYNTH_SHEET", str(tmp_path / "synth_sheet.png")))
