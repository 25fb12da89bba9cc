"""tinylls model files: the one binary a board loads, in place, and every host tool reads.

The format (byte layout, field rules, versioning) is specified in docs/modelfile.md. In short:
a 16-byte file header (magic "TLLS", version 1, body_len, CRC32 of the body), a 48-byte model
header, a table of 160-byte layer entries (LAYER_FIELDS below, in order), the tensor area that
the C core uses in place and training updates, and a host-only area (JSON, float64 scales) that
the C core never reads. This module writes (to_bytes, save, strip_host) and reads (read_header,
from_bytes, load) it; the C loaders are ccore/src/tl_modelfile.c (tl_modelfile_load,
tl_modelfile_load_rom). train_ram_bytes() is what a board keeping the file in flash copies to RAM.
"""
from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np

from host.model import Layer, Model, quantize_multiplier, quantize_multipliers
from host.train import rate_multipliers

MAGIC = b"TLLS"
VERSION = 2             # the newest format; to_bytes writes 1 for a model without adaptation data
VERSIONS_READ = (1, 2)  # version 2 = version 1 + per-layer adaptation reference statistics
FILE_HEADER_BYTES = 16
MODEL_HEADER_BYTES = 48
LAYER_TABLE_OFF = FILE_HEADER_BYTES + MODEL_HEADER_BYTES          # 64
LAYER_FIELDS = (
    "kind", "act", "flags", "in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w",
    "stride_h", "stride_w", "pad_top", "pad_left", "in_zp", "out_zp", "act_min", "act_max",
    "leaky_mult", "leaky_shift", "lr_mult", "lr_shift", "logit_mult", "logit_shift",
    "lls_m_lr_mult", "lls_m_lr_shift", "lls_m_len",
    "weights_off", "bias_off", "out_mult_off", "out_shift_off", "upd_mult_off", "upd_shift_off",
    "bupd_mult_off", "bupd_shift_off", "lls_m_off", "scales_off", "adapt_off", "reserved1",
)
LAYER_ENTRY_BYTES = 4 * len(LAYER_FIELDS)                           # 160
_UNSIGNED = {f for f in LAYER_FIELDS if f.endswith("_off")} | {"flags", "reserved1"}
KIND_CODES = {"conv": 1, "dwconv": 2, "fc": 3, "avgpool": 4}      # TL_LAYER_*
ACT_CODES = {"none": 0, "relu": 1, "relu6": 2, "leaky": 3}        # TL_ACT_*
FLAG_TRAINABLE = 1
FLAG_SINGLE_ROUNDING = 2
FLAG_ADAPT = 4          # version 2: the layer carries adaptation reference statistics (adapt_off)
TENSOR_SECTIONS = ("weights", "bias", "out_mult", "out_shift", "upd_mult", "upd_shift",
                   "bupd_mult", "bupd_shift", "lls_m")


class ModelFileError(ValueError):
    """A model file that is not valid; the message names the field and value."""


# ---------------------------------------------------------------------------------- derived quant


def _qm(real: float, what: str, notes: list[str]) -> tuple[int, int]:
    """quantize_multiplier, but a factor it cannot represent becomes (0, 0) and a note."""
    try:
        return quantize_multiplier(float(real))
    except ValueError as exc:
        notes.append(f"{what}: {exc}; stored as 0")
        return 0, 0


def derived_quant(layer: Layer, is_last: bool, notes: list[str] | None = None) -> dict:
    """Every integer the C core needs beyond the Layer's own ints: requantization, update and
    learning-rate multipliers. The same formulas host.core should use, so a model passed
    directly and one loaded from a file run identically."""
    notes = [] if notes is None else notes
    d: dict = {}
    where = f"layer {layer.name!r}"
    d["leaky_mult"], d["leaky_shift"] = _qm(layer.leaky_alpha, f"{where} leaky_alpha", notes)
    try:    # the learning rates as the core trains with them: host.train's one conversion
        rates = rate_multipliers(layer.lr, getattr(layer, "lls_m_lr", 0.0))
    except ValueError as exc:
        notes.append(f"{where} learning rates: {exc}; stored as 0")
        rates = (0, 0, 0, 0)
    d["lr_mult"], d["lr_shift"], d["lls_m_lr_mult"], d["lls_m_lr_shift"] = rates
    d["logit_mult"], d["logit_shift"] = (_qm(layer.out_scale, f"{where} logit scale", notes) if is_last else (0, 0))
    if layer.has_weights:
        d["out_mult"], d["out_shift"] = quantize_multipliers(layer.requant_real())
        aq = getattr(layer, "adapt_quant", None)      # host.adapt: the adapted integers, exactly
        if aq is not None:
            d["out_mult"], d["out_shift"] = (np.asarray(a, np.int32).copy() for a in aq)
        with np.errstate(divide="ignore", invalid="ignore"):
            upd, bupd = layer.update_reals(is_last)
        for name, reals in (("upd", upd), ("bupd", bupd)):
            lost: list[str] = []
            pairs = [_qm(r, f"{name}[{c}]", lost) for c, r in enumerate(np.ravel(reals))]
            if lost:    # typically dead channels (w_scale ~ 1e-9): one note per array, not per channel
                bad = [c for c, r in enumerate(np.ravel(reals)) if not (np.isfinite(r) and r < 2.0 ** 30)]
                notes.append(f"{where} {name}: {len(lost)} of {len(pairs)} channel factors too large for a "
                             f"quantized multiplier (channels {bad[:8]}{'...' if len(bad) > 8 else ''}); stored as 0")
            d[f"{name}_mult"] = np.array([p[0] for p in pairs], np.int32)
            d[f"{name}_shift"] = np.array([p[1] for p in pairs], np.int32)
    return d


def weights_count(kind: str, in_shape, out_shape, kernel) -> int:
    ih, iw, ic = in_shape
    oc = out_shape[2]
    kh, kw = kernel
    return {"conv": oc * kh * kw * ic, "dwconv": kh * kw * oc, "fc": oc * ih * iw * ic, "avgpool": 0}[kind]


# ---------------------------------------------------------------------------------- writing


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"model meta value {o!r} ({type(o).__name__}) cannot be stored in a model file")


def to_bytes(model: Model, notes: list[str] | None = None) -> bytes:
    """Serialise `model`. Factors too large for a quantized multiplier are stored as 0 and
    described in `notes` (also kept in the file's JSON)."""
    notes = [] if notes is None else notes
    n = len(model.layers)
    if n < 1:
        raise ModelFileError("model has no layers")
    table_end = LAYER_TABLE_OFF + n * LAYER_ENTRY_BYTES
    data = bytearray()                       # tensor area, starting at table_end
    host = bytearray()                       # f64 scale arrays
    entries = []
    layer_json = []

    def put(arr: np.ndarray, dtype: str) -> int:
        a = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<"))
        off = table_end + len(data)
        data.extend(a.tobytes())
        data.extend(b"\0" * (-len(data) % 4))
        return off

    for i, layer in enumerate(model.layers):
        is_last = i == n - 1
        if layer.kind not in KIND_CODES:
            raise ModelFileError(f"layer {i} ({layer.name!r}): kind {layer.kind!r} has no file code")
        q = derived_quant(layer, is_last, notes)
        lo, hi = layer.act_range()
        lls_m = getattr(layer, "lls_m", None)
        e = {
            "kind": KIND_CODES[layer.kind], "act": ACT_CODES[layer.act],
            "flags": (FLAG_TRAINABLE if layer.trainable and layer.has_weights else 0)
            | (FLAG_SINGLE_ROUNDING if getattr(layer, "single_rounding", False) else 0),
            "in_h": layer.in_shape[0], "in_w": layer.in_shape[1], "in_c": layer.in_shape[2],
            "out_h": layer.out_shape[0], "out_w": layer.out_shape[1], "out_c": layer.out_shape[2],
            "k_h": layer.kernel[0], "k_w": layer.kernel[1], "stride_h": layer.stride[0],
            "stride_w": layer.stride[1], "pad_top": layer.pad[0], "pad_left": layer.pad[1],
            "in_zp": layer.in_zp, "out_zp": layer.out_zp, "act_min": lo, "act_max": hi,
            "lls_m_len": 0 if lls_m is None else int(np.size(lls_m)),
        }
        for k in ("leaky_mult", "leaky_shift", "lr_mult", "lr_shift", "logit_mult", "logit_shift",
                  "lls_m_lr_mult", "lls_m_lr_shift"):
            e[k] = q[k]
        if layer.has_weights:
            want = weights_count(layer.kind, layer.in_shape, layer.out_shape, layer.kernel)
            w = np.asarray(layer.weights)
            if w.size != want:
                raise ModelFileError(f"layer {i} ({layer.name!r}): {w.size} weights, shape needs {want}")
            if layer.bias is None or np.size(layer.bias) != layer.out_c:
                raise ModelFileError(f"layer {i} ({layer.name!r}): bias must have out_c={layer.out_c} values")
            e["weights_off"] = put(w.reshape(-1), "i1")
            e["bias_off"] = put(np.asarray(layer.bias).reshape(-1), "i4")
            for k in ("out_mult", "out_shift", "upd_mult", "upd_shift", "bupd_mult", "bupd_shift"):
                e[f"{k}_off"] = put(q[k], "i4")
        if lls_m is not None:
            e["lls_m_off"] = put(np.asarray(lls_m).reshape(-1), "i4")
        ref = getattr(layer, "adapt_ref", None)
        if ref is not None:
            if not layer.has_weights or is_last:
                raise ModelFileError(f"layer {i} ({layer.name!r}): adaptation statistics on a {layer.kind} "
                                     f"{'last ' if is_last else ''}layer (only hidden conv, dwconv, fc layers adapt)")
            mean, std = (np.asarray(a).reshape(-1) for a in ref)
            if mean.size != layer.out_c or std.size != layer.out_c or (std < 0).any():
                raise ModelFileError(f"layer {i} ({layer.name!r}): adapt_ref must be (mean, std >= 0) of "
                                     f"out_c={layer.out_c} values each")
            e["adapt_off"] = put(np.concatenate([mean, std]), "i4")
            e["flags"] |= FLAG_ADAPT
        scales = [layer.in_scale, layer.out_scale]
        if layer.has_weights:
            if layer.w_scale is None or np.size(layer.w_scale) != layer.out_c:
                raise ModelFileError(f"layer {i} ({layer.name!r}): w_scale must have out_c={layer.out_c} values")
            scales += [float(v) for v in np.ravel(layer.w_scale)]
        e["scales_off"] = len(host)           # relative to the scale arrays for now; fixed below
        host.extend(np.asarray(scales, "<f8").tobytes())
        entries.append(e)
        layer_json.append({"name": layer.name, "lr": float(layer.lr), "leaky_alpha": float(layer.leaky_alpha),
                           "lls_m_lr": float(getattr(layer, "lls_m_lr", 0.0)),
                           "lls_m_shape": None if lls_m is None else list(np.shape(lls_m))})

    host_off = table_end + len(data)
    doc = {"format": "tinylls-model", "name": model.name, "input_scale": float(model.input_scale),
           "meta": model.meta, "layers": layer_json, "notes": notes}
    js = json.dumps(doc, default=_json_default, sort_keys=True).encode("utf-8")
    js_padded = js + b" " * (-(host_off + len(js)) % 8)
    for e in entries:
        e["scales_off"] += host_off + len(js_padded)
    host = bytearray(js_padded) + host

    h, w_, c = model.input_shape
    model_header = struct.pack("<6i6I", model.classes, h, w_, c, model.input_zp, n, LAYER_TABLE_OFF,
                               LAYER_ENTRY_BYTES, table_end, host_off, len(host), len(js))
    table = b"".join(
        b"".join(struct.pack("<I" if f in _UNSIGNED else "<i", int(e.get(f, 0))) for f in LAYER_FIELDS)
        for e in entries)
    body = model_header + table + bytes(data) + bytes(host)
    # files without adaptation data stay version 1, byte for byte what earlier builds wrote
    version = 2 if any(e.get("adapt_off") for e in entries) else 1
    return MAGIC + struct.pack("<III", version, len(body), zlib.crc32(body)) + body


def save(model: Model, path: str, notes: list[str] | None = None) -> int:
    """Write `model` to `path`; returns the file size."""
    blob = to_bytes(model, notes)
    with open(path, "wb") as f:
        f.write(blob)
    return len(blob)


# ---------------------------------------------------------------------------------- reading


def read_header(blob: bytes, where: str = "model file") -> dict:
    """Check the file header, CRC and model header; return the model header fields."""
    if len(blob) < 4:
        raise ModelFileError(f"{where}: truncated: {len(blob)} bytes, not even a magic number")
    if blob[:4] != MAGIC:
        raise ModelFileError(f"{where}: magic {blob[:4]!r} is not {MAGIC!r}: not a tinylls model file")
    if len(blob) < FILE_HEADER_BYTES:
        raise ModelFileError(f"{where}: truncated: {len(blob)} bytes < {FILE_HEADER_BYTES}-byte header")
    version, body_len, crc = struct.unpack_from("<III", blob, 4)
    if version not in VERSIONS_READ:
        raise ModelFileError(f"{where}: format version {version} unknown (this build reads "
                             f"{', '.join(map(str, VERSIONS_READ))})")
    if FILE_HEADER_BYTES + body_len > len(blob):
        raise ModelFileError(f"{where}: truncated: header says body_len={body_len}, "
                             f"file has {len(blob) - FILE_HEADER_BYTES} body bytes")
    body = blob[FILE_HEADER_BYTES: FILE_HEADER_BYTES + body_len]
    if zlib.crc32(body) != crc:
        raise ModelFileError(f"{where}: CRC32 mismatch: header 0x{crc:08x}, body 0x{zlib.crc32(body):08x}")
    if body_len < MODEL_HEADER_BYTES:
        raise ModelFileError(f"{where}: body_len={body_len} < model header ({MODEL_HEADER_BYTES})")
    f = struct.unpack_from("<6i6I", blob, FILE_HEADER_BYTES)
    hdr = dict(zip(("classes", "in_h", "in_w", "in_c", "input_zp", "n_layers", "layer_table_off",
                    "layer_entry_bytes", "data_off", "host_off", "host_len", "json_len"), f))
    hdr["file_len"] = FILE_HEADER_BYTES + body_len
    hdr["version"] = version
    n = hdr["n_layers"]
    if hdr["layer_table_off"] != LAYER_TABLE_OFF or hdr["layer_entry_bytes"] != LAYER_ENTRY_BYTES:
        raise ModelFileError(f"{where}: layer_table_off={hdr['layer_table_off']}, layer_entry_bytes="
                             f"{hdr['layer_entry_bytes']}; expected {LAYER_TABLE_OFF}, {LAYER_ENTRY_BYTES}")
    if not 1 <= n <= 64:
        raise ModelFileError(f"{where}: n_layers={n} outside 1..64")
    if hdr["data_off"] != LAYER_TABLE_OFF + n * LAYER_ENTRY_BYTES:
        raise ModelFileError(f"{where}: data_off={hdr['data_off']} does not follow the layer table")
    if not (hdr["data_off"] <= hdr["host_off"] and hdr["host_off"] + hdr["host_len"] == hdr["file_len"]):
        raise ModelFileError(f"{where}: host_off={hdr['host_off']}, host_len={hdr['host_len']} do not end the "
                             f"file ({hdr['file_len']} bytes)")
    if hdr["json_len"] > hdr["host_len"]:
        raise ModelFileError(f"{where}: json_len={hdr['json_len']} > host_len={hdr['host_len']}")
    return hdr


def host_json(blob: bytes, hdr: dict, where: str = "model file") -> dict:
    """The host-only JSON document of a checked file."""
    if hdr["json_len"] == 0:
        raise ModelFileError(f"{where}: the host-only area was stripped (a device blob from export-c); "
                             "host tools need the full model file")
    raw = blob[hdr["host_off"]: hdr["host_off"] + hdr["json_len"]]
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:       # UnicodeDecodeError is a ValueError
        raise ModelFileError(f"{where}: host-only JSON section unreadable ({exc})") from None


def layer_entries(blob: bytes, hdr: dict) -> list[dict]:
    out = []
    for i in range(hdr["n_layers"]):
        base = LAYER_TABLE_OFF + i * LAYER_ENTRY_BYTES
        vals = {}
        for j, f in enumerate(LAYER_FIELDS):
            vals[f] = struct.unpack_from("<I" if f in _UNSIGNED else "<i", blob, base + 4 * j)[0]
        out.append(vals)
    return out


def section(blob: bytes, hdr: dict, off: int, count: int, dtype: str, what: str) -> np.ndarray:
    """`count` values of `dtype` at `off`, checked to lie inside the tensor area."""
    size = np.dtype(dtype).itemsize * count
    lo, hi = hdr["data_off"], hdr["host_off"]
    if off % 4 or off < lo or off + size > hi:
        raise ModelFileError(f"{what}: section at offset {off} ({size} bytes) outside the tensor area "
                             f"[{lo}, {hi}) or not 4-byte aligned")
    return np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=off).astype(dtype)


# ---------------------------------------------------------------------------------- the C loader as the validator
#
# A model file is valid for a host tool exactly when the board's loader, tl_modelfile_load, accepts
# it: from_bytes runs that very C code (through cffi) on the bytes before building anything, so the
# host and a board can never disagree on what a valid file is. The C loader answers with a status
# code only; _first_problem re-reads the fields in the C loader's order to name the one that fails
# (the message's wording), while the decision stays with the C code.

C_MAX_DIM = 32768                      # MAX_DIM in tl_modelfile.c
C_MAX_TENSOR_ELEMS = 1 << 26           # MAX_TENSOR_ELEMS
C_MAX_CLASSES = 32                     # TL_MAX_CLASSES
C_MAX_FILE_BYTES = 0x7FFFFFFF          # the loader's size is an int32
_INT32_MAX = 0x7FFFFFFF


def c_loader_status(blob: bytes) -> int:
    """tl_modelfile_load's status for `blob` (0: TL_OK), run on a 4-byte aligned private copy (the
    loader parses in place; the caller's bytes are never touched)."""
    from host._tinylls import ffi, lib  # here: host.core imports this module
    if len(blob) > C_MAX_FILE_BYTES:
        return int(lib.TL_ERR_ARG)
    buf = ffi.new("uint32_t[]", max(1, (len(blob) + 3) // 4))
    ffi.memmove(buf, blob, len(blob))
    layers = ffi.new("tl_layer[]", lib.TL_MAX_LAYERS)
    out = ffi.new("tl_model *")
    return int(lib.tl_modelfile_load(ffi.cast("uint8_t *", buf), len(blob), layers, lib.TL_MAX_LAYERS, out))


def c_status_text(status: int) -> str:
    from host._tinylls import ffi, lib
    return f"{ffi.string(lib.tl_strerror(status)).decode()} (code {status})"


def _qmult_ok(mult: int, shift: int) -> bool:
    return (mult == 0 or mult >= 1 << 30) and -31 <= shift <= 30


def _window_problem(axis: str, inn: int, out: int, k: int, stride: int, pad: int) -> str | None:
    ks, ss, ps, os_ = f"k_{axis}", f"stride_{axis}", ("pad_top" if axis == "h" else "pad_left"), f"out_{axis}"
    if k < 1:
        return f"{ks}={k}: a kernel edge is at least 1"
    if stride < 1:
        return f"{ss}={stride}: a stride is at least 1"
    if not 0 <= pad < k:
        return f"{ps}={pad}: padding must be in 0..{ks}-1 ({k - 1})"
    if k > inn + pad:
        return f"{ks}={k}: larger than in_{axis}={inn} plus {ps}={pad}"
    if (out - 1) * stride - pad > inn - 1:
        return f"{os_}={out}: too many windows for in_{axis}={inn}, {ks}={k}, {ss}={stride}, {ps}={pad}"
    return None


def _section_problem(field: str, off: int, nbytes: int, size: int, cursor: dict, hi: int) -> str | None:
    """tl_modelfile.c's section_ok: a section of nbytes at off starts at or after cursor["next"]
    (the end of the previous section, in file order: no overlap), lies before hi and is 4-byte
    aligned; cursor["next"] then moves to its end."""
    lo = cursor["next"]
    if off < lo and lo > cursor["data_off"]:
        return (f"{field}={off}: starts before the end of the previous tensor section ({lo}): sections are laid "
                "out in file order without overlapping")
    if off < lo or off > hi or off % 4 or nbytes // size > (hi - off) // size:
        return f"{field}={off}: {nbytes} bytes not inside the tensor area [{lo}, {hi}) or not 4-byte aligned"
    cursor["next"] = off + nbytes
    return None


def _layer_problem(blob: bytes, hdr: dict, e: dict, classes: int, cursor: dict) -> str | None:
    """The first field of one layer entry that tl_modelfile_load's parse_layer refuses, or None.
    cursor["next"]: where the layer's first tensor section may start (moved past its sections)."""
    kinds = {v: k for k, v in KIND_CODES.items()}
    if e["kind"] not in kinds:
        return f"kind={e['kind']} unknown (known: {', '.join(f'{v} {k}' for k, v in KIND_CODES.items())})"
    if e["act"] not in ACT_CODES.values():
        return f"act={e['act']} unknown (known: {', '.join(f'{v} {k}' for k, v in ACT_CODES.items())})"
    known = FLAG_TRAINABLE | FLAG_SINGLE_ROUNDING | (FLAG_ADAPT if hdr.get("version", 1) >= 2 else 0)
    if e["flags"] & ~known:
        return f"flags=0x{e['flags']:x}: unknown bits set (format version {hdr.get('version', 1)})"
    if bool(e["adapt_off"]) != bool(e["flags"] & FLAG_ADAPT):
        return (f"adapt_off={e['adapt_off']}: must be non-zero exactly when flags has FLAG_ADAPT (0x{FLAG_ADAPT:x}; "
                "format version 1: must be 0)")
    if e["reserved1"]:
        return f"reserved1={e['reserved1']}: must be 0"
    for f in ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c"):
        if not 1 <= e[f] <= C_MAX_DIM:
            return f"{f}={e[f]}: outside 1..{C_MAX_DIM}"
    kind = kinds[e["kind"]]
    in_n, out_n = e["in_h"] * e["in_w"] * e["in_c"], e["out_h"] * e["out_w"] * e["out_c"]
    if in_n > C_MAX_TENSOR_ELEMS:
        return f"in_h x in_w x in_c = {in_n} elements, more than {C_MAX_TENSOR_ELEMS}"
    if out_n > C_MAX_TENSOR_ELEMS:
        return f"out_h x out_w x out_c = {out_n} elements, more than {C_MAX_TENSOR_ELEMS}"
    for axis, inn, out, k, stride, pad in (
            ("h", e["in_h"], e["out_h"], e["k_h"], e["stride_h"], e["pad_top"]),
            ("w", e["in_w"], e["out_w"], e["k_w"], e["stride_w"], e["pad_left"])):
        problem = _window_problem(axis, inn, out, k, stride, pad)
        if problem:
            return problem
    if kind == "fc":
        for f, want in (("out_h", 1), ("out_w", 1), ("k_h", 1), ("k_w", 1), ("stride_h", 1), ("stride_w", 1),
                        ("pad_top", 0), ("pad_left", 0)):
            if e[f] != want:
                return f"{f}={e[f]}: an fc layer has {f} {want}"
    elif kind in ("dwconv", "avgpool") and e["in_c"] != e["out_c"]:
        return f"out_c={e['out_c']}: a {kind} layer keeps in_c={e['in_c']}"
    n_weights = weights_count(kind, (e["in_h"], e["in_w"], e["in_c"]), (e["out_h"], e["out_w"], e["out_c"]),
                              (e["k_h"], e["k_w"]))
    if n_weights > C_MAX_TENSOR_ELEMS:
        return f"{n_weights} weights, more than {C_MAX_TENSOR_ELEMS}"
    taps = {"conv": e["k_h"] * e["k_w"] * e["in_c"], "dwconv": e["k_h"] * e["k_w"], "fc": in_n,
            "avgpool": e["k_h"] * e["k_w"]}[kind]
    max_acc = taps * (128 if kind == "avgpool" else 255 * 128)
    if max_acc > _INT32_MAX:
        return f"{taps} taps per output: the int32 accumulator could overflow"
    for f in ("in_zp", "out_zp"):
        if not -128 <= e[f] <= 127:
            return f"{f}={e[f]}: outside -128..127"
    if not -128 <= e["act_min"] <= e["act_max"] <= 127:
        return f"act_min={e['act_min']}, act_max={e['act_max']}: not -128 <= act_min <= act_max <= 127"
    if kind == "avgpool" and e["in_zp"] != e["out_zp"]:
        return f"out_zp={e['out_zp']}: an avgpool layer keeps in_zp={e['in_zp']}"
    for m in ("leaky", "lr", "logit", "lls_m_lr"):
        if not _qmult_ok(e[f"{m}_mult"], e[f"{m}_shift"]):
            return (f"{m}_mult={e[f'{m}_mult']}, {m}_shift={e[f'{m}_shift']}: not a quantized multiplier "
                    "(mult 0 or in [2^30, 2^31), shift in -31..30)")
    hi = hdr["host_off"]
    offs = [f"{s}_off" for s in TENSOR_SECTIONS[:8]]
    if kind == "avgpool":
        for f in offs:
            if e[f]:
                return f"{f}={e[f]}: an avgpool layer has no tensors (must be 0)"
    else:
        for f, count, size in zip(offs, [n_weights] + [e["out_c"]] * 7, [1] + [4] * 7):
            problem = _section_problem(f, e[f], count * size, size, cursor, hi)
            if problem:
                return problem
        for m in ("out", "upd", "bupd"):
            mults = np.frombuffer(blob, "<i4", e["out_c"], e[f"{m}_mult_off"])
            shifts = np.frombuffer(blob, "<i4", e["out_c"], e[f"{m}_shift_off"])
            for c, (mult, shift) in enumerate(zip(mults.tolist(), shifts.tolist())):
                if not _qmult_ok(mult, shift):
                    return f"{m}_mult[{c}]={mult}, {m}_shift[{c}]={shift}: not a quantized multiplier"
        bias = np.frombuffer(blob, "<i4", e["out_c"], e["bias_off"]).astype(np.int64)
        bound = _INT32_MAX - max_acc
        bad = np.flatnonzero(np.abs(bias) > bound)
        if bad.size:
            c = int(bad[0])
            return f"bias[{c}]={int(bias[c])}: |bias| + the largest accumulator must fit in int32 (|bias| <= {bound})"
    if e["lls_m_len"] == 0:
        if e["lls_m_off"]:
            return f"lls_m_off={e['lls_m_off']}: must be 0 when lls_m_len is 0"
    else:
        if e["lls_m_len"] not in (classes, classes * classes):
            return f"lls_m_len={e['lls_m_len']}: neither classes={classes} nor classes^2"
        problem = _section_problem("lls_m_off", e["lls_m_off"], 4 * e["lls_m_len"], 4, cursor, hi)
        if problem:
            return problem
    if e["flags"] & FLAG_ADAPT:
        if kind == "avgpool":
            return "flags: FLAG_ADAPT on an avgpool layer"
        problem = _section_problem("adapt_off", e["adapt_off"], 8 * e["out_c"], 4, cursor, hi)
        if problem:
            return problem
        std = np.frombuffer(blob, "<i4", e["out_c"], e["adapt_off"] + 4 * e["out_c"])
        if (std < 0).any():
            c = int(np.flatnonzero(std < 0)[0])
            return f"adapt std[{c}]={int(std[c])}: negative"
    return None


def _first_problem(blob: bytes, hdr: dict, entries: list[dict]) -> str | None:
    """The first field tl_modelfile_load refuses (after the header checks of read_header), named as
    '<field>=<value>: <rule>' (with 'layer i' for a table entry), or None when none of these checks
    fails (the refusal then comes from tl_model_prepare: see the status)."""
    if not 1 <= hdr["classes"] <= C_MAX_CLASSES:
        return f"classes={hdr['classes']}: outside 1..{C_MAX_CLASSES}"
    if not -128 <= hdr["input_zp"] <= 127:
        return f"input_zp={hdr['input_zp']}: outside -128..127"
    prev = {"out_h": hdr["in_h"], "out_w": hdr["in_w"], "out_c": hdr["in_c"], "out_zp": hdr["input_zp"]}
    src, lls_len = "the model input (in_h, in_w, in_c)", None
    cursor = {"data_off": hdr["data_off"], "next": hdr["data_off"]}
    for i, e in enumerate(entries):
        problem = _layer_problem(blob, hdr, e, hdr["classes"], cursor)
        if problem:
            return f"layer {i}: {problem}"
        for f in ("h", "w", "c"):
            if e[f"in_{f}"] != prev[f"out_{f}"]:
                return (f"layer {i}: in_{f}={e[f'in_{f}']}: does not match {src} "
                        f"({prev['out_h']}, {prev['out_w']}, {prev['out_c']})")
        if e["in_zp"] != prev["out_zp"]:
            what = "input_zp" if i == 0 else f"layer {i - 1}'s out_zp"
            return f"layer {i}: in_zp={e['in_zp']}: does not match {what}={prev['out_zp']}"
        if e["lls_m_len"]:
            if lls_len is not None and e["lls_m_len"] != lls_len:
                return f"layer {i}: lls_m_len={e['lls_m_len']}: another layer has {lls_len} (one LLS variant per model)"
            lls_len = e["lls_m_len"]
        prev, src = e, f"layer {i}'s output"
    last = entries[-1]
    if last["out_c"] != hdr["classes"]:
        return f"layer {len(entries) - 1}: out_c={last['out_c']}: the last layer must give classes={hdr['classes']}"
    if last["kind"] == KIND_CODES["avgpool"]:
        return f"layer {len(entries) - 1}: kind={last['kind']}: the last layer cannot be an avgpool"
    if last["flags"] & FLAG_ADAPT:
        return f"layer {len(entries) - 1}: flags=0x{last['flags']:x}: the last layer is never adapted (FLAG_ADAPT)"
    for i, e in enumerate(entries):
        problem = _prepare_problem(e, is_last=i == len(entries) - 1)
        if problem:
            return f"layer {i}: {problem}"
    return None


C_MAX_CHANNELS = 4096       # tl_model.c check_layer
C_MAX_EDGE = 4096           # axis_ok: spatial edges of conv, dwconv and avgpool layers
C_MAX_KERNEL = 64           # axis_ok: kernel edge and stride


def _prepare_problem(e: dict, is_last: bool) -> str | None:
    """What tl_model_prepare (run by the loader once the file parsed) refuses in one layer, named."""
    for f in ("in_c", "out_c"):
        if e[f] > C_MAX_CHANNELS:
            return f"{f}={e[f]}: more than the core's {C_MAX_CHANNELS} channels"
    kind = {v: k for k, v in KIND_CODES.items()}[e["kind"]]
    if kind != "fc":
        for f in ("in_h", "in_w", "out_h", "out_w"):
            if e[f] > C_MAX_EDGE:
                return f"{f}={e[f]}: more than the core's {C_MAX_EDGE} for a {kind} layer"
        for f in ("k_h", "k_w", "stride_h", "stride_w"):
            if e[f] > C_MAX_KERNEL:
                return f"{f}={e[f]}: more than the core's {C_MAX_KERNEL}"
    trainable = bool(e["flags"] & FLAG_TRAINABLE)
    if kind == "avgpool" and trainable:
        return f"flags=0x{e['flags']:x}: an avgpool layer has nothing to train"
    if kind != "avgpool" and trainable and is_last and e["out_h"] * e["out_w"] != 1:
        return (f"out_h={e['out_h']}, out_w={e['out_w']}: a trainable last layer gives one value per class "
                "(1 x 1 x classes)")
    return None


def check_with_c_loader(blob: bytes, hdr: dict, where: str = "model file") -> None:
    """Raise ModelFileError unless tl_modelfile_load accepts `blob`; the message names the field."""
    status = c_loader_status(blob)
    if status == 0:
        return
    problem = _first_problem(blob, hdr, layer_entries(blob, hdr)) or "the model as a whole"
    raise ModelFileError(f"{where}: {problem} (the C loader refuses it: {c_status_text(status)})")


def check_device(blob: bytes, where: str = "model file") -> dict:
    """The model header of a file a board can load (read_header, then tl_modelfile_load itself);
    ModelFileError naming `where` and the field otherwise. The host-only area is not needed."""
    hdr = read_header(blob, where)
    check_with_c_loader(blob, hdr, where)
    return hdr


# ---------------------------------------------------------------------------------- the host-only area


def _number(value, what: str, *, positive: bool = False) -> float:
    """`value` as a finite float (JSON numbers only; bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelFileError(f"{what}={value!r}: not a number")
    try:
        x = float(value)
    except OverflowError:
        raise ModelFileError(f"{what}={value!r}: too large") from None
    if not np.isfinite(x) or (positive and not x > 0.0) or x < 0.0:
        raise ModelFileError(f"{what}={value!r}: not a finite {'positive' if positive else 'non-negative'} number")
    return x


def _multiplier(value, what: str) -> float:
    """A factor the core stores as a quantized multiplier: finite, >= 0, below 2^30."""
    x = _number(value, what)
    try:
        quantize_multiplier(x)
    except ValueError as exc:
        raise ModelFileError(f"{what}={value!r}: {exc}") from None
    return x


def _host_layer(lj, i: int, e: dict, classes: int, where: str) -> dict:
    """One layer's JSON record, checked: every key a Layer needs, with its type and range."""
    what = f"{where}: host JSON layers[{i}]"
    if not isinstance(lj, dict):
        raise ModelFileError(f"{what}: not an object ({type(lj).__name__})")
    for key in ("name", "lr", "leaky_alpha"):
        if key not in lj:
            raise ModelFileError(f"{what}: field {key!r} missing")
    if not isinstance(lj["name"], str):
        raise ModelFileError(f"{what}.name={lj['name']!r}: not a string")
    out = {"name": lj["name"], "lr": _multiplier(lj["lr"], f"{what}.lr"),
           "leaky_alpha": _multiplier(lj["leaky_alpha"], f"{what}.leaky_alpha"),
           "lls_m_lr": _multiplier(lj.get("lls_m_lr", 0.0), f"{what}.lls_m_lr")}
    shape = lj.get("lls_m_shape")
    if shape is not None and (
            not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= classes for d in shape)
            or math.prod(shape) != e["lls_m_len"]):
        raise ModelFileError(f"{what}.lls_m_shape={shape!r}: not a shape of lls_m_len={e['lls_m_len']} values")
    out["lls_m_shape"] = shape
    return out


def _scales(blob: bytes, hdr: dict, e: dict, n: int, what: str) -> np.ndarray:
    so = e["scales_off"]
    if so < hdr["host_off"] + hdr["json_len"] or so + 8 * n > hdr["file_len"]:
        raise ModelFileError(f"{what}: scales_off={so}: {n} float64 scales not inside the host area after the JSON "
                             f"[{hdr['host_off'] + hdr['json_len']}, {hdr['file_len']})")
    sc = np.frombuffer(blob, "<f8", count=n, offset=so).astype(np.float64)
    for j, name in ((0, "in_scale"), (1, "out_scale")):
        # not below 1e-300: 6 / out_scale (relu6's clamp, Layer.act_range) must stay a finite float
        if not (math.isfinite(sc[j]) and sc[j] >= 1e-300):
            raise ModelFileError(f"{what}: {name}={sc[j]!r} (at scales_off): not a finite scale of at least 1e-300")
    w = sc[2:]
    bad = np.flatnonzero(~(np.isfinite(w) & (w >= 0.0)))
    if bad.size:
        c = int(bad[0])
        raise ModelFileError(f"{what}: w_scale[{c}]={w[c]!r} (at scales_off): not a finite non-negative scale")
    if w.size:
        with np.errstate(over="ignore", invalid="ignore"):
            real = sc[0] * w / sc[1]
        bad = np.flatnonzero(~(np.isfinite(real) & (real < 2.0 ** 30)))
        if bad.size:
            c = int(bad[0])
            raise ModelFileError(f"{what}: w_scale[{c}]={w[c]!r}: requantization factor in_scale*w_scale/out_scale "
                                 f"= {real[c]!r} cannot be a quantized multiplier")
    return sc


def from_bytes(blob: bytes, where: str = "model file") -> Model:
    """Parse a model file into a Model. The file must be one tl_modelfile_load accepts (the C
    loader itself decides, see check_with_c_loader) and carry a well-formed host-only area. Any
    malformed input raises ModelFileError naming `where` and the field; nothing else escapes."""
    try:
        blob = bytes(blob)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{where}: not bytes ({exc})") from None
    if len(blob) > C_MAX_FILE_BYTES:
        raise ModelFileError(f"{where}: {len(blob)} bytes, more than a model file can have ({C_MAX_FILE_BYTES})")
    hdr = check_device(blob, where)
    entries = layer_entries(blob, hdr)
    doc = host_json(blob, hdr, where)
    if not isinstance(doc, dict):
        raise ModelFileError(f"{where}: host JSON is a {type(doc).__name__}, not an object")
    for key in ("name", "input_scale", "meta", "layers"):
        if key not in doc:
            raise ModelFileError(f"{where}: host JSON field {key!r} missing")
    if not isinstance(doc["name"], str):
        raise ModelFileError(f"{where}: host JSON name={doc['name']!r}: not a string")
    if not isinstance(doc["meta"], dict):
        raise ModelFileError(f"{where}: host JSON meta: a {type(doc['meta']).__name__}, not an object")
    input_scale = _number(doc["input_scale"], f"{where}: host JSON input_scale", positive=True)
    if not isinstance(doc["layers"], list) or len(doc["layers"]) != len(entries):
        n = len(doc["layers"]) if isinstance(doc["layers"], list) else type(doc["layers"]).__name__
        raise ModelFileError(f"{where}: host JSON layers: {n}, the layer table has {len(entries)} layers")
    kinds = {v: k for k, v in KIND_CODES.items()}
    acts = {v: k for k, v in ACT_CODES.items()}
    layers = []
    for i, (e, raw) in enumerate(zip(entries, doc["layers"])):
        lj = _host_layer(raw, i, e, hdr["classes"], where)
        what = f"{where}: layer {i} ({lj['name']!r})"
        kind = kinds[e["kind"]]                       # the C loader checked kind, act and every shape
        in_shape = (e["in_h"], e["in_w"], e["in_c"])
        out_shape = (e["out_h"], e["out_w"], e["out_c"])
        kernel = (e["k_h"], e["k_w"])
        sc = _scales(blob, hdr, e, 2 + (e["out_c"] if kind != "avgpool" else 0), what)
        layer = Layer(kind, in_shape, out_shape, kernel=kernel, stride=(e["stride_h"], e["stride_w"]),
                      pad=(e["pad_top"], e["pad_left"]), act=acts[e["act"]], in_scale=float(sc[0]),
                      in_zp=e["in_zp"], out_scale=float(sc[1]), out_zp=e["out_zp"],
                      leaky_alpha=lj["leaky_alpha"], trainable=bool(e["flags"] & FLAG_TRAINABLE),
                      lr=lj["lr"], name=lj["name"])
        layer.single_rounding = bool(e["flags"] & FLAG_SINGLE_ROUNDING)
        layer.lls_m_lr = lj["lls_m_lr"]
        if kind != "avgpool":
            nw = weights_count(kind, in_shape, out_shape, kernel)
            w = section(blob, hdr, e["weights_off"], nw, "i1", f"{what} weights")
            wshape = {"conv": (e["out_c"], e["k_h"], e["k_w"], e["in_c"]), "dwconv": (e["k_h"], e["k_w"], e["out_c"]),
                      "fc": (e["out_c"], e["in_h"] * e["in_w"] * e["in_c"])}[kind]
            layer.weights = w.reshape(wshape).copy()
            layer.bias = section(blob, hdr, e["bias_off"], e["out_c"], "i4", f"{what} bias").copy()
            layer.w_scale = sc[2:].copy()
        if e["lls_m_len"]:
            m = section(blob, hdr, e["lls_m_off"], e["lls_m_len"], "i4", f"{what} lls_m").copy()
            layer.lls_m = m.reshape(lj["lls_m_shape"] or (-1,))
        if kind != "avgpool":     # adapted multipliers (host.adapt) differ from the scales': keep them exactly
            fq = [section(blob, hdr, e[f"out_{w}_off"], e["out_c"], "i4", f"{what} out_{w}") for w in ("mult", "shift")]
            d = derived_quant(layer, i == len(entries) - 1, [])
            if not (np.array_equal(fq[0], d["out_mult"]) and np.array_equal(fq[1], d["out_shift"])):
                layer.adapt_quant = (fq[0].astype(np.int32), fq[1].astype(np.int32))
        if e["flags"] & FLAG_ADAPT:
            ref = section(blob, hdr, e["adapt_off"], 2 * e["out_c"], "i4", f"{what} adaptation statistics").copy()
            layer.adapt_ref = (ref[: e["out_c"]], ref[e["out_c"]:])
        layers.append(layer)
    return Model(layers=layers, classes=hdr["classes"], input_scale=input_scale,
                 input_zp=hdr["input_zp"], name=doc["name"], meta=doc["meta"])


MAX_MODEL_BYTES = 256 << 20    # a board's model is at most a few MB; the host JSON adds little


def read_model_file(path) -> bytes:
    """A model file's bytes, read the one bounded way (host.safeio: a regular file of at most
    MAX_MODEL_BYTES, checked before reading); errors are ModelFileError naming the file."""
    from host import safeio
    return safeio.read_bytes(path, MAX_MODEL_BYTES, "model file", error=ModelFileError)


def load(path: str) -> Model:
    return from_bytes(read_model_file(path), where=path)


def notes_of(blob: bytes) -> list[str]:
    """The notes (factors stored as 0) recorded in a model file's JSON."""
    return host_json(blob, read_header(blob)).get("notes", [])


def strip_host(blob: bytes) -> bytes:
    """The same model without its host-only area (JSON, float scales): what a board needs. The
    result is a valid model file for the C loader (host_len = json_len = 0, CRC recomputed);
    host tools cannot read it back into a Model (no scales)."""
    hdr = read_header(blob)
    body = bytearray(blob[FILE_HEADER_BYTES: hdr["host_off"]])
    struct.pack_into("<II", body, 56 - FILE_HEADER_BYTES, 0, 0)          # host_len, json_len
    for i in range(hdr["n_layers"]):                                       # scales_off -> 0
        struct.pack_into("<I", body, LAYER_TABLE_OFF - FILE_HEADER_BYTES + i * LAYER_ENTRY_BYTES
                         + 4 * LAYER_FIELDS.index("scales_off"), 0)
    body = bytes(body)
    return MAGIC + struct.pack("<III", hdr["version"], len(body), zlib.crc32(body)) + body


RATE_FIELDS = ("lr_mult", "lr_shift", "lls_m_lr_mult", "lls_m_lr_shift")


def device_identity(blob: bytes) -> bytes:
    """The model as a board knows it: `strip_host(blob)` with every layer's learning-rate words
    (RATE_FIELDS) set to 0. Learning rates are not part of a model's identity: the host sends them
    with SET_LR before every epoch. `export-c` compiles exactly this into flash, and
    host.protocol.Link.load_model recognises the model in flash by its (size, CRC32), so a file
    carrying any rates (the fine-tuning recipe's, a schedule's) is the flashed model."""
    dev = bytearray(strip_host(blob))
    n = struct.unpack_from("<i", dev, 36)[0]
    for i in range(n):
        for f in RATE_FIELDS:
            struct.pack_into("<i", dev, LAYER_TABLE_OFF + i * LAYER_ENTRY_BYTES + 4 * LAYER_FIELDS.index(f), 0)
    body = bytes(dev[FILE_HEADER_BYTES:])
    version = struct.unpack_from("<I", dev, 4)[0]
    return MAGIC + struct.pack("<III", version, len(body), zlib.crc32(body)) + body


def train_ram_bytes(blob: bytes) -> int:
    """RAM a board needs for this file's trainable tensors when the file itself stays in flash
    (tl_modelfile_load_rom): per trainable layer its weights rounded up to 4 bytes, its int32 bias
    and its lls_m. Frozen layers, quantized multipliers, the layer table and the host-only area
    stay in flash. An adapted layer (version 2, FLAG_ADAPT) also needs its bias (if frozen), out_mult
    and out_shift in RAM: adaptation rewrites them."""
    hdr = read_header(blob)
    kinds = {v: k for k, v in KIND_CODES.items()}
    total = 0
    for e in layer_entries(blob, hdr):
        kind = kinds.get(e["kind"], "?")
        if kind not in ("conv", "dwconv", "fc"):
            continue
        if e["flags"] & FLAG_TRAINABLE:
            nw = weights_count(kind, (e["in_h"], e["in_w"], e["in_c"]), (e["out_h"], e["out_w"], e["out_c"]),
                               (e["k_h"], e["k_w"]))
            total += (nw + 3) // 4 * 4 + 4 * e["out_c"] + 4 * e["lls_m_len"]
        if e["flags"] & FLAG_ADAPT:
            total += (0 if e["flags"] & FLAG_TRAINABLE else 4 * e["out_c"]) + 8 * e["out_c"]
    return total


def describe(blob: bytes) -> dict:
    """Sizes a firmware build cares about: file bytes, tensor bytes per section."""
    hdr = read_header(blob)
    sizes = {s: 0 for s in TENSOR_SECTIONS}
    for e in layer_entries(blob, hdr):
        kind = {v: k for k, v in KIND_CODES.items()}.get(e["kind"], "?")
        if kind in ("conv", "dwconv", "fc"):
            sizes["weights"] += weights_count(kind, (e["in_h"], e["in_w"], e["in_c"]),
                                              (e["out_h"], e["out_w"], e["out_c"]), (e["k_h"], e["k_w"]))
            for s in TENSOR_SECTIONS[1:8]:
                sizes[s] += 4 * e["out_c"]
        sizes["lls_m"] += 4 * e["lls_m_len"]
    return {"file_bytes": hdr["file_len"], "header_and_table_bytes": hdr["data_off"],
            "tensor_bytes": hdr["host_off"] - hdr["data_off"], "host_only_bytes": hdr["host_len"],
            "train_ram_bytes": train_ram_bytes(blob), "sections": sizes}

