"""Networks built from scratch: MobileNetV1 (any width / resolution / channels / classes) and the
small digits net of the learning-parity test, initialised in float and quantized to int8.

Quantization of a fresh network: weights symmetric per output channel with `w_headroom` so they
can grow before saturating at +-127; activation scales calibrated on a few samples with the float
reference forward, with `act_headroom` for the growth training brings (ReLU outputs use zero
point -128, so all 256 levels cover [0, max]).
"""
from __future__ import annotations

import math

import numpy as np

from host.model import Layer, Model


def same_pad(size: int, k: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME': output size and leading padding (trailing gets the extra pixel)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return out, total // 2


def _conv(name, kind, in_shape, out_c, k, stride, act="relu"):
    h, w, c = in_shape
    oh, pt = same_pad(h, k, stride)
    ow, pl = same_pad(w, k, stride)
    return Layer(kind=kind, in_shape=in_shape, out_shape=(oh, ow, c if kind == "dwconv" else out_c),
                 kernel=(k, k), stride=(stride, stride), pad=(pt, pl), act=act, name=name)


def mobilenet_v1_layers(alpha=0.25, resolution=96, channels=3, classes=2, head="gap") -> list[Layer]:
    """The MobileNetV1 stack: conv 3x3/2, 13 depthwise-separable blocks, pooling, classifier.

    head="gap": global average pool then FC (the standard network); head="grid": the FC reads
    the last feature map flattened, which keeps position (LLS from scratch needs it)."""
    def ch(n):
        return max(8, int(n * alpha))

    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
    layers = [_conv("conv0", "conv", (resolution, resolution, channels), ch(32), 3, 2)]
    for b, (out, stride) in enumerate(blocks, start=1):
        prev = layers[-1].out_shape
        layers.append(_conv(f"dw{b}", "dwconv", prev, prev[2], 3, stride))
        layers.append(_conv(f"pw{b}", "conv", layers[-1].out_shape, ch(out), 1, 1))
    h, w, c = layers[-1].out_shape
    if head == "gap":
        layers.append(Layer(kind="avgpool", in_shape=(h, w, c), out_shape=(1, 1, c), kernel=(h, w),
                            stride=(h, w), act="none", name="pool", trainable=False))
        layers.append(Layer(kind="fc", in_shape=(1, 1, c), out_shape=(1, 1, classes), name="fc"))
    elif head == "grid":
        layers.append(Layer(kind="fc", in_shape=(h, w, c), out_shape=(1, 1, classes), name="fc"))
    else:
        raise ValueError(f"unknown head {head!r} (gap or grid)")
    return layers


def digits_layers(classes=10, head="flatten") -> list[Layer]:
    """conv3x3(1->16) -> conv3x3/2(16->32) -> conv3x3(32->32) -> FC, ReLU, no BN (from-scratch.md)."""
    layers = [_conv("conv1", "conv", (8, 8, 1), 16, 3, 1), _conv("conv2", "conv", (8, 8, 16), 32, 3, 2),
              _conv("conv3", "conv", (4, 4, 32), 32, 3, 1)]
    if head == "gap":
        layers.append(Layer(kind="avgpool", in_shape=(4, 4, 32), out_shape=(1, 1, 32), kernel=(4, 4),
                            stride=(4, 4), name="pool", trainable=False))
        layers.append(Layer(kind="fc", in_shape=(1, 1, 32), out_shape=(1, 1, classes), name="fc"))
    else:
        layers.append(Layer(kind="fc", in_shape=(4, 4, 32), out_shape=(1, 1, classes), name="fc"))
    return layers


def init_float(layers: list[Layer], seed: int) -> list[tuple]:
    """Kaiming-uniform (ReLU gain) float weights, zero bias, in the tinylls layouts."""
    rng = np.random.default_rng(seed)
    params = []
    for L in layers:
        if not L.has_weights:
            params.append((None, None))
            continue
        kh, kw = L.kernel
        if L.kind == "conv":
            shape, fan_in = (L.out_c, kh, kw, L.in_shape[2]), kh * kw * L.in_shape[2]
        elif L.kind == "dwconv":
            shape, fan_in = (kh, kw, L.out_c), kh * kw
        else:
            fan_in = int(np.prod(L.in_shape))
            shape = (L.out_c, fan_in)
        bound = math.sqrt(6.0 / fan_in)
        params.append((rng.uniform(-bound, bound, shape), np.zeros(L.out_c)))
    return params


def quantize_fresh(layers: list[Layer], params: list[tuple], calib: np.ndarray, classes: int,
                   *, w_headroom=2.0, classifier_w_headroom=8.0, act_headroom=2.0, logit_range=16.0,
                   name="model") -> Model:
    """Quantize float weights; calibrate each layer's output scale on `calib` (N, H, W, C) uint8."""
    from host.reference import FloatNet

    for i, (L, (W, _)) in enumerate(zip(layers, params)):
        if L.has_weights:
            axes = (0, 1) if L.kind == "dwconv" else tuple(range(1, W.ndim))
            # a softmax head grows its weights far beyond their init: without the extra room its
            # int8 weights saturate at +-127 within a couple of epochs and it collapses
            room = classifier_w_headroom if i == len(layers) - 1 else w_headroom
            L.w_scale = np.maximum(np.abs(W).max(axis=axes) * room, 1e-8) / 127.0
            ws = L.w_scale if L.kind == "dwconv" else L.w_scale.reshape((-1,) + (1,) * (W.ndim - 1))
            L.weights = np.clip(np.round(W / ws), -127, 127).astype(np.int8)
            L.bias = np.zeros(L.out_c, np.int32)
    model = Model(layers=layers, classes=classes, name=name)
    # calibrate layer by layer on the float network: scales only depend on float activations
    net = FloatNet(model)
    net.W = [W for W, _ in params]
    net.b = [b for _, b in params]
    peaks = np.zeros(len(layers))
    for img in calib:
        outs = net.forward(img.astype(np.float64) / 255.0)
        peaks = np.maximum(peaks, [np.abs(o).max() for o in outs])
    in_scale, in_zp = 1.0 / 255.0, -128
    for i, L in enumerate(layers):
        L.in_scale, L.in_zp = in_scale, in_zp
        last = i == len(layers) - 1
        if L.kind == "avgpool":
            L.out_scale, L.out_zp = in_scale, in_zp
        elif last:
            # logits: 8x the calibrated peak, at least +-4 (softmax saturation) and at most
            # +-logit_range. A fixed wide range leaves fresh logits (~0.1) at 0-2 LSB, where
            # the softmax sees ties and the classifier cannot learn.
            L.out_scale, L.out_zp = float(np.clip(peaks[i] * 8.0, 4.0, logit_range)) / 127.0, 0
        else:
            L.out_scale, L.out_zp = max(peaks[i] * act_headroom, 1e-6) / 255.0, -128
        if L.has_weights:
            W, b = params[i]
            L.bias = np.round(b / (in_scale * L.w_scale)).astype(np.int32)
        in_scale, in_zp = L.out_scale, L.out_zp
    return model


def build(kind: str, *, seed: int, calib: np.ndarray, classes: int, **kw) -> Model:
    """A fresh int8 model: kind "mobilenet" (kw: alpha, resolution, channels, head) or "digits"."""
    head = kw.pop("head", None)
    quant_kw = {k: kw.pop(k) for k in ("w_headroom", "classifier_w_headroom", "act_headroom", "logit_range")
                if k in kw}
    if kind == "mobilenet":
        layers = mobilenet_v1_layers(classes=classes, head=head or "gap", **kw)
    elif kind == "digits":
        layers = digits_layers(classes=classes, head=head or "flatten")
    else:
        raise ValueError(f"unknown network {kind!r} (mobilenet or digits)")
    params = init_float(layers, seed)
    return quantize_fresh(layers, params, calib, classes, name=kind, **quant_kw)


def set_learning_rates(model: Model, hidden: float, classifier: float, lls_m: float = 0.0) -> None:
    for i, L in enumerate(model.layers):
        L.lr = classifier if i == len(model.layers) - 1 else hidden
        L.lls_m_lr = lls_m
