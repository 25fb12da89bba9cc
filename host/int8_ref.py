"""An independent numpy implementation of the int8 kernels, with TFLite reference semantics.

This is the oracle the C core is checked against (and which is itself checked against LiteRT's
reference kernels and the TFLite Micro interpreter, see tests/test_tflite_import.py). It follows
`tensorflow/lite/kernels/internal/reference/integer_ops/*.h` operation by operation, but is
vectorised: exact integer arithmetic in int64 numpy arrays, with the long sums of the
convolutions done as float64 matrix products (exact, see `_exact_matmul`).

Conventions (the same as ccore/include/tinylls_api.h):
  * tensors are NHWC; every kernel accepts one image (H, W, C) or a batch (N, H, W, C) and
    returns the same rank;
  * kernels take zero points, not TFLite's offsets (TFLite's input_offset = -in_zp);
  * a quantized multiplier (mult, shift) stands for mult * 2^(shift - 31); `mult`/`shift` are
    scalars (per tensor) or arrays of length out_c (per channel);
  * act_min/act_max is the fused-activation clamp in the output's quantized domain.

Accumulators are int32 in TFLite, where overflow is undefined behaviour; these kernels compute
in int64 and raise OverflowError instead of wrapping when a value leaves the int32 range, so an
out-of-contract test input is reported rather than silently compared.
"""
from __future__ import annotations

import math

import numpy as np

from host.model import Layer, Model, forward_in_batches, quantize_multiplier, quantize_multipliers

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

# ---------------------------------------------------------------------------------- fixed point


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def _check_int32(x: np.ndarray, what: str) -> np.ndarray:
    if x.size and (x.min() < INT32_MIN or x.max() > INT32_MAX):
        raise OverflowError(f"{what} leaves the int32 range ([{x.min()}, {x.max()}]); "
                            "TFLite's behaviour is undefined there")
    return x


def _trunc_div(a: np.ndarray, d: int) -> np.ndarray:
    """C integer division (rounds toward zero) for int64 arrays and a positive divisor."""
    q = np.abs(a) // d
    return np.where(a < 0, -q, q)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values: round(a * b / 2^31), ties
    away from zero via the +-2^30 nudge and C's truncating division; INT32_MIN * INT32_MIN
    saturates to INT32_MAX (the only product that overflows)."""
    a, b = _i64(a), _i64(b)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b                                  # |ab| <= 2^62: exact in int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _trunc_div(ab + nudge, 1 << 31)
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero (0 <= exponent <= 31)."""
    x, e = _i64(x), _i64(exponent)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def saturating_left_shift(x, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT with a positive exponent on int32 values."""
    x = _i64(x)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def multiply_by_quantized_multiplier(x, mult, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (double rounding): x * mult * 2^(shift - 31).

    left shift first (shift > 0), then the rounding doubling high multiply, then a rounding
    right shift (shift < 0). x, mult, shift broadcast against each other (mult/shift per channel
    on the last axis). A left shift that overflows int32 raises (TFLite: undefined)."""
    x, mult, shift = _i64(x), _i64(mult), _i64(shift)
    if np.any(shift > 30) or np.any(shift < -31):
        raise ValueError(f"multiply_by_quantized_multiplier: shift out of [-31, 30]: {shift}")
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = _check_int32(x << left, "x << left_shift in MultiplyByQuantizedMultiplier")
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, mult), right)


def multiply_by_quantized_multiplier_single(x, mult, shift) -> np.ndarray:
    """Single rounding: (x * mult + 2^(30 - shift)) >> (31 - shift), i.e. x * mult * 2^(shift-31)
    rounded half up. TFLite's TFLITE_SINGLE_ROUNDING and ruy's requantization; LiteRT's int8
    FULLY_CONNECTED (even with the BUILTIN_REF resolver) rounds this way."""
    x, mult, shift = _i64(x), _i64(mult), _i64(shift)
    if np.any(shift > 30) or np.any(shift < -31):
        raise ValueError(f"multiply_by_quantized_multiplier_single: shift out of [-31, 30]: {shift}")
    total = 31 - shift
    # |x * mult| < 2^62 for int32 x and mult < 2^31, so the int64 sum cannot overflow.
    out = (x * mult + (np.int64(1) << (total - 1))) >> total
    return _check_int32(out, "single-rounding requantization")


def _requantize_and_clamp(acc, mult, shift, out_zp, act_min, act_max, single_rounding=False) -> np.ndarray:
    """The fixed tail of every TFLite int8 conv/fc: requantize, add the output zero point, clamp."""
    mbqm = multiply_by_quantized_multiplier_single if single_rounding else multiply_by_quantized_multiplier
    out = mbqm(acc, mult, shift) + out_zp
    return np.clip(out, act_min, act_max).astype(np.int8)


# ---------------------------------------------------------------------------------- helpers


def _batched(x: np.ndarray) -> tuple[np.ndarray, bool]:
    x = np.asarray(x)
    if x.ndim == 3:
        return x[None], True
    if x.ndim != 4:
        raise ValueError(f"expected an (H, W, C) or (N, H, W, C) tensor, got shape {x.shape}")
    return x, False


def _unbatch(y: np.ndarray, single: bool) -> np.ndarray:
    return y[0] if single else y


def _pad_input(x: np.ndarray, in_zp: int, stride, pad_top_left, k, out_hw) -> np.ndarray:
    """x - in_zp as int64, with zeros around it wherever a filter tap falls outside the image:
    a zero tap contributes nothing, which is TFLite's "skip taps outside the image"."""
    n, h, w, c = x.shape
    (sh, sw), (pt, pl), (kh, kw), (oh, ow) = stride, pad_top_left, k, out_hw
    need_h = (oh - 1) * sh + kh                 # rows the windows touch, from -pad_top on
    need_w = (ow - 1) * sw + kw
    pb = max(need_h - pt - h, 0)
    pr = max(need_w - pl - w, 0)
    xs = x.astype(np.int64) - int(in_zp)
    return np.pad(xs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))


def _tap(xp: np.ndarray, ky: int, kx: int, stride, out_hw) -> np.ndarray:
    """The (N, OH, OW, C) slice of the padded input that filter tap (ky, kx) multiplies."""
    (sh, sw), (oh, ow) = stride, out_hw
    return xp[:, ky: ky + (oh - 1) * sh + 1: sh, kx: kx + (ow - 1) * sw + 1: sw, :]


def _exact_matmul(a: np.ndarray, b: np.ndarray, max_abs_a: int, max_abs_b: int) -> np.ndarray:
    """Integer a @ b via float64 BLAS. Exact while every partial sum stays below 2^53, which we
    check from the operand bounds (int8 activations minus a zero point: |a| <= 255; weights:
    |b| <= 128), so K up to ~2.7e11 taps."""
    k = a.shape[-1]
    if k * max_abs_a * max_abs_b >= (1 << 53):
        raise OverflowError(f"accumulation depth {k} too large for an exact float64 product")
    return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def out_size(in_size: int, k: int, stride: int, padding: str) -> int:
    """TFLite output size for padding 'same' or 'valid'."""
    if padding == "same":
        return (in_size + stride - 1) // stride
    if padding == "valid":
        return (in_size - k + stride) // stride
    raise ValueError(f"unknown padding {padding!r}")


def same_pad(in_size: int, k: int, stride: int, out: int) -> int:
    """Leading padding of TF 'SAME': total = max((out-1)*stride + k - in, 0), leading = total // 2."""
    return max((out - 1) * stride + k - in_size, 0) // 2


# ---------------------------------------------------------------------------------- kernels


def conv(x, in_zp, w, bias, mult, shift, out_zp, stride, pad_top_left, out_hw, act_min=-128, act_max=127,
         single_rounding=False):
    """TFLite int8 CONV_2D (reference_integer_ops::ConvPerChannel), dilation 1.

    x: int8 (H, W, Cin) or (N, H, W, Cin); w: int8 (Cout, KH, KW, Cin); bias: int32 (Cout) or
    None; mult/shift: (Cout) or scalars; stride, pad_top_left, out_hw: (h, w) pairs.
    single_rounding selects `multiply_by_quantized_multiplier_single` (default: TFLite's double
    rounding). Returns int8 (OH, OW, Cout) or (N, OH, OW, Cout)."""
    x, single = _batched(x)
    w = np.asarray(w, np.int8)
    cout, kh, kw, cin = w.shape
    if x.shape[3] != cin:
        raise ValueError(f"conv: input has {x.shape[3]} channels, filter expects {cin}")
    xp = _pad_input(x, in_zp, stride, pad_top_left, (kh, kw), out_hw)
    if kh == kw == 1:
        cols = _tap(xp, 0, 0, stride, out_hw)
    else:                                       # im2col in (ky, kx, c) order, the filter's order
        cols = np.concatenate([_tap(xp, ky, kx, stride, out_hw) for ky in range(kh) for kx in range(kw)], axis=3)
    acc = _exact_matmul(cols, w.reshape(cout, -1).T, 255, 128)
    if bias is not None:
        acc = acc + _i64(bias)
    _check_int32(acc, "conv accumulator")
    return _unbatch(_requantize_and_clamp(acc, mult, shift, out_zp, act_min, act_max, single_rounding), single)


def dwconv(x, in_zp, w, bias, mult, shift, out_zp, stride, pad_top_left, out_hw, act_min=-128, act_max=127,
           single_rounding=False):
    """TFLite int8 DEPTHWISE_CONV_2D (reference_integer_ops::DepthwiseConvPerChannel), depth
    multiplier 1, dilation 1. w: int8 (KH, KW, C). Other arguments as `conv`."""
    x, single = _batched(x)
    w = np.asarray(w, np.int8)
    kh, kw, c = w.shape
    if x.shape[3] != c:
        raise ValueError(f"dwconv: input has {x.shape[3]} channels, filter has {c}")
    xp = _pad_input(x, in_zp, stride, pad_top_left, (kh, kw), out_hw)
    w64 = w.astype(np.int64)
    acc = np.zeros((x.shape[0], out_hw[0], out_hw[1], c), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            acc += _tap(xp, ky, kx, stride, out_hw) * w64[ky, kx]
    if bias is not None:
        acc = acc + _i64(bias)
    _check_int32(acc, "dwconv accumulator")
    return _unbatch(_requantize_and_clamp(acc, mult, shift, out_zp, act_min, act_max, single_rounding), single)


def fc(x, in_zp, w, bias, mult, shift, out_zp, act_min=-128, act_max=127, single_rounding=False):
    """TFLite int8 FULLY_CONNECTED on the flattened input (per-tensor or per-channel quant).

    x: int8 (In,) or (N, In) (or any (N, ...) that flattens to In); w: int8 (Out, In);
    bias: int32 (Out) or None. single_rounding as in `conv` (LiteRT's FC uses it).
    Returns int8 (Out,) or (N, Out)."""
    x = np.asarray(x)
    w = np.asarray(w, np.int8)
    single = x.ndim == 1
    xs = x.reshape(1 if single else x.shape[0], -1).astype(np.int64) - int(in_zp)
    if xs.shape[1] != w.shape[1]:
        raise ValueError(f"fc: input has {xs.shape[1]} values, filter expects {w.shape[1]}")
    acc = _exact_matmul(xs, w.T, 255, 128)
    if bias is not None:
        acc = acc + _i64(bias)
    _check_int32(acc, "fc accumulator")
    out = _requantize_and_clamp(acc, mult, shift, out_zp, act_min, act_max, single_rounding)
    return out[0] if single else out


def avgpool(x, k, stride, pad_top_left, out_hw, act_min=-128, act_max=127):
    """TFLite int8 AVERAGE_POOL_2D (reference_integer_ops::AveragePool). Input and output share
    scale and zero point, so the raw int8 values are averaged: padded taps are left out of the
    count, the quotient is rounded half away from zero, then clamped."""
    x, single = _batched(x)
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (pt, pl), (oh, ow) = k, stride, pad_top_left, out_hw
    acc = np.zeros((n, oh, ow, c), np.int64)
    count = np.zeros((oh, ow), np.int64)
    xv = x.astype(np.int64)
    for oy in range(oh):
        y0 = oy * sh - pt
        ys, ye = max(y0, 0), min(y0 + kh, h)
        for ox in range(ow):
            x0 = ox * sw - pl
            xs, xe = max(x0, 0), min(x0 + kw, w)
            acc[:, oy, ox, :] = xv[:, ys:ye, xs:xe, :].sum(axis=(1, 2))
            count[oy, ox] = max(ye - ys, 0) * max(xe - xs, 0)
    if np.any(count == 0):
        raise ValueError("avgpool: a window lies entirely in the padding")
    cnt = count[None, :, :, None]
    # C: acc > 0 ? (acc + count/2) / count : (acc - count/2) / count, with truncating division.
    num = np.where(acc > 0, acc + cnt // 2, acc - cnt // 2)
    avg = np.where(num < 0, -((-num) // cnt), num // cnt)
    return _unbatch(np.clip(avg, act_min, act_max).astype(np.int8), single)


def clamp(x, act_min, act_max):
    """Standalone ReLU/ReLU6 in the quantized domain: a clamp."""
    return np.clip(np.asarray(x, np.int64), act_min, act_max).astype(np.int8)


def leaky_relu(x, in_zp, out_zp, id_mult, id_shift, alpha_mult, alpha_shift):
    """TFLite int8 LEAKY_RELU (reference_ops::QuantizeLeakyRelu): x - in_zp is requantized by the
    identity multiplier (s_in / s_out) where >= 0 and by the alpha one (alpha s_in / s_out)
    where < 0, then the output zero point is added and the result clamped to int8."""
    v = np.asarray(x, np.int64) - int(in_zp)
    pos = multiply_by_quantized_multiplier(v, id_mult, id_shift)
    neg = multiply_by_quantized_multiplier(v, alpha_mult, alpha_shift)
    return np.clip(np.where(v >= 0, pos, neg) + out_zp, -128, 127).astype(np.int8)


# ---------------------------------------------------------------------------------- softmax
# Two int8 softmaxes exist in the TensorFlow family and they round differently:
#   * TFLite Micro (and tflite's reference_ops::Softmax): gemmlowp fixed point, integer only.
#   * LiteRT's builtin SOFTMAX (also with the BUILTIN_REF resolver): a float32 exp lookup table.
# Both need output scale 1/256 and zero point -128.

_SCALED_DIFF_INTEGER_BITS = 5        # input differences as Q5.26
_ACCUMULATION_INTEGER_BITS = 12      # sum of exps as Q12.19


def softmax_params(in_scale: float, beta: float = 1.0) -> tuple[int, int, int]:
    """TFLite PreprocessSoftmaxScaling + CalculateInputRadius for int8 input:
    (input_multiplier, input_left_shift, diff_min)."""
    real = min(beta * in_scale * (1 << (31 - _SCALED_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
    if real <= 1.0:
        raise ValueError(f"softmax: input scale {in_scale} x beta {beta} too small for TFLite's int8 softmax")
    mult, left_shift = quantize_multiplier(real)
    max_input_rescaled = (1.0 * ((1 << _SCALED_DIFF_INTEGER_BITS) - 1)
                          * (1 << (31 - _SCALED_DIFF_INTEGER_BITS)) / (1 << left_shift))
    diff_min = -int(math.floor(max_input_rescaled))
    return mult, left_shift, diff_min


def _fx_mul(a, b):
    """gemmlowp FixedPoint multiply: the raw values' rounding doubling high multiply."""
    return saturating_rounding_doubling_high_mul(a, b)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """gemmlowp: exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor series around -1/8)."""
    constant_term = 1895147668                  # exp(-1/8) in Q0.31
    constant_1_over_3 = 715827883
    x = a + (1 << 28)                           # a + 1/8
    x2 = _fx_mul(x, x)
    x3 = _fx_mul(x2, x)
    x4 = _fx_mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(_fx_mul(x4_over_4 + x3, constant_1_over_3) + x2, 1)
    return constant_term + _fx_mul(constant_term, x + poly)


def exp_on_negative_values(a):
    """gemmlowp exp_on_negative_values for Q5.26 input (a <= 0), Q0.31 output."""
    frac_bits = 31 - _SCALED_DIFF_INTEGER_BITS
    one_quarter = 1 << (frac_bits - 2)
    a = _i64(a)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_left_shift(a_mod_quarter_minus_one_quarter, _SCALED_DIFF_INTEGER_BITS))
    remainder = a_mod_quarter_minus_one_quarter - a
    # exp(-2^e) for e = -2 .. 4 in Q0.31: multiply in the factor for every set bit of -a.
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):
        bit = np.int64(1) << (frac_bits + exponent)
        result = np.where((remainder & bit) != 0, _fx_mul(result, multiplier), result)
    return np.where(a == 0, INT32_MAX, result)


def _one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp: 1 / (1 + a) for a in [0, 1), Q0.31 in and out (Newton-Raphson, 3 steps in Q2.29)."""
    s = a + INT32_MAX                           # RoundingHalfSum(a, One), C semantics
    half_denominator = _trunc_div(s + np.where(s >= 0, 1, -1), 2)
    x = 1515870810 + _fx_mul(half_denominator, -1010580540)   # 48/17 - 32/17 d, Q2.29
    for _ in range(3):
        one_minus = (1 << 29) - _fx_mul(half_denominator, x)
        x = x + saturating_left_shift(_fx_mul(x, one_minus), 2)
    return saturating_left_shift(x, 1)          # ExactMulByPot<-1> then Rescale<0>


def _count_leading_zeros_u32(x: np.ndarray) -> np.ndarray:
    x = _i64(x) & 0xFFFFFFFF
    n = np.full(x.shape, 32, np.int64)
    for b in range(32):
        n = np.where((x >> b) & 1 != 0, 31 - b, n)
    return n


def softmax_tflm(logits, in_scale: float, beta: float = 1.0) -> np.ndarray:
    """TFLite Micro's int8 SOFTMAX (reference_ops::Softmax, gemmlowp fixed point) over the last
    axis. Output scale 1/256, zero point -128."""
    x = _i64(logits)
    mult, left_shift, diff_min = softmax_params(in_scale, beta)
    diff = x - x.max(axis=-1, keepdims=True)
    valid = diff >= diff_min
    rescaled = saturating_rounding_doubling_high_mul(np.where(valid, diff, 0) * (1 << left_shift), mult)
    exps = exp_on_negative_values(rescaled)
    acc_terms = rounding_divide_by_pot(exps, _ACCUMULATION_INTEGER_BITS)    # Rescale<12>
    sum_of_exps = np.where(valid, acc_terms, 0).sum(axis=-1, keepdims=True)
    headroom_plus_one = _count_leading_zeros_u32(sum_of_exps)
    num_bits_over_unit = _ACCUMULATION_INTEGER_BITS - headroom_plus_one
    shifted_sum_minus_one = ((sum_of_exps << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
    shifted_scale = _one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    unsat = rounding_divide_by_pot(_fx_mul(shifted_scale, exps), num_bits_over_unit + 31 - 8)
    out = np.clip(unsat - 128, -128, 127)
    return np.where(valid, out, -128).astype(np.int8)


def softmax_litert(logits, in_scale: float, beta: float = 1.0) -> np.ndarray:
    """LiteRT's builtin int8 SOFTMAX (optimized_ops::Softmax with PopulateSoftmaxLookupTable),
    the one the BUILTIN_REF resolver also runs: float32 exp table, float32 sum, round half away
    from zero. Emulated in float32; numpy's exp may differ from libm's expf by an ulp, which can
    only matter on an exact .5 rounding tie."""
    x = _i64(logits)
    scale = np.float32(-np.float32(in_scale) * np.float32(beta))
    table = np.exp(scale * np.arange(256, dtype=np.float32)).astype(np.float32)  # table[d] = exp(-s d)
    d = x.max(axis=-1, keepdims=True) - x
    e = table[d]
    sum_exp = np.zeros(x.shape[:-1] + (1,), np.float32)
    for j in range(x.shape[-1]):               # sequential float32 sum, as the C++ loop
        sum_exp = (sum_exp + e[..., j: j + 1]).astype(np.float32)
    inv = (np.float32(1.0) / (sum_exp * np.float32(1.0 / 256))).astype(np.float32)
    prob = (e * inv).astype(np.float32)
    rounded = np.sign(prob) * np.floor(np.abs(prob) + np.float32(0.5))   # std::round
    return np.clip(rounded.astype(np.int64) - 128, -128, 127).astype(np.int8)


# ---------------------------------------------------------------------------------- model


def layer_quant(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """(out_mult, out_shift) per output channel, the way TFLite's Prepare computes them:
    QuantizeMultiplier(s_in * s_w[c] / s_out) with `Layer.requant_real()`'s rounding."""
    return quantize_multipliers(layer.requant_real())


def leaky_quant(layer: Layer) -> tuple[int, int]:
    """TL_ACT_LEAKY slope as a quantized multiplier."""
    return quantize_multiplier(float(layer.leaky_alpha))


def run_layer(layer: Layer, x: np.ndarray) -> np.ndarray:
    """One tinylls layer on int8 (N, H, W, C) input -> int8 (N, OH, OW, OC)."""
    n = x.shape[0]
    oh, ow, oc = layer.out_shape
    lo, hi = layer.act_range()
    if layer.kind == "avgpool":
        return avgpool(x, layer.kernel, layer.stride, layer.pad, (oh, ow), lo, hi)
    mult, shift = layer_quant(layer)
    if layer.act == "leaky":
        return _run_leaky(layer, x, mult, shift, lo, hi)
    sr = bool(layer.single_rounding)
    if layer.kind == "conv":
        return conv(x, layer.in_zp, layer.weights, layer.bias, mult, shift, layer.out_zp,
                    layer.stride, layer.pad, (oh, ow), lo, hi, sr)
    if layer.kind == "dwconv":
        return dwconv(x, layer.in_zp, layer.weights, layer.bias, mult, shift, layer.out_zp,
                      layer.stride, layer.pad, (oh, ow), lo, hi, sr)
    if layer.kind == "fc":
        y = fc(x.reshape(n, -1), layer.in_zp, layer.weights, layer.bias, mult, shift, layer.out_zp, lo, hi, sr)
        return y.reshape(n, 1, 1, oc)
    raise ValueError(f"layer {layer.name!r}: unknown kind {layer.kind!r}")


def _run_leaky(layer: Layer, x, mult, shift, lo, hi):
    """Fused LeakyReLU (a tinylls activation; TFLite has LEAKY_RELU only as its own op), applied
    in the output domain as ccore/src/tl_model.c defines it: the layer is requantized and
    clamped as usual, then outputs below the zero point have (q - zp) scaled by the slope's
    quantized multiplier (double rounding), the zero point added back and the clamp reapplied."""
    lm, ls = leaky_quant(layer)
    oh, ow, oc = layer.out_shape
    acc = _accumulators(layer, x)
    y = _requantize_and_clamp(acc, mult, shift, layer.out_zp, lo, hi, layer.single_rounding).astype(np.int64)
    v = y - layer.out_zp
    scaled = np.clip(multiply_by_quantized_multiplier(v, lm, ls) + layer.out_zp, lo, hi)
    return np.where(v < 0, scaled, y).astype(np.int8).reshape(x.shape[0], oh, ow, oc)


def _accumulators(layer: Layer, x: np.ndarray) -> np.ndarray:
    """int64 accumulators (sum + bias) of a conv/dwconv/fc layer, (N, OH, OW, OC)."""
    n = x.shape[0]
    oh, ow, oc = layer.out_shape
    w = np.asarray(layer.weights, np.int8)
    if layer.kind == "fc":
        xs = x.reshape(n, -1).astype(np.int64) - layer.in_zp
        acc = _exact_matmul(xs, w.T, 255, 128).reshape(n, 1, 1, oc)
    else:
        k = layer.kernel
        xp = _pad_input(x, layer.in_zp, layer.stride, layer.pad, k, (oh, ow))
        if layer.kind == "conv":
            cols = np.concatenate([_tap(xp, ky, kx, layer.stride, (oh, ow))
                                   for ky in range(k[0]) for kx in range(k[1])], axis=3)
            acc = _exact_matmul(cols, w.reshape(oc, -1).T, 255, 128)
        else:
            acc = np.zeros((n, oh, ow, oc), np.int64)
            for ky in range(k[0]):
                for kx in range(k[1]):
                    acc += _tap(xp, ky, kx, layer.stride, (oh, ow)) * w[ky, kx].astype(np.int64)
    if layer.bias is not None:
        acc = acc + _i64(layer.bias)
    return _check_int32(acc, f"layer {layer.name!r} accumulator")


def run_model(model: Model, x_int8, *, batch: int = 32, return_all: bool = False):
    """The whole network on int8 input (H, W, C) or (N, H, W, C) -> int8 logits (classes,) or
    (N, classes), i.e. the last layer's output before any softmax. return_all=True returns the
    list of every layer's output instead (batched). Batches of `batch` images bound memory."""
    x = np.asarray(x_int8)
    single = x.ndim == 3
    xb = x[None] if single else x
    if xb.dtype != np.int8:
        raise ValueError(f"run_model: input must be int8, got {xb.dtype}")
    if tuple(xb.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"run_model: input shape {xb.shape[1:]} != model input {model.input_shape}")
    out = forward_in_batches(xb, model.layers, run_layer, batch=batch, return_all=return_all)
    return out[0] if single and not return_all else out


def apply_softmax(model: Model, logits, flavour: str = "litert") -> np.ndarray:
    """The imported model's final int8 SOFTMAX (recorded by host.tflite_import in
    model.meta['softmax']) applied to int8 logits. flavour: 'litert' or 'tflm'."""
    sm = model.meta.get("softmax")
    if not sm:
        raise ValueError(f"model {model.name!r} has no softmax recorded in meta")
    fn = {"litert": softmax_litert, "tflm": softmax_tflm}.get(flavour)
    if fn is None:
        raise ValueError(f"unknown softmax flavour {flavour!r} (known: litert, tflm)")
    return fn(logits, sm["in_scale"], sm.get("beta", 1.0))
