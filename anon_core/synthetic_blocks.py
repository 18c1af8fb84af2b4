"""The corpus's second drawing style, "blocks": an outlined, big-headed mannequin of boxes on a dotted wall.

It exists to check that anonvid's methods are not fitted to the first style (`synthetic_render`, "puppet"): other
shapes and proportions, another background, other actions (`anon_core.synthetic.STYLES`) and other private
attributes, on the same pose drivers, scene nuisances and construction rules (attributes only in appearance,
actions only in motion, every unused driver frozen at a uniform random phase). A recipe that only works on the
puppet corpus will show it here.

Geometry is in body units (actor height about 1, origin at the hip centre, y pointing down), as in the first style.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from anon_core.synthetic_render import Drawing, _down, _hsv, _moved, _rot, _rounded, _smooth_noise, waveforms

if TYPE_CHECKING:
    from anon_core.synthetic import VideoSpec

ATTRIBUTES: tuple[str, ...] = ("glasses", "jacket", "pants_dark", "hair_long", "scarf")

# One amplitude per driver, the same for every action (radians or body units).
STRIDE, ARM_SWING = 0.45, 0.5
HOP_LIFT = 0.18
SQUAT_SPREAD = 0.9
WAVE_FOREARM = 0.7
SPIN_MIN_WIDTH = 0.3
KICK_RAISE = 1.2
BEND_TILT = 0.5

# Skeleton in body units: short legs, a long box torso and a large square head.
THIGH, SHIN, TORSO, UPPER_ARM, FOREARM = 0.19, 0.18, 0.30, 0.15, 0.14
HEAD_HALF = 0.15
SHOULDER_HALF, HIP_HALF = 0.16, 0.1
OUTLINE = 0.022  # every part is drawn over a dark copy of itself this much larger
OUTLINE_RGB, EYE_RGB, LENS_RGB = (0.08, 0.07, 0.09), (0.12, 0.1, 0.1), (0.78, 0.9, 0.96)  # lenses catch the light
SHOE_RGB = (0.3, 0.18, 0.1)


def draw_appearance(rng: np.random.Generator, attrs: dict[str, int]) -> dict:
    """Continuous details of one person given its attributes, every value drawn whatever the attributes. Fields
    are those of `anon_core.synthetic.Appearance`: mask_rgb is the accessories' colour (the glasses' rims, the
    scarf), hat_rgb the jacket's."""
    skin = _hsv(rng.uniform(0.02, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.3, 0.95))  # any tone: not private here
    hair = _hsv(rng.uniform(0.0, 0.15), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.6))
    shirt = _hsv(rng.uniform(), rng.uniform(0.35, 0.85), rng.uniform(0.45, 0.9))
    value = rng.uniform(0.08, 0.22) if attrs["pants_dark"] else rng.uniform(0.62, 0.85)
    pants = _hsv(rng.uniform(), rng.uniform(0.1, 0.4), value)
    frame = _hsv(rng.uniform(), rng.uniform(0.6, 0.95), rng.uniform(0.55, 0.9))  # coloured rims, seen on any skin
    jacket = _hsv(rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(0.1, 0.3))  # dark: black, charcoal, navy
    return dict(
        skin_rgb=_rounded(skin), hair_rgb=_rounded(hair), shirt_rgb=_rounded(shirt), pants_rgb=_rounded(pants),
        mask_rgb=_rounded(frame), hat_rgb=_rounded(jacket), height_factor=float(rng.uniform(0.9, 1.1)),
        width_factor=float(rng.uniform(0.85, 1.15)), head_factor=float(rng.uniform(0.9, 1.1)),
    )  # fmt: skip


def _box(p0: np.ndarray, p1: np.ndarray, half: float) -> np.ndarray:
    """(4, 2) corners of the rectangle of half-width `half` along the segment p0 -> p1."""
    d = np.asarray(p1, float) - np.asarray(p0, float)
    n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-9) * half
    return np.stack([p0 + n, p1 + n, p1 - n, p0 - n])


def _square(centre: np.ndarray, half_w: float, half_h: float, up: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.stack([centre + s * half_w * right + t * half_h * up for s, t in ((-1, 1), (1, 1), (1, -1), (-1, -1))])


def _outlined(verts: np.ndarray, rgb, rounding: float = 0.01) -> list[tuple]:
    return [("poly", verts, rounding + OUTLINE, OUTLINE_RGB), ("poly", verts, rounding, rgb)]


def pose_shapes(spec: VideoSpec, theta: dict[str, float]) -> list[tuple]:
    """Shapes of the mannequin, back to front, in body units (the kinds of `synthetic_render.draw_shapes`)."""
    app = spec.appearance
    attr = spec.attribute
    gait, squat, kick, bend, squish = waveforms(theta, KICK_RAISE, BEND_TILT, SPIN_MIN_WIDTH)
    width = app.width_factor
    shoulder, hip = SHOULDER_HALF * width, HIP_HALF * width

    # Legs scissor in the picture plane with the gait; a squat spreads the knees; the kick raises the right leg.
    legs = []
    for side in (-1, 1):
        swing = side * STRIDE * gait
        thigh_angle = swing + side * (0.04 + SQUAT_SPREAD * squat) + (kick if side > 0 else 0.0)
        shin_angle = thigh_angle - side * 1.8 * SQUAT_SPREAD * squat - 0.3 * max(0.0, -side * gait)
        hip_joint = np.array([side * (hip - 0.04), 0.0])
        knee = hip_joint + THIGH * _down(thigh_angle)
        ankle = knee + SHIN * _down(shin_angle)
        legs.append((hip_joint, knee, ankle))

    up = _rot(np.array([[0.0, -1.0]]), bend)[0]
    right = _rot(np.array([[1.0, 0.0]]), bend)[0]
    head_half = HEAD_HALF * app.head_factor
    torso = _rot(np.array([[-shoulder, -TORSO], [shoulder, -TORSO], [hip, 0.02], [-hip, 0.02]]), bend)
    head = _rot(np.array([[0.0, -TORSO - 0.03 - head_half]]), bend)[0]
    arms = []
    for side in (-1, 1):
        shoulder_joint = np.array([side * (shoulder - 0.02), -TORSO + 0.03])
        if side > 0:  # the waving arm: held out sideways, forearm swinging about vertical
            upper = 1.45 + 0.2 * ARM_SWING * gait
            fore = math.pi - 0.1 + WAVE_FOREARM * math.sin(theta["wave"])
        else:
            upper = -0.15 - ARM_SWING * gait
            fore = upper - 0.2
        elbow = shoulder_joint + UPPER_ARM * _down(upper)
        wrist = elbow + FOREARM * _down(fore)
        arms.append(_rot(np.stack([shoulder_joint, elbow, wrist]), bend))

    lowest = max(leg[2][1] for leg in legs)
    lift = HOP_LIFT * abs(math.sin(theta["bounce"]))
    shift = np.array([0.0, THIGH + SHIN - lowest - lift])

    skin, shirt, pants, hair = app.skin_rgb, app.shirt_rgb, app.pants_rgb, app.hair_rgb
    shapes: list[tuple] = []
    if attr("hair_long"):  # a block of hair behind the head down to the shoulders
        shapes += _outlined(_square(head - up * 1.1 * head_half, 1.4 * head_half, 2.1 * head_half, up, right), hair)
    for hip_joint, knee, ankle in legs:
        shapes += _outlined(_box(hip_joint, knee, 0.055), pants) + _outlined(_box(knee, ankle, 0.048), pants)
        shapes += _outlined(_box(ankle + [-0.05, 0.015], ankle + [0.05, 0.015], 0.025), SHOE_RGB)
    shapes += _outlined(torso, shirt, 0.02)
    if attr("jacket"):  # worn open: two panels down the sides of the shirt
        for outer, inner in (([0, 3], [1, 2]), ([1, 2], [0, 3])):  # torso corners: left edge, right edge
            panel = torso.copy()
            panel[inner] = torso[outer] * 0.45 + torso[inner] * 0.55  # its inner edge 55% of the way across
            shapes.append(("poly", panel, 0.02, app.hat_rgb))
    for shoulder_joint, elbow, wrist in arms:
        sleeve = app.hat_rgb if attr("jacket") else shirt  # the jacket's sleeves, or the shirt's short ones
        shapes += _outlined(_box(shoulder_joint, elbow, 0.048), sleeve)
        shapes += _outlined(_box(elbow, wrist, 0.046), sleeve if attr("jacket") else skin)
        shapes += _outlined(_square(wrist, 0.035, 0.035, up, right), skin)
    shapes += _outlined(_square(head, head_half, head_half, up, right), skin, 0.02)
    shapes += _outlined(_square(head + up * 0.8 * head_half, 1.05 * head_half, 0.3 * head_half, up, right), hair)
    if attr("hair_long"):  # and two locks down the sides of the face onto the chest
        for side in (-1, 1):
            top = head + up * 0.8 * head_half + right * side * 0.85 * head_half
            shapes += _outlined(_box(top, top - up * 3.0 * head_half, 0.3 * head_half), hair)
    eyes = [head + up * 0.15 * head_half + side * 0.45 * head_half * right for side in (-1, 1)]
    shapes += [("circle", e, 0.1 * head_half, EYE_RGB) for e in eyes]
    if attr("scarf"):  # a band under the chin and an end hanging down the chest
        neck = head - up * 1.05 * head_half
        shapes += _outlined(_square(neck, 1.1 * head_half, 0.28 * head_half, up, right), app.mask_rgb)
        shapes += _outlined(_box(neck + right * 0.5 * head_half, neck + right * 0.6 * head_half - up * 2.2 * head_half,
                                 0.25 * head_half), app.mask_rgb)  # fmt: skip
    if attr("glasses"):  # two square rims and a bridge, thick enough to survive 64-pixel frames
        for e in eyes:
            shapes.append(("poly", _square(e, 0.3 * head_half, 0.26 * head_half, up, right), 0.09 * head_half,
                           app.mask_rgb))  # fmt: skip
            shapes.append(("poly", _square(e, 0.22 * head_half, 0.18 * head_half, up, right), 0.0, LENS_RGB))
            shapes.append(("circle", e, 0.1 * head_half, EYE_RGB))
        shapes.append(("capsule", eyes[0], eyes[1], 0.07 * head_half, app.mask_rgb))

    # Spin squashes x about the body axis; the head turns as a whole (its shapes squash with it).
    squash = np.array([squish, 1.0])
    return [_moved(sh, lambda p: (p + shift) * squash) for sh in shapes]


def background_texture(spec: VideoSpec, side: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (side, side, 3) float texture: a wall of soft dots of a second colour over smooth shading."""
    a, b = np.asarray(spec.bg_colour_a, np.float32), np.asarray(spec.bg_colour_b, np.float32)
    shade = 1 + spec.bg_contrast * 0.5 * _smooth_noise(rng, side, 4).astype(np.float32)
    field = np.zeros((side, side), np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    n = int(round((side / size) ** 2 * 3 * spec.bg_freq**2))  # denser dots where the first style's stripes are finer
    for cx, cy, r in zip(rng.uniform(0, side, n), rng.uniform(0, side, n), rng.uniform(0.02, 0.06, n) * size,
                         strict=True):  # fmt: skip
        x0, x1, y0, y1 = (max(int(cx - r - 1), 0), min(int(cx + r + 2), side), max(int(cy - r - 1), 0),
                          min(int(cy + r + 2), side))  # fmt: skip
        d = np.hypot(xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy)
        np.maximum(field[y0:y1, x0:x1], np.clip(r - d + 0.5, 0, 1), out=field[y0:y1, x0:x1])
    mix = (np.clip(spec.bg_contrast * 2.0, 0.0, 1.0) * field)[..., None]
    return np.clip((a + mix * (b - a)) * shade[..., None], 0.0, 1.0)


BLOCKS = Drawing(draw_appearance, pose_shapes, background_texture, THIGH + SHIN)
