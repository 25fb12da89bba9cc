"""Model files: lossless round trip, clear Python errors, the C loader's codes, and a fuzz loop.

The fuzz loop is a small C harness compiled here with -fsanitize=address,undefined (any report
aborts it and fails the test). It includes ccore/src/tl_modelfile.c to reach the static
parse_body, so every mutation is tried twice: through tl_modelfile_load (the CRC must catch it)
and with the CRC bypassed, as if a forger had fixed the CRC up (the field checks must catch it,
or the model must be valid: accepted small models are then prepared and run).

Coverage (printed by the harness; see FUZZ_SOURCE):
  small synthetic model (~3 KB): every truncation length, every single-bit flip through the full
    loader and again with the CRC bypassed (+ tl_model_infer on each accepted mutant);
  imported vww_96_int8 (~320 KB): every truncation length (bytes past the length poisoned for
    ASan); full-loader flips of every bit of the 64 header bytes and one bit of every 256-byte
    block (each costs a 2.5 ms whole-body CRC); CRC-bypassed flips of every bit of the headers,
    the layer table and the first/last 4 values of every quantized-multiplier array;
  both: boundary values (0, 1, -1, INT32_MIN/MAX, size +-4, ...) in every header/table word.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from shared_data import shared_path
from tools import missing, need

from host import int8_ref, modelfile
from host.model import Layer, Model

REPO = Path(__file__).resolve().parents[1]
VWW_TFLITE = ("datasets/mlperf-tiny-vww-models/benchmark/training/visual_wake_words/trained_models/"
              "vww_96_int8.tflite")




def small_model(seed: int = 0, lls: bool = True) -> Model:
    """A 5-layer MobileNet-shaped int8 model (8x8x3 -> 3 classes) with every feature the file
    stores: relu6, leaky, per-channel scales, LLS modulation, lr, names, meta, single rounding."""
    rng = np.random.default_rng(seed)

    def weighted(kind, ins, outs, k, stride, pad, act, s_in, zp_in, s_out, zp_out, name, wshape):
        oc = outs[2]
        layer = Layer(kind, ins, outs, kernel=k, stride=stride, pad=pad, act=act, in_scale=s_in, in_zp=zp_in,
                      out_scale=s_out, out_zp=zp_out, w_scale=rng.uniform(0.002, 0.02, oc),
                      weights=rng.integers(-127, 128, wshape).astype(np.int8),
                      bias=rng.integers(-2000, 2000, oc).astype(np.int32), lr=0.01 * (1 + rng.random()),
                      name=name)
        return layer

    L = [
        weighted("conv", (8, 8, 3), (4, 4, 8), (3, 3), (2, 2), (0, 0), "relu6", 1 / 255, -128, 6 / 255, -128,
                 "stem", (8, 3, 3, 3)),
        weighted("dwconv", (4, 4, 8), (4, 4, 8), (3, 3), (1, 1), (1, 1), "leaky", 6 / 255, -128, 0.05, -20,
                 "dw1", (3, 3, 8)),
        weighted("conv", (4, 4, 8), (4, 4, 16), (1, 1), (1, 1), (0, 0), "relu", 0.05, -20, 0.04, -128,
                 "pw1", (16, 1, 1, 8)),
        Layer("avgpool", (4, 4, 16), (1, 1, 16), kernel=(4, 4), stride=(4, 4), in_scale=0.04, in_zp=-128,
              out_scale=0.04, out_zp=-128, trainable=False, name="pool"),
        weighted("fc", (1, 1, 16), (1, 1, 3), (1, 1), (1, 1), (0, 0), "none", 0.04, -128, 0.1, 3, "head",
                 (3, 16)),
    ]
    L[1].leaky_alpha = 0.1
    L[4].single_rounding = True
    if lls:
        for layer in L[:3]:
            layer.lls_m = rng.integers(-(1 << 16), 1 << 17, 3).astype(np.int32)
            layer.lls_m_lr = 0.001
    return Model(L, classes=3, input_scale=1 / 255, input_zp=-128, name="small",
                 meta={"softmax": {"in_scale": 0.1, "in_zp": 3, "out_scale": 1 / 256, "out_zp": -128, "beta": 1.0},
                       "input_q": "pixel-128", "note": "test model"})


def assert_models_equal(a: Model, b: Model) -> None:
    assert (a.name, a.classes, a.input_scale, a.input_zp, a.meta) == (b.name, b.classes, b.input_scale, b.input_zp, b.meta)
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers):
        for f in ("kind", "in_shape", "out_shape", "kernel", "stride", "pad", "act", "in_scale", "in_zp",
                  "out_scale", "out_zp", "leaky_alpha", "lr", "name", "single_rounding", "lls_m_lr"):
            assert getattr(x, f) == getattr(y, f), f"layer {x.name!r} field {f}"
        assert bool(x.trainable and x.has_weights) == y.trainable
        for f in ("weights", "bias", "w_scale", "lls_m"):
            u, v = getattr(x, f), getattr(y, f)
            assert (u is None) == (v is None), f"layer {x.name!r} field {f}"
            if u is not None:
                assert np.array_equal(np.asarray(u), np.asarray(v)), f"layer {x.name!r} field {f}"


# ---------------------------------------------------------------------------------- Python side


def test_round_trip_small_is_lossless_and_stable():
    m = small_model()
    blob = modelfile.to_bytes(m)
    back = modelfile.from_bytes(blob)
    assert_models_equal(m, back)
    assert modelfile.to_bytes(back) == blob
    x = np.random.default_rng(1).integers(-128, 128, (4, 8, 8, 3)).astype(np.int8)
    assert np.array_equal(int8_ref.run_model(m, x), int8_ref.run_model(back, x))


def test_layout_header_fields():
    blob = modelfile.to_bytes(small_model())
    assert blob[:4] == b"TLLS"
    version, body_len, crc = np.frombuffer(blob[4:16], "<u4")
    # no adaptation statistics: version 1, as every earlier build wrote (version 2: tests/test_adapt.py)
    assert (version, body_len, crc) == (1, len(blob) - 16, zlib.crc32(blob[16:]))
    hdr = modelfile.read_header(blob)
    assert hdr["data_off"] == 64 + 5 * modelfile.LAYER_ENTRY_BYTES and modelfile.LAYER_ENTRY_BYTES == 160
    for e in modelfile.layer_entries(blob, hdr):
        for f in modelfile.LAYER_FIELDS:
            if f.endswith("_off") and e[f] and f != "scales_off":
                assert e[f] % 4 == 0 and hdr["data_off"] <= e[f] < hdr["host_off"], f


def test_derived_quant_matches_model_formulas():
    m = small_model()
    blob = modelfile.to_bytes(m)
    hdr = modelfile.read_header(blob)
    for layer, e in zip(m.layers, modelfile.layer_entries(blob, hdr)):
        if not layer.has_weights:
            continue
        mult = modelfile.section(blob, hdr, e["out_mult_off"], layer.out_c, "i4", "out_mult")
        want, _ = int8_ref.layer_quant(layer)
        assert np.array_equal(mult, want)
        assert (e["lr_mult"], e["lr_shift"]) == modelfile.quantize_multiplier(layer.lr)


def test_unrepresentable_update_factor_is_stored_as_zero_with_a_note():
    m = small_model()
    m.layers[0].w_scale = m.layers[0].w_scale.copy()
    m.layers[0].w_scale[2] = 1e-12           # a dead channel: 1 / (s_out s_in s_w) ~ 1e15
    notes: list[str] = []
    blob = modelfile.to_bytes(m, notes)
    assert any("stem" in n and "bupd" in n and "[2]" in n for n in notes), notes
    hdr = modelfile.read_header(blob)
    e = modelfile.layer_entries(blob, hdr)[0]
    bupd = modelfile.section(blob, hdr, e["bupd_mult_off"], 8, "i4", "bupd")
    assert bupd[2] == 0 and np.all(bupd[[0, 1, 3]] >= 1 << 30)
    assert modelfile.notes_of(blob) == notes


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:3], "truncated"),
    (lambda b: b"XLLS" + b[4:], "magic"),
    (lambda b: b[:4] + (7).to_bytes(4, "little") + b[8:], "version 7"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "CRC32 mismatch"),
])
def test_python_reader_names_the_problem(mutate, message):
    with pytest.raises(modelfile.ModelFileError, match=message):
        modelfile.from_bytes(mutate(modelfile.to_bytes(small_model())))


def test_stripped_device_blob_keeps_the_tensors():
    blob = modelfile.to_bytes(small_model())
    dev = modelfile.strip_host(blob)
    full, hdr = modelfile.read_header(blob), modelfile.read_header(dev)
    assert hdr["host_len"] == 0 and hdr["host_off"] == len(dev) == full["host_off"]
    assert dev[hdr["data_off"]:] == blob[full["data_off"]: full["host_off"]]       # tensors untouched
    for a, b in zip(modelfile.layer_entries(dev, hdr), modelfile.layer_entries(blob, full)):
        assert a["scales_off"] == 0 and {**a, "scales_off": 0} == {**b, "scales_off": 0}
    with pytest.raises(modelfile.ModelFileError, match="stripped"):
        modelfile.from_bytes(dev)


def test_round_trip_imported_vww():
    from host.tflite_import import import_tflite
    m = import_tflite(str(shared_path(VWW_TFLITE)))
    blob = modelfile.to_bytes(m)
    back = modelfile.from_bytes(blob)
    assert_models_equal(m, back)
    assert back.meta["softmax"]["out_scale"] == 1 / 256 and back.layers[-1].single_rounding
    x = np.random.default_rng(0).integers(-128, 128, (3, 96, 96, 3)).astype(np.int8)
    assert np.array_equal(int8_ref.run_model(m, x), int8_ref.run_model(back, x))


# ---------------------------------------------------------------------------------- C loader

def _lib():
    try:
        from host._tinylls import ffi, lib
    except ImportError as exc:
        missing(f"C core extension host._tinylls not built ({exc}); run `pip install -e .`")
    return ffi, lib


def c_load(blob: bytes, max_layers: int = 64, offset: int = 0):
    """tl_modelfile_load on a fresh 4-byte aligned copy (offset shifts it for the alignment case)."""
    ffi, lib = _lib()
    buf = ffi.new("uint32_t[]", (len(blob) + offset + 7) // 4)
    p = ffi.cast("uint8_t *", buf) + offset
    ffi.memmove(p, blob, len(blob))
    layers = ffi.new("tl_layer[]", 64)
    m = ffi.new("tl_model *")
    m.n_layers = -77                          # sentinel: an error must leave *out untouched
    s = lib.tl_modelfile_load(p, len(blob), layers, max_layers, m)
    return s, m, layers, buf


def test_c_loader_reads_the_file_in_place():
    ffi, lib = _lib()
    model = small_model()
    blob = modelfile.to_bytes(model)
    s, m, layers, buf = c_load(blob)
    assert s == lib.TL_OK
    assert (m.n_layers, m.classes, m.cfg.variant) == (5, 3, lib.TL_LLS_M)
    hdr = modelfile.read_header(blob)
    base = int(ffi.cast("uintptr_t", ffi.cast("uint8_t *", buf)))
    for i, (layer, e) in enumerate(zip(model.layers, modelfile.layer_entries(blob, hdr))):
        L = layers[i]
        assert (L.in_h, L.in_w, L.in_c, L.out_h, L.out_w, L.out_c) == layer.in_shape + layer.out_shape
        assert (L.act_min, L.act_max) == layer.act_range()
        assert L.single_rounding == int(layer.single_rounding)
        if layer.has_weights:
            # pointers into the blob: nothing copied
            assert int(ffi.cast("uintptr_t", L.weights)) - base == e["weights_off"]
            assert int(ffi.cast("uintptr_t", L.bias)) - base == e["bias_off"]
            mult, shift = int8_ref.layer_quant(layer)
            assert [L.out_mult[c] for c in range(layer.out_c)] == mult.tolist()
            assert [L.out_shift[c] for c in range(layer.out_c)] == shift.tolist()
            assert [L.weights[j] for j in range(4)] == np.asarray(layer.weights).reshape(-1)[:4].tolist()
        else:
            assert L.weights == ffi.NULL and L.trainable == 0
    assert layers[1].leaky_mult == modelfile.quantize_multiplier(0.1)[0]
    assert [layers[0].lls_m[c] for c in range(3)] == model.layers[0].lls_m.tolist()


def test_c_loader_training_config_is_the_simulations_default():
    """A loaded model trains like host.core.CModel / host.simulate with default options (tau =
    host.simulate.TAU): the board and the simulation agree before any SET_CONFIG."""
    from host.core import CModel
    from host.simulate import TAU
    ffi, lib = _lib()
    for lls, variant in ((True, "m"), (False, "plain")):
        model = small_model(lls=lls)
        s, m, layers, buf = c_load(modelfile.to_bytes(model))
        assert s == lib.TL_OK
        ref = CModel(model, variant=variant, tau=TAU)._m.cfg
        for f in ("basis", "variant", "rounding", "seed", "basis_seed", "inv_tau_q8"):
            assert getattr(m.cfg, f) == getattr(ref, f), f
    assert m.cfg.inv_tau_q8 == 512


def _patch(blob: bytes, off: int, value: int, fix_crc: bool = True) -> bytes:
    b = bytearray(blob)
    b[off: off + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
    if fix_crc:
        b[12:16] = zlib.crc32(bytes(b[16:])).to_bytes(4, "little")
    return bytes(b)


def test_c_loader_specific_error_codes():
    ffi, lib = _lib()
    blob = modelfile.to_bytes(small_model())
    entry = lambda i, f: 64 + i * 160 + 4 * modelfile.LAYER_FIELDS.index(f)  # noqa: E731
    cases = {
        "truncated": (blob[:-1], lib.TL_ERR_TRUNCATED),
        "tiny": (blob[:2], lib.TL_ERR_TRUNCATED),
        "magic": (b"TLLX" + blob[4:], lib.TL_ERR_MAGIC),
        "version": (_patch(blob, 4, 3, fix_crc=False), lib.TL_ERR_VERSION),
        "crc": (blob[:-1] + bytes([blob[-1] ^ 0x80]), lib.TL_ERR_CRC),
        "kind": (_patch(blob, entry(0, "kind"), 9), lib.TL_ERR_UNSUPPORTED),
        "act": (_patch(blob, entry(2, "act"), 7), lib.TL_ERR_UNSUPPORTED),
        # in_h, not in_c: a larger in_c also grows the weights into the next section (TL_ERR_MODEL)
        "shape chain": (_patch(blob, entry(2, "in_h"), modelfile.layer_entries(blob, modelfile.read_header(blob))[2]["in_h"] + 1),
                        lib.TL_ERR_SHAPE),
        "stride": (_patch(blob, entry(0, "stride_h"), 0), lib.TL_ERR_SHAPE),
        "pad": (_patch(blob, entry(1, "pad_top"), 3), lib.TL_ERR_SHAPE),
        "zero point": (_patch(blob, entry(2, "out_zp"), 200), lib.TL_ERR_QUANT),
        "act range": (_patch(blob, entry(2, "act_max"), 128), lib.TL_ERR_QUANT),
        "lr shift": (_patch(blob, entry(0, "lr_shift"), 31), lib.TL_ERR_QUANT),
        "weights off": (_patch(blob, entry(0, "weights_off"), len(blob) - 2), lib.TL_ERR_MODEL),
        "misaligned off": (_patch(blob, entry(0, "bias_off"), modelfile.read_header(blob)["data_off"] + 2),
                           lib.TL_ERR_MODEL),
        "n_layers": (_patch(blob, 36, 65), lib.TL_ERR_MODEL),
        "classes": (_patch(blob, 16, 0), lib.TL_ERR_MODEL),
        "flags": (_patch(blob, entry(0, "flags"), 0x100), lib.TL_ERR_MODEL),
        # tl_layer keeps these in bytes / halfwords: values whose low bits are valid must still fail
        "kind mod 256": (_patch(blob, entry(0, "kind"), 256 + 1), lib.TL_ERR_UNSUPPORTED),
        "act mod 256": (_patch(blob, entry(2, "act"), 256 + 1), lib.TL_ERR_UNSUPPORTED),
        "zero point mod 2^16": (_patch(blob, entry(2, "out_zp"), 65536 + 3), lib.TL_ERR_QUANT),
        "act_min mod 2^16": (_patch(blob, entry(2, "act_min"), -65536 - 128), lib.TL_ERR_QUANT),
        "lr shift mod 256": (_patch(blob, entry(0, "lr_shift"), 256 - 3), lib.TL_ERR_QUANT),
        "logit shift mod 256": (_patch(blob, entry(4, "logit_shift"), -256 + 2), lib.TL_ERR_QUANT),
    }
    hdr = modelfile.read_header(blob)
    e0 = modelfile.layer_entries(blob, hdr)[0]
    cases["out mult"] = (_patch(blob, e0["out_mult_off"], 12345), lib.TL_ERR_QUANT)
    # a bias that lets the int32 accumulator overflow for some input (found by the fuzz loop)
    cases["bias range"] = (_patch(blob, e0["bias_off"], -(1 << 31) + 1000), lib.TL_ERR_QUANT)
    # a trainable layer's bias placed over its own multipliers (training would rewrite them: found by
    # the libFuzzer target fuzz/fuzz_modelfile.c)
    cases["overlapping sections"] = (_patch(blob, entry(0, "bias_off"), e0["weights_off"]), lib.TL_ERR_MODEL)
    for name, (b, code) in cases.items():
        s, m, _, _ = c_load(b)
        assert s == code, f"{name}: got {s} ({ffi.string(lib.tl_strerror(s)).decode()}), want {code}"
        assert m.n_layers == -77, f"{name}: *out was written on error"
    assert c_load(blob, offset=2)[0] == lib.TL_ERR_ARG          # not 4-byte aligned
    assert c_load(blob, max_layers=4)[0] == lib.TL_ERR_ARG      # caller storage too small
    assert c_load(blob + b"\0" * 8)[0] == lib.TL_OK             # a padded flash region is fine


def test_c_loader_runs_the_imported_model_like_the_reference():
    ffi, lib = _lib()
    from host.tflite_import import import_tflite
    model = import_tflite(str(shared_path(VWW_TFLITE)))
    s, m, layers, buf = c_load(modelfile.to_bytes(model))
    assert s == lib.TL_OK
    ab = lib.tl_model_arena_bytes(m)
    arena = ffi.new("uint8_t[]", ab)
    ctx = ffi.new("tl_ctx *")
    ctx.buf, ctx.size = arena, ab
    res = ffi.new("tl_result *")
    x = np.random.default_rng(3).integers(-128, 128, (8, 96, 96, 3)).astype(np.int8)
    want = int8_ref.run_model(model, x)
    for i in range(len(x)):
        xi = np.ascontiguousarray(x[i])
        assert lib.tl_model_infer(m, ctx, ffi.cast("int8_t *", xi.ctypes.data), 0, res) == lib.TL_OK
        assert [res.logits[c] for c in range(2)] == want[i].tolist()


# ---------------------------------------------------------------------------------- fuzz

FUZZ_SOURCE = r"""/* Model-file fuzz harness (tests/test_modelfile.py): includes the loader to reach parse_body,
 * so mutations can also be checked as if their CRC had been fixed up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tl_modelfile.c" /* the loader itself: parse_body is static */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

static long counts[16];
static void tally(tl_status s) { counts[(s <= 0 && s >= -15) ? -s : 15]++; }

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 3) { fprintf(stderr, "usage: fuzz FILE MODE(small|big)\n"); return 2; }
    int full = strcmp(argv[2], "small") == 0;
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    fseek(f, 0, SEEK_END); long size = ftell(f); fseek(f, 0, SEEK_SET);
    uint32_t *orig32 = malloc(((size_t)size + 3) & ~3u), *work32 = malloc(((size_t)size + 3) & ~3u);
    uint8_t *orig = (uint8_t *)orig32, *work = (uint8_t *)work32;
    if (fread(orig, 1, (size_t)size, f) != (size_t)size) return 2;
    fclose(f);
    static tl_layer layers[TL_MAX_LAYERS];
    tl_model m;
    int bad = 0;
    clock_t t0 = clock();
    memcpy(work, orig, (size_t)size);
    tl_status s = tl_modelfile_load(work, (int32_t)size, layers, TL_MAX_LAYERS, &m);
    if (s != TL_OK) { printf("baseline load failed: %d\n", s); return 1; }
    uint32_t data_off = tl_get_u32(orig + MH_DATA_OFF), host_off = tl_get_u32(orig + MH_HOST_OFF);
    printf("baseline ok: %d layers, %ld bytes, table ends %u, tensors end %u\n", m.n_layers, size, data_off, host_off);
    /* the flash loader (tl_modelfile_load_rom) shares the checks; its RAM copy must fit the file */
    uint32_t *ram32 = malloc(((size_t)size + 3) & ~3u);
    int32_t ram_need = -1;
    s = tl_modelfile_load_rom(orig, (int32_t)size, (uint8_t *)ram32, (int32_t)size, &ram_need, layers, TL_MAX_LAYERS, &m);
    if (s != TL_OK || ram_need <= 0 || ram_need > size) { printf("baseline rom load failed: %d (%d)\n", s, ram_need); return 1; }

    /* 1. every truncation length; bytes past the length are poisoned (ASan reports any read). */
    long n_trunc = 0;
    for (long len = size - 1; len >= 0; len--) {
        POISON(work + len, 1);
        s = tl_modelfile_load(work, (int32_t)len, layers, TL_MAX_LAYERS, &m);
        tally(s); n_trunc++;
        if (s == TL_OK) { printf("truncation %ld accepted\n", len); bad = 1; }
        s = tl_modelfile_load_rom(work, (int32_t)len, (uint8_t *)ram32, ram_need, NULL, layers, TL_MAX_LAYERS, &m);
        if (s == TL_OK) { printf("rom truncation %ld accepted\n", len); bad = 1; }
    }
    UNPOISON(work, (size_t)size);
    printf("truncations: %ld cases, %.2fs\n", n_trunc, (double)(clock() - t0) / CLOCKS_PER_SEC);

    /* 2. single-bit flips through the full loader (CRC path): every bit of a small file; of a
     *    big one (each case recomputes the whole-body CRC, ~2.5 ms for 300 KB), every bit of the
     *    64 header bytes and one bit of every 256-byte block. */
    t0 = clock();
    long n_flip = 0;
    memcpy(work, orig, (size_t)size);
    for (long pos = 0; pos < size; pos++) {
        /* big file: every bit of the 64 header bytes, and one bit (varying) per 256-byte block */
        int in_set = full || pos < LAYER_TABLE_OFF || pos % 256 == 128;
        if (!in_set) continue;
        for (int b = 0; b < 8; b++) {
            if (!full && pos >= LAYER_TABLE_OFF && b != (int)((pos / 256) % 8)) continue;
            work[pos] ^= (uint8_t)(1u << b);
            s = tl_modelfile_load(work, (int32_t)size, layers, TL_MAX_LAYERS, &m);
            work[pos] ^= (uint8_t)(1u << b);
            tally(s); n_flip++;
            if (s == TL_OK) { printf("flip %ld.%d accepted\n", pos, b); bad = 1; }
        }
    }
    printf("crc-path flips: %ld cases, %.2fs\n", n_flip, (double)(clock() - t0) / CLOCKS_PER_SEC);

    /* 3. the same flips with the CRC bypassed (as if the CRC were fixed up): every bit of the
     *    headers, layer table and every quantized-multiplier array must give OK or a specific
     *    error, never a crash; accepted models are then prepared (and, small files, run). */
    t0 = clock();
    long n_raw = 0, n_raw_ok = 0;
    uint32_t lim = full ? (uint32_t)size : host_off;
    memcpy(work, orig, (size_t)size);   /* nothing below writes the blob; each flip is undone */
    for (uint32_t pos = 0; pos < lim; pos++) {
        if (!full && pos >= data_off) {
            /* big file: in the tensor area only the ends of the int32 quantized-multiplier
             * arrays (bias and weights are free-form: any value is valid) */
            int quant = 0;
            for (int32_t i = 0; i < m.n_layers && !quant; i++) {
                const uint8_t *e = orig + LAYER_TABLE_OFF + (uint32_t)i * LAYER_ENTRY_BYTES;
                uint32_t oc = (uint32_t)tl_get_i32(e + 4 * LF_OUT_C);
                for (int k = LF_OUT_MULT_OFF; k <= LF_BUPD_SHIFT_OFF; k++) {
                    uint32_t o = tl_get_u32(e + 4 * k);
                    /* first and last 4 values of each quantized-multiplier array */
                    if (o && ((pos >= o && pos < o + 16) || (pos + 16 >= o + 4 * oc && pos < o + 4 * oc))) {
                        quant = 1;
                        break;
                    }
                }
            }
            if (!quant) continue;
        }
        for (int b = 0; b < 8; b++) {
            work[pos] = (uint8_t)(orig[pos] ^ (1u << b));
            tl_model mm;
            s = parse_body(work, (uint32_t)size, layers, TL_MAX_LAYERS, &mm);
            if (s == TL_OK) {
                s = tl_model_prepare(&mm);
                if (s == TL_OK) n_raw_ok++;
                if (s == TL_OK && full) {
                    int32_t ab = tl_model_arena_bytes(&mm);
                    if (ab > 0) {
                        void *arena = malloc((size_t)ab);
                        tl_ctx ctx = {arena, ab};
                        int8_t *in = calloc((size_t)(layers[0].in_h * layers[0].in_w * layers[0].in_c), 1);
                        tl_result r;
                        (void)tl_model_infer(&mm, &ctx, in, 1, &r);
                        free(in); free(arena);
                    }
                }
            }
            tally(s); n_raw++;
        }
        work[pos] = orig[pos];
    }
    printf("crc-bypassed flips: %ld cases (%ld accepted), %.2fs\n", n_raw, n_raw_ok, (double)(clock() - t0) / CLOCKS_PER_SEC);

    /* 4. word-level values in headers and layer table, CRC bypassed: boundary values that
     *    exercise every overflow-safe range check. */
    t0 = clock();
    long n_word = 0;
    const uint32_t vals[] = {0u, 1u, 2u, 3u, 4u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu, 0xFFFFFFFCu,
                             (uint32_t)size, (uint32_t)size - 4u, (uint32_t)size + 4u, data_off, host_off,
                             32768u, 32769u, 65u, 0xFFFFFF80u, 0x40000000u};
    for (uint32_t pos = 16; pos + 4 <= data_off; pos += 4) {
        uint32_t old = tl_get_u32(orig + pos);
        for (size_t v = 0; v < sizeof vals / sizeof vals[0]; v++) {
            uint32_t cand[3] = {vals[v], old + 1u, old - 1u};
            for (int c = 0; c < (v == 0 ? 3 : 1); c++) {
                memcpy(work, orig, (size_t)size);
                work[pos] = (uint8_t)cand[c]; work[pos + 1] = (uint8_t)(cand[c] >> 8);
                work[pos + 2] = (uint8_t)(cand[c] >> 16); work[pos + 3] = (uint8_t)(cand[c] >> 24);
                tl_model mm;
                s = parse_body(work, (uint32_t)size, layers, TL_MAX_LAYERS, &mm);
                if (s == TL_OK) s = tl_model_prepare(&mm);
                tally(s); n_word++;
            }
        }
    }
    printf("word mutations: %ld cases, %.2fs\n", n_word, (double)(clock() - t0) / CLOCKS_PER_SEC);
    printf("status counts:");
    for (int i = 0; i < 16; i++) if (counts[i]) printf(" %d:%ld", -i, counts[i]);
    printf("\n");
    free(orig32); free(work32); free(ram32);
    return bad;
}
"""


@pytest.fixture(scope="module")
def fuzz_binary(tmp_path_factory) -> Path:
    cc = need("gcc", "gcc")
    d = tmp_path_factory.mktemp("fuzz")
    (d / "fuzz.c").write_text(FUZZ_SOURCE)
    srcs = [str(p) for p in sorted((REPO / "ccore" / "src").rglob("*.c")) if p.name != "tl_modelfile.c"]
    exe = d / "fuzz"
    cmd = [cc, "-std=c99", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           "-fno-omit-frame-pointer", f"-I{REPO / 'ccore' / 'include'}", f"-I{REPO / 'ccore' / 'src'}",
           str(d / "fuzz.c"), *srcs, "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"harness build failed:\n{' '.join(cmd)}\n{r.stderr[-4000:]}"
    return exe


def _run_fuzz(exe: Path, model_path: Path, mode: str) -> str:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    r = subprocess.run([str(exe), str(model_path), mode], capture_output=True, text=True, env=env, timeout=600)
    out = r.stdout + r.stderr
    sys.stdout.write(out)                     # coverage and timings show with pytest -s
    assert r.returncode == 0, f"fuzz harness failed (exit {r.returncode}):\n{out[-6000:]}"
    assert "runtime error" not in out and "AddressSanitizer" not in out, out[-6000:]
    return out


def test_fuzz_small_model_every_truncation_and_bit_flip(fuzz_binary, tmp_path):
    p = tmp_path / "small.tlm"
    modelfile.save(small_model(), str(p))
    out = _run_fuzz(fuzz_binary, p, "small")
    n = p.stat().st_size
    assert f"truncations: {n} cases" in out
    assert f"crc-path flips: {8 * n} cases" in out
    assert f"crc-bypassed flips: {8 * n} cases" in out


def test_fuzz_imported_vww_model(fuzz_binary, tmp_path):
    from host.tflite_import import import_tflite
    p = tmp_path / "vww.tlm"
    modelfile.save(import_tflite(str(shared_path(VWW_TFLITE))), str(p))
    out = _run_fuzz(fuzz_binary, p, "big")
    assert f"truncations: {p.stat().st_size} cases" in out


# ---------------------------------------------------------------------------------- model in flash

def _rom_load(ffi, lib, rom, size, ram, cap, layers, m):
    need = ffi.new("int32_t *")
    s = lib.tl_modelfile_load_rom(ffi.cast("uint8_t *", rom), size,
                                  ffi.cast("uint8_t *", ram) if ram is not None else ffi.NULL, cap, need,
                                  layers, 64, m)
    return s, need[0]


def test_rom_loader_copies_only_what_training_writes_and_trains_identically():
    """tl_modelfile_load_rom: the file stays read-only; weights, bias and lls_m of trainable layers
    (and nothing else) go to a RAM buffer of exactly host.modelfile.train_ram_bytes; training from
    there gives the bytes training the file in place gives."""
    ffi, lib = _lib()
    model = small_model(seed=2)
    model.layers[1].trainable = False                   # a frozen layer stays in flash, lls_m included
    blob = modelfile.strip_host(modelfile.to_bytes(model))
    rom = ffi.new("uint32_t[]", (len(blob) + 3) // 4)
    ffi.memmove(rom, blob, len(blob))
    layers, m = ffi.new("tl_layer[]", 64), ffi.new("tl_model *")
    m.n_layers = -77
    want = sum((L.weights.size + 3) // 4 * 4 + 4 * L.out_c + 4 * np.size(getattr(L, "lls_m", None) if getattr(L, "lls_m", None) is not None else [])
               for L in model.layers if L.trainable and L.has_weights)
    assert modelfile.train_ram_bytes(blob) == want < len(blob) // 2
    s, need = _rom_load(ffi, lib, rom, len(blob), None, 0, layers, m)  # a size query
    assert (s, need, m.n_layers) == (lib.TL_ERR_RAM, want, -77)
    assert "RAM" in ffi.string(lib.tl_strerror(s)).decode()
    ram = ffi.new("uint32_t[]", want // 4)
    assert _rom_load(ffi, lib, rom, len(blob), ram, want - 4, layers, m) == (lib.TL_ERR_RAM, want)
    assert _rom_load(ffi, lib, rom, len(blob) - 1, ram, want, layers, m)[0] == lib.TL_ERR_TRUNCATED
    assert _rom_load(ffi, lib, rom, len(blob), ram, want, layers, m) == (lib.TL_OK, want)
    lo_rom, lo_ram = int(ffi.cast("uintptr_t", rom)), int(ffi.cast("uintptr_t", ram))

    def where(p):
        a = int(ffi.cast("uintptr_t", p))
        return "ram" if lo_ram <= a < lo_ram + want else "rom" if lo_rom <= a < lo_rom + len(blob) else "?"

    for i, L in enumerate(model.layers):
        if not L.has_weights:
            continue
        c = layers[i]
        home = "ram" if L.trainable else "rom"
        assert [where(c.weights), where(c.bias)] == [home, home], i
        if getattr(L, "lls_m", None) is not None:
            assert where(c.lls_m) == home, i
        assert {where(c.out_mult), where(c.out_shift), where(c.upd_mult), where(c.bupd_shift)} == {"rom"}, i
    # train both ways on the same inputs: same stream bytes, and the flash copy never changes
    s, m2, layers2, _ = c_load(blob)
    assert s == lib.TL_OK
    ab = lib.tl_model_arena_bytes(m)
    arena = ffi.new("uint64_t[]", (ab + 7) // 8)
    ctx, res = ffi.new("tl_ctx *"), ffi.new("tl_result *")
    ctx.buf, ctx.size = arena, ab
    rng = np.random.default_rng(9)
    for k in range(4):
        x = np.ascontiguousarray(rng.integers(-128, 128, (8, 8, 3)).astype(np.int8))
        for mm in (m, m2):
            assert lib.tl_model_train_step(mm, ctx, ffi.cast("int8_t *", x.ctypes.data), k % 3, res) == lib.TL_OK
    crc1, crc2, n1, n2 = ffi.new("uint32_t *"), ffi.new("uint32_t *"), ffi.new("int32_t *"), ffi.new("int32_t *")
    for mm, crc, n in ((m, crc1, n1), (m2, crc2, n2)):
        lib.tl_proto_weights_crc(mm, crc)
        lib.tl_proto_weights_size(mm, n)
    assert (crc1[0], n1[0]) == (crc2[0], n2[0])
    assert bytes(ffi.buffer(rom, len(blob))) == blob                  # flash untouched
    before = bytes(ffi.buffer(ram, want))
    assert _rom_load(ffi, lib, rom, len(blob), ram, want, layers, m)[0] == lib.TL_OK
    assert bytes(ffi.buffer(ram, want)) != before                     # reloading restores the file's values
    assert lib.tl_proto_weights_crc(m, crc1) == lib.TL_OK and crc1[0] != crc2[0]
