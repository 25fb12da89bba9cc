"""Float Keras MobileNet-style network (.h5, read with h5py) -> int8 tinylls Model.

No TensorFlow: the architecture comes from the file's `model_config` JSON and the weights from
`model_weights/<layer>/...`. Supported: a single chain of InputLayer, Conv2D, DepthwiseConv2D
(depth multiplier 1), BatchNormalization (folded into the preceding convolution), Activation /
ReLU (relu, relu6, linear; softmax only at the end), AveragePooling2D, GlobalAveragePooling2D,
Flatten / Reshape / Dropout (no-ops), Dense. Anything else raises KerasImportError naming the
layer, its index and its class.

Quantization (TFLite post-training full-int8 conventions):
  * input: scale 1/255, zero point -128, so q = pixel - 128 for [0, 1] = pixel / 255 training;
  * weights: symmetric per output channel, scale max|w_c| / 127, values in [-127, 127] (scale
    widened where the bias would not fit in int32, as TFLite's AdjustWeightsForBiasScale does);
  * bias: int32 with scale s_in * s_w[c];
  * activations: asymmetric, min/max over a calibration set (range widened to include 0),
    scale (max - min) / 255, zero point -128 - round(min / scale); scales rounded to float32;
  * average pooling keeps its input's quantization (TFLite requires it).
`KerasNet.forward` runs the folded float network in numpy for calibration and for the float
accuracy that the int8 model is compared with.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from host import safeio
from host.model import Layer, Model, forward_in_batches

MAX_H5_BYTES = 2 * safeio.GiB           # checked before h5py opens the file
MAX_WEIGHT_VALUES = 64 << 20            # one weight array (a compressed dataset may claim more)


class KerasImportError(ValueError):
    """The .h5 file holds something this importer cannot map; the message names it."""


@dataclass
class FloatLayer:
    kind: str                                 # conv, dwconv, avgpool, fc
    in_shape: tuple
    out_shape: tuple
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    pad: tuple = (0, 0)
    act: str = "none"
    w: np.ndarray | None = None               # conv (oc,kh,kw,ic); dwconv (kh,kw,c); fc (oc, in)
    b: np.ndarray | None = None
    name: str = ""


@dataclass
class KerasNet:
    """The folded float network read from a Keras .h5 (float32, batched forward for calibration).
    Not host.reference.FloatNet, the float64 twin of a quantized Model that float SGD trains."""
    layers: list[FloatLayer]
    input_shape: tuple
    softmax: bool = False
    name: str = "keras"
    meta: dict = field(default_factory=dict)

    def forward(self, pixels: np.ndarray, *, batch: int = 64, return_all: bool = False):
        """uint8 (N, H, W, C) pixels -> float logits (N, classes) (pre-softmax), or every layer's
        output (for calibration) with return_all=True."""
        return forward_in_batches(pixels, self.layers, _float_layer, batch=batch, return_all=return_all,
                                  prepare=lambda p: p.astype(np.float32) / np.float32(255.0))


# ---------------------------------------------------------------------------------- float kernels


def _pad_f(x, k, stride, pad, out_hw):
    n, h, w, c = x.shape
    need_h = (out_hw[0] - 1) * stride[0] + k[0]
    need_w = (out_hw[1] - 1) * stride[1] + k[1]
    return np.pad(x, ((0, 0), (pad[0], max(need_h - pad[0] - h, 0)), (pad[1], max(need_w - pad[1] - w, 0)), (0, 0)))


def _tap(xp, ky, kx, stride, out_hw):
    return xp[:, ky: ky + (out_hw[0] - 1) * stride[0] + 1: stride[0], kx: kx + (out_hw[1] - 1) * stride[1] + 1: stride[1], :]


def _float_layer(L: FloatLayer, x: np.ndarray) -> np.ndarray:
    oh, ow, oc = L.out_shape
    if L.kind == "conv":
        xp = _pad_f(x, L.kernel, L.stride, L.pad, (oh, ow))
        cols = np.concatenate([_tap(xp, ky, kx, L.stride, (oh, ow))
                               for ky in range(L.kernel[0]) for kx in range(L.kernel[1])], axis=3)
        y = cols @ L.w.reshape(oc, -1).T + L.b
    elif L.kind == "dwconv":
        xp = _pad_f(x, L.kernel, L.stride, L.pad, (oh, ow))
        y = np.zeros((x.shape[0], oh, ow, oc), np.float32) + L.b
        for ky in range(L.kernel[0]):
            for kx in range(L.kernel[1]):
                y = y + _tap(xp, ky, kx, L.stride, (oh, ow)) * L.w[ky, kx]
    elif L.kind == "avgpool":       # padded taps excluded from the mean, as TF does
        n, h, w, c = x.shape
        y = np.zeros((n, oh, ow, c), np.float32)
        for oy in range(oh):
            y0 = oy * L.stride[0] - L.pad[0]
            ys, ye = max(y0, 0), min(y0 + L.kernel[0], h)
            for ox in range(ow):
                x0 = ox * L.stride[1] - L.pad[1]
                xs, xe = max(x0, 0), min(x0 + L.kernel[1], w)
                y[:, oy, ox, :] = x[:, ys:ye, xs:xe, :].mean(axis=(1, 2))
    elif L.kind == "fc":
        y = (x.reshape(x.shape[0], -1) @ L.w.T + L.b).reshape(x.shape[0], 1, 1, oc)
    else:
        raise KerasImportError(f"unknown float layer kind {L.kind!r}")
    if L.act == "relu":
        y = np.maximum(y, 0)
    elif L.act == "relu6":
        y = np.clip(y, 0, 6)
    return y.astype(np.float32)


# ---------------------------------------------------------------------------------- reading .h5


def _same_or_valid(padding: str, in_hw, k, stride, where):
    out, pad = [], []
    for d in range(2):
        if padding == "same":
            o = (in_hw[d] + stride[d] - 1) // stride[d]
            pad.append(max((o - 1) * stride[d] + k[d] - in_hw[d], 0) // 2)
        elif padding == "valid":
            o = (in_hw[d] - k[d] + stride[d]) // stride[d]
            pad.append(0)
        else:
            raise KerasImportError(f"{where}: padding {padding!r} not supported")
        if o < 1:
            raise KerasImportError(f"{where}: output size {o} from input {in_hw}")
        out.append(o)
    return tuple(out), tuple(pad)


def read_h5(path: str) -> KerasNet:
    """Read a Keras functional/sequential .h5 into a KerasNet with BatchNorm folded."""
    try:
        import h5py
    except ImportError as exc:     # pragma: no cover - declared dependency
        raise ImportError("from-keras needs h5py (pip install h5py)") from exc
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: no such .h5 file")
    safeio.check_file(path, MAX_H5_BYTES, ".h5 file", error=KerasImportError)
    at = ["model_config"]        # what is being read, for errors raised by h5py / the config walk
    try:
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise KerasImportError(f"{path}: not an HDF5 file h5py can open ({exc})") from None
        with f:
            if "model_config" not in f.attrs:
                raise KerasImportError(f"{path}: no 'model_config' attribute: not a Keras model file")
            cfg = json.loads(f.attrs["model_config"])
            weights_root = f["model_weights"] if "model_weights" in f else f

            def weights(lname: str) -> dict:
                if lname not in weights_root:
                    raise KerasImportError(f"{path}: no weights for layer {lname!r}")
                g = weights_root[lname]
                out = {}

                def take(n, o):
                    if not isinstance(o, h5py.Dataset):
                        return
                    if o.size > MAX_WEIGHT_VALUES:
                        raise KerasImportError(f"{path}: weights {o.name} hold {o.size} values, more than the "
                                               f"{MAX_WEIGHT_VALUES} allowed")
                    out[n.split("/")[-1].split(":")[0]] = np.asarray(o, np.float64)
                g.visititems(take)
                return out

            layers_cfg = cfg["config"]["layers"]
            net_layers: list[FloatLayer] = []
            shape = None
            softmax = False
            prev_name = None
            for idx, lc in enumerate(layers_cfg):
                cls, c = lc["class_name"], lc["config"]
                lname = c.get("name", f"layer{idx}")
                where = f"{path}: layer {idx} ({lname}, {cls})"
                at[0] = f"layer {idx} ({lname}, {cls})"
                inbound = lc.get("inbound_nodes") or []
                if cfg["class_name"] != "Sequential" and idx > 0:
                    srcs = [i[0] for i in inbound[0]] if inbound else []
                    if srcs != [prev_name]:
                        raise KerasImportError(f"{where}: not a single chain (inputs {srcs}); branches are not supported")
                prev_name = lname
                if softmax:
                    raise KerasImportError(f"{where}: layers after the softmax are not supported")
                if cls == "InputLayer":
                    bis = c.get("batch_input_shape") or c.get("batch_shape")
                    shape = tuple(int(v) for v in bis[1:])
                    continue
                if shape is None:
                    raise KerasImportError(f"{where}: no InputLayer before it")
                act = c.get("activation", "linear")
                if cls in ("Conv2D", "DepthwiseConv2D"):
                    if tuple(c.get("dilation_rate", (1, 1))) != (1, 1):
                        raise KerasImportError(f"{where}: dilation {c['dilation_rate']} not supported")
                    k = tuple(c["kernel_size"])
                    stride = tuple(c["strides"])
                    out_hw, pad = _same_or_valid(c["padding"], shape[:2], k, stride, where)
                    wd = weights(lname)
                    if cls == "Conv2D":
                        kern = wd["kernel"]                               # (kh, kw, ic, oc)
                        oc = kern.shape[3]
                        w = np.transpose(kern, (3, 0, 1, 2))              # (oc, kh, kw, ic)
                        kind = "conv"
                    else:
                        if c.get("depth_multiplier", 1) != 1:
                            raise KerasImportError(f"{where}: depth_multiplier {c['depth_multiplier']} not supported")
                        kern = wd["depthwise_kernel"]                     # (kh, kw, c, 1)
                        oc = kern.shape[2]
                        w = kern[:, :, :, 0]
                        kind = "dwconv"
                    b = wd.get("bias", np.zeros(oc))
                    net_layers.append(FloatLayer(kind, shape, out_hw + (oc,), k, stride, pad, "none", w, b, lname))
                    shape = out_hw + (oc,)
                elif cls == "BatchNormalization":
                    if not net_layers or net_layers[-1].kind not in ("conv", "dwconv", "fc") or net_layers[-1].act != "none":
                        raise KerasImportError(f"{where}: BatchNormalization must follow a linear conv/dense to be folded")
                    wd = weights(lname)
                    L = net_layers[-1]
                    n = L.out_shape[2]
                    gamma = wd.get("gamma", np.ones(n)) if c.get("scale", True) else np.ones(n)
                    beta = wd.get("beta", np.zeros(n)) if c.get("center", True) else np.zeros(n)
                    scale = gamma / np.sqrt(wd["moving_variance"] + c.get("epsilon", 1e-3))
                    if L.kind == "conv" or L.kind == "fc":
                        L.w = L.w * scale.reshape((-1,) + (1,) * (L.w.ndim - 1))
                    else:
                        L.w = L.w * scale
                    L.b = (L.b - wd["moving_mean"]) * scale + beta
                elif cls in ("Activation", "ReLU"):
                    if cls == "ReLU":
                        mv = c.get("max_value")
                        if c.get("negative_slope", 0) or c.get("threshold", 0):
                            raise KerasImportError(f"{where}: leaky/thresholded ReLU not supported")
                        a = "relu6" if mv is not None and float(mv) == 6.0 else "relu"
                        if mv is not None and float(mv) != 6.0:
                            raise KerasImportError(f"{where}: ReLU max_value {mv} not supported")
                    else:
                        a = c["activation"]
                    if a == "softmax":
                        softmax = True
                        continue
                    if a == "linear":
                        continue
                    if a not in ("relu", "relu6"):
                        raise KerasImportError(f"{where}: activation {a!r} not supported")
                    if not net_layers or net_layers[-1].act != "none":
                        raise KerasImportError(f"{where}: activation must follow a conv/dense/pool layer")
                    net_layers[-1].act = a
                elif cls in ("AveragePooling2D", "GlobalAveragePooling2D"):
                    if cls == "GlobalAveragePooling2D":
                        k, stride, out_hw, pad = tuple(shape[:2]), tuple(shape[:2]), (1, 1), (0, 0)
                    else:
                        k, stride = tuple(c["pool_size"]), tuple(c.get("strides") or c["pool_size"])
                        out_hw, pad = _same_or_valid(c["padding"], shape[:2], k, stride, where)
                    net_layers.append(FloatLayer("avgpool", shape, out_hw + (shape[2],), k, stride, pad, name=lname))
                    shape = out_hw + (shape[2],)
                elif cls in ("Flatten", "Dropout", "Reshape"):
                    if cls == "Reshape" and int(np.prod(c["target_shape"])) != int(np.prod(shape)):
                        raise KerasImportError(f"{where}: reshape changes the element count")
                    continue
                elif cls == "Dense":
                    wd = weights(lname)
                    kern = wd["kernel"]                                   # (in, out)
                    if kern.shape[0] != int(np.prod(shape)):
                        raise KerasImportError(f"{where}: kernel {kern.shape} for input {shape}")
                    oc = kern.shape[1]
                    b = wd.get("bias", np.zeros(oc))
                    net_layers.append(FloatLayer("fc", shape, (1, 1, oc), w=kern.T.copy(), b=b, name=lname))
                    shape = (1, 1, oc)
                    if act == "softmax":
                        softmax = True
                    elif act in ("relu", "relu6"):
                        net_layers[-1].act = act
                    elif act != "linear":
                        raise KerasImportError(f"{where}: activation {act!r} not supported")
                    continue
                else:
                    raise KerasImportError(f"{where}: layer class {cls} cannot be mapped to a tinylls layer")
                if cls in ("Conv2D", "DepthwiseConv2D"):
                    if act == "softmax":
                        raise KerasImportError(f"{where}: softmax on a convolution not supported")
                    if act in ("relu", "relu6"):
                        net_layers[-1].act = act
                    elif act != "linear":
                        raise KerasImportError(f"{where}: activation {act!r} not supported")
        if not net_layers or net_layers[-1].kind != "fc":
            raise KerasImportError(f"{path}: the network must end in a Dense classifier")
        for L in net_layers:
            if L.w is not None:
                L.w = L.w.astype(np.float32)
                L.b = L.b.astype(np.float32)
        return KerasNet(net_layers, shape_in(net_layers), softmax, os.path.splitext(os.path.basename(path))[0])
    except KerasImportError:
        raise
    except (OSError, KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        raise KerasImportError(f"{path}: {at[0]}: malformed Keras model ({type(exc).__name__}: {exc})") from exc


def shape_in(layers):
    return layers[0].in_shape


# ---------------------------------------------------------------------------------- quantization


def _f32(v) -> float:
    return float(np.float32(v))


def _act_quant(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [lo, hi] widened to include 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = _f32((hi - lo) / 255.0)
    zp = int(np.clip(-128 - round(lo / scale), -128, 127))
    return scale, zp


def quantize(net: KerasNet, calib_pixels: np.ndarray, progress=None) -> Model:
    """Calibrate activation ranges on uint8 (N, H, W, C) pixels and build the int8 Model."""
    if calib_pixels.ndim != 4 or tuple(calib_pixels.shape[1:]) != tuple(net.input_shape):
        raise KerasImportError(f"calibration images have shape {calib_pixels.shape[1:]}, the network takes "
                               f"{net.input_shape}")
    acts = net.forward(calib_pixels, return_all=True)
    in_scale, in_zp = _f32(1.0 / 255.0), -128
    layers = []
    for i, (L, a) in enumerate(zip(net.layers, acts)):
        if L.kind == "avgpool":
            out_scale, out_zp = in_scale, in_zp
        else:
            out_scale, out_zp = _act_quant(a.min(), a.max())
        q = Layer(L.kind, L.in_shape, L.out_shape, kernel=L.kernel, stride=L.stride, pad=L.pad, act=L.act,
                  in_scale=in_scale, in_zp=in_zp, out_scale=out_scale, out_zp=out_zp, name=L.name,
                  trainable=L.kind != "avgpool")
        if L.w is not None:
            oc = L.out_shape[2]
            wc = np.moveaxis(L.w, -1, 0).reshape(oc, -1) if L.kind == "dwconv" else L.w.reshape(oc, -1)
            amax = np.abs(wc).max(axis=1)
            s_w = np.where(amax > 0, amax / 127.0, 1.0)
            # Dead channels (|w| ~ 1e-9) would give a bias beyond int32; like TFLite's
            # AdjustWeightsForBiasScale, widen the weight scale until |bias_q| <= 2^30 (the other
            # half of int32 is headroom for the accumulation).
            s_w = np.maximum(s_w, np.abs(L.b) / (in_scale * 2.0 ** 30))
            s_w = s_w.astype(np.float32).astype(np.float64)
            bshape = (1, 1, oc) if L.kind == "dwconv" else (oc,) + (1,) * (L.w.ndim - 1)
            qw = np.clip(np.round(L.w / s_w.reshape(bshape)), -127, 127).astype(np.int8)
            bias_scale = in_scale * s_w
            qb = np.clip(np.round(L.b / bias_scale), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
            q.w_scale, q.weights, q.bias = s_w, qw, qb
        layers.append(q)
        in_scale, in_zp = out_scale, out_zp
        if progress:
            progress(i + 1, len(net.layers))
    meta = {"source": net.name, "input_q": "pixel-128", "calibration_images": int(len(calib_pixels))}
    if net.softmax:
        meta["softmax"] = {"in_scale": layers[-1].out_scale, "in_zp": layers[-1].out_zp,
                           "out_scale": 1.0 / 256.0, "out_zp": -128, "beta": 1.0}
    return Model(layers=layers, classes=layers[-1].out_c, input_scale=_f32(1.0 / 255.0), input_zp=-128,
                 name=net.name, meta=meta)
