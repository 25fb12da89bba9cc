"""The Python-side description of a tinylls model: a list of quantized layers.

This is the one shape every host tool shares: `host.simulate` builds one from scratch,
`host.quantize` imports one from TFLite/Keras and writes it to a model file, `host.core`
hands it to the C core (the numpy arrays are passed by pointer, not copied, so training in C
changes `Layer.weights` / `Layer.bias` in place).

Floating point lives only here on the host side: scales are floats, and every real number the
C core needs is turned into a quantized multiplier (int32 mult, shift) by `quantize_multiplier`,
a port of TFLite's QuantizeMultiplier.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

KINDS = ("conv", "dwconv", "fc", "avgpool")
ACTS = ("none", "relu", "relu6", "leaky")


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = mult * 2^(shift - 31), mult in [2^30, 2^31).

    0 maps to (0, 0); values too small for shift >= -31 flush to (0, 0). Raises on values
    too large for shift <= 30 (2^30 and above)."""
    if real < 0 or not math.isfinite(real):
        raise ValueError(f"quantize_multiplier: needs a finite value >= 0, got {real!r}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)             # real = q * 2^shift, q in [0.5, 1)
    q_fixed = round(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"quantize_multiplier: {real!r} is too large to represent (shift {shift} > 30)")
    return int(q_fixed), int(shift)


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(reals)]
    return (np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32))


def quantized_multiplier_value(mult: int, shift: int) -> float:
    return float(mult) * 2.0 ** (shift - 31)


@dataclass
class Layer:
    """One layer. Shapes are NHWC with batch 1. real = scale * (q - zero_point).

    weights: conv (out_c, k_h, k_w, in_c); dwconv (k_h, k_w, out_c); fc (out_c, in_c);
    avgpool: None. bias: int32 (out_c) with scale in_scale * w_scale[c]."""
    kind: str
    in_shape: tuple[int, int, int]            # (h, w, c)
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)             # (top, left); bottom/right follow from the shapes
    act: str = "none"
    in_scale: float = 1.0
    in_zp: int = 0
    out_scale: float = 1.0
    out_zp: int = 0
    w_scale: np.ndarray | None = None        # (out_c) float, symmetric per channel
    weights: np.ndarray | None = None        # int8
    bias: np.ndarray | None = None           # int32 (out_c)
    leaky_alpha: float = 0.01
    trainable: bool = True
    lr: float = 0.0                           # learning rate in real (float SGD) units
    name: str = ""
    lls_m: np.ndarray | None = None          # LLS-M (classes,) / LLS-MxM (classes, classes), int32 Q16
    lls_m_lr: float = 0.0
    # camera adaptation (host.adapt, model file version 2): the reference (accumulator mean, std in
    # Q8) per output channel, int32 arrays, on the clean training distribution; None: not adapted
    adapt_ref: tuple | None = None
    # after host.adapt: the adapted requantization (out_mult, out_shift) int32 arrays, which the model
    # file then stores instead of those derived from the scales; None: derived from the scales
    adapt_quant: tuple | None = None
    # Requantize with single rounding (round(acc * mult * 2^(shift-31)), ties up) instead of
    # TFLite's reference double rounding. LiteRT's FULLY_CONNECTED rounds this way (it goes
    # through ruy's gemm even with the BUILTIN_REF resolver), so models imported for LiteRT set
    # it on their fc layers; TFLite Micro and every conv/dwconv use double rounding.
    single_rounding: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"layer {self.name!r}: unknown kind {self.kind!r} (known: {', '.join(KINDS)})")
        if self.act not in ACTS:
            raise ValueError(f"layer {self.name!r}: unknown activation {self.act!r} (known: {', '.join(ACTS)})")
        self.in_shape = tuple(int(v) for v in self.in_shape)
        self.out_shape = tuple(int(v) for v in self.out_shape)

    @property
    def has_weights(self) -> bool:
        return self.kind != "avgpool"

    @property
    def out_c(self) -> int:
        return self.out_shape[2]

    def macs(self) -> int:
        """Multiply-accumulates of this layer's forward pass, from its shapes (average pooling and
        the activations count 0): the one count bench/mcu.py and host.early_exit use."""
        oh, ow, oc = self.out_shape
        kh, kw = self.kernel
        if self.kind == "conv":
            return oh * ow * oc * kh * kw * self.in_shape[2]
        if self.kind == "dwconv":
            return oh * ow * oc * kh * kw
        if self.kind == "fc":
            return oc * int(np.prod(self.in_shape))
        return 0

    def act_range(self) -> tuple[int, int]:
        """The fused activation as a clamp in the output's quantized domain (TFLite rules)."""
        lo, hi = -128, 127
        if self.act in ("relu", "relu6"):
            lo = max(lo, self.out_zp)
        if self.act == "relu6":
            hi = min(hi, self.out_zp + int(round(6.0 / self.out_scale)))
        return lo, hi

    def update_reals(self, is_last: bool) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel real factors the C core applies to its integer learning signal (lr
        excluded) to get weight / bias updates in LSB units; see ccore/src/tl_lls_update.c.

        Hidden layers (LLS): dL/dh_real = d * 2^-k / s_out, so dW_q = d * x_q * s_in/(s_out s_w)
        and db_q = d / (s_out s_in s_w). Last layer (cross-entropy on logits): the error is already
        dL/dlogit, so dW_q = e * x_q * s_in / s_w and db_q = e / (s_in s_w)."""
        s_w = np.asarray(self.w_scale, np.float64)
        s_out = 1.0 if is_last else self.out_scale
        return self.in_scale / (s_out * s_w), 1.0 / (s_out * self.in_scale * s_w)

    def requant_real(self) -> np.ndarray:
        """Per-channel real multiplier s_in * s_w[c] / s_out (avgpool: 1)."""
        if not self.has_weights:
            return np.ones(self.out_c)
        return self.in_scale * np.asarray(self.w_scale, np.float64) / self.out_scale


@dataclass
class Model:
    layers: list[Layer]
    classes: int
    input_scale: float = 1.0 / 255.0
    input_zp: int = -128                      # q = pixel - 128 for the usual 1/255 camera input
    name: str = "model"
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.layers[0].in_shape

    def quantize_input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels (H, W, C) -> the int8 tensor layer 0 expects."""
        real = pixels.astype(np.float64) / 255.0
        q = np.round(real / self.input_scale) + self.input_zp
        return np.clip(q, -128, 127).astype(np.int8)


def weights_sha256(model: Model) -> str:
    """sha256 over every trainable tensor in layer order: weights (int8) then bias (int32
    little-endian) of each layer that has them, then LLS modulation if present. The same bytes
    a board returns for READ_WEIGHTS, so host and firmware hashes compare directly."""
    import hashlib

    h = hashlib.sha256()
    for layer in model.layers:
        if layer.weights is not None:
            h.update(np.ascontiguousarray(layer.weights, np.int8).tobytes())
        if layer.bias is not None:
            h.update(np.ascontiguousarray(layer.bias, "<i4").tobytes())
        lls_m = getattr(layer, "lls_m", None)
        if lls_m is not None:
            h.update(np.ascontiguousarray(lls_m, "<i4").tobytes())
    return h.hexdigest()


def load_weight_stream(model: Model, data: bytes) -> None:
    """Set `model`'s trainable tensors from the bytes `weights_sha256` hashes (a board's
    READ_WEIGHTS stream): per layer weights (int8), bias (int32 LE), LLS modulation (int32 LE),
    shapes as the model has them. ValueError when the length does not fit the model."""
    off = 0
    parts = []
    for layer in model.layers:
        for name, dt in (("weights", np.int8), ("bias", "<i4"), ("lls_m", "<i4")):
            cur = getattr(layer, name, None)
            if cur is None:
                continue
            n = int(np.asarray(cur).size) * np.dtype(dt).itemsize
            if off + n > len(data):
                raise ValueError(f"weight stream of {len(data)} bytes is too short for the model "
                                 f"(layer {layer.name if hasattr(layer, 'name') else '?'} {name})")
            arr = np.frombuffer(data, dt, count=int(np.asarray(cur).size), offset=off).reshape(np.shape(cur))
            parts.append((layer, name, arr.astype(np.asarray(cur).dtype)))
            off += n
    if off != len(data):
        raise ValueError(f"weight stream of {len(data)} bytes, the model holds {off}")
    for layer, name, arr in parts:
        setattr(layer, name, arr)


def forward_in_batches(x, layers, run_layer, *, batch: int, prepare=None, return_all: bool = False):
    """Runs x (N, ...) through `layers` `batch` samples at a time: h = run_layer(layer, h) from
    prepare(x[s:s + batch]) (default: as is). Returns the flattened outputs (N, -1), or with
    return_all every layer's outputs over all N (for calibration). The one batching loop of the
    numpy references (host.int8_ref, host.keras_import)."""
    outs, alls = [], []
    for s in range(0, len(x), batch):
        h = x[s: s + batch] if prepare is None else prepare(x[s: s + batch])
        acts = []
        for layer in layers:
            h = run_layer(layer, h)
            if return_all:
                acts.append(h)
        outs.append(h.reshape(h.shape[0], -1))
        alls.append(acts)
    if return_all:
        return [np.concatenate([a[i] for a in alls]) for i in range(len(layers))]
    return np.concatenate(outs)
