"""Drawing for the synthetic corpus: a front-facing puppet on a panning textured background.

This module owns what a video can look like: the parameter ranges (`draw_appearance`, `draw_scene`, called by
`anon_core.synthetic` with the right random streams), the pose waveforms, and the drawing of one `VideoSpec`.
Geometry is in body units (actor height about 1, origin at the hip centre, y pointing down) until the last step.

Shapes are soft signed-distance shapes: alpha = clip(0.5 - signed_distance_px, 0, 1), evaluated only on each
shape's bounding box, so a 64x64 frame with ~25 shapes costs about a millisecond.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from anon_core.synthetic import VideoSpec

# Pose drivers, in the order of VideoSpec.phases. Each maps a phase to pose through one fixed waveform below.
DRIVERS: tuple[str, ...] = ("gait", "bounce", "knee", "wave", "spin", "kick", "bend")

# One amplitude per driver, the same for every action (radians or body units).
KNEE_LIFT, ARM_SWING = 1.1, 0.35
JUMP_LIFT = 0.15
SQUAT_SPREAD = 1.0
WAVE_FOREARM = 0.6
SPIN_MIN_WIDTH = 0.3
KICK_RAISE = 1.3
BEND_TILT = 0.6

# Skeleton in body units.
THIGH, SHIN, TORSO, UPPER_ARM, FOREARM = 0.25, 0.24, 0.30, 0.16, 0.15
HEAD_RADIUS = 0.11
SHOULDER_HALF = {0: 0.2, 1: 0.11}  # gender_proxy -> half shoulder width: broad vs narrow
HIP_HALF = {0: 0.08, 1: 0.15}  # gender_proxy -> half hip width: narrow vs wide

SHOE_RGB = (0.16, 0.14, 0.12)
SCLERA_RGB, PUPIL_RGB, MOUTH_RGB = (0.95, 0.95, 0.95), (0.1, 0.08, 0.08), (0.62, 0.22, 0.24)


# Colour ranges. Hair and pants palettes do not share colours, so long hair is not confused with trousers; nothing
# but the whites of the eyes is near-white (backgrounds stay below 0.75, light skin below 0.88).
HAIR_RGB = (
    (0.1, 0.08, 0.07),
    (0.27, 0.18, 0.12),
    (0.47, 0.31, 0.18),
    (0.78, 0.66, 0.4),
    (0.6, 0.24, 0.12),
    (0.6, 0.6, 0.6),
)
PANTS_RGB = (
    (0.2, 0.27, 0.47),
    (0.14, 0.17, 0.33),
    (0.16, 0.33, 0.2),
    (0.13, 0.38, 0.4),
    (0.3, 0.35, 0.45),
    (0.35, 0.2, 0.38),
)  # denim, navy, green, teal, slate, plum
SKIN_RGB = {0: ((0.88, 0.75, 0.64), (0.76, 0.58, 0.46)), 1: ((0.49, 0.33, 0.24), (0.29, 0.19, 0.13))}  # light, dark
SHIRT_HUE = {1: (-0.04, 0.15), 0: (0.47, 0.8)}  # clothing_warm -> hue range (fraction of the colour circle)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    i, f = int(h * 6) % 6, h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _rounded(values, lo: float = 0.0, hi: float = 1.0) -> tuple[float, ...]:
    """Plain floats, clipped and rounded so the labels table stays readable."""
    return tuple(round(float(np.clip(v, lo, hi)), 4) for v in values)


def draw_appearance(rng: np.random.Generator, attrs: dict[str, int]) -> dict:
    """Continuous details of one person given its attributes. Every value is drawn whatever the attributes, so
    the stream stays aligned; the attribute only picks the range."""
    light, dark = SKIN_RGB[attrs["skin_dark"]]
    skin = np.add(light, rng.uniform() * np.subtract(dark, light)) + rng.normal(0, 0.015, 3)
    hair = np.add(HAIR_RGB[rng.integers(len(HAIR_RGB))], rng.normal(0, 0.03, 3))
    hue_lo, hue_hi = SHIRT_HUE[attrs["clothing_warm"]]
    shirt = _hsv(rng.uniform(hue_lo, hue_hi) % 1.0, rng.uniform(0.55, 0.9), rng.uniform(0.55, 0.9))
    pants = np.add(PANTS_RGB[rng.integers(len(PANTS_RGB))], rng.normal(0, 0.03, 3))
    mask = _hsv(rng.uniform(), rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.8))
    hat = _hsv(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.5, 0.95))
    return dict(
        skin_rgb=_rounded(skin), hair_rgb=_rounded(hair), shirt_rgb=_rounded(shirt), pants_rgb=_rounded(pants),
        mask_rgb=_rounded(mask), hat_rgb=_rounded(hat), height_factor=float(rng.uniform(0.9, 1.1)),
        width_factor=float(rng.uniform(0.9, 1.1)), head_factor=float(rng.uniform(0.92, 1.08)),
    )  # fmt: skip


def draw_scene(rng: np.random.Generator, frames: int) -> dict:
    """Every per-video nuisance (see VideoSpec), drawn in one fixed order and range for every action."""
    muted = [_hsv(rng.uniform(), rng.uniform(0.05, 0.35), rng.uniform(0.3, 0.75)) for _ in range(2)]
    pan_angle, pan = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.08)
    values = dict(
        scale=rng.uniform(0.5, 0.72), x_center=rng.uniform(0.36, 0.64), ground_y=rng.uniform(0.86, 0.95),
        walk_travel=rng.uniform(0.18, 0.34), walk_dir=int(rng.choice([-1, 1])), walk_tau=float(rng.integers(frames)),
        omega=2 * np.pi / rng.uniform(10, 20),  # a cycle every 10 to 20 frames
        phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, len(DRIVERS))),
        noise_sigma=rng.uniform(1, 6) / 255, gain=rng.uniform(0.88, 1.12),
        tint=_rounded(1 + rng.uniform(-0.05, 0.05, 3), 0.9, 1.1), flicker_amp=rng.uniform(0, 0.05),
        flicker_freq=rng.uniform(0.01, 0.05), flicker_phase=rng.uniform(0, 2 * np.pi),
        jitter_sigma=rng.uniform(0, 0.006), bg_colour_a=_rounded(muted[0]), bg_colour_b=_rounded(muted[1]),
        bg_contrast=rng.uniform(0.15, 0.4), bg_freq=rng.uniform(1.5, 5.0),
        bg_pan_x=pan * math.cos(pan_angle), bg_pan_y=pan * math.sin(pan_angle),
    )  # fmt: skip
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in values.items()}


def _rot(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (N, 2) points about the origin; positive angle tips 'up' (0, -1) towards -x in image coordinates."""
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, -s], [s, c]])


def _down(angle: float) -> np.ndarray:
    """Unit vector at `angle` from straight down, positive towards +x."""
    return np.array([math.sin(angle), math.cos(angle)])


def waveforms(theta: dict[str, float], kick_raise: float, bend_tilt: float, spin_min_width: float) -> tuple:
    """(gait, squat, kick, bend, squish): each driver's phase through its fixed waveform, shared by both styles
    (each with its own amplitudes). gait in [-1, 1]; squat in [0, 1]; kick in [0, kick_raise] (radians); bend in
    [0, bend_tilt] (radians); squish in [spin_min_width, 1] (the body's width as it turns)."""
    gait = math.sin(theta["gait"])
    squat = (1 - math.cos(theta["knee"])) / 2
    kick = kick_raise * max(0.0, math.sin(theta["kick"]))
    bend = bend_tilt * (1 - math.cos(theta["bend"])) / 2
    return gait, squat, kick, bend, max(abs(math.cos(theta["spin"])), spin_min_width)


def pose_shapes(spec: VideoSpec, theta: dict[str, float]) -> list[tuple]:
    """Shapes of the actor, back to front, in body units: (kind, geometry..., radius, rgb).

    kinds: ("capsule", p0, p1, r, rgb), ("circle", c, r, rgb), ("poly", verts, r, rgb),
    ("cap", c, r, offset, normal, rgb): the disc (c, r) cut to the side of `normal` beyond c + offset * normal.
    """
    app = spec.appearance
    g, face_visible = spec.attribute("gender_proxy"), spec.attribute("face_visible")
    gait, squat, kick, bend, squish = waveforms(theta, KICK_RAISE, BEND_TILT, SPIN_MIN_WIDTH)
    width = app.width_factor
    shoulder, hip = SHOULDER_HALF[g] * width, HIP_HALF[g] * width

    # Legs hang from the hips; the ground contact is fixed afterwards, so a squat or a kick lowers the hips.
    # Seen from the front, walking lifts the knees in turn: the thigh swings towards the camera and foreshortens.
    legs = []
    for side in (-1, 1):
        knee_lift = KNEE_LIFT * max(0.0, math.sin(theta["gait"] + (0.0 if side < 0 else math.pi)))
        thigh_angle = side * (0.05 + SQUAT_SPREAD * squat) + (kick if side > 0 else 0.0)
        shin_angle = thigh_angle - side * 2 * SQUAT_SPREAD * squat
        hip_joint = np.array([side * (hip - 0.045), 0.0])
        knee = hip_joint + THIGH * math.cos(knee_lift) * _down(thigh_angle)
        ankle = knee + SHIN * _down(shin_angle)
        legs.append((hip_joint, knee, ankle))

    # Upper body in its own frame, then tilted about the hip centre by the bend driver.
    up = _rot(np.array([[0.0, -1.0]]), bend)[0]
    right = _rot(np.array([[1.0, 0.0]]), bend)[0]
    head_r = HEAD_RADIUS * app.head_factor
    head = np.array([0.0, -TORSO - 0.05 - 0.8 * head_r])
    torso = np.array([[-shoulder, -TORSO], [shoulder, -TORSO], [hip, 0.02], [-hip, 0.02]])
    arms = []
    for side in (-1, 1):
        shoulder_joint = np.array([side * (shoulder - 0.035), -TORSO + 0.02])
        if side > 0:  # the waving arm: upper arm held up and out, forearm swinging about vertical
            upper = 1.75 + 0.3 * ARM_SWING * gait
            fore = math.pi - 0.25 + WAVE_FOREARM * math.sin(theta["wave"])
        else:
            upper = -0.12 + ARM_SWING * gait
            fore = upper + 0.15
        elbow = shoulder_joint + UPPER_ARM * _down(upper)
        wrist = elbow + FOREARM * _down(fore)
        arms.append(_rot(np.stack([shoulder_joint, elbow, wrist]), bend))
    torso, head = _rot(torso, bend), _rot(head[None], bend)[0]
    neck = _rot(np.array([[0.0, -TORSO + 0.01], [0.0, -TORSO - 0.06]]), bend)

    # Ground contact: the lower ankle goes where a standing ankle would be, then the jump lifts everything.
    lowest = max(leg[2][1] for leg in legs)
    lift = JUMP_LIFT * abs(math.sin(theta["bounce"]))
    shift = np.array([0.0, THIGH + SHIN - lowest - lift])

    shirt, skin, pants, hair = app.shirt_rgb, app.skin_rgb, app.pants_rgb, app.hair_rgb
    body: list[tuple] = []
    for hip_joint, knee, ankle in legs:
        body += [("capsule", hip_joint, knee, 0.055, pants), ("capsule", knee, ankle, 0.045, skin)]  # shorts
        body.append(("capsule", ankle + [-0.03, 0.01], ankle + [0.03, 0.01], 0.035, SHOE_RGB))
    if g:  # long hair: a full mass around the head, falling behind the shoulders
        body.append(("capsule", head, head - up * 0.15, 1.35 * head_r, hair))
    body.append(("poly", torso, 0.03, shirt))
    body.append(("capsule", neck[0], neck[1], 0.032, skin if face_visible else app.mask_rgb))
    face: list[tuple] = []
    face.append(("circle", head, head_r, skin))
    if face_visible:
        for side in (-1, 1):
            eye = head + right * side * 0.42 * head_r
            face += [("circle", eye, 0.34 * head_r, SCLERA_RGB), ("circle", eye, 0.15 * head_r, PUPIL_RGB)]
        mouth = head - up * 0.48 * head_r
        face.append(("capsule", mouth - right * 0.3 * head_r, mouth + right * 0.3 * head_r, 0.1 * head_r, MOUTH_RGB))
    else:  # a balaclava over the head (the neck is covered above)
        face.append(("circle", head, 1.05 * head_r, app.mask_rgb))
    face.append(("cap", head, 1.1 * head_r, (0.3 if g else 0.45) * head_r, up, hair))  # long hair starts lower
    if g:  # and falls in two locks framing the face down over the chest
        for side in (-1, 1):
            top = head + right * side * 0.95 * head_r + up * 0.3 * head_r
            face.append(("capsule", top, top - up * 3.2 * head_r + right * side * 0.25 * head_r, 0.5 * head_r, hair))
    if spec.attribute("accessory_hat"):
        brim = head + up * 0.5 * head_r
        crown_top = head + up * 2.4 * head_r
        crown = np.stack(
            [
                brim - right * 1.25 * head_r,
                brim + right * 1.25 * head_r,
                crown_top + right * 1.1 * head_r,
                crown_top - right * 1.1 * head_r,
            ]
        )
        face.append(("poly", crown, 0.1 * head_r, app.hat_rgb))
        face.append(("capsule", brim - right * 2.6 * head_r, brim + right * 2.6 * head_r, 0.35 * head_r, app.hat_rgb))
    arms_shapes: list[tuple] = []
    for shoulder_joint, elbow, wrist in arms:
        arms_shapes += [
            ("capsule", shoulder_joint, elbow, 0.038, shirt),
            ("capsule", elbow, wrist, 0.031, skin),
            ("circle", wrist, 0.038, skin),
        ]

    # Spin squashes x about the body axis. Only the flat torso and the joint positions narrow: limbs are
    # cylinders and the head is a ball, so their widths (and the head's hair, face and hat) do not change.
    squash = np.array([squish, 1.0])
    head_move = (head + shift) * squash - head
    return (
        [_moved(sh, lambda p: (p + shift) * squash) for sh in body]
        + [_moved(sh, lambda p: p + head_move) for sh in face]
        + [_moved(sh, lambda p: (p + shift) * squash) for sh in arms_shapes]
    )


def _moved(shape: tuple, move) -> tuple:
    """The shape with its points (not its radius or cap normal) passed through `move`."""
    if shape[0] == "capsule":
        return (shape[0], move(shape[1]), move(shape[2]), *shape[3:])
    return (shape[0], move(shape[1]), *shape[2:])


def _signed_distance(kind: str, geometry: tuple, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Signed distance in pixels on the grid xs (1, w) x ys (h, 1); geometry in pixels, as plain floats."""
    if kind == "circle":
        cx, cy, r = geometry
        return np.hypot(xs - cx, ys - cy) - r
    if kind == "capsule":
        ax, ay, bx, by, r = geometry
        dx, dy = bx - ax, by - ay
        px, py = xs - ax, ys - ay
        t = np.clip((px * dx + py * dy) * (1.0 / max(dx * dx + dy * dy, 1e-9)), 0.0, 1.0)
        return np.hypot(px - dx * t, py - dy * t) - r
    if kind == "poly":  # convex polygon: max over edges of the distance to the edge line, rounded by r
        verts, r = geometry
        cx, cy = sum(v[0] for v in verts) / len(verts), sum(v[1] for v in verts) / len(verts)
        d = None
        for (x0, y0), (x1, y1) in zip(verts, verts[1:] + verts[:1], strict=True):
            nx, ny = y1 - y0, x0 - x1
            norm = max(math.hypot(nx, ny), 1e-9)
            if (cx - x0) * nx + (cy - y0) * ny > 0:  # make the normal point outwards whatever the winding
                norm = -norm
            e = (xs - x0) * (nx / norm) + (ys - y0) * (ny / norm)
            d = e if d is None else np.maximum(d, e)
        return d - r
    cx, cy, r, offset, nx, ny = geometry  # cap: the disc beyond a line along n
    return np.maximum(np.hypot(xs - cx, ys - cy) - r, offset - ((xs - cx) * nx + (ys - cy) * ny))


def draw_shapes(canvas: np.ndarray, shapes: list[tuple], origin: np.ndarray, px_per_unit: float) -> None:
    """Composite body-unit shapes onto a float (H, W, 3) canvas in place, `origin` = pixel of body (0, 0)."""
    height, width = canvas.shape[:2]
    ox, oy, k = float(origin[0]), float(origin[1]), float(px_per_unit)
    grid_x = np.arange(width, dtype=np.float32) + 0.5  # pixel centres
    grid_y = np.arange(height, dtype=np.float32) + 0.5
    for shape in shapes:
        kind = shape[0]
        if kind == "poly":
            verts = [(float(x) * k + ox, float(y) * k + oy) for x, y in shape[1]]
            geometry, points, radius = (verts, shape[2] * k), verts, shape[2] * k
        else:
            points = [(float(shape[1][0]) * k + ox, float(shape[1][1]) * k + oy)]
            if kind == "capsule":
                points.append((float(shape[2][0]) * k + ox, float(shape[2][1]) * k + oy))
                radius = shape[3] * k
                geometry = (*points[0], *points[1], radius)
            elif kind == "circle":
                radius = shape[2] * k
                geometry = (*points[0], radius)
            else:
                radius = shape[2] * k
                geometry = (*points[0], radius, shape[3] * k, float(shape[4][0]), float(shape[4][1]))
        x0 = max(int(math.floor(min(p[0] for p in points) - radius - 1)), 0)
        y0 = max(int(math.floor(min(p[1] for p in points) - radius - 1)), 0)
        x1 = min(int(math.ceil(max(p[0] for p in points) + radius + 1)), width)
        y1 = min(int(math.ceil(max(p[1] for p in points) + radius + 1)), height)
        if x1 <= x0 or y1 <= y0:
            continue
        alpha = 0.5 - _signed_distance(kind, geometry, grid_x[None, x0:x1], grid_y[y0:y1, None])
        np.clip(alpha, 0.0, 1.0, out=alpha)
        region = canvas[y0:y1, x0:x1]
        region += alpha[..., None] * (np.asarray(shape[-1], np.float32) - region)


def _smooth_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """Low-pass noise: a cells x cells grid of N(0, 1) values, bilinearly upsampled to side x side."""
    grid = rng.standard_normal((cells, cells))
    pos = np.linspace(0, cells - 1, side)
    lo = np.minimum(pos.astype(int), cells - 2)
    w = pos - lo
    interp = np.zeros((side, cells))
    interp[np.arange(side), lo] = 1 - w
    interp[np.arange(side), lo + 1] = w
    return interp @ grid @ interp.T


def background_texture(spec: VideoSpec, side: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (side, side, 3) float texture: two random oriented gratings plus smooth noise, mapped onto a muted palette."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / size  # in frame widths, so content scales with size
    field = np.zeros((side, side), np.float32)
    for _ in range(2):
        angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        freq = spec.bg_freq * rng.uniform(0.6, 1.6)
        field += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    field = 0.5 * field / 1.3 + 0.5 * _smooth_noise(rng, side, 6)
    mix = np.clip(0.5 + spec.bg_contrast * field, 0.0, 1.0)[..., None]
    a, b = np.asarray(spec.bg_colour_a, np.float32), np.asarray(spec.bg_colour_b, np.float32)
    return a + mix * (b - a)


def _crop_bilinear(texture: np.ndarray, x: float, y: float, size: int) -> np.ndarray:
    """The size x size window of `texture` whose top-left corner is at the fractional pixel (x, y)."""
    ix, iy = int(math.floor(x)), int(math.floor(y))
    fx, fy = x - ix, y - iy
    win = texture[iy : iy + size + 1, ix : ix + size + 1]
    top = win[:-1, :-1] * (1 - fx) + win[:-1, 1:] * fx
    bottom = win[1:, :-1] * (1 - fx) + win[1:, 1:] * fx
    return top * (1 - fy) + bottom * fy


@dataclass(frozen=True)
class Drawing:
    """How a style draws one video: everything `render_clip` and the corpus need that differs between styles."""

    appearance: Callable[[np.random.Generator, dict[str, int]], dict]  # (rng, attributes) -> Appearance's details
    pose_shapes: Callable[[VideoSpec, dict[str, float]], list[tuple]]  # (spec, driver phases) -> shapes in body units
    background: Callable[[VideoSpec, int, int, np.random.Generator], np.ndarray]  # (spec, side, size, rng) -> texture
    leg_length: float  # hip to sole in body units: puts the feet on spec.ground_y


PUPPET = Drawing(draw_appearance, pose_shapes, background_texture, THIGH + SHIN)


def render_clip(
    spec: VideoSpec,
    active: frozenset[str],
    frames: int,
    size: int,
    seed: np.random.SeedSequence,
    indices: Sequence[int] | None = None,
    drawing: Drawing = PUPPET,
) -> np.ndarray:
    """(len(indices), size, size, 3) uint8 frames of a `frames`-long clip (all frames when indices is None).

    Drivers in `active` advance at spec.omega; all others stay at their phase. `active` may also hold "travel":
    then the actor walks x(t) = x_center + dir * speed * (t - (T-1)/2); otherwise it stands where that walk would
    put it at the frozen time spec.walk_tau, so a frame taken at a random time has the same position distribution
    whether or not the actor walks. Each frame has its own noise stream, so any frame can be rendered alone.
    drawing: the style's (`PUPPET`, this module's; `anon_core.synthetic_blocks.BLOCKS`; `Style.drawing`).
    """
    s = float(size)
    speed = spec.walk_travel * s / max(frames - 1, 1)  # px per frame
    pan = np.array([spec.bg_pan_x, spec.bg_pan_y]) * s / max(frames - 1, 1)
    scene_seed, *frame_seeds = seed.spawn(1 + frames)
    rng = np.random.default_rng(scene_seed)
    jitter = rng.normal(0.0, spec.jitter_sigma * s, size=(frames, 2))
    margin = int(math.ceil(np.abs(pan).max() * frames + np.abs(jitter).max() + 4))
    side = size + 2 * margin + 2
    texture = drawing.background(spec, side, size, rng)
    px_per_unit = spec.scale * spec.appearance.height_factor * s
    tint = np.asarray(spec.tint, np.float32)
    indices = range(frames) if indices is None else indices
    out = np.empty((len(indices), size, size, 3), np.uint8)
    for i, t in enumerate(indices):
        theta = {k: spec.phases[i] + (spec.omega * t if k in active else 0.0) for i, k in enumerate(DRIVERS)}
        walk_time = t if "travel" in active else spec.walk_tau
        x = spec.x_center * s + spec.walk_dir * speed * (walk_time - (frames - 1) / 2)
        # Camera shake moves the whole image: actor and background by the same offset.
        bg_x = margin - pan[0] * (t - (frames - 1) / 2) - jitter[t, 0]
        bg_y = margin - pan[1] * (t - (frames - 1) / 2) - jitter[t, 1]
        canvas = _crop_bilinear(texture, bg_x, bg_y, size).copy()
        origin = np.array([x + jitter[t, 0], spec.ground_y * s - drawing.leg_length * px_per_unit + jitter[t, 1]])
        draw_shapes(canvas, drawing.pose_shapes(spec, theta), origin, px_per_unit)
        gain = spec.gain * (1 + spec.flicker_amp * math.sin(2 * math.pi * spec.flicker_freq * t + spec.flicker_phase))
        noise = np.random.default_rng(frame_seeds[t]).normal(0.0, spec.noise_sigma, size=canvas.shape)
        out[i] = np.clip((canvas * (gain * tint) + noise.astype(np.float32)) * 255 + 0.5, 0, 255).astype(np.uint8)
    return out
