"""Synthetic "person / no person" scenes, generated here (no download), numpy only.

label 1: a simple person-like figure (head disc, torso, two-segment arms and legs; height 35-70 %
         of the image at difficulty 1, random position, lean, pose, skin/shirt/trouser colours
         kept apart from the background colours) on clutter.
label 0: the same kind of clutter plus *distractors*: boxes, broad ellipses and bars in the
         figure's own palette (skin / shirt / trouser colours), never assembled into a figure,
         so colour or brightness alone does not separate the classes.
Clutter: a random two-colour gradient, random rectangles / ellipses / thin lines, pixel noise.

Calibration (seed 0, 1000 train / 300 val, measured when this was written): logistic regression
on 8x8-average-pooled pixels stays near chance (the figure moves), while a 4-layer CNN trained
from scratch with backprop reaches > 90 % val. Smaller figures (25 %) and more clutter made
that CNN stall near 80 %, too hard for the on-device learner; raise `difficulty`-independent
knobs below with care.

`difficulty` in [0, 1] scales clutter count, distractors, noise, pose and figure-size
variation; 0 gives a plain gradient with or without a large upright figure (trivially
separable), 1 (default) is the project's standard task. Image i of `make(n, seed=s)` depends
only on (s, stream, i, its label): every call gives the same bytes.
"""
from __future__ import annotations

import math

import numpy as np

from .base import DataError, Dataset, to_grey

SKIN = np.array([[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66],
                 [141, 85, 36], [92, 58, 34]], dtype=np.float32)


# Knobs at difficulty 1 (difficulty d scales the counts / spreads towards the d=0 values).
FIG_SIZE = (0.35, 0.70)   # figure height / image height (d=0: 0.6)
CLUTTER = (0, 2)          # clutter shapes per image (besides distractors)
NOISE = (1.0, 4.0)        # pixel noise sigma
DISTRACT_NEG = (1, 2)     # palette-coloured distractors without a figure
DISTRACT_POS = (0, 1)     # ... and next to a figure


class _Canvas:
    """Float RGB canvas with antialiased shape painting on bounding-box windows."""

    def __init__(self, size: int):
        self.size = size
        self.img = np.zeros((size, size, 3), dtype=np.float32)
        self.ax = np.arange(size, dtype=np.float32) + 0.5

    def _window(self, y0: float, y1: float, x0: float, x1: float):
        s = self.size
        a, b = max(0, int(math.floor(y0)) - 1), min(s, int(math.ceil(y1)) + 1)
        c, d = max(0, int(math.floor(x0)) - 1), min(s, int(math.ceil(x1)) + 1)
        if a >= b or c >= d:
            return None
        return a, b, c, d, self.ax[a:b, None], self.ax[None, c:d]

    def _blend(self, win, alpha: np.ndarray, color) -> None:
        a, b, c, d = win[:4]
        al = alpha[..., None]
        reg = self.img[a:b, c:d]
        reg += (np.asarray(color, dtype=np.float32) - reg) * al

    def capsule(self, p0, p1, r: float, color) -> None:
        """Thick line from p0=(y, x) to p1 with round ends, radius r."""
        (y0, x0), (y1, x1) = p0, p1
        win = self._window(min(y0, y1) - r, max(y0, y1) + r, min(x0, x1) - r, max(x0, x1) + r)
        if win is None:
            return
        yy, xx = win[4], win[5]
        dy, dx = y1 - y0, x1 - x0
        ll = dy * dy + dx * dx
        if ll < 1e-6:
            t = 0.0
        else:
            t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / ll, 0.0, 1.0)
        dist = np.sqrt((yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2)
        self._blend(win, np.clip(r - dist + 0.5, 0.0, 1.0), color)

    def ellipse(self, cy: float, cx: float, ry: float, rx: float, ang: float, color) -> None:
        rr = max(ry, rx)
        win = self._window(cy - rr, cy + rr, cx - rr, cx + rr)
        if win is None:
            return
        yy, xx = win[4] - cy, win[5] - cx
        ca, sa = math.cos(ang), math.sin(ang)
        u = (xx * ca + yy * sa) / rx
        v = (-xx * sa + yy * ca) / ry
        dist = (np.sqrt(u * u + v * v) - 1.0) * min(rx, ry)
        self._blend(win, np.clip(0.5 - dist, 0.0, 1.0), color)

    def rect(self, y0: float, x0: float, y1: float, x1: float, color) -> None:
        win = self._window(y0, y1, x0, x1)
        if win is None:
            return
        yy, xx = win[4], win[5]
        ay = np.clip(np.minimum(yy - y0, y1 - yy) + 0.5, 0.0, 1.0)
        ax = np.clip(np.minimum(xx - x0, x1 - xx) + 0.5, 0.0, 1.0)
        self._blend(win, ay * ax, color)


def _rand_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3).astype(np.float32)


def _jitter(rng: np.random.Generator, c: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(c + rng.uniform(-amount, amount, size=3), 0, 255).astype(np.float32)


def _contrasting(rng: np.random.Generator, avoid: list[np.ndarray], dist: float) -> np.ndarray:
    """A random colour at least `dist` (L1 / 3, per channel mean) from every colour in `avoid`."""
    c = _rand_color(rng)
    for _ in range(20):
        if all(float(np.abs(c - a).mean()) >= dist for a in avoid):
            break
        c = _rand_color(rng)
    return c


def _palette(rng: np.random.Generator, bg: list[np.ndarray], d: float) -> dict[str, np.ndarray]:
    """Figure colours, kept apart from the background colours (less so at high difficulty)."""
    dist = 90.0 - 30.0 * d
    return {"skin": _jitter(rng, SKIN[rng.integers(len(SKIN))], 15),
            "shirt": _contrasting(rng, bg, dist), "trousers": _contrasting(rng, bg, dist)}


def _background(cv: _Canvas, rng: np.random.Generator, d: float) -> list[np.ndarray]:
    c0, c1 = _rand_color(rng), _rand_color(rng)
    c1 = c0 + (c1 - c0) * (0.25 + 0.75 * d)  # low difficulty: gentler gradients
    ang = rng.uniform(0, 2 * math.pi)
    s = cv.size
    t = ((cv.ax[:, None] * math.sin(ang) + cv.ax[None, :] * math.cos(ang)) / s) * 0.7 + 0.5
    t = np.clip(t, 0, 1)[..., None]
    cv.img[:] = c0 + (c1 - c0) * t
    return [c0, c1]


def _clutter(cv: _Canvas, rng: np.random.Generator, count: int) -> None:
    s = cv.size
    for _ in range(count):
        kind = rng.integers(3)
        col = _rand_color(rng)
        if kind == 0:
            y0, x0 = rng.uniform(-0.1, 0.9, size=2) * s
            h, w = rng.uniform(0.08, 0.5, size=2) * s
            cv.rect(y0, x0, y0 + h, x0 + w, col)
        elif kind == 1:
            cy, cx = rng.uniform(0, 1, size=2) * s
            ry, rx = rng.uniform(0.04, 0.25, size=2) * s
            cv.ellipse(cy, cx, ry, rx, rng.uniform(0, math.pi), col)
        else:
            p0 = rng.uniform(0, 1, size=2) * s
            p1 = rng.uniform(0, 1, size=2) * s
            cv.capsule(p0, p1, rng.uniform(0.5, 1.5) * s / 96, col)


def _distractors(cv: _Canvas, rng: np.random.Generator, pal: dict, count: int,
                 fig_h: float) -> None:
    """Shapes in the figure palette (skin / shirt / trouser colours) that are not figure parts:
    boxes, broad ellipses and bars, so colour and brightness do not give the label away."""
    s = cv.size
    keys = ("skin", "shirt", "trousers")
    for _ in range(count):
        kind = rng.integers(3)
        col = _jitter(rng, pal[keys[rng.integers(3)]], 12)
        cy, cx = rng.uniform(0.1, 0.9, size=2) * s
        if kind == 0:
            h, w = fig_h * rng.uniform(0.2, 0.5), fig_h * rng.uniform(0.2, 0.5)
            cv.rect(cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2, col)
        elif kind == 1:
            ry, rx = fig_h * rng.uniform(0.15, 0.3), fig_h * rng.uniform(0.15, 0.3)
            cv.ellipse(cy, cx, ry, rx, rng.uniform(0, math.pi), col)
        else:
            ln, ang = fig_h * rng.uniform(0.3, 0.6), rng.uniform(0, math.pi)
            p1 = (cy + ln * math.sin(ang), cx + ln * math.cos(ang))
            cv.capsule((cy, cx), p1, fig_h * rng.uniform(0.02, 0.04), col)


def _figure(cv: _Canvas, rng: np.random.Generator, pal: dict, fig_h: float, d: float) -> None:
    s = cv.size
    H = fig_h
    px = s / 96.0  # keep small figures from thinning below ~1 pixel
    r_head = max(0.09 * H, 2.5 * px)
    torso_len, torso_w = 0.32 * H, max(0.1 * H, 2.5 * px)
    upper, lower = 0.15 * H, 0.14 * H
    thigh, shin = 0.2 * H, 0.2 * H
    limb_r_arm, limb_r_leg = max(0.04 * H, 1.3 * px), max(0.05 * H, 1.5 * px)
    lean = rng.uniform(-0.2, 0.2) * d
    # Figure-local frame: (dy, dx) from the head top, then rotate by `lean` and translate.
    top_y = rng.uniform(0.0, max(0.0, s - H))
    cx = rng.uniform(0.12 * s + 0.15 * H, 0.88 * s - 0.15 * H) if d > 0 else s / 2
    ca, sa = math.cos(lean), math.sin(lean)

    def P(dy: float, dx: float) -> tuple[float, float]:
        return (top_y + dy * ca + dx * sa, cx - dy * sa + dx * ca)

    def limb(origin, a1, a2, l1, l2, r, col):
        # angles measured from straight down, positive towards +x
        j = (origin[0] + l1 * math.cos(a1), origin[1] + l1 * math.sin(a1))
        e = (j[0] + l2 * math.cos(a2), j[1] + l2 * math.sin(a2))
        cv.capsule(P(*origin), P(*j), r, col)
        cv.capsule(P(*j), P(*e), r * 0.9, col)
        return e

    neck = 2 * r_head + 0.01 * H
    hip = neck + torso_len
    pose = 0.5 * d
    # legs first (behind torso)
    for side in (-1, 1):
        a1 = side * rng.uniform(0.05, 0.25 + 0.35 * pose)
        a2 = a1 + rng.uniform(-0.4, 0.4) * pose
        limb((hip - 0.02 * H, side * 0.045 * H), a1, a2, thigh, shin, limb_r_leg,
             _jitter(rng, pal["trousers"], 6))
    cv.capsule(P(neck + torso_w * 0.6, 0), P(hip - torso_w * 0.4, 0), torso_w, pal["shirt"])
    for side in (-1, 1):
        a1 = side * rng.uniform(0.15, 0.6 + 1.6 * pose)
        a2 = a1 + side * rng.uniform(-0.6, 1.0) * pose
        e = limb((neck + 0.03 * H, side * 0.075 * H), a1, a2, upper, lower, limb_r_arm,
                 _jitter(rng, pal["shirt"], 6))
        cv.ellipse(*P(*e), limb_r_arm * 1.1, limb_r_arm * 1.1, 0.0, pal["skin"])
    hy, hx = P(r_head, 0.0)
    cv.ellipse(hy, hx, r_head, r_head * 0.85, lean, pal["skin"])


def _scene(size: int, rng: np.random.Generator, label: int, d: float) -> np.ndarray:
    cv = _Canvas(size)
    bg = _background(cv, rng, d)
    lo, hi = 0.6 + (FIG_SIZE[0] - 0.6) * d, 0.6 + (FIG_SIZE[1] - 0.6) * d
    fig_h = rng.uniform(lo, hi) * size
    pal = _palette(rng, bg, d)
    _clutter(cv, rng, int(round(d * rng.integers(CLUTTER[0], CLUTTER[1] + 1))))
    if label:
        _distractors(cv, rng, pal, int(round(d * rng.integers(DISTRACT_POS[0], DISTRACT_POS[1] + 1))), fig_h)
        _figure(cv, rng, pal, fig_h, d)
    else:
        _distractors(cv, rng, pal, int(round(d * rng.integers(DISTRACT_NEG[0], DISTRACT_NEG[1] + 1))), fig_h)
    sigma = d * rng.uniform(NOISE[0], NOISE[1])
    img = cv.img
    if sigma > 0:
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def make(n: int, *, size: int = 96, channels: int = 3, seed: int = 0, difficulty: float = 1.0,
         stream: int = 0) -> Dataset:
    """`n` scenes, balanced (n//2 or n//2+1 of each class, in a seeded random order).

    Deterministic in (n, size, channels, seed, difficulty, stream); `stream` separates
    disjoint sets drawn with the same seed (default_split uses 0 = train, 1 = val)."""
    if n < 0:
        raise DataError(f"synthetic: n must be >= 0, got {n}")
    if channels not in (1, 3):
        raise DataError(f"synthetic: channels must be 1 or 3, got {channels}")
    if size < 16:
        raise DataError(f"synthetic: size must be >= 16, got {size}")
    if not 0.0 <= difficulty <= 1.0:
        raise DataError(f"synthetic: difficulty must be in [0, 1], got {difficulty}")
    labels = np.random.default_rng([seed, stream, 0x5EED]).permutation(np.arange(n) % 2)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, stream, i])
        images[i] = _scene(size, rng, int(labels[i]), float(difficulty))
    if channels == 1:
        images = to_grey(images)
    return Dataset(images=images, labels=labels.astype(np.int64),
                   ids=[f"syn{stream}-{i:06d}" for i in range(n)], layout="synthetic",
                   name=f"synthetic-s{seed}-{stream}-d{difficulty:g}", classes=2,
                   source="synthetic",
                   meta={"seed": seed, "stream": stream, "difficulty": difficulty, "size": size,
                         "checksums": "generated (deterministic)"})


def default_split(seed: int = 0, difficulty: float = 1.0) -> tuple[Dataset, Dataset]:
    """The project default: 1000 train / 300 val at 96x96x3, disjoint streams."""
    return make(1000, seed=seed, difficulty=difficulty, stream=0), make(300, seed=seed, difficulty=difficulty, stream=1)
