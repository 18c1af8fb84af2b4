"""A synthetic video corpus for privacy-preserving action recognition, valid by construction.

Private attributes live only in static appearance, actions only in motion:
- A person (identity) is a fixed combination of the style's five binary attributes plus continuous details (skin
  shade, hair colour, ...), reused across about `videos_per_identity` videos so re-identification can be measured.
- Every video has the same pose drivers (gait, bounce, knee, wave, spin, kick, bend), each a phase mapped to pose
  by one fixed waveform with one amplitude. In a video only its action's drivers advance; every other driver is
  frozen at its own uniform random phase. A driver's phase is uniform at every frame either way, so the pose in
  one frame has the same distribution whatever the action. Walking adds translation; standing actors are placed
  where a walk would put them at a random frozen time, so a frame taken at a random time carries no action
  information. (At a fixed frame index, walk_left starts right of centre: models must not be given frame indices.)
- Nuisances (position, scale, speed, phase, noise, lighting, jitter, background) are drawn the same way for every
  video, independent of action and attributes.

Two drawing styles (`STYLES`): "puppet" (the benchmark's: ACTIONS, ATTRIBUTES, `synthetic_render`) and "blocks"
(other shapes, background, actions and attributes, `synthetic_blocks`), built by the same rules. A style is one
`Style` record: its actions and their drivers, its attributes, and its `Drawing` (how its people and walls are drawn);
a third style is a module with a `Drawing` and one more entry in STYLES.

Randomness: the plan (attributes, actions, identities, splits) comes from one plan stream of `cfg.seed`; everything
about video i comes from SeedSequence([seed, i]), so a video does not depend on how the work is scheduled.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from anon_core.synthetic_blocks import ATTRIBUTES as BLOCKS_ATTRIBUTES
from anon_core.synthetic_blocks import BLOCKS
from anon_core.synthetic_render import DRIVERS, PUPPET, Drawing, draw_scene, render_clip

GENERATOR_VERSION = "1"  # bump whenever the same config would render different pictures

ACTIONS: tuple[str, ...] = ("walk_left", "walk_right", "jump", "wave", "squat", "spin", "kick", "bend")
ATTRIBUTES: tuple[str, ...] = ("skin_dark", "gender_proxy", "face_visible", "clothing_warm", "accessory_hat")
CODECS = {"h264": ("libx264", ".mp4"), "vp9": ("libvpx-vp9", ".webm"), "mpeg4": ("mpeg4", ".mp4")}

# Which drivers advance in each action ("travel" = horizontal translation); all others stay frozen.
ACTION_DRIVERS: dict[str, frozenset[str]] = {
    "walk_left": frozenset({"gait", "travel"}),
    "walk_right": frozenset({"gait", "travel"}),
    "jump": frozenset({"bounce"}),
    "wave": frozenset({"wave"}),
    "squat": frozenset({"knee"}),
    "spin": frozenset({"spin"}),
    "kick": frozenset({"kick"}),
    "bend": frozenset({"bend"}),
}


@dataclass(frozen=True)
class Style:
    """A drawing style and what its people do and have: a corpus is made in one (`CorpusConfig.style`)."""

    name: str
    actions: tuple[str, ...]
    drivers: dict[str, frozenset[str]]  # action -> the drivers that advance ("travel": horizontal translation)
    directions: dict[str, int]  # travelling actions -> -1 (left) or +1 (right)
    attributes: tuple[str, ...]  # private, binary, independent by design
    group: str  # the attribute the bias protocol ties to one action
    drawing: Drawing  # how its people and walls look (its appearance draws, pose shapes, background)


# "puppet" is the benchmark's corpus (`synthetic_render`); "blocks" (`synthetic_blocks`) is another drawing with
# other actions and other attributes on the same drivers and rules, to check that a recipe is not fitted to the first.
STYLES: dict[str, Style] = {
    "puppet": Style(
        "puppet", ACTIONS, ACTION_DRIVERS, {"walk_left": -1, "walk_right": 1}, ATTRIBUTES, "gender_proxy", PUPPET
    ),
    "blocks": Style(
        "blocks",
        ("march", "hop_left", "hop_right", "squat_wave", "spin_kick", "bow"),
        {"march": frozenset({"gait"}), "hop_left": frozenset({"bounce", "travel"}),
         "hop_right": frozenset({"bounce", "travel"}), "squat_wave": frozenset({"knee", "wave"}),
         "spin_kick": frozenset({"spin", "kick"}), "bow": frozenset({"bend"})},
        {"hop_left": -1, "hop_right": 1},
        BLOCKS_ATTRIBUTES,
        "hair_long",
        BLOCKS,
    ),  # fmt: skip
}
_ENCODER_OPTIONS = {
    # mbtree reads uninitialised memory in this x264 build: outputs then depend on what the process did before.
    "h264": {"crf": "19", "preset": "veryfast", "x264-params": "mbtree=0"},
    "vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"},
    "mpeg4": {"flags": "+qscale", "global_quality": str(3 * 118)},  # -q:v 3 (118 = FF_QP2LAMBDA)
}
_CONTAINER_FORMAT = {".mp4": "mp4", ".webm": "webm"}
_PLAN_STREAM, _IDENTITY_STREAM = 2**40 + 1, 2**40 + 2  # wider than 32 bits: never equal to a video index


@dataclass(frozen=True)
class CorpusConfig:
    videos: int
    seed: int = 0
    size: int = 112
    frames: int = 32
    fps: int = 25
    codec: Literal["h264", "vp9", "mpeg4"] = "h264"
    style: Literal["puppet", "blocks"] = "puppet"  # how people look, what they do, what they have (STYLES)
    bias_protocol: bool = False
    split_by: Literal["video", "identity"] = "video"
    test_fraction: float = 0.2
    videos_per_identity: int = 5
    # under the bias protocol, shot bias_fraction of the time with the style's group attribute (puppet: gender_proxy)
    # at 1; None: the style's first action (puppet: walk_left)
    bias_action: str | None = None
    bias_fraction: float = 0.95

    def __post_init__(self) -> None:
        errors = []
        if not isinstance(self.videos, int) or self.videos < 1:
            errors.append(f"videos={self.videos!r}: need an integer >= 1")
        if not isinstance(self.seed, int) or self.seed < 0:
            errors.append(f"seed={self.seed!r}: need an integer >= 0")
        if not isinstance(self.size, int) or self.size < 32 or self.size % 2:
            errors.append(
                f"size={self.size!r}: need an even integer >= 32 (yuv420p needs even sides; "
                "smaller frames cannot show the face and hat)"
            )
        if not isinstance(self.frames, int) or self.frames < 2:
            errors.append(f"frames={self.frames!r}: need an integer >= 2 (actions live in motion)")
        if not isinstance(self.fps, int) or self.fps < 1:
            errors.append(f"fps={self.fps!r}: need an integer >= 1")
        if self.codec not in CODECS:
            errors.append(f"codec={self.codec!r}: choose one of {sorted(CODECS)}")
        if self.split_by not in ("video", "identity"):
            errors.append(f"split_by={self.split_by!r}: choose 'video' or 'identity'")
        if not 0.0 <= self.test_fraction < 1.0:
            errors.append(f"test_fraction={self.test_fraction!r}: need 0 <= test_fraction < 1")
        if not isinstance(self.videos_per_identity, int) or self.videos_per_identity < 1:
            errors.append(f"videos_per_identity={self.videos_per_identity!r}: need an integer >= 1")
        if self.style not in STYLES:
            errors.append(f"style={self.style!r}: choose one of {list(STYLES)}")
        else:
            actions = STYLES[self.style].actions
            if self.bias_action is None:
                object.__setattr__(self, "bias_action", actions[0])  # resolved, so corpus.json names it
            elif self.bias_action not in actions:
                errors.append(f"bias_action={self.bias_action!r}: choose one of {list(actions)} (style {self.style})")
        if not 0.0 <= self.bias_fraction <= 1.0:
            errors.append(f"bias_fraction={self.bias_fraction!r}: need 0 <= bias_fraction <= 1")
        if errors:
            raise ValueError("invalid CorpusConfig:\n  " + "\n  ".join(errors))


class CorpusExistsError(ValueError):
    """The output folder holds a corpus generated with other settings; the message names the differences."""


@dataclass(frozen=True)
class Appearance:
    """Everything static about one person; identical in every video of that identity."""

    identity: int
    attributes: tuple[int, ...]  # aligned with the style's attributes (STYLES)
    skin_rgb: tuple[float, float, float]
    hair_rgb: tuple[float, float, float]
    shirt_rgb: tuple[float, float, float]
    pants_rgb: tuple[float, float, float]
    mask_rgb: tuple[float, float, float]
    hat_rgb: tuple[float, float, float]
    height_factor: float
    width_factor: float
    head_factor: float


@dataclass(frozen=True)
class VideoSpec:
    """The plan for one video. Lengths are fractions of the frame side, angles radians, colours RGB in [0, 1]."""

    index: int
    video_id: str
    action: str
    split: str
    appearance: Appearance
    scale: float  # body unit / frame side: the actor stands about 1.08 * scale * height_factor tall
    x_center: float
    ground_y: float
    walk_travel: float  # distance walked over the clip
    walk_dir: int  # -1 left, +1 right
    walk_tau: float  # frozen walking time (frames) for actors who do not walk
    omega: float  # phase advance per frame of the active drivers
    phases: tuple[float, ...]  # aligned with synthetic_render.DRIVERS
    noise_sigma: float
    gain: float
    tint: tuple[float, float, float]
    flicker_amp: float
    flicker_freq: float  # cycles per frame
    flicker_phase: float
    jitter_sigma: float
    bg_colour_a: tuple[float, float, float]
    bg_colour_b: tuple[float, float, float]
    bg_contrast: float
    bg_freq: float  # grating cycles per frame width
    bg_pan_x: float  # background travel over the clip
    bg_pan_y: float
    style: str = "puppet"

    def attribute(self, name: str) -> int:
        return self.appearance.attributes[STYLES[self.style].attributes.index(name)]


def _appearance(seed: int, identity: int, attributes: tuple[int, ...], style: Style) -> Appearance:
    """One identity's look, from its own stream: the same person whatever else is in the corpus."""
    rng = np.random.default_rng([seed, _IDENTITY_STREAM, identity])
    details = style.drawing.appearance(rng, dict(zip(style.attributes, attributes, strict=True)))
    return Appearance(identity=identity, attributes=tuple(int(v) for v in attributes), **details)


def _nuisance(seed: int, index: int, action: str, frames: int, style: Style) -> dict:
    """Per-video nuisances from the video's own stream, drawn in the same order whatever the action."""
    values = draw_scene(np.random.default_rng(np.random.SeedSequence([seed, index]).spawn(2)[0]), frames)
    if action in style.directions:
        values["walk_dir"] = style.directions[action]
    return values


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _balanced(rng: np.random.Generator, n: int, ones: int) -> np.ndarray:
    return rng.permutation(np.r_[np.ones(ones, np.int8), np.zeros(n - ones, np.int8)])


def _attribute_design(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(n, k) 0/1 attributes: each 1 for exactly half of the identities, and independent by design.

    Every full block of 2^k identities holds each attribute combination once (all pairwise correlations zero);
    the remainder is made of complementary pairs (a combination and its opposite), which keeps every attribute
    balanced, plus one random combination when the count is odd.
    """
    combos = (np.arange(2**k)[:, None] >> np.arange(k)) & 1
    rest = n % 2**k
    half = rng.permutation(2 ** (k - 1))[: rest // 2]  # the first half's complements are the second half
    blocks = [combos[rng.permutation(2**k)] for _ in range(n // 2**k)]
    blocks += [combos[half], combos[2**k - 1 - half], combos[rng.integers(2**k, size=rest % 2)]]
    return np.concatenate(blocks)[rng.permutation(n)].astype(np.int8)


def _stratified_test(rng: np.random.Generator, strata: list, n_test: int) -> np.ndarray:
    """Boolean test mask with n_test members, each stratum's share proportional (largest remainder)."""
    keys = sorted(set(strata), key=str)
    members = {k: [i for i, s in enumerate(strata) if s == k] for k in keys}
    quota = {k: n_test * len(members[k]) / len(strata) for k in keys}
    take = {k: int(math.floor(q)) for k, q in quota.items()}
    by_remainder = sorted(keys, key=lambda k: (quota[k] - take[k], rng.uniform()), reverse=True)
    for k in by_remainder[: n_test - sum(take.values())]:
        take[k] += 1
    test = np.zeros(len(strata), bool)
    for k in keys:
        test[rng.permutation(members[k])[: take[k]]] = True
    return test


def _identity_test(rng: np.random.Generator, identity: np.ndarray, n_test: int) -> np.ndarray:
    """Whole identities to test, greedily in random order, getting as close to n_test videos as possible."""
    ids, counts = np.unique(identity, return_counts=True)
    chosen, total = [], 0
    for j in rng.permutation(len(ids)):
        if abs(total + counts[j] - n_test) < abs(total - n_test) and len(chosen) < len(ids) - 1:
            chosen.append(ids[j])
            total += counts[j]
    if not chosen and n_test > 0 and len(ids) > 1:  # a tiny corpus still gets a test identity
        chosen.append(ids[int(np.argmin(counts))])
    return np.isin(identity, chosen)


def sample_videos(cfg: CorpusConfig) -> list[VideoSpec]:
    """The per-video plan: identity, attributes, action, split and every generator parameter. No rendering."""
    style = STYLES[cfg.style]
    rng = np.random.default_rng([cfg.seed, _PLAN_STREAM])
    n = cfg.videos
    n_ids = max(math.ceil(n / cfg.videos_per_identity), 2 if cfg.bias_protocol else 1)
    attrs = _attribute_design(rng, n_ids, len(style.attributes))
    # Actions balanced over videos (counts differ by at most 1, which actions get the extra is random).
    action_ids = rng.permutation(np.resize(rng.permutation(len(style.actions)), n))
    if not cfg.bias_protocol:
        identity = rng.permutation(np.resize(np.arange(n_ids), n))
    else:
        # Exact counts: the bias action gets group=1 in round(f*n) of its videos, other actions get 0.
        group = np.zeros(n, np.int8)
        is_bias = action_ids == style.actions.index(cfg.bias_action)
        for mask, majority in ((is_bias, 1), (~is_bias, 0)):
            idx = np.flatnonzero(mask)
            n_major = _round_half_up(cfg.bias_fraction * len(idx))
            group[idx] = np.where(_balanced(rng, len(idx), n_major) == 1, majority, 1 - majority)
        person_group = attrs[:, style.attributes.index(style.group)]
        pools = {g: rng.permutation(np.flatnonzero(person_group == g)) for g in (0, 1)}
        identity = np.zeros(n, np.int64)
        for g in (0, 1):  # round-robin through the pool of the required group
            idx = np.flatnonzero(group == g)
            identity[idx] = pools[g][np.arange(len(idx)) % len(pools[g])]

    n_test = _round_half_up(cfg.test_fraction * n)
    if cfg.test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    if cfg.split_by == "video":
        group_of = attrs[identity, style.attributes.index(style.group)]
        strata = [
            (a, g) if cfg.bias_protocol else a for a, g in zip(action_ids.tolist(), group_of.tolist(), strict=True)
        ]
        test = _stratified_test(rng, strata, n_test)
    else:
        test = _identity_test(rng, identity, n_test)

    people = [_appearance(cfg.seed, k, tuple(attrs[k]), style) for k in range(n_ids)]
    specs = []
    for i in range(n):
        action = style.actions[action_ids[i]]
        specs.append(
            VideoSpec(
                index=i,
                video_id=f"v{i:06d}",
                action=action,
                split="test" if test[i] else "train",
                appearance=people[identity[i]],
                **_nuisance(cfg.seed, i, action, cfg.frames, style),
                style=cfg.style,
            )
        )
    return specs


def render_video(spec: VideoSpec, cfg: CorpusConfig, frame_indices: Sequence[int] | None = None) -> np.ndarray:
    """(frames, size, size, 3) uint8 frames of one planned video, deterministic from (cfg.seed, spec.index).

    frame_indices renders only those frames, identical to the same frames of the whole clip.
    """
    if frame_indices is not None and not all(0 <= t < cfg.frames for t in frame_indices):
        raise ValueError(f"frame_indices {list(frame_indices)} out of range: a clip has frames 0..{cfg.frames - 1}")
    pixel_seed = np.random.SeedSequence([cfg.seed, spec.index]).spawn(2)[1]
    style = STYLES[spec.style]
    return render_clip(spec, style.drivers[spec.action], cfg.frames, cfg.size, pixel_seed, frame_indices, style.drawing)


def write_video(frames: np.ndarray, path: str | os.PathLike, codec: str, fps: int) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames (H, W even) to `path`, byte-deterministically (one encoder thread)."""
    import av

    if codec not in CODECS:
        raise ValueError(f"codec {codec!r} unknown: choose one of {sorted(CODECS)}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frame size {frames.shape[2]}x{frames.shape[1]} must be even for yuv420p: crop or pad it")
    encoder, ext = CODECS[codec]
    fmt = _CONTAINER_FORMAT.get(Path(path).suffix, _CONTAINER_FORMAT[ext])
    # bitexact: no random Matroska UIDs, no dates, no library version strings in the file.
    container_options = {"fflags": "+bitexact"} | ({"movflags": "+faststart"} if fmt == "mp4" else {})
    with av.open(str(path), mode="w", format=fmt, container_options=container_options) as container:
        stream = container.add_stream(encoder, rate=fps, options=dict(_ENCODER_OPTIONS[codec]))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1  # threaded encoders are not byte-deterministic
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def _render_and_write(job: tuple[VideoSpec, CorpusConfig, str]) -> int:
    spec, cfg, path = job
    final = Path(path)
    if not final.exists():
        # A private temporary name, renamed only when complete: an interrupted run never leaves a half file.
        partial = final.with_name(f".{final.stem}.partial-{os.getpid()}{final.suffix}")
        try:
            write_video(render_video(spec, cfg), partial, cfg.codec, cfg.fps)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
    return spec.index


def _flat(prefix: str, obj) -> dict:
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in ("index", "video_id", "action", "split", "appearance", "identity", "attributes", "style"):
            continue
        if f.name == "phases":
            out.update({f"{prefix}phase_{d}": v for d, v in zip(DRIVERS, value, strict=True)})
        elif isinstance(value, tuple):
            out.update({f"{prefix}{f.name.removesuffix('_rgb')}_{c}": v for c, v in zip("rgb", value, strict=True)})
        else:
            out[prefix + f.name] = value
    return out


def labels_frame(specs: list[VideoSpec], cfg: CorpusConfig) -> pd.DataFrame:
    """One row per video: ids, path, split, action, attributes (int8), identity, gen_* parameters, encoding."""
    ext, style = CODECS[cfg.codec][1], STYLES[cfg.style]
    rows = []
    for s in specs:
        row = {
            "video_id": s.video_id,
            "path": f"videos/{s.video_id}{ext}",
            "split": s.split,
            "action": s.action,
            "action_id": style.actions.index(s.action),
        }
        row.update(zip(style.attributes, s.appearance.attributes, strict=True))
        row["identity"] = s.appearance.identity
        row.update(_flat("gen_", s.appearance))
        row.update(_flat("gen_", s))
        row.update(codec=cfg.codec, fps=cfg.fps, frames=cfg.frames, size=cfg.size)
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.astype({a: "int8" for a in style.attributes} | {"action_id": "int64", "identity": "int64"})


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, path)


def generate_corpus(
    out_dir: str | os.PathLike, cfg: CorpusConfig, workers: int = 0, progress: Callable[[int, int], None] | None = None
) -> pd.DataFrame:
    """Write OUT/videos/<video_id><ext>, OUT/labels.parquet and OUT/corpus.json; return the labels.

    corpus.json is written first and labels.parquet last, as the commit marker. Re-running into a directory made
    with the same config and generator version keeps the videos already there (each was renamed into place only
    when complete); a directory made with another config is refused.
    """
    if workers < 0:
        raise ValueError(f"workers={workers}: pass 0 for one process per CPU, or a positive count")
    out = Path(out_dir)
    videos_dir = out / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "actions": list(STYLES[cfg.style].actions),
        "attributes": list(STYLES[cfg.style].attributes),
        "drivers": list(DRIVERS),
        "encoder": {"name": CODECS[cfg.codec][0], "options": _ENCODER_OPTIONS[cfg.codec]},
    }
    manifest_path = out / "corpus.json"
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        # a field added since that corpus was made counts as its default (what the corpus was made with)
        was = {f.name: f.default for f in fields(CorpusConfig)} | (old.get("config") or {})
        if (old.get("generator_version"), was) != (GENERATOR_VERSION, manifest["config"]):
            diff = ", ".join(f"{k}={was.get(k)!r} there, {v!r} now" for k, v in manifest["config"].items()
                             if was.get(k) != v)  # fmt: skip
            if old.get("generator_version") != GENERATOR_VERSION:
                diff = ", ".join(filter(None, [diff, f"generator v{old.get('generator_version')} there, "
                                               f"v{GENERATOR_VERSION} now"]))  # fmt: skip
            raise CorpusExistsError(f"{out} already holds a corpus made another way ({diff}): choose a new --out "
                                    "directory, delete the old one, or repeat its own settings")  # fmt: skip
    _write_atomic(manifest_path, json.dumps(manifest, indent=2).encode())
    for stale in videos_dir.glob(".*.partial-*"):  # left by an interrupted run
        stale.unlink(missing_ok=True)

    specs = sample_videos(cfg)
    labels = labels_frame(specs, cfg)
    jobs = [(s, cfg, str(out / p)) for s, p in zip(specs, labels["path"], strict=True)]
    workers = workers or os.cpu_count() or 1
    done = 0
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            _render_and_write(job)
            done += 1
            if progress:
                progress(done, len(jobs))
    else:
        # Not fork: the parent may hold threads (PyAV, Ray) that a forked child would inherit broken.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        chunk = max(1, min(8, len(jobs) // (4 * workers)))
        with multiprocessing.get_context(method).Pool(min(workers, len(jobs))) as pool:
            for _ in pool.imap_unordered(_render_and_write, jobs, chunksize=chunk):
                done += 1
                if progress:
                    progress(done, len(jobs))
    table_path = out / "labels.parquet"
    partial = table_path.with_name(f".labels.parquet.partial-{os.getpid()}")
    labels.to_parquet(partial, index=False)
    os.replace(partial, table_path)
    return labels


def _cell_sums(values: np.ndarray, grids: tuple[int, ...] = (1, 2, 4)) -> np.ndarray:
    """Means of values (..., H, W, C) over the cells of a 1x1 + 2x2 + 4x4 pyramid: (..., 21, C)."""
    h, w = values.shape[-3:-1]
    cells = []
    for k in grids:
        ys, xs = np.linspace(0, h, k + 1).astype(int), np.linspace(0, w, k + 1).astype(int)
        sums = np.add.reduceat(np.add.reduceat(values, ys[:-1], axis=-3), xs[:-1], axis=-2)
        area = np.outer(np.diff(ys), np.diff(xs))[..., None]
        cells.append((sums / area).reshape(*values.shape[:-3], k * k, values.shape[-1]))
    return np.concatenate(cells, axis=-2)


def frame_features_static(frame: np.ndarray) -> np.ndarray:
    """Generic appearance features of one (H, W, 3) uint8 frame (723 values).

    An 8x8x8 RGB histogram and a 4x4x4 one weighted by gradient magnitude (the colours of edges, less swamped by
    smooth backgrounds), both square-rooted (Hellinger) so small but telling colour masses count; then mean colours
    and gradient energy in 4 orientations per cell of a 1x1 + 2x2 + 4x4 pyramid.
    """
    img = np.asarray(frame, np.float32) / 255.0
    fine = np.minimum((img * 8).astype(int), 7)
    hist = np.bincount((fine[..., 0] * 64 + fine[..., 1] * 8 + fine[..., 2]).ravel(), minlength=512) / fine[..., 0].size
    coarse = fine // 2
    gy, gx = np.gradient(img.mean(axis=-1))
    magnitude = np.hypot(gx, gy)
    edge_hist = np.bincount(
        (coarse[..., 0] * 16 + coarse[..., 1] * 4 + coarse[..., 2]).ravel(), weights=magnitude.ravel(), minlength=64
    ) / max(float(magnitude.sum()), 1e-6)
    orientation = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * 4).astype(int), 3)  # unsigned, 4 bins
    oriented = np.stack([magnitude**2 * (orientation == b) for b in range(4)], axis=-1)
    parts = [np.sqrt(hist), np.sqrt(edge_hist), _cell_sums(img).ravel(), _cell_sums(oriented).ravel()]
    return np.concatenate(parts).astype(np.float32)


def frame_features_motion(clip: np.ndarray) -> np.ndarray:
    """Generic motion features of a (T, H, W, 3) clip from frame differences (252 values).

    Per consecutive pair: I_t and the spatial gradients I_x, I_y of the pair's mean; per pyramid cell the means of
    I_t*I_x and I_t*I_y (normal-flow numerators, the same for either contrast polarity), |I_t| and I_t^2; then the
    mean, mean absolute value and standard deviation of each over time.
    """
    gray = np.asarray(clip, np.float32).mean(axis=-1) / 255.0  # (T, H, W)
    if gray.shape[0] < 2:
        raise ValueError(f"a clip of {gray.shape[0]} frame(s) has no motion: pass at least 2 frames")
    it = np.diff(gray, axis=0)
    mid = (gray[1:] + gray[:-1]) / 2
    iy, ix = np.gradient(mid, axis=(1, 2))
    per_pair = _cell_sums(np.stack([it * ix, it * iy, np.abs(it), it**2], axis=-1))  # (T-1, 21, 4)
    stats = [per_pair.mean(axis=0), np.abs(per_pair).mean(axis=0), per_pair.std(axis=0)]
    return np.concatenate([s.ravel() for s in stats]).astype(np.float32)
