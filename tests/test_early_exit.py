"""Early exit from the LLS heads (issue 16): tl_model_infer_exit, its host replay and cost
accounting (host/early_exit.py), the board command EVAL_EXIT (in process and on the emulated
Cortex-M4), and the command-line errors."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from host import early_exit as E
from host import nets
from host.core import CModel, ffi, lib

ROOT = Path(__file__).resolve().parents[1]
K50, K462 = 34178263779, 315807157316        # tl_lls.c: f_c = linspace(50, 512, C) rad/element in Q32 turns


def mobilenet(seed=0, resolution=48, classes=3, head="gap"):
    rng = np.random.default_rng(seed)
    calib = rng.integers(0, 256, size=(2, resolution, resolution, 3), dtype=np.uint8)
    return nets.build("mobilenet", seed=seed, calib=calib, classes=classes, resolution=resolution, head=head)


def inputs(model, n, seed=1):
    rng = np.random.default_rng(seed)
    return np.stack([model.quantize_input(rng.integers(0, 256, size=model.input_shape, dtype=np.uint8))
                     for _ in range(n)])


@pytest.fixture(scope="module")
def net():
    model = mobilenet()
    return model, CModel(model), inputs(model, 6)


# ---------------------------------------------------------------- the confidence, independently
def python_pool(L) -> int:
    """tl_model.c choose_pool, restated."""
    oh, ow, oc = L.out_shape
    for p in (8, 4, 2):
        if oh % p == 0 and ow % p == 0 and oc * p * p <= 2304:
            return p
    if oh == ow and oh <= 8 and oc * oh * ow <= 2304:
        return oh
    return 1


def python_head(L, h: np.ndarray, classes: int, inv_tau_q8: int = 512):
    """Max softmax probability and class of a layer's LLS head on its int8 output h (H, W, C),
    square basis, from the definition: pooled sums of h - zp (channel-major cells), integer norm,
    projection on sign(sin(f_c t)), logits a_c / tau, softmax in float."""
    p = python_pool(L)
    oh, ow, oc = L.out_shape
    d = h.astype(np.int64) - L.out_zp
    cells = d.reshape(p, oh // p, p, ow // p, oc).sum(axis=(1, 3))          # (p, p, oc)
    P = cells.transpose(2, 0, 1).reshape(-1)                                # t = c p^2 + y p + x
    n = math.isqrt(int((P * P).sum()))
    if n == 0:
        return -1, None
    z = []
    for c in range(classes):
        inc = (K50 + (K462 * c) // (classes - 1)) % 2 ** 32
        ph = (inc * np.arange(len(P), dtype=object)) % 2 ** 32
        sign = np.array([0 if v in (0, 2 ** 31) else (1 if v < 2 ** 31 else -1) for v in ph], np.int64)
        z.append(float((P * sign).sum()) / n * inv_tau_q8 / 256.0)
    z = np.array(z)
    prob = np.exp(z - z.max())
    prob /= prob.sum()
    return int(np.argmax(prob)), float(prob.max())


def test_confidence_equals_an_independent_python_head(net):
    model, cm, xs = net
    checked = 0
    for x in xs[:3]:
        res, exit_layer, conf = cm.infer_exit(x, 0, None)
        outs = cm.layer_outputs(x)
        assert exit_layer == len(model.layers) - 1
        for i in E.eligible_layers(model):
            assert cm.head_pool(i) == python_pool(model.layers[i])
            pred, p = python_head(model.layers[i], outs[i], model.classes)
            if p is None:
                assert conf[i] == -1 and res.local_pred[i] == -1
                continue
            assert abs(conf[i] / 65536 - p) < 1e-4, (i, conf[i] / 65536, p)
            if p > 0.501:                              # no near-tie: the same class
                assert res.local_pred[i] == pred
            checked += 1
        assert conf[len(model.layers) - 1] == -1       # the classifier is not a head
    assert checked >= 3 * 20
    # the exit head's class is the training head's local prediction (with_local inference)
    full = cm.infer(xs[0], with_local=True)
    res, _, _ = cm.infer_exit(xs[0], 0, None)
    heads = E.eligible_layers(model)
    assert [res.local_pred[i] for i in heads] == [full.local_pred[i] for i in heads]


# ---------------------------------------------------------------- the decision
def test_unreachable_threshold_is_plain_inference(net):
    model, cm, xs = net
    n = len(model.layers)
    for x in xs:
        full = cm.infer(x)
        for first in (0, 5):
            res, exit_layer, conf = cm.infer_exit(x, first, lib.TL_EXIT_NEVER_Q16)
            assert exit_layer == n - 1 and res.pred == full.pred
            assert list(res.logits) == list(full.logits)
            assert conf.max() <= 65536                  # no head reaches TL_EXIT_NEVER_Q16
            assert (conf[:first] == -1).all()


def test_threshold_zero_exits_at_the_first_eligible_layer(net):
    model, cm, xs = net
    n = len(model.layers)
    avgpool = [i for i, L in enumerate(model.layers) if L.kind == "avgpool"]
    assert avgpool == [n - 2]                           # gap head: the pooling layer has no head
    for x in xs:
        full = cm.infer(x, with_local=True)
        for first in (0, 7, n - 3):
            res, exit_layer, conf = cm.infer_exit(x, first, 0)
            assert exit_layer == first and res.pred == full.local_pred[first]
            assert (conf[first + 1:] == -1).all() and list(res.logits) == [0] * model.classes
        # from the pooling layer on, only the classifier is left
        res, exit_layer, _ = cm.infer_exit(x, n - 2, 0)
        assert exit_layer == n - 1 and res.pred == full.pred


def test_host_replay_equals_the_c_loop(net):
    model, cm, xs = net
    h = E.collect(cm, xs)
    seen = set()
    for first in (0, 4, 13):
        for p in (0.0, 0.4, 0.6, 0.8, 0.95, 0.999, 1.0):
            t = E.threshold_q16(p)
            pred, ex = E.replay(h, first, t)
            for j, x in enumerate(xs):
                res, e, _ = cm.infer_exit(x, first, t)
                assert (res.pred, e) == (pred[j], ex[j]), (first, p, j)
                seen.add(int(e))
    assert len(seen) >= 4                               # exits at several layers and at the classifier
    assert len(model.layers) - 1 in seen


def test_bad_arguments_are_refused(net):
    model, cm, xs = net
    n = len(model.layers)
    res, out = ffi.new("tl_result *"), ffi.new("int32_t *")
    x = ffi.cast("int8_t *", xs[0].ctypes.data)
    for first, thr in ((-1, 0), (n, 0), (0, -1), (0, lib.TL_EXIT_NEVER_Q16 + 1)):
        assert lib.tl_model_infer_exit(cm._m, cm._arena, x, first, thr, res, out, ffi.NULL) == lib.TL_ERR_ARG
    small = ffi.new("tl_ctx *")
    buf = np.zeros(cm.arena_bytes // 8 - 1, np.int64)
    small.buf, small.size = ffi.cast("void *", buf.ctypes.data), buf.nbytes
    assert lib.tl_model_infer_exit(cm._m, small, x, 0, 0, res, out, ffi.NULL) == lib.TL_ERR_ARENA


def test_stays_inside_the_planned_arena_with_the_input_staged_in_it():
    """No fast buffers, input at tl_model_input_offset: the board's layout."""
    model = mobilenet(resolution=32, classes=2)
    cm = CModel(model)
    x = inputs(model, 1)[0]
    want = cm.infer_exit(x, 0, lib.TL_EXIT_NEVER_Q16)
    pad = 4096
    raw = np.full(cm.arena_bytes + 2 * pad, 0xA5, np.uint8)
    ctx = ffi.new("tl_ctx *")
    ctx.buf, ctx.size = ffi.cast("void *", raw.ctypes.data + pad), cm.arena_bytes
    off = lib.tl_model_input_offset(cm._m)
    raw[pad + off: pad + off + x.size] = x.view(np.uint8).reshape(-1)
    res, e = ffi.new("tl_result *"), ffi.new("int32_t *")
    conf = np.zeros(len(model.layers), np.int32)
    assert lib.tl_model_infer_exit(cm._m, ctx, ffi.cast("int8_t *", raw.ctypes.data + pad + off), 0,
                                   lib.TL_EXIT_NEVER_Q16, res, e, ffi.cast("int32_t *", conf.ctypes.data)) == lib.TL_OK
    assert res.pred == want[0].pred and list(conf) == list(want[2])
    assert np.all(raw[:pad] == 0xA5) and np.all(raw[-pad:] == 0xA5)


# ---------------------------------------------------------------- cost accounting
def test_mac_accounting_adds_up(net):
    model, cm, xs = net
    fwd, head = E.layer_costs(cm)
    sys.path.insert(0, str(ROOT / "bench"))
    import mcu
    assert fwd.sum() == mcu.macs_of(model)
    # MobileNetV1-0.25 96x96: the 7.49 M MACs of the README's instructions-per-MAC figure
    big = mobilenet(resolution=96, classes=2)
    assert mcu.macs_of(big) == sum(L.macs() for L in big.layers) == 7_489_664
    # a head by hand: layer 0 of the 48x48 net, 24x24x8 out, pool 8: T = 512
    L0 = model.layers[0]
    assert L0.out_shape == (24, 24, 8) and cm.head_pool(0) == 8
    assert head[0] == 24 * 24 * 8 + 512 + model.classes * 512
    assert head[len(model.layers) - 1] == 0 and head[len(model.layers) - 2] == 0   # classifier, avgpool
    h = E.collect(cm, xs)
    labels = np.zeros(len(xs), np.int64)
    plain = E.point(h, labels, 0, None, fwd, head)
    assert plain["mean_macs"] == fwd.sum() and plain["mean_head_macs"] == 0 and plain["exited"] == 0
    first = 7
    zero = E.point(h, labels, first, 0, fwd, head)
    assert zero["mean_layer_macs"] == fwd[: first + 1].sum() and zero["mean_head_macs"] == head[first]
    assert zero["exited"] == 1.0
    never = E.point(h, labels, first, lib.TL_EXIT_NEVER_Q16, fwd, head)   # every head from `first` paid for
    assert never["mean_macs"] == fwd.sum() + head[first:].sum() > plain["mean_macs"]
    _, ex = E.replay(h, 0, E.threshold_q16(0.9))
    f, hd = E.costs(ex, 0, fwd, head)
    for j, e in enumerate(ex):
        assert f[j] == fwd[: e + 1].sum() and hd[j] == head[: min(e, len(fwd) - 2) + 1].sum()


# ---------------------------------------------------------------- the board's command, in process
def test_eval_exit_on_the_in_process_board_equals_the_host(net):
    from host import modelfile
    from host import protocol as P
    model, cm, xs = net
    link = P.Link(P.SimulatedPort(input_cap=0))
    link.sync()
    for payload, code in ((b"\0" * 12, lib.TL_PROTO_ERR_PAYLOAD), (b"\0" * 16, lib.TL_PROTO_ERR_NO_MODEL)):
        with pytest.raises(P.DeviceError) as err:
            link.command(lib.TL_PROTO_OP_EVAL_EXIT, payload)
        assert err.value.code == code
    assert P.op_name(lib.TL_PROTO_OP_EVAL_EXIT) == "EVAL_EXIT"
    link.load_model(modelfile.to_bytes(model))
    for x in xs[:3]:
        for first, t in ((0, 0), (3, E.threshold_q16(0.8)), (0, lib.TL_EXIT_NEVER_Q16)):
            res, e, _ = cm.infer_exit(x, first, t)
            got, ge = link.evaluate_exit(x, first, t)
            assert (got.pred, ge) == (res.pred, e)
            assert list(got.local_pred) == list(res.local_pred)[: len(model.layers)]
            assert list(got.logits) == list(res.logits)
    with pytest.raises(P.DeviceError) as err:
        link.evaluate_exit(xs[0], len(model.layers), 0)
    assert err.value.code == lib.TL_ERR_ARG
    assert link.info().proto == 5


# ---------------------------------------------------------------- command-line errors
def _images(tmp_path: Path, size: int) -> Path:
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls in ("person", "non_person"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                tmp_path / "data" / cls / f"{cls}{k}.png")
    return tmp_path / "data"


@pytest.mark.parametrize("extra, needle", [
    (["--early-exit", "1.5"], "--early-exit '1.5'"),
    (["--early-exit", "auto"], "--part val"),
    (["--early-exit", "0.9", "--first-layer", "99"], "--first-layer 99"),
    (["--first-layer", "3"], "apply to --early-exit"),
    (["--early-exit", "auto", "--part", "val", "--max-drop", "-1"], "--max-drop -1"),
])
def test_evaluate_errors_are_one_line_exit_2(tmp_path, capsys, extra, needle):
    from host import evaluate, modelfile
    model = mobilenet(resolution=96, classes=2)          # folder images are read at 96 x 96
    path = tmp_path / "m.tlm"
    modelfile.save(model, str(path))
    data = _images(tmp_path, 96)
    assert evaluate.main(["--model", str(path), "--data", str(data), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("host.evaluate: error:") and needle in err[0], err


def test_evaluate_and_bench_report_early_exit(tmp_path, capsys):
    from host import evaluate, modelfile
    sys.path.insert(0, str(ROOT / "bench"))
    import early_exit as bench
    model = mobilenet(resolution=96, classes=2)          # folder images are read at 96 x 96
    path = tmp_path / "m.tlm"
    modelfile.save(model, str(path))
    data = _images(tmp_path, 96)
    js = tmp_path / "ev.json"
    assert evaluate.main(["--model", str(path), "--data", str(data), "--quiet", "--part", "val",
                          "--early-exit", "0", "--first-layer", "2", "--json", str(js)]) == 0
    ee = json.loads(js.read_text())["early_exit"]
    assert ee["exited"] == 1.0 and ee["exit_layers"] == {"2": 2}
    # a given threshold, the first layer picked on the training part's validation images
    assert evaluate.main(["--model", str(path), "--data", str(data), "--quiet", "--part", "val",
                          "--early-exit", "0.99", "--first-layer", "auto", "--json", str(js)]) == 0
    ee = json.loads(js.read_text())["early_exit"]
    assert ee["threshold_q16"] == ee["picked_on_val"]["threshold_q16"] == E.threshold_q16(0.99)
    assert ee["first_layer"] == ee["picked_on_val"]["first_layer"]
    capsys.readouterr()
    out = tmp_path / "bench.json"
    png = tmp_path / "curve.png"
    assert bench.main(["--model", str(path), "--data", str(data), "--quiet", "--thresholds", "0,0.5,0.9,0.99,1",
                       "--json", str(out), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = json.loads(out.read_text())
    assert len(rep["curve_test"]) == 5 and rep["n_test"] == 2 and rep["n_val"] == 2
    assert rep["full"]["test"]["mean_macs"] == rep["full_macs"]
    assert bench.main(["--model", str(path), "--data", str(data), "--thresholds", "0.5,x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--thresholds" in err[0], err
    assert bench.main(["--model", str(tmp_path / "none.tlm"), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.tlm" in err[0], err


# ---------------------------------------------------------------- the emulated board (QEMU, Cortex-M4)
@pytest.mark.firmware
def test_board_early_exit_equals_simulation_and_saves_instructions(tmp_path):
    """The MLPerf VWW model in the firmware's flash (no model upload), three real images (27 KB
    each over the ~22 KB/s link, three times: the staged input does not survive an inference):
    EVAL_EXIT's predictions and exit layers equal tl_model_infer_exit's on the host, and the
    board's instruction counts (QEMU -icount) are lower than plain EVAL's where a head answered,
    higher (the heads' cost) where none did."""
    from shared_data import shared_root
    from test_firmware import TFLITE, VWW, build_firmware, need_shared, tools  # noqa: F401
    need_shared(VWW)
    need_shared(TFLITE)
    from tools import need, need_module
    need("make", "make")
    need("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi")
    need("qemu-system-arm", "qemu-system-arm")
    need_module("platformio", "make -C firmware builds with PlatformIO (pip install platformio)")
    from host import datasets, modelfile
    from host import protocol as P
    from host.evaluate import inference_view, model_input
    from host.stream import QemuBoard
    from host.tflite_import import import_tflite
    assert shared_root()
    model = import_tflite(str(TFLITE))
    path = tmp_path / "vww96.tlm"
    modelfile.save(model, str(path))
    elf = build_firmware(tmp_path / "build", model=path)
    first, thr = 15, E.threshold_q16(0.99)
    ds = datasets.open(str(VWW))
    x = model_input(model, ds.images[:24])
    cm = CModel(inference_view(model))
    sim = [cm.infer_exit(xi, first, thr) for xi in x]
    exited = [j for j, (_, e, _) in enumerate(sim) if e < len(model.layers) - 1]
    kept = [j for j, (_, e, _) in enumerate(sim) if e == len(model.layers) - 1]
    assert len(exited) >= 2 and kept, "the chosen images must show both cases"
    picks = exited[:2] + kept[:1]
    rows = []
    with QemuBoard(str(elf)) as board:
        link = P.Link(board.connect())
        info = link.sync()
        assert info.counter_kind == "instructions" and info.proto == 5
        assert link.load_model(modelfile.to_bytes(model))["resident"]
        for j in picks:
            full = link.evaluate(x[j], with_local=False)
            got, e = link.evaluate_exit(x[j], first, thr)
            never, e_never = link.evaluate_exit(x[j], first, lib.TL_EXIT_NEVER_Q16)
            want, we, _ = sim[j]
            assert (got.pred, e) == (want.pred, we)
            assert list(got.local_pred) == list(want.local_pred)[: len(model.layers)]
            assert (never.pred, e_never) == (full.pred, len(model.layers) - 1) and full.pred == cm.infer(x[j]).pred
            assert never.insn > full.insn                     # the heads cost something
            if e < len(model.layers) - 1:
                assert got.insn < full.insn
            else:
                assert got.insn == never.insn or abs(got.insn - never.insn) <= 80   # same work, 40-insn ticks
            rows.append({"image": j, "exit_layer": e, "pred": got.pred, "label": int(ds.labels[j]),
                         "insn_eval": full.insn, "insn_eval_exit": got.insn, "insn_all_heads": never.insn})
    print(json.dumps({"first_layer": first, "threshold_q16": thr, "images": rows}))
