"""Label-free camera adaptation by per-channel statistic matching (issue 16), on the C core.

One layer at a time, in order, for the first `k` layers of a model (the last layer never):

1. reference statistics: per output channel, the mean and std (Q8) in accumulator units of the
   layer's int32 accumulator on clean images through the *original* network
   (`reference_stats`; computed once, from images the user supplies);
2. new statistics: the same on unlabelled new-camera images through the layers adapted so far
   and the original layer i;
3. `tl_adapt_apply`: the layer's requantization multiplier scaled by g = std_ref / std_new and
   its bias shifted so that the accumulator's mean and std on those images become the reference
   ones. int8 weights and the output scale stay, so layer i + 1 keeps its input scale.

Everything runs in the C core (ccore/src/tl_adapt.c) on a `host.core.CModel`, writing into the
loaded model file's own bias / out_mult / out_shift arrays, so the adapted model is what the
board gets. `py_stats` and `py_apply` mirror the integer arithmetic in Python (for the tests).

`choose` is the rule for deciding whether (and how deep) to adapt when labels exist: the
validation predictions of the unadapted model and of each candidate depth k; a k counts only when
it fixes significantly more validation images than it breaks (exact sign test, p < 0.05), the
most accurate such k wins, else no adaptation: never worse than not adapting on that split.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from host.core import CModel, check, ffi, lib
from host.train import SIGN_TEST_ALPHA, sign_test_p  # noqa: F401  (host.adapt.sign_test_p, as before)

G_FRAC = 28
G_ONE = 1 << G_FRAC
STD_MIN = 256


# ---------------------------------------------------------------------------- the C calls
def weighted(cm: CModel, k: int) -> list[int]:
    """Indices of the conv / dwconv / fc layers among the first k (never the last layer)."""
    n = len(cm.model.layers)
    return [i for i in range(min(k, n - 1)) if cm.model.layers[i].has_weights]


def _layer(cm: CModel, i: int):
    return ffi.addressof(cm._layers, i)


def forward(cm: CModel, i: int, xs: np.ndarray) -> np.ndarray:
    """Layer i's int8 outputs for a batch of its inputs (tl_layer_forward, one image at a time)."""
    L = cm.model.layers[i]
    out = np.zeros((len(xs),) + tuple(L.out_shape), np.int8)
    Lp = _layer(cm, i)
    for j in range(len(xs)):
        x = np.ascontiguousarray(xs[j])
        check(lib.tl_layer_forward(Lp, ffi.cast("int8_t *", x.ctypes.data),
                                   ffi.cast("int8_t *", out[j].ctypes.data)), f"forward of layer {i}")
    return out


def layer_stats(cm: CModel, i: int, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std_q8) of layer i's accumulators over the batch xs of its inputs (C)."""
    Lp = _layer(cm, i)
    nbytes = check(lib.tl_adapt_stats_bytes(Lp), f"statistics of layer {i}")
    scratch = np.zeros(nbytes // 8, np.uint64)
    sp = ffi.cast("void *", scratch.ctypes.data)
    check(lib.tl_adapt_stats_reset(Lp, sp), "reset")
    for j in range(len(xs)):
        x = np.ascontiguousarray(xs[j])
        check(lib.tl_adapt_stats_add(Lp, ffi.cast("int8_t *", x.ctypes.data), sp), f"statistics of layer {i}")
    oc = cm.model.layers[i].out_c
    mean, std = np.zeros(oc, np.int32), np.zeros(oc, np.int32)
    check(lib.tl_adapt_stats_finish(Lp, sp, len(xs), ffi.cast("int32_t *", mean.ctypes.data),
                                    ffi.cast("int32_t *", std.ctypes.data)), f"statistics of layer {i}")
    return mean, std


def quant_arrays(cm: CModel, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writable (bias, out_mult, out_shift) of layer i: views into the loaded model file's bytes."""
    if cm._blob is None:
        raise ValueError(f"model {cm.model.name!r}: adaptation needs the model-file layer table")
    L = cm._layers[i]
    oc = cm.model.layers[i].out_c
    return (cm._view(L.bias, np.int32, (oc,)), cm._view(L.out_mult, np.int32, (oc,)),
            cm._view(L.out_shift, np.int32, (oc,)))


def apply_layer(cm: CModel, i: int, ref: tuple, new: tuple) -> None:
    """tl_adapt_apply on layer i in place, then re-prepare the model."""
    bias, mult, shift = quant_arrays(cm, i)
    arrs = [np.ascontiguousarray(a, np.int32) for a in (*ref, *new)]
    check(lib.tl_adapt_apply(_layer(cm, i), *(ffi.cast("int32_t *", a.ctypes.data) for a in arrs),
                             ffi.cast("int32_t *", bias.ctypes.data), ffi.cast("int32_t *", mult.ctypes.data),
                             ffi.cast("int32_t *", shift.ctypes.data)), f"adapting layer {i}")
    check(lib.tl_model_prepare(cm._m), "re-preparing the adapted model")


# ---------------------------------------------------------------------------- the schedule
def reference_stats(cm: CModel, clean_x: np.ndarray, k: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{layer: (mean, std_q8)} of the first k layers on clean model inputs (original network)."""
    out, xs = {}, np.asarray(clean_x, np.int8)
    last = max(weighted(cm, k), default=-1)
    for i in range(last + 1):
        if cm.model.layers[i].has_weights:
            out[i] = layer_stats(cm, i, xs)
        xs = forward(cm, i, xs)
    return out


@dataclass
class AdaptReport:
    k: int
    layers: list = field(default_factory=list)       # per adapted layer: index, channels, mean |g - 1|
    images: int = 0


def adapt(cm: CModel, ref: dict, new_x: np.ndarray, k: int) -> AdaptReport:
    """Adapts the first k layers of cm in place, layer by layer, on unlabelled model inputs new_x."""
    rep = AdaptReport(k=k, images=len(new_x))
    xs = np.asarray(new_x, np.int8)
    idx = weighted(cm, k)
    last = max(idx, default=-1)
    for i in range(last + 1):
        if i in idx:
            if i not in ref:
                raise ValueError(f"no reference statistics for layer {i}")
            new = layer_stats(cm, i, xs)
            apply_layer(cm, i, ref[i], new)
            g = np.array([lib.tl_adapt_gain_q28(int(a), int(b)) for a, b in zip(ref[i][1], new[1])]) / G_ONE
            rep.layers.append({"layer": i, "channels": int(len(g)), "gain_min": float(g.min()),
                               "gain_max": float(g.max())})
        xs = forward(cm, i, xs)
    return rep


def accuracy(cm: CModel, x: np.ndarray, y: np.ndarray) -> float:
    if len(x) == 0:
        return float("nan")
    preds, _, _ = cm.infer_many(np.asarray(x, np.int8), with_local=False)
    return float(np.mean(preds == np.asarray(y)))


def snapshot(cm: CModel):
    """What adaptation and training write: a copy of the loaded model file's bytes (nothing else
    changes), or, for a model the core holds in a direct layer table, of its trainable tensors."""
    if cm._blob is not None:
        return cm._blob.copy()
    return [[None if a is None else np.array(a, copy=True) for a in (L.weights, L.bias, L.lls_m)]
            for L in cm.model.layers]


def restore(cm: CModel, snap) -> None:
    """Back to a `snapshot`, in place (the core's pointers and the model's views stay valid)."""
    if cm._blob is not None:
        cm._blob[:] = snap
    else:
        for L, saved in zip(cm.model.layers, snap):
            for cur, old in zip((L.weights, L.bias, L.lls_m), saved):
                if old is not None:
                    np.copyto(cur, old)
    check(lib.tl_model_prepare(cm._m), "re-preparing the model")


def predictions(cm: CModel, x: np.ndarray) -> np.ndarray:
    preds, _, _ = cm.infer_many(np.asarray(x, np.int8), with_local=False)
    return preds


def choose(cm: CModel, ref: dict, new_x: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
           candidates, alpha: float = SIGN_TEST_ALPHA) -> tuple[int, dict]:
    """The rule with labels: a candidate depth k qualifies when, on the validation split, it is
    more accurate than no adaptation (k = 0) and the images it fixes outnumber those it breaks
    beyond chance (one-sided exact sign test on the paired predictions, p < alpha); the most
    accurate qualifying k wins (ties: the smaller k), else k = 0. So the choice is never worse than
    not adapting on that validation split, and a gain of a few images (noise) is not taken. cm is
    left adapted with the chosen k. Returns (k, {k: validation accuracy})."""
    val_y = np.asarray(val_y)
    snap = snapshot(cm)
    p0 = predictions(cm, val_x)
    ok0 = p0 == val_y
    scores = {0: float(np.mean(ok0)) if len(val_y) else float("nan")}
    qualifies = {}
    for k in sorted(set(int(c) for c in candidates if int(c) > 0)):
        restore(cm, snap)
        adapt(cm, ref, new_x, k)
        ok = predictions(cm, val_x) == val_y
        scores[k] = float(np.mean(ok)) if len(val_y) else float("nan")
        fixed, broken = int(np.sum(ok & ~ok0)), int(np.sum(~ok & ok0))
        qualifies[k] = scores[k] > scores[0] and sign_test_p(fixed, broken) < alpha
    good = [k for k in qualifies if qualifies[k]]
    best = max(good, key=lambda k: (scores[k], -k)) if good else 0
    restore(cm, snap)
    if best:
        adapt(cm, ref, new_x, best)
    return best, scores


def adapted_copy(model, ref: dict, new_x: np.ndarray, k: int, **cm_opts) -> CModel:
    """A fresh CModel of a deep copy of model, adapted with k layers."""
    cm = CModel(copy.deepcopy(model), **cm_opts)
    if k:
        adapt(cm, ref, new_x, k)
    return cm


# ---------------------------------------------------------------------------- Python mirror
def py_accumulators(layer, x: np.ndarray) -> np.ndarray:
    """(positions, out_c) int64 accumulators (bias included) of one layer on one input, numpy."""
    x = x.astype(np.int64) - int(layer.in_zp)
    w = np.asarray(layer.weights).astype(np.int64)
    b = np.asarray(layer.bias).astype(np.int64)
    if layer.kind == "fc":
        return (w.reshape(layer.out_c, -1) @ x.reshape(-1) + b)[None, :]
    (oh, ow, oc), (kh, kw), (sh, sw), (pt, pl) = layer.out_shape, layer.kernel, layer.stride, layer.pad
    ih, iw, ic = x.shape
    pb = max(0, (oh - 1) * sh + kh - pt - ih)
    pr = max(0, (ow - 1) * sw + kw - pl - iw)
    xp = np.pad(x, ((pt, pb), (pl, pr), (0, 0)))      # zero = the zero point after subtraction
    acc = np.zeros((oh, ow, oc), np.int64)
    for fy in range(kh):
        for fx in range(kw):
            patch = xp[fy: fy + (oh - 1) * sh + 1: sh, fx: fx + (ow - 1) * sw + 1: sw, :]
            if layer.kind == "dwconv":
                acc += patch * w.reshape(kh, kw, oc)[fy, fx]
            else:
                acc += patch @ w.reshape(oc, kh, kw, ic)[:, fy, fx, :].T
    return (acc + b).reshape(-1, oc)


def _rhaz(a: int, b: int) -> int:
    """round(a / b) half away from zero, b > 0, Python ints."""
    return (a + b // 2) // b if a >= 0 else -((-a + b // 2) // b)


def py_stats(layer, xs) -> tuple[np.ndarray, np.ndarray]:
    """tl_adapt_stats_finish's (mean, std_q8) computed with Python integers."""
    accs = np.concatenate([py_accumulators(layer, x) for x in xs])
    count = accs.shape[0]
    mean, std = [], []
    for c in range(accs.shape[1]):
        col = [int(v) for v in accs[:, c]]
        s, sq = sum(col), sum(v * v for v in col)
        mean.append(_rhaz(s, count))
        var_q16 = ((count * sq - s * s) << 16) // (count * count)
        std.append(min(_isqrt(var_q16), 0x7FFFFFFF))
    return np.array(mean, np.int64), np.array(std, np.int64)


def _isqrt(v: int) -> int:
    import math
    return math.isqrt(v)


def py_gain(ref_std: int, new_std: int) -> int:
    if ref_std < STD_MIN or new_std < STD_MIN:
        return G_ONE
    g = (ref_std * G_ONE + new_std // 2) // new_std
    return min(max(g, G_ONE >> 3), (G_ONE << 3) - 1)


def py_apply(layer_kind: str, taps: int, ref_mean, ref_std, new_mean, new_std, bias, mult, shift):
    """tl_adapt_apply written independently in Python integers; returns new (bias, mult, shift)."""
    lim = 0x7FFFFFFF - taps * 255 * 128
    b_out, m_out, s_out = [], [], []
    for c in range(len(bias)):
        m, s, b = int(mult[c]), int(shift[c]), int(bias[c])
        if m == 0:
            b_out.append(b), m_out.append(m), s_out.append(s)
            continue
        g = py_gain(int(ref_std[c]), int(new_std[c]))
        nm, ns = m, s
        if g != G_ONE:
            p = m * g
            t = p.bit_length() - 31
            mm = (p + (1 << (t - 1))) >> t
            if mm == 1 << 31:
                mm, t = mm >> 1, t + 1
            if -31 <= s + t - G_FRAC <= 30:
                nm, ns = mm, s + t - G_FRAC
            else:
                g = G_ONE
        b_out.append(min(max(b + _rhaz(int(ref_mean[c]) * G_ONE, g) - int(new_mean[c]), -lim), lim))
        m_out.append(nm), s_out.append(ns)
    return np.array(b_out, np.int64), np.array(m_out, np.int64), np.array(s_out, np.int64)


def taps(layer) -> int:
    kh, kw = layer.kernel
    if layer.kind == "conv":
        return kh * kw * layer.in_shape[2]
    if layer.kind == "dwconv":
        return kh * kw
    return int(np.prod(layer.in_shape))


# ---------------------------------------------------------------------------- model-file statistics
DEFAULT_STATS_LAYERS = 7       # layers whose statistics import stores (float notes: first 7 ~ all)
DEFAULT_STATS_IMAGES = 256
DEFAULT_ADAPT_IMAGES = 64
K_CANDIDATES = (1, 2, 3, 5, 7, 13, 27)


def add_reference(model, clean_x: np.ndarray, k: int = DEFAULT_STATS_LAYERS) -> list[int]:
    """Computes the reference statistics of the first k layers on clean model inputs (through the
    original network, on the C core) and stores them on the model's layers (`adapt_ref`, written
    to the model file as format version 2). Returns the layers that received statistics."""
    frozen = copy.deepcopy(model)
    for L in frozen.layers:
        L.trainable = False
        L.adapt_ref = None
    ref = reference_stats(CModel(frozen), clean_x, k)
    for L in model.layers:
        L.adapt_ref = None
    for i, st in ref.items():
        model.layers[i].adapt_ref = (st[0].astype(np.int32), st[1].astype(np.int32))
    return sorted(ref)


def model_reference(model) -> dict:
    """{layer: (mean, std_q8)} carried by the model (file version 2); {} when none."""
    return {i: L.adapt_ref for i, L in enumerate(model.layers) if getattr(L, "adapt_ref", None) is not None}


def max_k(ref: dict) -> int:
    """The deepest adaptation the statistics allow: the first k layers, k = last layer with statistics + 1."""
    return max(ref) + 1 if ref else 0


def keep_in_model(cm: CModel) -> None:
    """Records the adapted multipliers on the Model (Layer.adapt_quant), so that writing the model
    (host.modelfile.to_bytes, --save-model) keeps exactly the adapted integers; biases are
    already views of the loaded file."""
    for i, L in enumerate(cm.model.layers):
        if L.has_weights and cm._blob is not None:
            _, mult, shift = quant_arrays(cm, i)
            L.adapt_quant = (mult.copy(), shift.copy())


# ---------------------------------------------------------------------------- the field step
def parse_k(text: str) -> str | int:
    if text == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError:
        raise ValueError(f"--adapt-layers {text!r}: 'auto' or a layer count >= 1") from None
    if k < 1:
        raise ValueError(f"--adapt-layers {k}: 'auto' or a layer count >= 1")
    return k


def field_step(cm: CModel, mode: str, k_opt, n_images: int, train_x: np.ndarray, val_x: np.ndarray,
               val_y: np.ndarray, seed: int, log=lambda *a: None) -> dict:
    """The adaptation step in front of training (host.simulate, host.stream): mode 'off', 'on'
    (adapt; k = k_opt, or the best k > 0 on validation for 'auto') or 'auto' (adapt only when the
    model carries reference statistics and the validation split says it helps: `choose`, k = 0
    allowed). Unlabelled images: the first n_images of a seeded permutation of the training inputs
    (labels never read). Returns the summary record."""
    ref = model_reference(cm.model)
    out = {"mode": mode, "applied": False, "k": 0, "images": 0, "reference_layers": sorted(ref)}
    if mode == "off":
        return out
    if not ref:
        if mode == "on":
            raise ValueError("--adapt on: the model file has no adaptation statistics (add them with "
                             "`python -m host.quantize add-stats M.tlm --stats-data D`)")
        out["reason"] = "the model file has no adaptation statistics"
        return out
    kmax = max_k(ref)
    if isinstance(k_opt, int) and k_opt > kmax:
        raise ValueError(f"--adapt-layers {k_opt}: the model file has statistics for the first {kmax} layers only")
    n = min(int(n_images), len(train_x))
    idx = np.random.default_rng(seed).permutation(len(train_x))[:n]
    new_x = np.asarray(train_x[idx], np.int8)
    cm.adapt_images_x = new_x                  # host.stream feeds the board these same images
    out["images"] = n
    have_val = len(val_y) > 0
    if isinstance(k_opt, int):
        cands = [k_opt]
    else:
        cands = sorted({k for k in K_CANDIDATES if k <= kmax} | {kmax})
    if mode == "auto" and not have_val:
        out["reason"] = "no labelled validation split to decide on: not adapted"
        return out
    if not have_val:
        cands = [max(cands)]                   # on, nothing to choose with: the deepest the file allows
    if mode == "on" and len(cands) == 1:
        before = accuracy(cm, val_x, val_y) if have_val else None
        adapt(cm, ref, new_x, cands[0])
        k, scores = cands[0], ({0: before, cands[0]: accuracy(cm, val_x, val_y)} if have_val else {})
    else:
        k, scores = choose(cm, ref, new_x, val_x, val_y, cands)
        if mode == "on" and k == 0:         # forced: the best k > 0
            k = max((c for c in scores if c), key=lambda c: (scores[c], -c))
            adapt(cm, ref, new_x, k)
    out.update(applied=k > 0, k=int(k), val_accuracy={str(a): b for a, b in scores.items()})
    if k:
        keep_in_model(cm)
    if scores:
        log(f"adaptation ({mode}): validation accuracy " +
            ", ".join(f"k={a}: {b:.3f}" for a, b in sorted(scores.items())) +
            (f"; adapting the first {k} layers on {n} unlabelled images" if k else "; not adapting"))
    else:
        log(f"adaptation ({mode}): the first {k} layers on {n} unlabelled images (no validation split)")
    return out


# ---------------------------------------------------------------------------- the board's schedule
def board_layers(cm: CModel, k: int) -> list[int]:
    """The layers a board adapts for depth k: those among the first k carrying statistics."""
    return [i for i in weighted(cm, k) if cm._layers[i].adapt_ref != ffi.NULL]


def board_adapt(cm: CModel, new_x: np.ndarray, k: int, feed=None) -> list[dict]:
    """The board's schedule on the simulated core: per layer BEGIN, one FEED per image (layers
    0 .. i-1 run in the model's arena, tl_adapt_feed), APPLY (tl_adapt_finish_apply), with the
    statistics of the model file. `feed(i, x)` replaces the C feed call (host.stream drives a board
    with it); returns per layer {layer, images, crc} with crc = crc32 of its bias, out_mult and
    out_shift after the update (what the board's APPLY answers)."""
    import zlib

    out = []
    for i in board_layers(cm, k):
        check(lib.tl_adapt_begin(cm._m, cm._arena, i, 0), f"adaptation of layer {i}: begin")
        for x in np.asarray(new_x, np.int8):
            if feed is not None:
                feed(i, x)
                continue
            x = np.ascontiguousarray(x)
            check(lib.tl_adapt_feed(cm._m, cm._arena, i, 0, ffi.cast("int8_t *", x.ctypes.data)),
                  f"adaptation of layer {i}: feed")
        check(lib.tl_adapt_finish_apply(cm._m, cm._arena, i, 0, len(new_x)), f"adaptation of layer {i}: apply")
        out.append({"layer": i, "images": len(new_x), "crc": layer_crc(cm, i)})
    return out


def layer_crc(cm: CModel, i: int) -> int:
    """crc32 of layer i's bias, out_mult, out_shift (int32 little-endian, in that order)."""
    import zlib

    bias, mult, shift = quant_arrays(cm, i)
    return zlib.crc32(b"".join(np.ascontiguousarray(a, "<i4").tobytes() for a in (bias, mult, shift)))
