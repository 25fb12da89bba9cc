"""Learning parity on real data (sklearn digits, as in ../shared/notes/from-scratch.md): the
integer core against the float reference under the same schedule, and the default simulation."""
import json

import numpy as np
import pytest

from host import nets
from host.core import CModel
from host.reference import FloatNet
from host.schedule import epoch_order

EPOCHS = 10
LR = 0.01
LR_TAIL = 0.003          # the last 3 epochs: a smaller step settles both trainers
SCORED = 3               # accuracy = mean test accuracy after each of the last 3 epochs: one
                         # batch-1 run moves by about a point from epoch to epoch


def digits_split():
    datasets = pytest.importorskip("sklearn.datasets", reason="the digits parity test needs scikit-learn "
                                   "(pip install '.[test]')")
    from sklearn.model_selection import train_test_split

    d = datasets.load_digits()
    x = np.clip(np.round(d.images * 255.0 / 16.0), 0, 255).astype(np.uint8)[..., None]
    return train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)


def train_both(basis_kind, seed=0):
    xtr, xte, ytr, yte = digits_split()
    model = nets.build("digits", seed=seed, calib=xtr[:64], classes=10)
    nets.set_learning_rates(model, LR, LR)
    fnet = FloatNet(model.__class__(layers=[l.__class__(**vars(l)) for l in model.layers], classes=10))
    cm = CModel(model, basis=basis_kind, seed=seed)
    accs_c, accs_f = [], []
    for epoch in range(EPOCHS):
        if epoch == EPOCHS - 3:
            nets.set_learning_rates(model, LR_TAIL, LR_TAIL)
            cm.refresh_learning_rates()
            fnet.lrs = [LR_TAIL] * len(model.layers)
        for i in epoch_order(len(ytr), epoch, seed):
            cm.train_step(model.quantize_input(xtr[i]), int(ytr[i]))
            fnet.train_step(xtr[i] / 255.0, int(ytr[i]), basis_kind)
        if epoch >= EPOCHS - SCORED:
            accs_c.append(np.mean([cm.infer(model.quantize_input(x)).pred == y for x, y in zip(xte, yte)]))
            accs_f.append(np.mean([fnet.predict(x / 255.0) == y for x, y in zip(xte, yte)]))
    return float(np.mean(accs_c)), float(np.mean(accs_f))


@pytest.mark.parametrize("basis_kind", ["square", "random"])
def test_digits_integer_core_matches_float_reference(basis_kind):
    acc_c, acc_f = train_both(basis_kind)
    print(f"digits {basis_kind}: integer core {acc_c:.4f}, float reference {acc_f:.4f}")
    assert acc_c >= 0.94, f"integer core reached {acc_c:.4f} on digits ({basis_kind} basis)"
    assert acc_c >= acc_f - 0.015, f"integer {acc_c:.4f} vs float {acc_f:.4f} ({basis_kind} basis)"


def test_default_simulation_learns(tmp_path):
    """`python -m host.simulate` with no arguments: MobileNetV1-0.25 from scratch on the synthetic
    scenes must clearly learn (chance is 50%)."""
    from host import simulate

    out = tmp_path / "sim.json"
    assert simulate.main(["--quiet", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    print(f"default simulate: val {s['val_accuracy']:.3f}, train {s['train_accuracy']:.3f}, {s['seconds']:.0f} s")
    assert s["val_accuracy"] >= 0.85
    for key in ("train_accuracy", "val_accuracy", "per_layer_accuracy", "scratch_bytes", "bp_activation_bytes",
                "weights_sha256", "seconds", "samples_per_second"):
        assert key in s
