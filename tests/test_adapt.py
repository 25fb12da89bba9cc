"""Label-free camera adaptation (issue 16): ccore/src/tl_adapt.c through host/adapt.py.

The C statistics equal a numpy / Python-integer computation of the same accumulators; the
multiplier / bias update equals an independent Python integer implementation; an adapted layer's
accumulator statistics match the reference within rounding; the validation rule never picks
something worse than not adapting; on the real VWW data (shared folder) adaptation recovers the new
camera and the rule refuses it for the grey camera."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from test_firmware import tools  # noqa: F401  (the fixture of the emulated-board test, used by name)
from test_modelfile import small_model

from host import adapt
from host.core import CModel, TinyllsError, ffi, lib


def _inputs(model, n, seed, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, (n,) + tuple(model.input_shape)).astype(np.float64)
    px = np.clip(np.round(px * scale + offset), 0, 255)
    return (px - 128).astype(np.int8)              # the small model's input_q is pixel-128


def _frozen_small(seed=0):
    m = small_model(seed, lls=False)
    for L in m.layers:
        L.trainable = False
    return m


def test_c_statistics_equal_python_integers():
    m = _frozen_small()
    cm = CModel(m)
    xs = _inputs(m, 5, 1)
    for i, layer in enumerate(m.layers):
        if layer.has_weights:
            mean, std = adapt.layer_stats(cm, i, xs)
            pm, ps = adapt.py_stats(layer, xs)
            np.testing.assert_array_equal(mean, pm, err_msg=f"layer {i} mean")
            np.testing.assert_array_equal(std, ps, err_msg=f"layer {i} std")
            assert std.max() > 256                 # the statistics are not trivially zero
        xs = adapt.forward(cm, i, xs)


def test_python_accumulators_give_the_kernels_outputs():
    """The reference loop's accumulators, requantized, are the layer's int8 output (relu layers):
    the statistics are of the accumulator the kernels really compute."""
    from host.model import quantized_multiplier_value

    m = _frozen_small()
    cm = CModel(m)
    xs = _inputs(m, 2, 2)
    for i in (0, 2):                                 # stem (relu6) and pw1 (relu), conv kernels
        ins = xs if i == 0 else adapt.forward(cm, 1, adapt.forward(cm, 0, xs))
        out = adapt.forward(cm, i, ins)
        layer = m.layers[i]
        _, mult, shift = adapt.quant_arrays(cm, i)
        lo, hi = layer.act_range()
        for j in range(len(ins)):
            acc = adapt.py_accumulators(layer, ins[j])
            real = acc * np.array([quantized_multiplier_value(int(a), int(b)) for a, b in zip(mult, shift)])
            want = np.clip(np.round(real) + layer.out_zp, lo, hi)
            got = out[j].reshape(-1, layer.out_c).astype(np.int64)
            assert np.abs(got - want).max() <= 1     # the kernels round in fixed point


def test_stats_refuse_layers_without_weights_and_too_many_positions():
    m = _frozen_small()
    cm = CModel(m)
    assert lib.tl_adapt_stats_bytes(ffi.addressof(cm._layers, 3)) < 0          # avgpool
    Lp = ffi.addressof(cm._layers, 0)
    n = lib.tl_adapt_stats_bytes(Lp)
    assert n == lib.TL_ADAPT_STAT_BYTES * m.layers[0].out_c
    buf = np.zeros(n // 8, np.uint64)
    out = np.zeros(m.layers[0].out_c, np.int32)
    p = ffi.cast("int32_t *", out.ctypes.data)
    assert lib.tl_adapt_stats_finish(Lp, ffi.cast("void *", buf.ctypes.data), 1 << 30, p, p) == lib.TL_ERR_ARG


def test_apply_equals_independent_python_integers():
    m = _frozen_small()
    rng = np.random.default_rng(5)
    for i in (0, 1, 2, 4):
        cm = CModel(copy.deepcopy(m))
        layer = cm.model.layers[i]
        oc = layer.out_c
        bias, mult, shift = (a.copy() for a in adapt.quant_arrays(cm, i))
        ref_m = rng.integers(-50000, 50000, oc)
        new_m = rng.integers(-50000, 50000, oc)
        ref_s = rng.integers(0, 4000 * 256, oc)
        new_s = rng.integers(0, 4000 * 256, oc)
        ref_s[0], new_s[1] = 100, 255                 # below one LSB: g = 1
        ref_s[2], new_s[2] = 1 << 30, 1000            # clamped to 8
        want = adapt.py_apply(layer.kind, adapt.taps(layer), ref_m, ref_s, new_m, new_s, bias, mult, shift)
        adapt.apply_layer(cm, i, (ref_m, ref_s), (new_m, new_s))
        got = adapt.quant_arrays(cm, i)
        for name, w, g in zip(("bias", "mult", "shift"), want, got):
            np.testing.assert_array_equal(g, w, err_msg=f"layer {i} {name}")
        assert not np.array_equal(got[1], mult)      # it did change something


def test_apply_edge_multipliers_match_python():
    """mult 0 stays, a shift pushed out of [-31, 30] keeps g = 1, renormalisation at 2^31."""
    m = _frozen_small()
    cm = CModel(copy.deepcopy(m))
    i, oc = 2, m.layers[2].out_c
    bias, mult, shift = adapt.quant_arrays(cm, i)
    mult[:] = (1 << 31) - 1
    mult[0] = 0
    shift[:] = 0
    shift[1], shift[2] = 30, -31
    b0, m0, s0 = bias.copy(), mult.copy(), shift.copy()
    ref_s = np.full(oc, 8 * 256 * 1000 - 1)
    new_s = np.full(oc, 1000 * 256)
    ref_s[2], new_s[2] = 256, 2000 * 256               # g = 1/2000 -> clamped 1/8, shift -31 - 3
    zeros = np.zeros(oc, np.int64)
    want = adapt.py_apply("conv", adapt.taps(m.layers[i]), zeros, ref_s, zeros, new_s, b0, m0, s0)
    adapt.apply_layer(cm, i, (zeros, ref_s), (zeros, new_s))
    got = adapt.quant_arrays(cm, i)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)
    assert got[1][0] == 0 and got[2][1] == 30 and got[1][1] == m0[1]       # unrepresentable: g = 1
    assert got[2][2] == -31 and got[1][2] == m0[2]
    assert all((v == 0 or (1 << 30) <= v < (1 << 31)) for v in got[1])


def test_adapted_layer_matches_the_reference_statistics():
    """After tl_adapt_apply, g * accumulator has the reference mean and std on the same images."""
    m = _frozen_small()
    cm = CModel(copy.deepcopy(m))
    clean = _inputs(m, 6, 3)
    shifted = np.clip(np.round(clean.astype(np.float64) * 0.45 - 60), -128, 127).astype(np.int8)
    ref = adapt.reference_stats(cm, clean, 3)
    xs = shifted
    for i in range(3):
        layer = m.layers[i]
        new = adapt.layer_stats(cm, i, xs)
        _, mult0, shift0 = (a.copy() for a in adapt.quant_arrays(cm, i))
        adapt.apply_layer(cm, i, ref[i], new)
        after = adapt.layer_stats(cm, i, xs)
        _, mult1, shift1 = adapt.quant_arrays(cm, i)
        for c in range(layer.out_c):
            if mult0[c] == 0:
                continue
            g_exact = (mult1[c] * 2.0 ** shift1[c]) / (mult0[c] * 2.0 ** shift0[c])   # the gain applied
            gq = lib.tl_adapt_gain_q28(int(ref[i][1][c]), int(new[1][c])) / adapt.G_ONE
            assert abs(g_exact / gq - 1) < 2 ** -29
            if ref[i][1][c] < 256 or new[1][c] < 256 or not (1 / 8 <= gq < 8) or gq in (1 / 8, 8 - 2 ** -28):
                continue
            assert abs(gq * after[0][c] - ref[i][0][c]) <= 1 + gq, (i, c)          # mean: rounding only
            assert abs(gq * after[1][c] - ref[i][1][c]) <= 2 * gq + 1e-6 * ref[i][1][c], (i, c)  # std (Q8)
        xs = adapt.forward(cm, i, xs)


def test_rule_never_picks_worse_on_validation():
    m = _frozen_small()
    cm = CModel(copy.deepcopy(m))
    clean = _inputs(m, 8, 4)
    shifted = _inputs(m, 8, 5, 0.5, 20)
    val_x = _inputs(m, 40, 6, 0.5, 20)
    val_y = np.random.default_rng(7).integers(0, 3, 40)
    ref = adapt.reference_stats(cm, clean, 3)
    k, scores = adapt.choose(cm, ref, shifted, val_x, val_y, (1, 2, 3))
    assert set(scores) == {0, 1, 2, 3}
    assert scores[k] >= scores[0]
    assert adapt.accuracy(cm, val_x, val_y) == scores[k]        # cm is left as chosen
    if k == 0:
        assert np.array_equal(adapt.snapshot(cm), adapt.snapshot(CModel(copy.deepcopy(m))))


def test_sign_test_and_the_rule_refuse_a_gain_of_a_few_images(monkeypatch):
    from math import comb

    assert adapt.sign_test_p(0, 0) == 1.0
    assert adapt.sign_test_p(5, 0) == 1 / 32 and adapt.sign_test_p(2, 0) == 0.25
    assert adapt.sign_test_p(6, 1) == (comb(7, 6) + comb(7, 7)) / 128
    # scripted predictions: k = 1 fixes 2 images (noise: refused), k = 2 fixes 12 and breaks 1
    m = _frozen_small()
    cm = CModel(copy.deepcopy(m))
    y = np.zeros(40, np.int64)
    base = np.r_[np.zeros(20), np.ones(20)].astype(np.int64)          # 20 / 40 right
    k1, k2 = base.copy(), base.copy()
    k1[20:22] = 0
    k2[20:32] = 0
    k2[0] = 1
    seq = iter([base, k1, k2])
    monkeypatch.setattr(adapt, "predictions", lambda cm, x: next(seq))
    monkeypatch.setattr(adapt, "adapt", lambda *a, **k: None)
    k, scores = adapt.choose(cm, {}, None, np.zeros((40,) + tuple(m.input_shape), np.int8), y, (1, 2))
    assert scores == {0: 0.5, 1: 22 / 40, 2: 31 / 40} and k == 2
    seq = iter([base, k1])
    k, scores = adapt.choose(cm, {}, None, np.zeros((40,) + tuple(m.input_shape), np.int8), y, (1,))
    assert k == 0 and scores[1] > scores[0]                         # better on validation, not beyond chance


def test_adaptation_is_deterministic_and_leaves_int8_weights():
    m = _frozen_small()
    a, b = CModel(copy.deepcopy(m)), CModel(copy.deepcopy(m))
    clean, shifted = _inputs(m, 4, 8), _inputs(m, 4, 9, 0.6, 10)
    ref = adapt.reference_stats(a, clean, 3)
    w0 = [np.array(L.weights).copy() for L in a.model.layers if L.has_weights]
    adapt.adapt(a, ref, shifted, 3)
    adapt.adapt(b, adapt.reference_stats(b, clean, 3), shifted, 3)
    assert np.array_equal(adapt.snapshot(a), adapt.snapshot(b))
    for w, L in zip(w0, [L for L in a.model.layers if L.has_weights]):
        assert np.array_equal(w, L.weights)


def test_missing_reference_statistics_is_an_error():
    m = _frozen_small()
    cm = CModel(m)
    with pytest.raises(ValueError, match="layer 0"):
        adapt.adapt(cm, {}, _inputs(m, 2, 1), 1)
    with pytest.raises(TinyllsError):
        adapt.layer_stats(cm, 3, _inputs(m, 1, 1))      # avgpool has no accumulator


# ---------------------------------------------------------------------------- real data
VWW_MODEL = ("datasets/mlperf-tiny-vww-models/benchmark/training/visual_wake_words/trained_models/"
             "vww_96_int8.tflite")


@pytest.fixture(scope="module")
def vww():
    from shared_data import shared_path

    from host import datasets
    from host.evaluate import load_model

    model = load_model(str(shared_path(VWW_MODEL)))
    for L in model.layers:
        L.trainable = False
    train, test = datasets.vww_split(datasets.open(str(shared_path("datasets/vww01-eembc"))), seed=0)
    return model, train, test


def test_vww_new_camera_recovers_and_grey_is_refused(vww):
    from host.evaluate import model_input
    from host.simulate import SHIFTS

    model, train, test = vww
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(train.labels))
    val, fit = perm[:150], perm[150:]
    unl = fit[:64]
    tr_y = np.asarray(train.labels)
    clean = model_input(model, train.images)
    cm = CModel(copy.deepcopy(model))
    ref = adapt.reference_stats(cm, clean[fit], 27)
    out = {}
    for name in ("new-camera", "grey"):
        f = SHIFTS[name]
        sh = model_input(model, f(train.images))
        te = model_input(model, f(test.images))
        cm = CModel(copy.deepcopy(model))
        pre = adapt.accuracy(cm, te, np.asarray(test.labels))
        k, scores = adapt.choose(cm, ref, sh[unl], sh[val], tr_y[val], (1, 3, 7, 13, 27))
        out[name] = (pre, k, scores, adapt.accuracy(cm, te, np.asarray(test.labels)))
    pre, k, scores, post = out["new-camera"]
    assert k > 0 and post >= pre + 0.10, out["new-camera"]          # 65.0 -> ~80 measured
    pre, k, scores, post = out["grey"]
    assert scores[k] >= scores[0]
    assert k == 0 and post == pre, out["grey"]                       # adaptation lowers grey accuracy


# ---------------------------------------------------------------------------- model file version 2
def _with_ref(k=3, seed=0):
    """The small model with reference statistics on its first k layers (clean random inputs)."""
    m = _frozen_small(seed)
    cm = CModel(copy.deepcopy(m))
    for i, st in adapt.reference_stats(cm, _inputs(m, 4, 11), k).items():
        m.layers[i].adapt_ref = st
    return m


def test_modelfile_v2_round_trip_and_c_loaders():
    from host import modelfile

    m = _with_ref()
    blob = modelfile.to_bytes(m)
    assert np.frombuffer(blob[4:8], "<u4")[0] == 2
    back = modelfile.from_bytes(blob)
    for a, b in zip(m.layers, back.layers):
        if a.adapt_ref is None:
            assert b.adapt_ref is None
        else:
            np.testing.assert_array_equal(a.adapt_ref[0], b.adapt_ref[0])
            np.testing.assert_array_equal(a.adapt_ref[1], b.adapt_ref[1])
    assert modelfile.to_bytes(back) == blob
    assert modelfile.to_bytes(_frozen_small())[4] == 1               # no statistics: version 1 bytes
    # the RAM loader: adapt_ref / adapt_mult point into the file, adapt_mult is out_mult
    cm = CModel(back)
    for i in range(5):
        L = cm._layers[i]
        if i < 3:
            assert L.adapt_ref != ffi.NULL and L.adapt_mult == L.out_mult and L.adapt_shift == L.out_shift
            ref = np.frombuffer(ffi.buffer(L.adapt_ref, 8 * m.layers[i].out_c), "<i4")
            np.testing.assert_array_equal(ref[: m.layers[i].out_c], m.layers[i].adapt_ref[0])
        else:
            assert L.adapt_ref == ffi.NULL and L.adapt_mult == ffi.NULL
    # the flash loader copies bias, out_mult and out_shift of adapted layers to RAM
    dev = modelfile.strip_host(blob)
    rom = ffi.new("uint32_t[]", (len(dev) + 3) // 4)
    ffi.memmove(rom, dev, len(dev))
    need = ffi.new("int32_t *")
    layers, mm = ffi.new("tl_layer[]", 64), ffi.new("tl_model *")
    assert lib.tl_modelfile_load_rom(ffi.cast("uint8_t *", rom), len(dev), ffi.NULL, 0, need, layers, 64,
                                     mm) == lib.TL_ERR_RAM
    assert need[0] == modelfile.train_ram_bytes(blob) == sum(12 * L.out_c for L in m.layers[:3])
    ram = ffi.new("uint32_t[]", need[0] // 4)
    assert lib.tl_modelfile_load_rom(ffi.cast("uint8_t *", rom), len(dev), ffi.cast("uint8_t *", ram), need[0],
                                     need, layers, 64, mm) == lib.TL_OK
    lo, hi = int(ffi.cast("uintptr_t", ram)), int(ffi.cast("uintptr_t", ram)) + need[0]
    for i in range(3):
        for p in (layers[i].bias, layers[i].adapt_mult, layers[i].adapt_shift, layers[i].out_mult):
            assert lo <= int(ffi.cast("uintptr_t", p)) < hi
    assert not lo <= int(ffi.cast("uintptr_t", layers[4].bias)) < hi


@pytest.mark.parametrize("where, patch, code", [
    ("flag on the last layer", "last", "MODEL"),
    ("negative std", "std", "QUANT"),
    ("adapt_off in a version-1 file", "v1", "MODEL"),
    ("flag without adapt_off", "noff", "MODEL"),
])
def test_modelfile_v2_refusals_name_the_field(where, patch, code):
    import struct
    import zlib

    from host import modelfile

    m = _with_ref(1)
    blob = bytearray(modelfile.to_bytes(m))
    hdr = modelfile.read_header(bytes(blob))
    e0 = modelfile.layer_entries(bytes(blob), hdr)[0]
    word = lambda i, f: 64 + 160 * i + 4 * modelfile.LAYER_FIELDS.index(f)   # noqa: E731
    if patch == "last":
        struct.pack_into("<I", blob, word(4, "flags"), modelfile.layer_entries(bytes(blob), hdr)[4]["flags"] | 4)
        struct.pack_into("<I", blob, word(4, "adapt_off"), e0["adapt_off"])
    elif patch == "std":
        struct.pack_into("<i", blob, e0["adapt_off"] + 4 * m.layers[0].out_c, -1)
    elif patch == "v1":
        struct.pack_into("<I", blob, 4, 1)
    else:
        struct.pack_into("<I", blob, word(0, "adapt_off"), 0)
    struct.pack_into("<I", blob, 12, zlib.crc32(bytes(blob[16:])))
    assert modelfile.c_loader_status(bytes(blob)) == getattr(lib, f"TL_ERR_{code}")
    with pytest.raises(modelfile.ModelFileError, match="layer"):
        modelfile.from_bytes(bytes(blob), where="m.tlm")


# ---------------------------------------------------------------------------- command lines
def _run(*argv, timeout=300):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", *argv], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("argv, needle", [
    (("host.simulate", "--adapt-layers", "0"), "--adapt-layers 0"),
    (("host.simulate", "--adapt-layers", "x"), "--adapt-layers 'x'"),
    (("host.simulate", "--adapt", "on"), "--adapt on needs --model"),
    (("host.simulate", "--adapt", "sometimes"), "--adapt"),
    (("host.simulate", "--adapt-images", "0"), "--adapt-images"),
])
def test_bad_adapt_options_are_one_line_exit_2(argv, needle):
    r = _run(*argv)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_add_stats_bad_layer_count_is_one_line_exit_2(tmp_path):
    from host import modelfile

    path = tmp_path / "small.tlm"
    modelfile.save(_frozen_small(), str(path))
    r = _run("host.quantize", "add-stats", str(path), "-o", str(tmp_path / "o.tlm"), "--stats-data", str(tmp_path),
             "--stats-layers", "9")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--stats-layers 9" in r.stderr, r.stderr
    r = _run("host.quantize", "add-stats", "--help")
    assert r.returncode == 0 and "default 7" in r.stdout and "default 256" in r.stdout


def test_field_step_on_needs_statistics():
    m = _frozen_small()
    cm = CModel(m)
    x = _inputs(m, 4, 1)
    with pytest.raises(ValueError, match="add-stats"):
        adapt.field_step(cm, "on", "auto", 4, x, x, np.zeros(4, np.int64), 0)
    assert adapt.field_step(cm, "auto", "auto", 4, x, x, np.zeros(4, np.int64), 0)["applied"] is False


def test_field_step_on_and_auto_with_statistics():
    m = _with_ref(3)
    clean = _inputs(m, 8, 4)
    new = _inputs(m, 8, 5, 0.5, 20)
    vy = np.random.default_rng(3).integers(0, 3, 8)
    on = adapt.field_step(CModel(copy.deepcopy(m)), "on", 3, 8, new, clean, vy, 0)
    assert on["applied"] and on["k"] == 3 and on["images"] == 8
    auto = adapt.field_step(CModel(copy.deepcopy(m)), "auto", "auto", 8, new, clean, vy, 0)
    assert auto["val_accuracy"][str(auto["k"])] >= auto["val_accuracy"]["0"]
    none = adapt.field_step(CModel(copy.deepcopy(m)), "on", "auto", 8, new, clean[:0], vy[:0], 0)
    assert none["applied"] and none["k"] == 3 and "val_accuracy" in none
    with pytest.raises(ValueError, match="first 3 layers only"):
        adapt.field_step(CModel(copy.deepcopy(m)), "on", 4, 8, new, clean, vy, 0)


def test_adapted_model_file_keeps_the_adapted_integers():
    """--save-model after adaptation: the file holds the adapted bias and multipliers, and reading
    it back gives a model that writes the same bytes."""
    from host import modelfile

    m = _with_ref(3)
    cm = CModel(copy.deepcopy(m))
    adapt.adapt(cm, adapt.model_reference(cm.model), _inputs(m, 6, 5, 0.5, 20), 3)
    adapt.keep_in_model(cm)
    blob = modelfile.to_bytes(cm.model)
    # the body: the loaded copy's CRC is not updated in place (training does not either)
    assert np.array_equal(np.frombuffer(blob, np.uint8)[16:], adapt.snapshot(cm)[16:])
    assert modelfile.to_bytes(modelfile.from_bytes(blob)) == blob


def test_simulate_vww_adapts_in_front_of_training(vww, tmp_path):
    """host.simulate --model (statistics) --shift: the summary records the decision and numbers."""
    import json

    from shared_data import shared_path

    model_path = tmp_path / "vww.tlm"
    r = _run("host.quantize", "import-tflite", str(shared_path(VWW_MODEL)), "-o", str(model_path),
             "--stats-data", str(shared_path("datasets/vww01-eembc")))
    assert r.returncode == 0, r.stderr
    out = {}
    for mode in ("auto", "off"):
        js = tmp_path / f"{mode}.json"
        r = _run("host.simulate", "--model", str(model_path), "--data", str(shared_path("datasets/vww01-eembc")),
                 "--shift", "--epochs", "0", "--adapt", mode, "--json", str(js))
        assert r.returncode == 0, r.stderr
        out[mode] = json.loads(js.read_text())
    a = out["auto"]["adaptation"]
    assert a["applied"] and a["k"] >= 1 and a["images"] == 64
    assert out["auto"]["val_accuracy_before"] == a["val_accuracy"][str(a["k"])]
    assert out["off"]["adaptation"]["applied"] is False
    assert out["off"]["val_accuracy_before"] == a["val_accuracy"]["0"]
    assert out["auto"]["val_accuracy_before"] >= out["off"]["val_accuracy_before"] + 0.1


def test_board_schedule_in_the_arena_equals_the_host_schedule():
    """tl_adapt_begin / feed / finish_apply (the board's path: statistics kept in the model's arena
    while the earlier layers run there) give the same bits as the batch path of host.adapt."""
    from host import modelfile

    m = _with_ref(3)
    new = _inputs(m, 5, 5, 0.5, 20)
    a = CModel(modelfile.from_bytes(modelfile.to_bytes(m)))
    b = CModel(modelfile.from_bytes(modelfile.to_bytes(m)))
    adapt.adapt(a, adapt.model_reference(a.model), new, 3)
    rep = adapt.board_adapt(b, new, 3)
    assert [r["layer"] for r in rep] == [0, 1, 2]
    assert np.array_equal(adapt.snapshot(a), adapt.snapshot(b))
    assert rep[-1]["crc"] == adapt.layer_crc(a, 2)
    so, to = ffi.new("int32_t *"), ffi.new("int32_t *")
    need = b.arena_bytes
    assert lib.tl_adapt_plan(b._m, 3, 1, need, so, to) == lib.TL_ERR_ARG    # avgpool: no statistics
    assert lib.tl_adapt_plan(b._m, 4, 1, need, so, to) == lib.TL_ERR_ARG    # the classifier
    for i in range(3):                  # the statistics avoid the staged input and earlier outputs
        for staged in (0, 1):
            extra = lib.tl_adapt_extra_bytes(b._m, i, staged)
            assert extra >= 0 and lib.tl_adapt_plan(b._m, i, staged, need + extra, so, to) == lib.TL_OK
            end = so[0] + lib.tl_adapt_stats_bytes(ffi.addressof(b._layers, i))
            assert end <= need + extra and (not staged or extra or end <= lib.tl_model_input_offset(b._m))
            assert to[0] + 8 * m.layers[i].out_c <= so[0] or to[0] >= end


def test_board_schedule_with_a_staged_input_stays_inside_the_training_arena():
    """MobileNetV1-0.25 96x96 (the boards' network, bench/mcu.py's build) with statistics on its
    first 7 layers and the input staged in the arena, as on the boards: layers 0-2 keep their
    statistics in a gap of the plan, layers 3-6 at its bottom under the shifted forward passes -
    no byte past the training arena for any of them - and the bits equal host.adapt's batch path."""
    from host import modelfile, nets

    rng = np.random.default_rng(5)
    m = nets.build("mobilenet", seed=0, calib=rng.integers(0, 256, (8, 96, 96, 3), dtype=np.uint8), classes=2,
                   head="grid")
    for L in m.layers:
        L.trainable = False
    clean = rng.integers(-128, 128, (4, 96, 96, 3), dtype=np.int8)
    adapt.add_reference(m, clean, 7)
    new = np.clip(clean.astype(np.int16) // 2 + 30, -128, 127).astype(np.int8)
    a = CModel(modelfile.from_bytes(modelfile.to_bytes(m)))
    b = CModel(modelfile.from_bytes(modelfile.to_bytes(m)))
    adapt.adapt(a, adapt.model_reference(a.model), new, 7)
    need, off = b.arena_bytes, lib.tl_model_input_offset(b._m)
    so, to = ffi.new("int32_t *"), ffi.new("int32_t *")
    arena = np.frombuffer(ffi.buffer(b._arena.buf, b._arena.size), np.int8)
    layers = adapt.board_layers(b, 7)
    assert len(layers) == 7
    for i in layers:
        assert lib.tl_adapt_extra_bytes(b._m, i, 1) == 0
        assert lib.tl_adapt_plan(b._m, i, 1, need, so, to) == lib.TL_OK
        assert (so[0] == 0) == (i >= 3)                      # the bottom placement from layer 3 on
        assert lib.tl_adapt_begin(b._m, b._arena, i, 1) == lib.TL_OK
        for x in new:
            arena[off: off + x.size] = x.reshape(-1)          # staged as INPUT frames stage it
            assert lib.tl_adapt_feed(b._m, b._arena, i, 1, ffi.cast("int8_t *", b._arena.buf) + off) == lib.TL_OK
        assert lib.tl_adapt_finish_apply(b._m, b._arena, i, 1, len(new)) == lib.TL_OK
        assert adapt.layer_crc(b, i) == adapt.layer_crc(a, i)
    assert np.array_equal(adapt.snapshot(a), adapt.snapshot(b))


@pytest.mark.parametrize("in_flash", [False, True])
def test_board_protocol_adaptation_equals_the_host(in_flash):
    """ADAPT / ADAPT_FEED on the firmware's dispatcher (in process, input staged in the arena as on
    the boards; the model sent over the link, or held in flash with its adapted layers' bias and
    multipliers copied to RAM): the board's adapted layers equal the host's bit for bit (APPLY's
    CRC) and its inferences after adaptation too."""
    from host import modelfile
    from host import protocol as P

    m = _with_ref(3)
    m.layers[1].trainable = True                     # a trainable adapted layer, as in the recipe
    blob = modelfile.to_bytes(m)
    new = _inputs(m, 4, 5, 0.5, 20)
    cm = CModel(modelfile.from_bytes(blob))
    want = adapt.board_adapt(cm, new, 3)
    if in_flash:
        port = P.SimulatedPort(input_cap=0, rom=modelfile.strip_host(blob))
        link = P.Link(port)
        link.sync()
    else:
        port = P.SimulatedPort(input_cap=0)
        link = P.Link(port)
        link.sync()
        link.load_model(blob)
    with pytest.raises(P.DeviceError):
        link.adapt_begin(3)                          # avgpool: no statistics
    got = []
    for i in [w["layer"] for w in want]:
        link.adapt_begin(i)
        for x in new:
            insn, images = link.adapt_feed(x)
        got.append({"layer": i, "images": images, "crc": link.adapt_apply(i)[1]})
    assert [(g["images"], g["crc"]) for g in got] == [(w["images"], w["crc"]) for w in want]
    for x in _inputs(m, 3, 9, 0.5, 20):
        assert list(link.evaluate(x).logits) == list(cm.infer(x).logits)
    with pytest.raises(P.DeviceError):
        link.adapt_apply(0)                          # no BEGIN since the last APPLY


# ---------------------------------------------------------------------------- the emulated board
@pytest.mark.firmware
def test_qemu_board_adapts_like_the_host_then_trains_like_simulate(tools, tmp_path):   # noqa: F811
    """qemu-system-arm -M mps2-an386 with the VWW model (statistics for its first 7 layers) in
    flash: host.stream --adapt on makes the board adapt its first 3 layers from 4 unlabelled images
    over the link (each layer's bias/multipliers checked against the host's crc32 inside
    host.stream), then train; its weights equal host.simulate's with the same options."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from shared_data import shared_path
    from test_firmware import stream_run

    root = Path(__file__).resolve().parents[1]
    model = tmp_path / "vww_stats.tlm"
    r = _run("host.quantize", "import-tflite", str(shared_path(VWW_MODEL)), "-o", str(model),
             "--stats-data", str(shared_path("datasets/vww01-eembc")))
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["make", "-s", "-C", str(root / "firmware"), "BOARD=mps2-an386", f"BUILD={tmp_path / 'fw'}",
                        f"PYTHON={sys.executable}", f"MODEL={model}", "-j1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    size = json.loads((tmp_path / "fw" / "fw" / "fw_size.json").read_text()) if (tmp_path / "fw" / "fw" /
                                                                                  "fw_size.json").exists() else None
    run = ["--model", str(model), "--data", str(shared_path("datasets/vww01-eembc")), "--shift", "--adapt", "on",
           "--adapt-layers", "3", "--adapt-images", "4", "--limit", "4", "--val-limit", "4", "--epochs", "1",
           "--keep", "last"]
    board = stream_run(tmp_path / "fw" / "tinylls.elf", run, tmp_path, "adapt")
    a = board["adaptation"]
    assert a["applied"] and a["k"] == 3 and a["images"] == 4
    assert board["mcu_adapt_insn_median"] > 0
    from host import simulate
    js = tmp_path / "sim.json"
    assert simulate.main(run + ["--json", str(js), "--quiet"]) == 0
    sim = json.loads(js.read_text())
    assert sim["adaptation"] == a
    assert board["weights_sha256"] == sim["weights_sha256"] != board["initial_weights_sha256"]
    assert board["eval_preds"] == sim["val_predictions"]
    # --keep auto: 4 validation images cannot make training significant, so the board returns to
    # the adapted model it started from (the file loaded again, adapted again, checked per layer)
    auto = run[:-2]
    back = stream_run(tmp_path / "fw" / "tinylls.elf", auto, tmp_path, "adapt-keep")
    assert back["kept"]["keep"] == "start" and back["device"]["steps"] == 0
    assert back["weights_sha256"] == back["initial_weights_sha256"] != board["weights_sha256"]
    assert simulate.main(auto + ["--json", str(js), "--quiet"]) == 0
    sim = json.loads(js.read_text())
    assert sim["kept"] == back["kept"] and sim["weights_sha256"] == back["weights_sha256"]
    print(json.dumps({"mcu_adapt_insn_median": board["mcu_adapt_insn_median"], "fw_size": size}))


def test_v2_mutations_host_and_c_loader_agree_and_every_refusal_is_named():
    """tests/test_modelfile_hardening.py's seeded mutation loop on a version-2 file (statistics on
    3 layers) and on its device blob: the host accepts exactly what the C loader accepts (the full
    file: apart from refusals of its own host-only area) and names the field of every refusal."""
    from test_modelfile_hardening import c_load, host_verdict, mutate

    from host import modelfile

    blob = modelfile.to_bytes(_with_ref(3))
    rng = np.random.default_rng(16)
    counts = {"c_refused": 0, "both_ok": 0}
    for k in range(1500):
        bad, what = mutate(blob, rng)
        c_status = c_load(bad)[0]
        kind, msg = host_verdict(bad)
        assert kind in ("ok", "ModelFileError"), f"mutation {k} ({what}): {kind}: {msg}"
        if kind == "ok":
            assert c_status == 0, f"mutation {k} ({what}): host accepts what the C loader refuses ({c_status})"
            counts["both_ok"] += 1
        elif c_status != 0:
            counts["c_refused"] += 1
            assert msg.startswith("mutant.tlm: ") and "the model as a whole" not in msg, (k, what, msg)
        else:
            assert "host" in msg or "scale" in msg, f"mutation {k} ({what}): the C loader accepts, the host says: {msg}"
    assert min(counts.values()) >= 50, counts
    dev = modelfile.device_identity(blob)
    agree = {True: 0, False: 0}
    for k in range(800):
        bad, what = mutate(dev, rng)
        c_ok = c_load(bad)[0] == 0
        try:
            modelfile.check_device(bad, "dev.tlm")
            host_ok = True
        except modelfile.ModelFileError as e:
            host_ok = False
            assert "the model as a whole" not in str(e), (k, what, str(e))
        assert host_ok == c_ok, f"mutation {k} ({what}): host {host_ok}, C loader {c_ok}"
        agree[c_ok] += 1
    assert min(agree.values()) >= 50, agree
