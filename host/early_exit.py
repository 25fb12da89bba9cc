"""Early exit from the LLS local heads: the host side of tl_model_infer_exit (ccore/src/tl_early_exit.c).

Every hidden layer of a tinylls model has a local classifier, its LLS head. Early-exit inference
stops after the first eligible layer (first_layer <= i < last, not average pooling) whose head's
largest local softmax probability (Q16) reaches the threshold, and answers that head's class.

One C pass per image with the threshold TL_EXIT_NEVER_Q16 gives every head's confidence and class
and the classifier's answer (`collect`); any (first layer, threshold) is then replayed from those
integers exactly as the C loop decides (`replay`; tests/test_early_exit.py checks it against
tl_model_infer_exit). Cost per image (`costs`), in multiply-accumulates:
  layers  Layer.macs() of every layer run (through the exit layer);
  heads   each head evaluated on the way: its pooling (one add per output value), the sum of
          squares of the pooled vector (T = out_c p^2 multiplies) and the projection on the basis
          (classes x T; additions only for the square basis, counted as MACs anyway). Division,
          square root and softmax (a few dozen operations per head) are not counted.
Both are reported, and the total includes the heads, so "MACs saved" is not overstated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Q16 = 65536


def threshold_q16(p: float) -> int:
    """A probability threshold in [0, 1] as the C core's Q16 integer (round half up)."""
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"early-exit threshold {p!r}: must be a probability in [0, 1]")
    return int(np.floor(float(p) * Q16 + 0.5))


def eligible_layers(model) -> list[int]:
    """Hidden layers that have a head (every one but the last and average pooling)."""
    return [i for i, L in enumerate(model.layers[:-1]) if L.kind != "avgpool"]


def layer_costs(cm) -> tuple[np.ndarray, np.ndarray]:
    """(forward MACs per layer, head MACs per layer: 0 where there is no head) of a host.core.CModel."""
    model = cm.model
    fwd = np.array([L.macs() for L in model.layers], np.int64)
    head = np.zeros(len(model.layers), np.int64)
    for i in eligible_layers(model):
        L = model.layers[i]
        p = cm.head_pool(i)
        t = L.out_c * p * p
        head[i] = int(np.prod(L.out_shape)) + t + model.classes * t
    return fwd, head


@dataclass
class Heads:
    """What one full pass with every head gives, per image: conf (n, layers) Q16 (-1: no head or
    dead), local (n, layers) head classes (-1 likewise), final (n,) classifier class."""
    conf: np.ndarray
    local: np.ndarray
    final: np.ndarray


def collect(cm, x: np.ndarray, progress: bool = False) -> Heads:
    """Every head's confidence and class and the classifier's class for int8 inputs x (n, H, W, C)."""
    n, layers = len(x), len(cm.model.layers)
    conf = np.full((n, layers), -1, np.int64)
    local = np.full((n, layers), -1, np.int64)
    final = np.zeros(n, np.int64)
    it = range(n)
    if progress:
        import sys

        from tqdm import tqdm
        it = tqdm(it, desc="heads", unit="img", file=sys.stderr)
    for j in it:
        res, exit_layer, c = cm.infer_exit(x[j], 0, None)
        assert exit_layer == layers - 1
        conf[j] = c
        local[j] = res.local_pred
        local[j, layers - 1] = -1
        final[j] = res.pred
    return Heads(conf, local, final)


def replay(h: Heads, first_layer: int, thr_q16: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, exit layers) of tl_model_infer_exit(first_layer, thr_q16) from `collect`'s
    integers (None: never exit)."""
    n, layers = h.conf.shape
    pred = h.final.copy()
    exit_layer = np.full(n, layers - 1, np.int64)
    if thr_q16 is None:
        return pred, exit_layer
    ok = (h.conf >= thr_q16) & (h.local >= 0)
    ok[:, :first_layer] = False
    ok[:, layers - 1] = False
    hit = ok.any(axis=1)
    first_hit = ok.argmax(axis=1)
    exit_layer[hit] = first_hit[hit]
    pred[hit] = h.local[hit, first_hit[hit]]
    return pred, exit_layer


def costs(exit_layer: np.ndarray, first_layer: int, fwd: np.ndarray, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(forward MACs, head MACs) per image for these exit layers: layers 0..exit run, heads of
    eligible layers first_layer..min(exit, last - 1) evaluated."""
    layers = len(fwd)
    cum_fwd = np.cumsum(fwd)
    h = head.copy()
    h[:first_layer] = 0
    h[layers - 1] = 0
    cum_head = np.cumsum(h)
    e = np.asarray(exit_layer, np.int64)
    return cum_fwd[e], cum_head[np.minimum(e, layers - 1)]


def point(h: Heads, labels: np.ndarray, first_layer: int, thr_q16: int | None, fwd, head) -> dict:
    """Accuracy and cost of one (first layer, threshold) on collected heads."""
    pred, ex = replay(h, first_layer, thr_q16)
    f, hd = costs(ex, first_layer, fwd, head)
    if thr_q16 is None:        # plain inference (tl_model_infer): no head is evaluated
        hd = np.zeros_like(hd)
    layers = h.conf.shape[1]
    full = int(fwd.sum())
    n = max(len(labels), 1)
    mean_total = float((f + hd).mean()) if len(labels) else 0.0
    return {"threshold": None if thr_q16 is None else round(thr_q16 / Q16, 4), "threshold_q16": thr_q16,
            "first_layer": int(first_layer),
            "accuracy": float((pred == labels).sum() / n),
            "mean_macs": round(mean_total, 1), "mean_layer_macs": round(float(f.mean()), 1) if len(f) else 0.0,
            "mean_head_macs": round(float(hd.mean()), 1) if len(hd) else 0.0,
            "macs_fraction": round(mean_total / max(full, 1), 4),
            "exited": float((ex < layers - 1).sum() / n),
            "exit_layers": {int(k): int(v) for k, v in zip(*np.unique(ex, return_counts=True))}}


def choose(h: Heads, labels: np.ndarray, fwd, head, *, max_drop: float = 0.01,
           thresholds=None, first_layers=None) -> dict:
    """The (first layer, threshold) with the fewest mean MACs (heads included) whose accuracy on
    these images (a validation split, never the test images) is at least the full network's minus
    max_drop; the full network itself (threshold None) when nothing beats it. Ties: more accurate,
    then the higher threshold."""
    layers = h.conf.shape[1]
    if thresholds is None:     # a fixed grid and the percentiles of the confidences seen
        grid = [threshold_q16(p) for p in np.round(np.arange(0.50, 1.0, 0.01), 2)] + \
               [threshold_q16(p) for p in (0.995, 0.999, 0.9995, 0.9999, 1.0)]
        seen = h.conf[h.conf >= 0]
        pct = np.unique(np.percentile(seen, np.arange(0, 101), method="lower").astype(np.int64)) if seen.size else []
        thresholds = sorted(set(grid) | {int(t) for t in pct})
    if first_layers is None:
        first_layers = sorted({i for i in range(layers - 1) if (h.local[:, i] >= 0).any()})
    base = point(h, labels, 0, None, fwd, head)
    best = base
    for f in first_layers:
        for t in thresholds:
            pt = point(h, labels, f, t, fwd, head)
            if pt["accuracy"] < base["accuracy"] - max_drop - 1e-12:
                continue
            key = (pt["mean_macs"], -pt["accuracy"], -t)
            bkey = (best["mean_macs"], -best["accuracy"], -(best["threshold_q16"] or Q16 + 1))
            if key < bkey:
                best = pt
    return best


# ---------------------------------------------------------------- the study (bench/early_exit.py, host.evaluate)
DEFAULT_CURVE = (0.5, 0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 0.995, 0.999, 1.0)   # the heads are sure: the action is above 0.95
DEFAULT_EXIT_VAL = 0.25


def parse_thresholds(text: str) -> list[int]:
    """'0.9,0.99' -> Q16 thresholds; one line naming the bad value otherwise."""
    out = []
    for part in str(text).split(","):
        try:
            out.append(threshold_q16(float(part)))
        except ValueError:
            raise ValueError(f"--thresholds {text!r}: {part!r} is not a probability in [0, 1]") from None
    return out


def splits(data: str, val_split=None, exit_val=None, shift: bool = False, limit: int | None = None):
    """(validation, test) as (images, labels): test is the held-out part host.simulate evaluates on
    (--val-split, default 25%: 200 of the 800 EEMBC images); validation is `exit_val` (default 25%)
    of the training part, carved with host.datasets.vww_split's permutation (seed 1), never a test
    image. shift: host.simulate's 'new camera' on both."""
    from host import datasets
    from host.simulate import UsageError, camera_shift, load_data
    try:
        train, test = load_data(data, None, val_split)
    except UsageError as e:
        raise ValueError(str(e)) from None
    frac = DEFAULT_EXIT_VAL if exit_val is None else datasets.parse_val_split(str(exit_val))
    n_rest, _ = datasets.split_counts(len(train), frac, f"--exit-val of the {len(train)} training images")
    _, val = datasets.vww_split(train, seed=1, n_train=n_rest)
    parts = []
    for ds in (val, test):
        images, labels = ds.images, np.asarray(ds.labels)
        if shift:
            images = camera_shift(images)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        parts.append((images, labels))
    return parts[0], parts[1]


def study(model, val, test, *, first_layer=None, curve=None, max_drop: float = 0.01, progress: bool = False) -> dict:
    """The accuracy vs mean MACs curve on `test` for the `curve` thresholds (Q16) at one first
    layer, and the (first layer, threshold) picked on `val` (choose) with its test figures.
    first_layer None: picked on validation with the threshold; curve None: DEFAULT_CURVE."""
    from host.core import CModel
    from host.evaluate import inference_view, model_input
    cm = CModel(inference_view(model))
    fwd, head = layer_costs(cm)
    hv = collect(cm, model_input(model, val[0]), progress)
    ht = collect(cm, model_input(model, test[0]), progress)
    firsts = None if first_layer is None else [int(first_layer)]
    picked = choose(hv, val[1], fwd, head, max_drop=max_drop, first_layers=firsts)
    f = picked["first_layer"] if first_layer is None else int(first_layer)
    thr = [threshold_q16(p) for p in DEFAULT_CURVE] if curve is None else list(curve)
    per_layer = []
    for i in eligible_layers(model):
        ok = ht.local[:, i] >= 0
        per_layer.append({"layer": i, "name": model.layers[i].name, "macs_through": int(fwd[: i + 1].sum()),
                          "head_macs": int(head[i]),
                          "test_head_accuracy": round(float((ht.local[ok, i] == test[1][ok]).mean()), 4) if ok.any() else None,
                          "test_mean_conf": round(float(ht.conf[ok, i].mean() / Q16), 4) if ok.any() else None})
    return {
        "model": model.name, "layers": len(model.layers), "full_macs": int(fwd.sum()),
        "head_macs_all_layers": int(head.sum()), "n_val": len(val[1]), "n_test": len(test[1]),
        "max_drop": max_drop,
        "full": {"val": point(hv, val[1], 0, None, fwd, head), "test": point(ht, test[1], 0, None, fwd, head)},
        "curve_first_layer": f,
        "curve_test": [point(ht, test[1], f, t, fwd, head) for t in thr],
        "curve_val": [point(hv, val[1], f, t, fwd, head) for t in thr],
        "picked_on_val": picked,
        "picked_test": point(ht, test[1], picked["first_layer"], picked["threshold_q16"], fwd, head),
        "per_layer": per_layer,
    }
