"""Import a full-int8 TFLite MobileNet-style network into a `host.model.Model`.

The flatbuffer is read with the small `tflite` package (generated flatbuffers accessors), not
TensorFlow. The graph must be a single chain of supported operators:

  CONV_2D              -> Layer("conv")    fused NONE / RELU / RELU6, dilation 1
  DEPTHWISE_CONV_2D    -> Layer("dwconv")  depth multiplier 1
                          or Layer("conv") when the input has one channel (any multiplier:
                          out[c] = sum x * w[.., c] is then exactly a convolution)
  AVERAGE_POOL_2D      -> Layer("avgpool")
  FULLY_CONNECTED      -> Layer("fc")
  RESHAPE / SQUEEZE    -> nothing (NHWC flattening is a no-op); quantization must not change
  SOFTMAX (last op)    -> model.meta["softmax"] = {in_scale, in_zp, out_scale, out_zp, beta}

A 1x1 CONV_2D on a 1x1 input that ends the network is imported as "fc" (same arithmetic) so the
classifier is an fc layer whatever the converter emitted (it keeps the convolution's double
rounding). Float scales are kept as the exact float32 values widened to Python floats, so the
multipliers `Layer.requant_real()` yields equal TFLite's (QuantizeMultiplier of the double
s_in * s_w / s_out).

Rounding: conv and dwconv requantize with TFLite's double rounding in both LiteRT and TFLite
Micro. FULLY_CONNECTED does not: LiteRT 2.x rounds it once (half up, as ruy does), TFLite Micro
twice. `reference="litert"` (default) marks imported FULLY_CONNECTED layers
`single_rounding=True`; `reference="tflm"` keeps double rounding. Measured on vww_96_int8 with
LiteRT's BUILTIN_REF resolver: double rounding on the fc misses 4 of 800 images by 1 LSB, single
rounding matches all 800 (and 3000 perturbed ones). Any other operator raises
TfliteImportError naming the operator and its index.
"""
from __future__ import annotations

import os
import struct

import numpy as np

from host import safeio
from host.model import Layer, Model

try:
    import tflite
except ImportError as exc:          # pragma: no cover - a declared dependency
    raise ImportError("host.tflite_import needs the 'tflite' package (pip install tflite)") from exc


class TfliteImportError(ValueError):
    """The .tflite file is not a model tinylls can run (operator, type or shape), or is not a
    well-formed flatbuffer. The message starts with the file name and names the field."""


_OPNAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_TYPENAMES = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_ACTS = {tflite.ActivationFunctionType.NONE: "none",
         tflite.ActivationFunctionType.RELU: "relu",
         tflite.ActivationFunctionType.RELU6: "relu6"}
_ACT_NAMES = {v: k for k, v in vars(tflite.ActivationFunctionType).items() if not k.startswith("_")}
_NOOPS = ("RESHAPE", "SQUEEZE")


MAX_TFLITE_BYTES = 256 << 20      # a model for a microcontroller; checked before reading
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")
# vtable slots (4 + 2 * field index) of the vectors and tables read here; tflite/schema.fbs
_SLOT = {"model.operator_codes": 6, "model.subgraphs": 8, "model.buffers": 12,
         "subgraph.tensors": 4, "subgraph.inputs": 6, "subgraph.outputs": 8, "subgraph.operators": 10,
         "tensor.shape": 4, "tensor.name": 10, "quantization.scale": 8, "quantization.zero_point": 10,
         "operator.inputs": 6, "operator.outputs": 8, "operator_code.custom_code": 6, "buffer.data": 4}
_MAX_DIM = 1 << 16


class _Graph:
    """Checked accessors over one subgraph of a parsed flatbuffer.

    Every table is bounds-checked (its position, vtable and every field offset inside the file)
    and every vector's extent is checked against the file size before the generated `tflite`
    accessors unpack anything; every index (tensor, buffer, operator code) is checked against
    its vector's length. `self.at` names what is being read, for errors raised deeper down."""

    def __init__(self, buf: bytes, path: str):
        self.path = path
        self.buf = bytes(buf)
        self.size = len(self.buf)
        self.at = "header"
        self._tensors: dict[int, object] = {}
        if self.size < 8:
            self.fail(f"too short ({self.size} bytes; a .tflite file starts with an 8-byte header)")
        if self.buf[4:8] != b"TFL3":
            self.fail(f"not a TFLite flatbuffer (file identifier {self.buf[4:8]!r} at offset 4, "
                      "expected b'TFL3')")
        self.m = self.table(tflite.Model.GetRootAsModel(self.buf, 0), "model (root table)")
        self.n_codes = self.vector(self.m, "model.operator_codes", 4)
        self.n_buffers = self.vector(self.m, "model.buffers", 4)
        n_sub = self.vector(self.m, "model.subgraphs", 4)
        if n_sub != 1:
            self.fail(f"{n_sub} subgraphs; only single-subgraph models are supported")
        self.g = self.table(self.m.Subgraphs(0), "subgraph 0")
        self.n_tensors = self.vector(self.g, "subgraph.tensors", 4)
        self.vector(self.g, "subgraph.inputs", 4)
        self.vector(self.g, "subgraph.outputs", 4)
        self.n_ops = self.vector(self.g, "subgraph.operators", 4)

    # ------------------------------------------------------------------ checks

    def fail(self, msg: str):
        raise TfliteImportError(f"{self.path}: {msg}")

    def need(self, pos: int, nbytes: int, what: str) -> None:
        if pos < 0 or pos + nbytes > self.size:
            self.fail(f"{what}: offset {pos} + {nbytes} bytes lies outside the {self.size}-byte "
                      "file (truncated or corrupt)")

    def table(self, obj, what: str):
        """`obj` (a generated accessor or a flatbuffers Table) after checking that its table,
        vtable and every field offset lie inside the file."""
        tab = getattr(obj, "_tab", obj)
        pos = tab.Pos
        self.need(pos, 4, f"{what} table")
        vt = pos - _I32.unpack_from(self.buf, pos)[0]
        self.need(vt, 4, f"{what} vtable")
        vt_size, t_size = _U16.unpack_from(self.buf, vt), _U16.unpack_from(self.buf, vt + 2)
        vt_size, t_size = vt_size[0], t_size[0]
        if vt_size < 4 or vt_size % 2:
            self.fail(f"{what}: vtable at offset {vt} has size {vt_size}")
        self.need(vt, vt_size, f"{what} vtable")
        self.need(pos, t_size, f"{what} table")
        for k in range(4, vt_size, 2):
            o = _U16.unpack_from(self.buf, vt + k)[0]
            if o and (o < 4 or o >= t_size):
                self.fail(f"{what}: field {(k - 4) // 2} at offset {o} lies outside its "
                          f"{t_size}-byte table at offset {pos}")
        return obj

    def vector(self, obj, field: str, elem: int, what: str | None = None) -> int:
        """Length of vector `field` of the (checked) table `obj`, its extent checked."""
        what = f"{what or field}"
        tab = obj._tab
        o = tab.Offset(_SLOT[field])
        if not o:
            return 0
        at = tab.Pos + o
        self.need(at, 4, what)
        start = at + _U32.unpack_from(self.buf, at)[0]
        self.need(start, 4, f"{what} length")
        n = _U32.unpack_from(self.buf, start)[0]
        self.need(start + 4, n * elem, f"{what} ({n} x {elem} bytes)")
        return n

    def index(self, i: int, n: int, what: str) -> int:
        i = int(i)
        if not 0 <= i < n:
            self.fail(f"{what} is {i}, outside 0..{n - 1}" if n else f"{what} is {i}, but there are none")
        return i

    # ------------------------------------------------------------------ accessors

    def op(self, i: int):
        self.at = f"operator {i}"
        op = self.table(self.g.Operators(self.index(i, self.n_ops, "operator index")), f"operator {i}")
        self.vector(op, "operator.inputs", 4, f"operator {i} inputs")
        self.vector(op, "operator.outputs", 4, f"operator {i} outputs")
        return op

    def opname(self, i: int) -> str:
        op = self.op(i)
        idx = self.index(op.OpcodeIndex(), self.n_codes, f"operator {i} opcode_index")
        oc = self.table(self.m.OperatorCodes(idx), f"operator code {idx}")
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if code == tflite.BuiltinOperator.CUSTOM:
            self.vector(oc, "operator_code.custom_code", 1, f"operator code {idx} custom_code")
            return f"CUSTOM({(oc.CustomCode() or b'').decode(errors='replace')})"
        return _OPNAMES.get(code, f"builtin#{code}")

    def tensor(self, t: int):
        t = int(t)
        if t not in self._tensors:
            what = f"tensor {t}"
            tensor = self.table(self.g.Tensors(self.index(t, self.n_tensors, "tensor index")), what)
            self.vector(tensor, "tensor.shape", 4, f"{what} shape")
            self.vector(tensor, "tensor.name", 1, f"{what} name")
            self._tensors[t] = tensor
        return self._tensors[t]

    def name(self, t: int) -> str:
        return (self.tensor(t).Name() or b"").decode(errors="replace")

    def shape(self, t: int) -> tuple[int, ...]:
        shape = tuple(int(v) for v in self.tensor(t).ShapeAsNumpy()) if self.tensor(t).ShapeLength() else ()
        if any(not 1 <= v <= _MAX_DIM for v in shape):
            self.fail(f"tensor {t} ({self.name(t)!r}): shape {shape} has a dimension outside 1..{_MAX_DIM}")
        return shape

    def type(self, t: int) -> str:
        return _TYPENAMES.get(self.tensor(t).Type(), str(self.tensor(t).Type()))

    def quant(self, t: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(scales float32, zero points int64, quantized dimension); empty arrays if none.
        Scales must be positive and finite, zero points as many as the scales (or none)."""
        q = self.tensor(t).Quantization()
        what = f"tensor {t} ({self.name(t)!r}) quantization"
        if q is None:
            return np.zeros(0, np.float32), np.zeros(0, np.int64), 0
        self.table(q, what)
        ns = self.vector(q, "quantization.scale", 4, f"{what} scale")
        nz = self.vector(q, "quantization.zero_point", 8, f"{what} zero_point")
        if ns == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64), 0
        if nz not in (0, ns):
            self.fail(f"{what}: {nz} zero points for {ns} scales")
        scales = np.asarray(q.ScaleAsNumpy(), np.float32)
        if not np.all(np.isfinite(scales) & (scales > 0)):
            bad = scales[~(np.isfinite(scales) & (scales > 0))][0]
            self.fail(f"{what}: scale {bad} is not a positive finite number")
        zp = np.asarray(q.ZeroPointAsNumpy(), np.int64) if nz else np.zeros(ns, np.int64)
        if np.any(np.abs(zp) > (1 << 31)):
            self.fail(f"{what}: zero point {int(zp[np.abs(zp) > (1 << 31)][0])} out of range")
        return scales, zp, int(q.QuantizedDimension())

    def data(self, t: int, dtype) -> np.ndarray:
        tensor = self.tensor(t)
        what = f"tensor {t} ({self.name(t)!r})"
        b = self.index(tensor.Buffer(), self.n_buffers, f"{what} buffer index")
        buf = self.table(self.m.Buffers(b), f"{what} buffer {b}")
        n = self.vector(buf, "buffer.data", 1, f"{what} buffer {b} data")
        if n == 0:
            self.fail(f"{what} has no constant data")
        raw = buf.DataAsNumpy().tobytes()
        item = np.dtype(dtype).itemsize
        if len(raw) % item:
            self.fail(f"{what}: buffer {b} holds {len(raw)} bytes, not a whole number of "
                      f"{np.dtype(dtype).name} values")
        arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
        shape = self.shape(t)
        need = int(np.prod(shape, dtype=object)) if shape else 1
        if arr.size != need:
            self.fail(f"{what} holds {arr.size} values, shape {shape} needs {need}")
        return arr.reshape(shape)

    def options(self, op, cls, where: str):
        """The builtin options table of `op`, of the type `cls` names, bounds-checked."""
        want = getattr(tflite.BuiltinOptions, cls.__name__)
        got = op.BuiltinOptionsType()
        if got != want:
            self.fail(f"{where.split(': ', 1)[1]}: builtin_options_type is {got}, expected "
                      f"{want} ({cls.__name__})")
        t = op.BuiltinOptions()
        if t is None:
            self.fail(f"{where.split(': ', 1)[1]}: missing builtin options")
        self.table(t, f"{where.split(': ', 1)[1]} builtin_options")
        o = cls()
        o.Init(t.Bytes, t.Pos)
        return o


def _act_range_tflite(act: str, scale: float, zp: int) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized, computed in float32 as TFLite does."""
    lo, hi = -128, 127
    s = np.float32(scale)

    def q(f):
        v = float(np.float32(f) / s)
        return zp + int(np.sign(v) * np.floor(abs(v) + 0.5))       # TfLiteRound: half away from zero
    if act in ("relu", "relu6"):
        lo = max(lo, q(0.0))
    if act == "relu6":
        hi = min(hi, q(6.0))
    return lo, hi


REFERENCES = ("litert", "tflm")


def import_tflite(path: str, *, name: str | None = None, reference: str = "litert") -> Model:
    """Parse `path` and return the equivalent tinylls Model (every layer trainable, lr 0).
    reference: the interpreter whose arithmetic to reproduce, 'litert' or 'tflm' (FC rounding)."""
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: no such .tflite file")
    buf = safeio.read_bytes(path, MAX_TFLITE_BYTES, ".tflite file", error=TfliteImportError)
    return import_tflite_bytes(buf, path=path, name=name, reference=reference)


def import_tflite_bytes(buf: bytes, *, path: str = "<bytes>", name: str | None = None,
                        reference: str = "litert") -> Model:
    """Like import_tflite, from the file's bytes (`path` names it in errors). Any malformed
    input raises TfliteImportError naming the file and the field being read."""
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    g = None
    try:
        # _Graph itself reads through the generated accessors too: a subgraph offset past 4 GiB
        # made flatbuffers raise TypeError there (found by fuzz/py_tflite.py)
        g = _Graph(buf, path)
        return _import(g, path, name, reference)
    except TfliteImportError:
        raise
    except (struct.error, TypeError, AttributeError, IndexError, KeyError, ValueError,
            ZeroDivisionError, OverflowError, UnicodeError, RecursionError) as exc:
        # the checks above should leave nothing for the generated accessors to trip on; if
        # something still does, it is still a malformed file, named as such
        where = g.at if g is not None else "model header and subgraph table"
        raise TfliteImportError(f"{path}: {where}: malformed flatbuffer ({type(exc).__name__}: "
                                f"{exc})") from exc


def _import(g: "_Graph", path: str, name: str | None, reference: str) -> Model:
    inputs = list(g.g.InputsAsNumpy())
    if len(inputs) != 1:
        raise TfliteImportError(f"{path}: {len(inputs)} graph inputs; exactly one image input is supported")
    cur = int(inputs[0])
    if g.type(cur) != "INT8":
        raise TfliteImportError(f"{path}: input tensor {g.name(cur)!r} is {g.type(cur)}; "
                                "only full-int8 models (int8 input) are supported")
    g.at = f"input tensor {cur}"
    in_shape = g.shape(cur)
    if len(in_shape) != 4 or in_shape[0] != 1:
        raise TfliteImportError(f"{path}: input shape {in_shape}; expected (1, H, W, C)")
    s_in, zp_in, _ = g.quant(cur)
    if s_in.size != 1:
        raise TfliteImportError(f"{path}: input tensor has {s_in.size} scales; expected per-tensor quantization")
    if not -128 <= zp_in[0] <= 127:
        raise TfliteImportError(f"{path}: input tensor zero point {int(zp_in[0])} is outside the int8 range")

    layers: list[Layer] = []
    meta: dict = {"source": os.path.basename(path), "tflite_input_tensor": cur, "reference": reference}
    n_ops = g.g.OperatorsLength()
    logits_tensor = None
    for i in range(n_ops):
        opname = g.opname(i)
        op = g.op(i)
        g.at = f"operator {i} ({opname})"
        ins = [int(v) for v in op.InputsAsNumpy()]
        outs = [int(v) for v in op.OutputsAsNumpy()]
        where = f"{path}: operator {i} ({opname})"
        if "softmax" in meta:
            raise TfliteImportError(f"{where} follows SOFTMAX; SOFTMAX must be the last operator")
        if not ins or ins[0] != cur or len(outs) != 1:
            raise TfliteImportError(f"{where}: the graph is not a single chain (this operator does not consume "
                                    f"tensor {cur} {g.name(cur)!r}); branches and residuals are not supported")
        out = outs[0]
        if g.type(out) != "INT8":
            raise TfliteImportError(f"{where}: output tensor {g.name(out)!r} is {g.type(out)}, expected INT8")
        if opname in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D"):
            layers.append(_map_layer(g, i, opname, op, ins, out, where, reference))
            logits_tensor = out
        elif opname in _NOOPS:
            s_a, z_a, _ = g.quant(cur)
            s_b, z_b, _ = g.quant(out)
            if not (np.array_equal(s_a, s_b) and np.array_equal(z_a, z_b)):
                raise TfliteImportError(f"{where}: changes the quantization; only a pure reshape is supported")
            if int(np.prod(g.shape(cur))) != int(np.prod(g.shape(out))):
                raise TfliteImportError(f"{where}: changes the element count {g.shape(cur)} -> {g.shape(out)}")
        elif opname == "SOFTMAX":
            beta = 1.0
            if op.BuiltinOptions() is not None:
                beta = float(g.options(op, tflite.SoftmaxOptions, where).Beta())
            s_a, z_a, _ = g.quant(cur)
            s_b, z_b, _ = g.quant(out)
            if s_a.size != 1 or s_b.size != 1:
                raise TfliteImportError(f"{where}: input and output must be quantized per tensor")
            meta["softmax"] = {"in_scale": float(s_a[0]), "in_zp": int(z_a[0]),
                               "out_scale": float(s_b[0]), "out_zp": int(z_b[0]), "beta": beta}
        else:
            raise TfliteImportError(f"{where}: operator {opname} at index {i} cannot be mapped to a tinylls layer "
                                    f"(supported: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D, "
                                    f"RESHAPE, SQUEEZE, SOFTMAX)")
        cur = out
    if not layers:
        raise TfliteImportError(f"{path}: no layers")
    g.at = "subgraph outputs"
    outputs = [int(v) for v in g.g.OutputsAsNumpy()]
    if outputs != [cur]:
        raise TfliteImportError(f"{path}: graph output {outputs} is not the end of the operator chain ({cur})")

    last = layers[-1]
    if last.kind == "conv" and last.in_shape[:2] == (1, 1) and last.kernel == (1, 1):
        # The classifier as a 1x1 conv on a 1x1 map: the same sums as an fc layer.
        last.kind = "fc"
        last.weights = last.weights.reshape(last.out_c, -1)
        last.stride, last.pad = (1, 1), (0, 0)
    if last.kind != "fc":
        raise TfliteImportError(f"{path}: the network must end in a classifier (FULLY_CONNECTED or 1x1 CONV_2D "
                                f"on a 1x1 map), got {last.kind} {last.name!r}")
    for k, layer in enumerate(layers):
        layer.trainable = layer.has_weights
        if k > 0 and layers[k - 1].out_shape != layer.in_shape and layer.kind != "fc":
            raise TfliteImportError(f"{path}: layer {k} ({layer.name!r}) input {layer.in_shape} does not match "
                                    f"the previous output {layers[k - 1].out_shape}")
    meta["tflite_logits_tensor"] = logits_tensor
    meta["tflite_output_tensor"] = cur
    # Both upstream models are fed q = pixel - 128 by their reference code (vww: exactly the
    # input quantization 1/255, -128; person_detect: the TFLM example's convention).
    meta["input_q"] = "pixel-128"
    classes = last.out_c
    return Model(layers=layers, classes=classes, input_scale=float(s_in[0]), input_zp=int(zp_in[0]),
                 name=name or os.path.splitext(os.path.basename(path))[0], meta=meta)


def _padding(where, opts, in_hw, k, stride, out_hw) -> tuple[int, int]:
    if not all(1 <= v <= _MAX_DIM for v in tuple(k) + tuple(stride)):
        raise TfliteImportError(f"{where}: kernel {tuple(k)} / stride {tuple(stride)} must be positive")
    pads = []
    for d in range(2):
        if opts.Padding() == tflite.Padding.SAME:
            pads.append(max((out_hw[d] - 1) * stride[d] + k[d] - in_hw[d], 0) // 2)
            expect = (in_hw[d] + stride[d] - 1) // stride[d]
        elif opts.Padding() == tflite.Padding.VALID:
            pads.append(0)
            expect = (in_hw[d] - k[d] + stride[d]) // stride[d]
        else:
            raise TfliteImportError(f"{where}: unknown padding {opts.Padding()}")
        if expect != out_hw[d]:
            raise TfliteImportError(f"{where}: output size {out_hw} inconsistent with input {in_hw}, "
                                    f"kernel {k}, stride {stride}")
    return tuple(pads)


def _activation(where, opts) -> str:
    a = opts.FusedActivationFunction()
    if a not in _ACTS:
        raise TfliteImportError(f"{where}: fused activation {_ACT_NAMES.get(a, a)} is not supported "
                                "(NONE, RELU, RELU6)")
    return _ACTS[a]


def _map_layer(g: _Graph, i: int, opname: str, op, ins, out, where, reference) -> Layer:
    x = ins[0]
    xs, os_ = g.shape(x), g.shape(out)
    s_x, z_x, _ = g.quant(x)
    s_o, z_o, _ = g.quant(out)
    if s_x.size != 1 or s_o.size != 1:
        raise TfliteImportError(f"{where}: activations must be quantized per tensor")
    if not (-128 <= z_x[0] <= 127 and -128 <= z_o[0] <= 127):
        raise TfliteImportError(f"{where}: activation zero points {int(z_x[0])}, {int(z_o[0])} are outside "
                                "the int8 range")
    if len(xs) < 2 or len(os_) < 2:
        raise TfliteImportError(f"{where}: input shape {xs} / output shape {os_} have no batch and feature axes")
    in_shape = tuple(xs[1:]) if len(xs) == 4 else (1, 1, int(np.prod(xs[1:])))
    out_shape = tuple(os_[1:]) if len(os_) == 4 else (1, 1, int(np.prod(os_[1:])))
    common = dict(in_shape=in_shape, out_shape=out_shape, in_scale=float(s_x[0]), in_zp=int(z_x[0]),
                  out_scale=float(s_o[0]), out_zp=int(z_o[0]), name=g.name(out)[:60] or f"op{i}")

    if opname == "AVERAGE_POOL_2D":
        o = g.options(op, tflite.Pool2DOptions, where)
        k = (o.FilterHeight(), o.FilterWidth())
        stride = (o.StrideH(), o.StrideW())
        if (common["in_scale"], common["in_zp"]) != (common["out_scale"], common["out_zp"]):
            raise TfliteImportError(f"{where}: input and output quantization differ; TFLite int8 average "
                                    "pooling requires them equal")
        pad = _padding(where, o, in_shape[:2], k, stride, out_shape[:2])
        layer = Layer("avgpool", kernel=k, stride=stride, pad=pad, act=_activation(where, o), **common)
        layer.w_scale = None
        _check_act(where, layer)
        return layer

    w_t = ins[1]
    b_t = ins[2] if len(ins) > 2 and ins[2] >= 0 else None
    if g.type(w_t) != "INT8":
        raise TfliteImportError(f"{where}: weights {g.name(w_t)!r} are {g.type(w_t)}, expected INT8")
    w = g.data(w_t, np.int8)
    s_w, z_w, qdim = g.quant(w_t)
    if np.any(z_w != 0):
        raise TfliteImportError(f"{where}: weights have non-zero zero points; only symmetric weights are supported")
    out_c = out_shape[2]
    if s_w.size not in (1, out_c):
        raise TfliteImportError(f"{where}: weights have {s_w.size} scales for {out_c} output channels")
    w_scale = np.broadcast_to(s_w.astype(np.float64), (out_c,)).copy()
    bias = None
    if b_t is not None:
        if g.type(b_t) != "INT32":
            raise TfliteImportError(f"{where}: bias {g.name(b_t)!r} is {g.type(b_t)}, expected INT32")
        bias = g.data(b_t, np.int32).reshape(-1).copy()
        if bias.size != out_c:
            raise TfliteImportError(f"{where}: bias has {bias.size} values for {out_c} channels")
    else:
        bias = np.zeros(out_c, np.int32)

    if opname == "FULLY_CONNECTED":
        o = g.options(op, tflite.FullyConnectedOptions, where)
        if o.WeightsFormat() != tflite.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise TfliteImportError(f"{where}: shuffled FULLY_CONNECTED weights are not supported")
        if w.ndim != 2 or w.shape != (out_c, int(np.prod(in_shape))):
            raise TfliteImportError(f"{where}: weights shape {w.shape} for input {in_shape} -> {out_c}")
        layer = Layer("fc", act=_activation(where, o), w_scale=w_scale, weights=w.copy(), bias=bias,
                      single_rounding=(reference == "litert"), **common)
        layer.in_shape = in_shape
        layer.out_shape = (1, 1, out_c)
        _check_act(where, layer)
        return layer

    if opname == "CONV_2D":
        o = g.options(op, tflite.Conv2DOptions, where)
        kind, weights = "conv", w
        if w.ndim != 4 or w.shape[0] != out_c or w.shape[3] != in_shape[2]:
            raise TfliteImportError(f"{where}: filter shape {w.shape} for input {in_shape} -> {out_shape}")
        if s_w.size > 1 and qdim != 0:
            raise TfliteImportError(f"{where}: per-channel weight scales on dimension {qdim}, expected 0")
        k = (w.shape[1], w.shape[2])
    else:  # DEPTHWISE_CONV_2D
        o = g.options(op, tflite.DepthwiseConv2DOptions, where)
        if w.ndim != 4 or w.shape[0] != 1 or w.shape[3] != out_c:
            raise TfliteImportError(f"{where}: depthwise filter shape {w.shape} for output {out_shape}")
        if s_w.size > 1 and qdim != 3:
            raise TfliteImportError(f"{where}: per-channel weight scales on dimension {qdim}, expected 3")
        k = (w.shape[1], w.shape[2])
        cin = in_shape[2]
        if cin == out_c:
            kind, weights = "dwconv", w[0]                        # (kh, kw, c)
        elif cin == 1:
            # One input channel: depthwise with multiplier out_c is an ordinary convolution.
            kind, weights = "conv", np.transpose(w, (3, 1, 2, 0))  # (out_c, kh, kw, 1)
        else:
            raise TfliteImportError(f"{where}: depth multiplier {out_c // max(cin, 1)} with {cin} input "
                                    "channels is not supported (only 1, or any with one input channel)")
    if o.DilationHFactor() != 1 or o.DilationWFactor() != 1:
        raise TfliteImportError(f"{where}: dilation {o.DilationHFactor()}x{o.DilationWFactor()} is not supported")
    stride = (o.StrideH(), o.StrideW())
    pad = _padding(where, o, in_shape[:2], k, stride, out_shape[:2])
    layer = Layer(kind, kernel=k, stride=stride, pad=pad, act=_activation(where, o), w_scale=w_scale,
                  weights=np.ascontiguousarray(weights), bias=bias, **common)
    _check_act(where, layer)
    return layer


def _check_act(where: str, layer: Layer) -> None:
    """host.model computes the clamp in double precision, TFLite in float32; they must agree."""
    want = _act_range_tflite(layer.act, layer.out_scale, layer.out_zp)
    if layer.act_range() != want:
        raise TfliteImportError(f"{where}: activation clamp {layer.act_range()} differs from TFLite's {want} "
                                f"(scale {layer.out_scale}); this rounding edge case is not supported")
