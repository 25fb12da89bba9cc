"""Deterministic shuffling and augmentation (random crop with padding, horizontal flip).

Everything is a pure function of (seed, epoch/step): the same call gives the same bytes on any
machine, so a training run on the host, in the C core or on a board can be replayed exactly.
"""
from __future__ import annotations

import numpy as np

from .base import DataError

PAD_MODES = ("reflect", "edge", "constant")


def shuffle(n: int, seed: int, epoch: int = 0) -> np.ndarray:
    """Visiting order for epoch `epoch`: a permutation of range(n), int64."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


def augment_params(n: int, seed: int, step: int, *, pad: int = 4,
                   flip: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dy, dx, flip) per image for `augment`: offsets in [0, 2*pad], flip as bool."""
    rng = np.random.default_rng([int(seed), int(step), 0x6175])
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    fl = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    return dy, dx, fl


def augment(images: np.ndarray, seed: int, step: int, *, pad: int = 4, flip: bool = True,
            mode: str = "reflect") -> np.ndarray:
    """Random crop (pad by `pad` pixels on each side, crop back to H x W at a random offset)
    and random horizontal flip (p = 0.5), drawn from (seed, step).

    `images` is (N, H, W, C) or one (H, W, C) image; returns a new uint8 array of the same
    shape. pad=0 and flip=False return an unchanged copy. `mode` is numpy.pad's mode for the
    border ("reflect" by default, so no black frame reaches an int8 model)."""
    if mode not in PAD_MODES:
        raise DataError(f"augment: pad mode {mode!r} unknown; use one of {', '.join(PAD_MODES)}")
    x = np.asarray(images)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4:
        raise DataError(f"augment: images must be (N, H, W, C) or (H, W, C), got {x.shape}")
    n, h, w, _ = x.shape
    if pad < 0 or pad >= min(h, w):
        raise DataError(f"augment: pad={pad} must be in [0, {min(h, w) - 1}] for {h}x{w} images")
    dy, dx, fl = augment_params(n, seed, step, pad=pad, flip=flip)
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode) if pad else x
    out = np.empty_like(x)
    for i in range(n):
        crop = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop[:, ::-1] if fl[i] else crop
    return out[0] if single else out
