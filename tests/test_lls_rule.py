"""The integer LLS rule against the float reference (host/reference.py): for one sample, every
layer's integer weight update (before rounding) points the same way as the float gradient step."""
import copy

import numpy as np
import pytest

from host import nets
from host.core import CModel
from host.reference import FloatNet, basis
from host.core import lib


def images(n, size, channels, seed=0):
    from host.datasets import synthetic

    return synthetic.make(n, size=size, channels=channels, seed=seed).images


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def real_update(layer, dw_lsb):
    s = np.asarray(layer.w_scale)
    return dw_lsb * (s if layer.kind == "dwconv" else s.reshape((-1,) + (1,) * (dw_lsb.ndim - 1)))


def float_update(net, i, x_real, label, basis_kind, h_int8=None):
    """-lr * gradient of layer i's local loss in float. With h_int8 the float rule reads the
    C core's int8 output instead of its own float forward (isolates the rule's integer math)."""
    L = net.model.layers[i]
    z = net.pre_activation(i, x_real)
    h = net.activate(i, z)
    fprime = net.act_grad(i, z)
    if h_int8 is not None:
        h = L.out_scale * (h_int8.astype(np.float64) - L.out_zp)
        lo, hi = L.act_range()
        fprime = ((h_int8 > lo) & (h_int8 < hi)).astype(np.float64)
    if i == len(net.model.layers) - 1:
        e = np.exp(h.reshape(-1) - h.max())
        err = e / e.sum()
        err[label] -= 1
        gW, gb = net.weight_grad(i, x_real, err.reshape(h.shape))
    else:
        _, _, g_h = net.lls_head(i, h, label, basis_kind)
        gW, gb = net.weight_grad(i, x_real, g_h * fprime)
    return -L.lr * gW, -L.lr * gb


@pytest.mark.parametrize("basis_kind", ["square", "sine", "random"])
@pytest.mark.parametrize("net", ["mobilenet", "digits"])
def test_integer_update_points_like_float_gradient(net, basis_kind):
    """Per layer: cosine >= 0.995 against the float rule fed the core's own int8 activations (the
    rule's integer math), and >= 0.98 against the float rule on its own float forward pass. The
    second gap is int8 activation quantization, not the rule: on MobileNet's tiny late maps
    (2x2, 3x3) one activation that rounds to the ReLU boundary flips f'(z) at a quarter of a
    channel's positions, so there all but at most 3 of 27 layers must reach 0.98, all 0.9."""
    if net == "mobilenet":
        imgs = images(4, 48, 3)
        model = nets.build("mobilenet", seed=3, calib=imgs[1:2], classes=2, resolution=48, head="grid",
                           act_headroom=1.0)
    else:
        rng = np.random.default_rng(0)
        imgs = rng.integers(0, 256, size=(4, 8, 8, 1), dtype=np.uint8)
        model = nets.build("digits", seed=3, calib=imgs[1:2], classes=10, act_headroom=1.0)
    nets.set_learning_rates(model, 1e-3, 1e-2)
    cm = CModel(model, basis=basis_kind)
    fnet = FloatNet(copy.deepcopy(model))
    x = model.quantize_input(imgs[1])
    outs = cm.layer_outputs(x)
    label = 1
    checked, float_cos = 0, []
    for i, L in enumerate(model.layers):
        if not L.has_weights:
            continue
        xin = x if i == 0 else outs[i - 1]
        x_real = L.in_scale * (xin.astype(np.float64).reshape(L.in_shape) - L.in_zp)
        dw, db = cm.update_preview(i, xin, label)
        fw, fb = float_update(fnet, i, x_real, label, basis_kind)
        if np.linalg.norm(fw) == 0:
            continue
        float_cos.append((cosine(real_update(L, dw), fw), i, L.name))
        qw, qb = float_update(fnet, i, x_real, label, basis_kind, h_int8=outs[i])
        cq = cosine(real_update(L, dw), qw)
        assert cq >= 0.995, f"{net} layer {i} ({L.name}): cosine {cq:.5f} against the rule on int8 activations"
        if np.linalg.norm(qb) > 0:   # bias = sum of the deltas: compared on the same activations
            cb = cosine(db * np.asarray(L.w_scale) * L.in_scale, qb)
            assert cb >= 0.995, f"{net} layer {i} ({L.name}): bias-update cosine {cb:.5f}"
        checked += 1
    assert checked >= (4 if net == "digits" else 20)
    low = [c for c in float_cos if c[0] < 0.98]
    print(f"{net}/{basis_kind}: cosine to the float gradient min {min(float_cos)[0]:.4f}, "
          f"median {np.median([c[0] for c in float_cos]):.4f}, below 0.98: {low}")
    assert len(low) <= (0 if net == "digits" else 3), f"layers below 0.98 against the float gradient: {low}"
    assert min(float_cos)[0] >= 0.9, f"lowest cosine against the float gradient: {min(float_cos)}"


def test_basis_matches_the_float_definition():
    """The C basis generator (Q15, integer phase arithmetic) equals sign(sin)/sin in float."""
    for classes in (2, 10):
        T = 2304
        for kind, code in (("square", lib.TL_BASIS_SQUARE), ("sine", lib.TL_BASIS_SINE)):
            ref = basis(kind, classes, T)
            got = np.array([[lib.tl_basis_q15(code, 0, c, classes, t) for t in range(T)] for c in range(classes)]) / 32768
            if kind == "square":
                assert np.mean(got == ref) > 0.9995, f"{kind} {classes} classes"
            else:
                assert np.max(np.abs(got - ref)) < 2e-4, f"{kind} {classes} classes"
    r = np.array([lib.tl_basis_q15(lib.TL_BASIS_RANDOM, 5, 0, 2, t) for t in range(4096)])
    assert set(np.unique(r)) == {-32768, 32768} and abs(r.mean()) < 0.1 * 32768
