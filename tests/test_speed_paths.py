"""Fast paths change no result bit: the restructured / vectorised kernels and update loops against
the TL_FORCE_GENERIC build (reference kernel loops, no clones), and the host runner (whole epoch
in one call, layer pipeline across threads) against step-by-step training. Not a timing test."""
from __future__ import annotations

import numpy as np
import pytest

from host import nets
from host.core import CModel, ffi as core_ffi, lib as core_lib
from host.csrc import runner
from host.model import weights_sha256
from test_kernels import tie_operands


def cpu_flags() -> set:
    """The CPU's feature flags as the kernel reports them (the core asks CPUID through
    __builtin_cpu_supports; Linux names the same bits)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def need_cpu(*flags: str) -> None:
    """A fast-path test compares two different code paths only where the CPU runs both: without
    the features it would compare a path with itself and pass for nothing, so it says so and skips.
    Unlike a missing tool or package this skips under CI too: no install step can add a CPU
    feature, and CI machines differ (the 2026-12-07 one has AVX2 but no AVX-512); the skip reason
    is printed at the end of every run (pytest -rs)."""
    lacking = [f for f in flags if f not in cpu_flags()]
    if lacking:
        pytest.skip(f"this CPU lacks {' '.join(lacking)}: the fast path under test cannot run on this machine")


X86_FAST = ("avx2",)                                       # tl_x86_avx2()
X86_AVX512 = ("avx2", "avx512f", "avx512vl", "avx512bw")   # tl_x86_avx512()


def mobilenet(seed=0, resolution=48, head="gap", classes=2, act=None):
    rng = np.random.default_rng(seed)
    calib = rng.integers(0, 256, size=(2, resolution, resolution, 3), dtype=np.uint8)
    m = nets.build("mobilenet", seed=seed, calib=calib, classes=classes, resolution=resolution, head=head)
    if act:
        for L in m.layers[:-1]:
            if L.has_weights:
                L.act = act
    nets.set_learning_rates(m, 3e-3, 1e-2, 1e-3)
    return m


def digits(seed=0):
    rng = np.random.default_rng(seed)
    m = nets.build("digits", seed=seed, calib=rng.integers(0, 256, size=(4, 8, 8, 1), dtype=np.uint8), classes=10)
    nets.set_learning_rates(m, 3e-3, 1e-2)
    return m


def samples(model, n, seed=11):
    rng = np.random.default_rng(seed)
    x = np.stack([model.quantize_input(rng.integers(0, 256, size=model.input_shape, dtype=np.uint8))
                  for _ in range(n)])
    return x, rng.integers(0, model.classes, size=n).astype(np.int32)


@pytest.fixture(scope="module")
def generic():
    """ccore built with -DTL_FORCE_GENERIC (plus the runner), as a private extension."""
    return runner.build_private(cflags=("-DTL_FORCE_GENERIC",), tag="generic")


def ptr(ffi, cdata, ctype):
    return ffi.cast(ctype, int(core_ffi.cast("uintptr_t", cdata)))


def wide_head(seed=0):
    """A hidden layer with more channels than TL_LLS_MAX_T: its LLS head pools 1x1 (T = 2400)."""
    from host.model import Layer
    layers = [nets._conv("wide", "conv", (2, 2, 8), 2400, 1, 1),
              Layer(kind="fc", in_shape=(2, 2, 2400), out_shape=(1, 1, 2), name="fc")]
    rng = np.random.default_rng(seed)
    m = nets.quantize_fresh(layers, nets.init_float(layers, seed),
                            rng.integers(0, 256, size=(4, 2, 2, 8), dtype=np.uint8), 2, name="wide")
    nets.set_learning_rates(m, 3e-3, 1e-2)
    return m


CONFIGS = [
    ("mobilenet-gap", lambda: mobilenet(0), {}),
    ("mobilenet-grid-sine", lambda: mobilenet(1, head="grid"), dict(basis="sine")),
    ("mobilenet-leaky-m", lambda: mobilenet(2, resolution=32, act="leaky", classes=3),
     dict(variant="m", basis="random")),
    ("mobilenet-relu6-mxm-nearest", lambda: mobilenet(3, resolution=40, act="relu6", classes=4),
     dict(variant="mxm", rounding="nearest")),
    ("digits", lambda: digits(0), {}),
    ("wide-head", lambda: wide_head(0), {}),
]


@pytest.mark.parametrize("name,make,cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_fast_build_trains_like_the_generic_build(name, make, cfg, generic):
    need_cpu(*X86_FAST)
    gffi, glib = generic
    fast, ref = make(), make()
    cf, cr = CModel(fast, seed=5, **cfg), CModel(ref, seed=5, **cfg)
    # the fast build's steps get the room its x86 buffers need (else it runs the portable loops
    # and this test compares the generic path with itself)
    assert core_lib.tl_model_fast_scratch_bytes(cf._m) > 0
    assert cf._arena.size >= cf.arena_bytes + core_lib.tl_model_fast_scratch_bytes(cf._m)
    x, y = samples(fast, 5)
    res = gffi.new("tl_result *")
    for k in range(len(y)):
        rf = cf.train_step(x[k], int(y[k]))
        st = glib.tl_model_train_step(ptr(gffi, cr._m, "tl_model *"), ptr(gffi, cr._arena, "tl_ctx *"),
                                      gffi.cast("int8_t *", x[k].ctypes.data), int(y[k]), res)
        assert st == 0
        assert rf.pred == res.pred
        assert list(rf.local_pred) == [res.local_pred[i] for i in range(len(fast.layers))]
    assert weights_sha256(fast) == weights_sha256(ref), name
    # the unrounded update previews of every trainable layer agree too
    outs = cf.layer_outputs(x[0])
    ins = [x[0]] + outs[:-1]
    for i, L in enumerate(fast.layers):
        if not (L.trainable and L.has_weights):
            continue
        dw_f, db_f = cf.update_preview(i, ins[i], int(y[0]))
        dw = np.zeros(L.weights.size, np.int64)
        db = np.zeros(L.out_c, np.int64)
        xi = np.ascontiguousarray(ins[i])
        st = glib.tl_layer_update_preview(ptr(gffi, cr._m, "tl_model *"), i, ptr(gffi, cr._arena, "tl_ctx *"),
                                          gffi.cast("int8_t *", xi.ctypes.data), int(y[0]),
                                          gffi.cast("int64_t *", dw.ctypes.data),
                                          gffi.cast("int64_t *", db.ctypes.data))
        assert st == 0
        np.testing.assert_array_equal(dw_f.ravel() * 65536.0, dw.astype(np.float64), err_msg=f"layer {i}")
        np.testing.assert_array_equal(db_f * 65536.0, db.astype(np.float64), err_msg=f"layer {i}")


def conv_case(rng, kind):
    h, w = (int(v) for v in rng.integers(1, 20, size=2))
    wide = rng.random() < 0.25  # past the fast paths' block sizes (16 channels, 256 columns)
    cin = int(rng.integers(1, 300 if wide else 70))
    cout = cin if kind == "dw" else int(rng.integers(1, 300 if wide else 70))
    k = 1 if kind == "pw" else int(rng.choice([1, 2, 3, 5]))
    s = 1 if kind == "pw" else int(rng.choice([1, 2, 3]))
    pad = 0 if kind == "pw" else int(rng.integers(0, k))
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    if oh < 1 or ow < 1 or (oh - 1) * s - pad > h - 1 or (ow - 1) * s - pad > w - 1:
        return None
    x = rng.integers(-128, 128, size=(h, w, cin)).astype(np.int8)
    wt = rng.integers(-127, 128, size=(k, k, cout) if kind == "dw" else (cout, k, k, cin)).astype(np.int8)
    bias = rng.integers(-50000, 50000, size=cout).astype(np.int32)
    mult = rng.integers(1 << 30, (1 << 31) - 1, size=cout).astype(np.int32)
    shift = rng.integers(-14, 3, size=cout).astype(np.int32)
    zi, zo = (int(v) for v in rng.integers(-128, 128, size=2))
    lo = int(rng.integers(-128, 0))
    hi = int(rng.integers(lo, 128))
    if rng.random() < 0.4:   # exact requantization ties (tests/test_kernels.py: tie_operands)
        x, wt, bias, mult, shift = tie_operands(rng, x.shape, wt.shape, cout, zi)
        lo, hi = -128, 127
    return dict(x=x, w=wt, bias=bias, mult=mult, shift=shift, prm=[zi, zo, s, s, pad, pad, lo, hi,
                int(rng.integers(0, 2))], k=k, out=(oh, ow, cout))


def run_kernel(ffi, lib, kind, c):
    def p(ct, a):
        return ffi.cast(ct, a.ctypes.data)
    oh, ow, cout = c["out"]
    out = np.zeros((oh, ow, cout), np.int8)
    h, w, cin = c["x"].shape
    prm = ffi.new("tl_conv_params *", c["prm"])
    q = ffi.new("tl_quant *", [p("int32_t *", c["mult"]), p("int32_t *", c["shift"])])
    ind, outd = ffi.new("tl_dims *", [1, h, w, cin]), ffi.new("tl_dims *", [1, oh, ow, cout])
    if kind == "dw":
        fd = ffi.new("tl_dims *", [1, c["k"], c["k"], cout])
        fn = lib.tl_dwconv_s8
    else:
        fd = ffi.new("tl_dims *", [cout, c["k"], c["k"], cin])
        fn = lib.tl_pwconv_s8 if kind == "pw" else lib.tl_conv_s8
    assert fn(prm, q, ind, p("int8_t *", c["x"]), fd, p("int8_t *", c["w"]), p("int32_t *", c["bias"]), outd,
              p("int8_t *", out)) == 0
    return out


@pytest.mark.parametrize("kind", ["conv", "dw", "pw"])
def test_fast_kernels_match_the_reference_loops(kind, generic):
    need_cpu(*X86_FAST)
    gffi, glib = generic
    rng = np.random.default_rng(99)
    done = 0
    while done < 60:
        c = conv_case(rng, kind)
        if c is None:
            continue
        np.testing.assert_array_equal(run_kernel(core_ffi, core_lib, kind, c), run_kernel(gffi, glib, kind, c))
        done += 1


@pytest.mark.parametrize("make", [lambda: mobilenet(6, head="grid"), lambda: mobilenet(7, resolution=40),
                                  lambda: digits(1)], ids=["mobilenet-grid", "mobilenet-40", "digits"])
def test_avx2_paths_train_like_the_avx512_paths(make):
    """On an AVX-512 host the default build takes the AVX-512 loops where it has them; the same
    core built with -DTL_NO_AVX512 runs their AVX2 twins. Both must land on the same weights."""
    need_cpu(*X86_AVX512)
    avx2 = runner.build_private(cflags=("-DTL_NO_AVX512",), tag="avx2")
    a, b = make(), make()
    x, y = samples(a, 6)
    ca, cb = CModel(a, seed=3), CModel(b, seed=3)
    runner.train_epoch(ca, x, y)
    runner.train_epoch(cb, x, y, lib_pair=avx2)
    assert weights_sha256(a) == weights_sha256(b)
    assert weights_sha256(a) != weights_sha256(make())  # the run did move weights


@pytest.mark.parametrize("threads,split", [(1, None), (2, None), (3, None), (2, [1]), (2, [27]), (4, [3, 9, 20])])
def test_pipelined_epoch_is_bit_identical_to_steps(threads, split):
    a, b = mobilenet(4, head="grid"), mobilenet(4, head="grid")
    x, y = samples(a, 9)
    ca, cb = CModel(a, seed=9), CModel(b, seed=9)
    preds_a = [ca.train_step(x[k], int(y[k])).pred for k in range(len(y))]
    preds_b = runner.train_epoch(cb, x, y, threads=threads, split=split)
    assert weights_sha256(a) == weights_sha256(b)
    assert list(preds_b) == preds_a
    assert cb.step == ca.step == len(y)
    # a second epoch continues the rounding stream where the first left it
    runner.train_epoch(cb, x[::-1], y[::-1], threads=threads, split=split)
    for k in reversed(range(len(y))):
        ca.train_step(x[k], int(y[k]))
    assert weights_sha256(a) == weights_sha256(b)


def test_pipelined_epoch_variants_and_errors():
    a, b = mobilenet(5, resolution=32, act="leaky", classes=3), mobilenet(5, resolution=32, act="leaky", classes=3)
    x, y = samples(a, 6)
    ca, cb = CModel(a, seed=2, variant="mxm"), CModel(b, seed=2, variant="mxm")
    for k in range(len(y)):
        ca.train_step(x[k], int(y[k]))
    runner.train_epoch(cb, x, y, threads=2)
    assert weights_sha256(a) == weights_sha256(b)
    assert all(np.array_equal(p.lls_m, q.lls_m) for p, q in zip(a.layers, b.layers) if p.lls_m is not None)
    before = weights_sha256(b)
    bad = y.copy()
    bad[3] = 7
    from host.core import TinyllsError
    with pytest.raises(TinyllsError, match="label"):
        runner.train_epoch(cb, x, bad, threads=2)
    assert weights_sha256(b) == before and cb.step == len(y)


def small_rates(model, scale):
    """The model's rates times `scale`: small rates put the update's rounding shift r above 62,
    where tl_scale_update first floors the product by 2^(r - 62) (the vector loops' pre-shift)."""
    for L in model.layers:
        L.lr *= scale
        L.lls_m_lr *= scale
    return model


SMALL = [("mobilenet-grid-1e-2", lambda: small_rates(mobilenet(8, head="grid"), 1e-2)),
         ("mobilenet-1e-3", lambda: small_rates(mobilenet(9, resolution=40), 1e-3)),
         ("mobilenet-nearest-1e-2", lambda: small_rates(mobilenet(10, resolution=32), 1e-2))]


@pytest.mark.parametrize("name,make", SMALL, ids=[s[0] for s in SMALL])
def test_small_rates_fast_paths_train_like_the_generic_build(name, make, generic):
    """At small learning rates (rounding shift r > 62) the vectorised update takes the weights
    too; it must land on the generic build's weights, and so must its AVX2 twin. The run has to
    move weights, or the comparison would hold for any pre-shift (the stochastic cases fail with
    the pre-shift left out of either loop; round-to-nearest moves no weight at r > 62, so its case
    only pins that the vector loops agree there too)."""
    need_cpu(*X86_FAST)
    rounding = "nearest" if "nearest" in name else "stochastic"
    fast, ref = make(), make()
    x, y = samples(fast, 8)
    cf, cr = CModel(fast, seed=4, rounding=rounding), CModel(ref, seed=4, rounding=rounding)
    runner.train_epoch(cf, x, y)
    runner.train_epoch(cr, x, y, lib_pair=generic)
    assert weights_sha256(fast) == weights_sha256(ref), name
    assert weights_sha256(fast) != weights_sha256(make()), "the run moved no weight"
    if all(f in cpu_flags() for f in X86_AVX512):
        avx2 = make()
        runner.train_epoch(CModel(avx2, seed=4, rounding=rounding), x, y,
                           lib_pair=runner.build_private(cflags=("-DTL_NO_AVX512",), tag="avx2"))
        assert weights_sha256(avx2) == weights_sha256(fast), name


@pytest.mark.parametrize("name,make,cfg", [CONFIGS[1], CONFIGS[2], CONFIGS[4]], ids=[CONFIGS[i][0] for i in (1, 2, 4)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batched_inference_with_local_heads_is_per_sample_inference(name, make, cfg, threads):
    """tl_host_infer_many (CModel.infer_many) gives exactly the predictions, logits and per-layer
    local-head predictions of per-sample tl_model_infer(..., with_local) calls, for any threads."""
    m = make()
    cm = CModel(m, seed=1, **cfg)
    x, y = samples(m, 7)
    runner.train_epoch(cm, x, y)  # trained weights and heads, not the fresh ones
    for with_local in (True, False):
        preds, logits, local = cm.infer_many(x, with_local=with_local, threads=threads)
        for j in range(len(x)):
            r = cm.infer(x[j], with_local=with_local)
            assert preds[j] == r.pred, (name, j)
            np.testing.assert_array_equal(logits[j], r.logits)
            if with_local:
                np.testing.assert_array_equal(local[j], r.local_pred)
            else:
                assert (local[j] == -1).all()
        if with_local:
            assert (local >= 0).any(), "no local head answered: the comparison would be empty"
    empty = cm.infer_many(x[:0], threads=threads)
    assert [a.shape[0] for a in empty] == [0, 0, 0]
