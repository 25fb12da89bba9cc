"""A small valid full-int8 .tflite built from scratch with the `tflite` package's flatbuffer
builder (no TensorFlow, no reference data): input (1, 6, 6, 1) -> DEPTHWISE_CONV_2D with one
input channel (imported as conv) -> DEPTHWISE_CONV_2D stride 2 -> CONV_2D 1x1 ->
AVERAGE_POOL_2D -> RESHAPE -> FULLY_CONNECTED -> SOFTMAX. About 2 KB, so thousands of mutated
copies import in seconds."""
from __future__ import annotations

from importlib import import_module

import flatbuffers
import numpy as np
import tflite

# the generated modules (tflite's package namespace exports the classes of the same names)
(Buffer, Conv2DOptions, DepthwiseConv2DOptions, FullyConnectedOptions, Model, Operator, OperatorCode,
 Pool2DOptions, QuantizationParameters, SoftmaxOptions, SubGraph, Tensor) = (
    import_module(f"tflite.{n}") for n in (
        "Buffer", "Conv2DOptions", "DepthwiseConv2DOptions", "FullyConnectedOptions", "Model",
        "Operator", "OperatorCode", "Pool2DOptions", "QuantizationParameters", "SoftmaxOptions",
        "SubGraph", "Tensor"))

T = tflite.TensorType
P = tflite.Padding
A = tflite.ActivationFunctionType
OP = tflite.BuiltinOperator
BO = tflite.BuiltinOptions


def _vec(b, start, values, prepend):
    start(b, len(values))
    for v in reversed(values):
        prepend(v)
    return b.EndVector()


def build(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    b = flatbuffers.Builder(4096)
    buffers: list[bytes] = [b""]          # buffer 0: empty, by convention
    tensors: list[tuple] = []             # (name, shape, type, buffer, scales, zps, qdim)

    def tensor(name, shape, ttype, scales, zps, qdim=0, data: bytes | None = None) -> int:
        buf = 0
        if data is not None:
            buffers.append(data)
            buf = len(buffers) - 1
        tensors.append((name, shape, ttype, buf, scales, zps, qdim))
        return len(tensors) - 1

    def w8(shape):
        return rng.integers(-127, 128, shape).astype(np.int8).tobytes()

    def b32(n):
        return rng.integers(-300, 300, n).astype("<i4").tobytes()

    s_act = 1 / 32
    x = tensor("input", [1, 6, 6, 1], T.INT8, [1 / 255], [-128])
    w1 = tensor("dw1/w", [1, 3, 3, 4], T.INT8, [0.01, 0.02, 0.015, 0.01], [0] * 4, 3, w8((1, 3, 3, 4)))
    b1 = tensor("dw1/b", [4], T.INT32, [1e-4] * 4, [0] * 4, 0, b32(4))
    y1 = tensor("dw1/out", [1, 6, 6, 4], T.INT8, [s_act], [-128])
    w2 = tensor("dw2/w", [1, 3, 3, 4], T.INT8, [0.02] * 4, [0] * 4, 3, w8((1, 3, 3, 4)))
    b2 = tensor("dw2/b", [4], T.INT32, [6e-4] * 4, [0] * 4, 0, b32(4))
    y2 = tensor("dw2/out", [1, 3, 3, 4], T.INT8, [s_act], [-128])
    w3 = tensor("pw/w", [8, 1, 1, 4], T.INT8, [0.03] * 8, [0] * 8, 0, w8((8, 1, 1, 4)))
    b3 = tensor("pw/b", [8], T.INT32, [1e-3] * 8, [0] * 8, 0, b32(8))
    y3 = tensor("pw/out", [1, 3, 3, 8], T.INT8, [s_act], [-128])
    y4 = tensor("pool/out", [1, 1, 1, 8], T.INT8, [s_act], [-128])
    shp = tensor("reshape/shape", [2], T.INT32, [], [], 0, np.array([1, 8], "<i4").tobytes())
    y5 = tensor("reshape/out", [1, 8], T.INT8, [s_act], [-128])
    w6 = tensor("fc/w", [2, 8], T.INT8, [0.05], [0], 0, w8((2, 8)))
    b6 = tensor("fc/b", [2], T.INT32, [1.5e-3], [0], 0, b32(2))
    y6 = tensor("logits", [1, 2], T.INT8, [0.1], [3])
    y7 = tensor("probs", [1, 2], T.INT8, [1 / 256], [-128])

    codes = [OP.DEPTHWISE_CONV_2D, OP.CONV_2D, OP.AVERAGE_POOL_2D, OP.RESHAPE,
             OP.FULLY_CONNECTED, OP.SOFTMAX]

    def dw_opts(stride, act):
        DepthwiseConv2DOptions.Start(b)
        DepthwiseConv2DOptions.AddPadding(b, P.SAME)
        DepthwiseConv2DOptions.AddStrideW(b, stride)
        DepthwiseConv2DOptions.AddStrideH(b, stride)
        DepthwiseConv2DOptions.AddDepthMultiplier(b, 4 if stride == 1 else 1)
        DepthwiseConv2DOptions.AddFusedActivationFunction(b, act)
        DepthwiseConv2DOptions.AddDilationWFactor(b, 1)
        DepthwiseConv2DOptions.AddDilationHFactor(b, 1)
        return BO.DepthwiseConv2DOptions, DepthwiseConv2DOptions.End(b)

    def conv_opts():
        Conv2DOptions.Start(b)
        Conv2DOptions.AddPadding(b, P.VALID)
        Conv2DOptions.AddStrideW(b, 1)
        Conv2DOptions.AddStrideH(b, 1)
        Conv2DOptions.AddFusedActivationFunction(b, A.RELU)
        Conv2DOptions.AddDilationWFactor(b, 1)
        Conv2DOptions.AddDilationHFactor(b, 1)
        return BO.Conv2DOptions, Conv2DOptions.End(b)

    def pool_opts():
        Pool2DOptions.Start(b)
        Pool2DOptions.AddPadding(b, P.VALID)
        Pool2DOptions.AddStrideW(b, 1)
        Pool2DOptions.AddStrideH(b, 1)
        Pool2DOptions.AddFilterWidth(b, 3)
        Pool2DOptions.AddFilterHeight(b, 3)
        return BO.Pool2DOptions, Pool2DOptions.End(b)

    def fc_opts():
        FullyConnectedOptions.Start(b)
        FullyConnectedOptions.AddFusedActivationFunction(b, A.NONE)
        return BO.FullyConnectedOptions, FullyConnectedOptions.End(b)

    def sm_opts():
        SoftmaxOptions.Start(b)
        SoftmaxOptions.AddBeta(b, 1.0)
        return BO.SoftmaxOptions, SoftmaxOptions.End(b)

    ops = [(0, [x, w1, b1], [y1], dw_opts(1, A.RELU6)),
           (0, [y1, w2, b2], [y2], dw_opts(2, A.RELU)),
           (1, [y2, w3, b3], [y3], conv_opts()),
           (2, [y3], [y4], pool_opts()),
           (3, [y4, shp], [y5], None),
           (4, [y5, w6, b6], [y6], fc_opts()),
           (5, [y6], [y7], sm_opts())]

    # flatbuffers: children first
    op_offs = []
    for code, ins, outs, opts in ops:
        iv = _vec(b, Operator.StartInputsVector, ins, b.PrependInt32)
        ov = _vec(b, Operator.StartOutputsVector, outs, b.PrependInt32)
        Operator.Start(b)
        Operator.AddOpcodeIndex(b, code)
        Operator.AddInputs(b, iv)
        Operator.AddOutputs(b, ov)
        if opts is not None:
            Operator.AddBuiltinOptionsType(b, opts[0])
            Operator.AddBuiltinOptions(b, opts[1])
        op_offs.append(Operator.End(b))
    t_offs = []
    for name, shape, ttype, buf, scales, zps, qdim in tensors:
        nm = b.CreateString(name)
        sv = _vec(b, Tensor.StartShapeVector, shape, b.PrependInt32)
        q = None
        if scales:
            sc = _vec(b, QuantizationParameters.StartScaleVector, scales, b.PrependFloat32)
            zp = _vec(b, QuantizationParameters.StartZeroPointVector, zps, b.PrependInt64)
            QuantizationParameters.Start(b)
            QuantizationParameters.AddScale(b, sc)
            QuantizationParameters.AddZeroPoint(b, zp)
            QuantizationParameters.AddQuantizedDimension(b, qdim)
            q = QuantizationParameters.End(b)
        Tensor.Start(b)
        Tensor.AddShape(b, sv)
        Tensor.AddType(b, ttype)
        Tensor.AddBuffer(b, buf)
        Tensor.AddName(b, nm)
        if q is not None:
            Tensor.AddQuantization(b, q)
        t_offs.append(Tensor.End(b))
    tv = _vec(b, SubGraph.StartTensorsVector, t_offs, b.PrependUOffsetTRelative)
    ov = _vec(b, SubGraph.StartOperatorsVector, op_offs, b.PrependUOffsetTRelative)
    inv = _vec(b, SubGraph.StartInputsVector, [x], b.PrependInt32)
    outv = _vec(b, SubGraph.StartOutputsVector, [y7], b.PrependInt32)
    gname = b.CreateString("main")
    SubGraph.Start(b)
    SubGraph.AddTensors(b, tv)
    SubGraph.AddInputs(b, inv)
    SubGraph.AddOutputs(b, outv)
    SubGraph.AddOperators(b, ov)
    SubGraph.AddName(b, gname)
    sg = SubGraph.End(b)

    buf_offs = []
    for data in buffers:
        dv = b.CreateByteVector(data) if data else None
        Buffer.Start(b)
        if dv is not None:
            Buffer.AddData(b, dv)
        buf_offs.append(Buffer.End(b))
    oc_offs = []
    for code in codes:
        OperatorCode.Start(b)
        OperatorCode.AddDeprecatedBuiltinCode(b, min(int(code), 127))
        OperatorCode.AddBuiltinCode(b, int(code))
        OperatorCode.AddVersion(b, 1)
        oc_offs.append(OperatorCode.End(b))
    ocv = _vec(b, Model.StartOperatorCodesVector, oc_offs, b.PrependUOffsetTRelative)
    sgv = _vec(b, Model.StartSubgraphsVector, [sg], b.PrependUOffsetTRelative)
    bv = _vec(b, Model.StartBuffersVector, buf_offs, b.PrependUOffsetTRelative)
    desc = b.CreateString("tinylls test model")
    Model.Start(b)
    Model.AddVersion(b, 3)
    Model.AddOperatorCodes(b, ocv)
    Model.AddSubgraphs(b, sgv)
    Model.AddDescription(b, desc)
    Model.AddBuffers(b, bv)
    b.Finish(Model.End(b), file_identifier=b"TFL3")
    return bytes(b.Output())
