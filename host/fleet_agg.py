"""Integer-correct federated averaging of tinylls models (the rule host.fleet's strategy uses).

A tinylls model's trainable tensors are int8 weights with a float scale per output channel
(Layer.w_scale[c]: real = w_scale[c] * q) and int32 biases with scale in_scale * w_scale[c]. The
average of N clients' models is taken where it means something, in the real domain:

    real_k[c, ...] = scale_k[c] * q_k[c, ...]                           (dequantize, client k)
    mean[c, ...]   = sum_k n_k real_k[c, ...] / sum_k n_k                (n_k: client k's samples)
    q[c, ...]      = clip(round_half_up(mean[c, ...] / scale[c]))        (requantize, global scale)

with the global model's scales, int8 weights clipped to [-128, 127] and biases to the int32 range.
The rounding is deterministic (no float noise decides a tie): when every client carries the global
model's scales - always so in tinylls, which trains codes and never rescales - the scales cancel
and the same rule is computed exactly in integers, q = floor((2 * sum_k n_k q_k + N) / (2 N)) with
N = sum_k n_k (int64 sums: no overflow for any realistic fleet). Clients with their own scales go
through float64 dequantization and the same round-half-up.

Flower's stock averaging does not do this (tests/test_fleet.py shows it on Flower 1.42):
- legacy flwr.server.strategy.aggregate.aggregate multiplies int8 arrays by the sample counts and
  sums them in int8: 100 and 101 average to -27.5 (overflow);
- legacy aggregate_inplace casts the weighting factor (e.g. 0.5) to the int8 array's dtype when it
  cannot cast safely: 0, so the "average" is all zeros;
- the message API's FedAvg (flwr.serverapp.strategy, aggregate_arrayrecords) multiplies by float
  factors and returns float64 arrays: the right mean of the codes here (shared scales), but not an
  int8 / int32 model; converting back with astype truncates toward zero (-1.5 -> -1, 100.5 -> 100)
  and nothing clips, and it ignores per-channel scales if clients' scales differ.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


@dataclass(frozen=True)
class TensorSpec:
    """How one federated tensor maps to reals: real = scale[channel] * q, channel along `axis`."""
    name: str
    dtype: str              # "int8" (weights) or "int32" (bias)
    shape: tuple
    axis: int               # the output-channel axis the scale runs along
    scale: np.ndarray       # (channels,) float64


def tensor_name(layer: int, what: str) -> str:
    return f"L{layer:02d}.{what}"


def weighted_layers(model) -> list[int]:
    return [i for i, L in enumerate(model.layers) if L.has_weights]


def federated_layers(model, last_k: int = 0) -> list[int]:
    """The weighted layers a fleet exchanges: all (last_k 0) or the last `last_k`."""
    w = weighted_layers(model)
    if last_k < 0 or last_k > len(w):
        raise ValueError(f"federate last {last_k} layers: the model has {len(w)} weighted layers")
    return w[-last_k:] if last_k else w


def channel_axis(kind: str) -> int:
    """Output-channel axis of a weight tensor: conv (out_c, kh, kw, in_c), fc (out_c, in_c): 0;
    dwconv (kh, kw, out_c): 2."""
    return 2 if kind == "dwconv" else 0


def specs(model, layers) -> list[TensorSpec]:
    out = []
    for i in layers:
        L = model.layers[i]
        s_w = np.asarray(L.w_scale, np.float64)
        out.append(TensorSpec(tensor_name(i, "w"), "int8", tuple(np.shape(L.weights)), channel_axis(L.kind), s_w))
        out.append(TensorSpec(tensor_name(i, "b"), "int32", (L.out_c,), 0, float(L.in_scale) * s_w))
    return out


def get_arrays(model, layers) -> dict[str, np.ndarray]:
    """Copies of the federated tensors of `model` (name -> int8 weights / int32 bias)."""
    out = {}
    for i in layers:
        L = model.layers[i]
        out[tensor_name(i, "w")] = np.array(L.weights, np.int8, copy=True)
        out[tensor_name(i, "b")] = np.array(L.bias, np.int32, copy=True)
    return out


def set_arrays(model, arrays: dict[str, np.ndarray]) -> None:
    """Write federated tensors into `model` in place (shapes and dtypes must match)."""
    for name, a in arrays.items():
        i, what = int(name[1:3]), name[4:]
        L = model.layers[i]
        dst = L.weights if what == "w" else L.bias
        a = np.asarray(a)
        if a.shape != dst.shape or a.dtype != dst.dtype:
            raise ValueError(f"{name}: got {a.dtype} {a.shape}, the model holds {dst.dtype} {dst.shape}")
        dst[...] = a


def payload_bytes(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def _bshape(spec: TensorSpec) -> tuple:
    shape = [1] * len(spec.shape)
    shape[spec.axis] = spec.shape[spec.axis]
    return tuple(shape)


def _limits(spec: TensorSpec) -> tuple[int, int]:
    return (-128, 127) if spec.dtype == "int8" else (INT32_MIN, INT32_MAX)


def round_half_up_div(num: np.ndarray, den: int) -> np.ndarray:
    """floor(num / den + 1/2) exactly, for int64 num and a positive integer den."""
    num = np.asarray(num, np.int64)
    return np.floor_divide(2 * num + den, 2 * den)


def aggregate(specs_: list[TensorSpec], clients: list[tuple[dict[str, np.ndarray], int]],
              client_scales: list[dict[str, np.ndarray] | None] | None = None) -> dict[str, np.ndarray]:
    """The sample-weighted average of the clients' tensors (see the module doc).

    clients: (name -> tensor, n_samples) per client; client_scales: per client None (the global
    scales, the integer path) or name -> that client's per-channel scales (float path)."""
    if not clients:
        raise ValueError("aggregate: no client results")
    counts = [int(n) for _, n in clients]
    if any(n < 0 for n in counts) or sum(counts) <= 0:
        raise ValueError(f"aggregate: sample counts must be >= 0 with a positive sum, got {counts}")
    total = sum(counts)
    client_scales = client_scales or [None] * len(clients)
    out = {}
    for spec in specs_:
        lo, hi = _limits(spec)
        tensors = [np.asarray(arrs[spec.name]) for arrs, _ in clients]
        for t in tensors:
            if t.shape != spec.shape:
                raise ValueError(f"{spec.name}: a client sent shape {t.shape}, expected {spec.shape}")
        own = [cs is not None and spec.name in cs for cs in client_scales]
        if not any(own):             # every client on the global scales: exact integers
            acc = np.zeros(spec.shape, np.int64)
            for t, n in zip(tensors, counts):
                acc += t.astype(np.int64) * n
            q = round_half_up_div(acc, total)
        else:                        # dequantize each with its scales, requantize with the global
            acc = np.zeros(spec.shape, np.float64)
            for t, n, cs, o in zip(tensors, counts, client_scales, own):
                s = np.asarray(cs[spec.name] if o else spec.scale, np.float64).reshape(_bshape(spec))
                acc += (n / total) * (s * t.astype(np.float64))
            q = np.floor(acc / spec.scale.reshape(_bshape(spec)) + 0.5)
        out[spec.name] = np.clip(q, lo, hi).astype(spec.dtype)
    return out


def float_reference(specs_: list[TensorSpec], clients, client_scales=None) -> dict[str, np.ndarray]:
    """The unrounded real-domain average, in units of the global scales (for tests)."""
    total = sum(int(n) for _, n in clients)
    client_scales = client_scales or [None] * len(clients)
    out = {}
    for spec in specs_:
        acc = np.zeros(spec.shape, np.float64)
        for (arrs, n), cs in zip(clients, client_scales):
            s = np.asarray(cs[spec.name] if cs is not None and spec.name in cs else spec.scale,
                           np.float64).reshape(_bshape(spec))
            acc += n * s * np.asarray(arrs[spec.name], np.float64)
        out[spec.name] = acc / total / spec.scale.reshape(_bshape(spec))
    return out
