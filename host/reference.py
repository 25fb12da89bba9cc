"""A float64 numpy reference of the network and of the LLS rule, written independently of ccore.

It follows ../shared/notes/lls.md literally (pool -> L2 normalise -> project on the basis /tau
-> softmax cross-entropy -> exact gradient of that local loss w.r.t. this layer's weights only;
the last layer trained with softmax cross-entropy) with plain SGD at batch 1. Tests use it as the
oracle for the integer rule (update directions, learning parity); `host.nets` uses its forward
pass to calibrate activation ranges of freshly initialised models.
"""
from __future__ import annotations

import numpy as np

from host.model import Model

TAU = 0.5
F_LO, F_HI = 50.0, 512.0          # basis frequencies in rad per element (authors' code)


# ---------------------------------------------------------------------------- basis
def basis(kind: str, classes: int, T: int, seed: int = 0) -> np.ndarray:
    """(classes, T) basis vectors. square = sign(sin(f_c t)), sine = sin(f_c t), random = +-1."""
    t = np.arange(T, dtype=np.float64)
    f = np.linspace(F_LO, F_HI, classes) if classes > 1 else np.array([F_LO])
    s = np.sin(f[:, None] * t[None, :])
    if kind == "square":
        return np.sign(s)
    if kind == "sine":
        return s
    if kind == "random":
        return random_signs(seed, classes, T)
    raise ValueError(f"unknown basis {kind!r}")


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def random_signs(seed: int, classes: int, T: int) -> np.ndarray:
    """The random basis as specified for every tinylls target: bit 0 of the counter-based hash
    fmix32(fmix32(fmix32(fmix32(seed ^ 0x9E3779B9) ^ 0x6261) ^ c * 0x9E3779B9) ^ t), murmur3's
    finaliser chained over (seed, stream, class, element); 1 -> +1, 0 -> -1."""
    c = np.arange(classes, dtype=np.uint64)[:, None]
    t = np.arange(T, dtype=np.uint64)[None, :]
    h = _fmix32(np.uint64(seed ^ 0x9E3779B9) & np.uint64(0xFFFFFFFF))
    h = _fmix32(h ^ np.uint64(0x6261))
    h = _fmix32(h ^ ((c * np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF)))
    h = _fmix32(h ^ t)
    return np.where(h & np.uint64(1), 1.0, -1.0)


def pool_grid(h: int, w: int, c: int, max_t: int = 2304) -> int:
    """Largest p in (8, 4, 2) dividing h and w with c*p*p <= max_t, else the whole map when
    square and <= 8 (and c*h*w <= max_t), else 1."""
    for p in (8, 4, 2):
        if h % p == 0 and w % p == 0 and c * p * p <= max_t:
            return p
    if h == w and h <= 8 and c * h * w <= max_t:
        return h
    return 1


# ---------------------------------------------------------------------------- layers
def _pad(x, layer):
    (h, w, _), (oh, ow, _) = layer.in_shape, layer.out_shape
    kh, kw = layer.kernel
    sh, sw = layer.stride
    pt, pl = layer.pad
    pb = max((oh - 1) * sh + kh - h - pt, 0)
    pr = max((ow - 1) * sw + kw - w - pl, 0)
    return np.pad(x, ((pt, pb), (pl, pr), (0, 0)))


def _windows(xp, layer):
    """(oh, ow, kh, kw, c) view of the padded input under every output position."""
    oh, ow, _ = layer.out_shape
    kh, kw = layer.kernel
    sh, sw = layer.stride
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(0, 1))  # (H', W', c, kh, kw)
    win = win[: (oh - 1) * sh + 1: sh, : (ow - 1) * sw + 1: sw]
    return np.moveaxis(win, 2, 4)                                               # (oh, ow, kh, kw, c)


class FloatNet:
    """Float copies of a Model's weights (dequantized), trained with float SGD."""

    def __init__(self, model: Model, lrs: list[float] | None = None):
        self.model = model
        self.W, self.b = [], []
        for L in model.layers:
            if L.has_weights:
                s = np.asarray(L.w_scale, np.float64)
                wq = L.weights.astype(np.float64)
                if L.kind == "dwconv":
                    W = wq * s[None, None, :]
                else:
                    W = wq * s.reshape((-1,) + (1,) * (wq.ndim - 1))
                self.W.append(W)
                self.b.append(L.bias.astype(np.float64) * L.in_scale * s)
            else:
                self.W.append(None)
                self.b.append(None)
        self.lrs = lrs if lrs is not None else [L.lr for L in model.layers]

    def pre_activation(self, i: int, x: np.ndarray) -> np.ndarray:
        L, W, b = self.model.layers[i], self.W[i], self.b[i]
        if L.kind == "fc":
            return (W @ x.reshape(-1) + b).reshape(1, 1, -1)
        if L.kind == "avgpool":
            oh, ow, c = L.out_shape
            out = np.empty((oh, ow, c))
            (h, w, _), (kh, kw), (sh, sw), (pt, pl) = L.in_shape, L.kernel, L.stride, L.pad
            for y in range(oh):
                for xx in range(ow):
                    y0, x0 = y * sh - pt, xx * sw - pl
                    out[y, xx] = x[max(y0, 0):min(y0 + kh, h), max(x0, 0):min(x0 + kw, w)].mean(axis=(0, 1))
            return out
        win = _windows(_pad(x, L), L)
        if L.kind == "conv":
            return np.einsum("yxijc,oijc->yxo", win, W, optimize=True) + b
        return np.einsum("yxijc,ijc->yxc", win, W, optimize=True) + b     # dwconv

    def activate(self, i: int, z: np.ndarray) -> np.ndarray:
        act = self.model.layers[i].act
        if act == "relu":
            return np.maximum(z, 0)
        if act == "relu6":
            return np.clip(z, 0, 6)
        if act == "leaky":
            return np.where(z > 0, z, self.model.layers[i].leaky_alpha * z)
        return z

    def act_grad(self, i: int, z: np.ndarray) -> np.ndarray:
        act = self.model.layers[i].act
        if act == "relu":
            return (z > 0).astype(np.float64)
        if act == "relu6":
            return ((z > 0) & (z < 6)).astype(np.float64)
        if act == "leaky":
            return np.where(z > 0, 1.0, self.model.layers[i].leaky_alpha)
        return np.ones_like(z)

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Outputs of every layer for one (H, W, C) float input."""
        outs = []
        for i in range(len(self.model.layers)):
            x = self.activate(i, self.pre_activation(i, x))
            outs.append(x)
        return outs

    # ------------------------------------------------------------------------ gradients
    def weight_grad(self, i: int, x: np.ndarray, delta: np.ndarray):
        """dL/dW, dL/db of layer i given dL/dz (delta, the layer's output shape)."""
        L = self.model.layers[i]
        if L.kind == "fc":
            return np.outer(delta.reshape(-1), x.reshape(-1)), delta.reshape(-1)
        win = _windows(_pad(x, L), L)
        if L.kind == "conv":
            return np.einsum("yxo,yxijc->oijc", delta, win, optimize=True), delta.sum(axis=(0, 1))
        return np.einsum("yxc,yxijc->ijc", delta, win, optimize=True), delta.sum(axis=(0, 1))

    def lls_head(self, i: int, h: np.ndarray, label: int | None, basis_kind: str, basis_seed: int = 0):
        """Local prediction, loss and dL/dh of hidden layer i's LLS head (h: layer output)."""
        oh, ow, c = h.shape
        p = pool_grid(oh, ow, c)
        pooled = h.reshape(p, oh // p, p, ow // p, c).mean(axis=(1, 3))       # (p, p, c)
        v = np.transpose(pooled, (2, 0, 1)).reshape(-1)                          # channel-major
        norm = np.linalg.norm(v)
        C = self.model.classes
        if norm == 0:
            return -1, float(np.log(C)), np.zeros_like(h)
        B = basis(basis_kind, C, v.size, basis_seed)
        vh = v / norm
        logits = B @ vh / TAU
        e = np.exp(logits - logits.max())
        prob = e / e.sum()
        pred = int(np.argmax(logits))
        if label is None:
            return pred, float("nan"), None
        loss = float(-np.log(max(prob[label], 1e-300)))
        err = prob.copy()
        err[label] -= 1.0
        g = B.T @ err / TAU
        g_v = (g - (g @ vh) * vh) / norm                                         # through the norm
        g_pool = np.transpose(g_v.reshape(c, p, p), (1, 2, 0)) / ((oh // p) * (ow // p))
        g_h = np.repeat(np.repeat(g_pool, oh // p, axis=0), ow // p, axis=1)     # through the pool
        return pred, loss, g_h

    def train_step(self, x: np.ndarray, label: int, basis_kind: str = "square", basis_seed: int = 0,
                   apply: bool = True):
        """One LLS step; returns (classifier pred, local preds, per-layer (dW, db) of -lr*grad)."""
        updates, preds = [], []
        n = len(self.model.layers)
        for i in range(n):
            L = self.model.layers[i]
            z = self.pre_activation(i, x)
            h = self.activate(i, z)
            upd = None
            if i == n - 1:
                logits = h.reshape(-1)
                e = np.exp(logits - logits.max())
                prob = e / e.sum()
                preds.append(int(np.argmax(logits)))
                err = prob.copy()
                err[label] -= 1.0
                if L.trainable:
                    gW, gb = self.weight_grad(i, x, err.reshape(h.shape))
                    upd = (-self.lrs[i] * gW, -self.lrs[i] * gb)
            elif L.has_weights:
                pred, _, g_h = self.lls_head(i, h, label, basis_kind, basis_seed)
                preds.append(pred)
                if L.trainable:
                    gW, gb = self.weight_grad(i, x, g_h * self.act_grad(i, z))
                    upd = (-self.lrs[i] * gW, -self.lrs[i] * gb)
            else:
                preds.append(-1)
            if upd is not None and apply:
                self.W[i] = self.W[i] + upd[0]
                self.b[i] = self.b[i] + upd[1]
            updates.append(upd)
            x = h
        return preds[-1], preds, updates

    def predict(self, x: np.ndarray) -> int:
        return int(np.argmax(self.forward(x)[-1].reshape(-1)))
