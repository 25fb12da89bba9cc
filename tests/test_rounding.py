"""The weight update's rounding, statistically: stochastic rounding must be unbiased (its mean is
the exact update, so sub-LSB progress survives in expectation), round-to-nearest must freeze
sub-LSB updates. 10^5 keys: a 1000 -> 2 classifier (2,000 weights) over 50 steps, each step's
exact update read with tl_layer_update_preview before the step applies it."""
from __future__ import annotations

import numpy as np

from host import nets
from host.core import CModel
from host.model import Layer

N_IN, STEPS = 1000, 50


def classifier(seed=0, lr=1e-3):
    layers = [Layer(kind="fc", in_shape=(1, 1, N_IN), out_shape=(1, 1, 2), name="fc")]
    rng = np.random.default_rng(seed)
    m = nets.quantize_fresh(layers, nets.init_float(layers, seed),
                            rng.integers(0, 256, size=(4, 1, 1, N_IN), dtype=np.uint8), 2, name="fc")
    nets.set_learning_rates(m, lr, lr)
    return m


def exact_and_applied(rounding: str, seed: int):
    """(exact updates in LSB, applied integer updates), each (STEPS, 2, N_IN)."""
    m = classifier()
    cm = CModel(m, rounding=rounding, seed=seed)
    x = m.quantize_input(np.random.default_rng(seed + 10).integers(0, 256, size=m.input_shape, dtype=np.uint8))
    exact, applied = [], []
    for step in range(STEPS):
        dw, _ = cm.update_preview(0, x, step % 2)
        before = m.layers[0].weights.astype(np.int64)
        cm.train_step(x, step % 2)
        applied.append(m.layers[0].weights.astype(np.int64) - before)
        exact.append(dw)
    exact, applied = np.array(exact), np.array(applied)
    assert exact.size == 100_000
    # keep the test about rounding: no weight near the int8 clamp, every update below one LSB
    assert np.abs(m.layers[0].weights).max() < 100 and 0 < np.abs(exact).max() < 0.5
    return exact, applied


def test_stochastic_rounding_mean_is_the_exact_update():
    exact, applied = exact_and_applied("stochastic", seed=3)
    frac = exact - np.floor(exact)
    # each key rounds to floor or floor + 1, with P(up) = frac: a Bernoulli(frac) per key
    assert np.all((applied == np.floor(exact)) | (applied == np.floor(exact) + 1))
    sigma = float(np.sqrt(np.sum(frac * (1 - frac))))
    bias = float(np.sum(applied - exact))
    print(f"sum of (applied - exact) over 1e5 keys: {bias:.1f}, sigma {sigma:.1f}, "
          f"{np.count_nonzero(applied)} nonzero updates of {np.sum(np.abs(exact)):.0f} expected")
    assert abs(bias) <= 3 * sigma
    # the updates are tiny (mean |exact| ~0.02 LSB), yet they move weights
    assert np.count_nonzero(applied) > 100


def test_round_to_nearest_freezes_sub_lsb_updates():
    exact, applied = exact_and_applied("nearest", seed=3)
    assert np.abs(exact).max() < 0.5
    assert not applied.any()
