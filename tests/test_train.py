"""host.train: one training run over its backends. The simulated core (C epoch runner in chunks,
pipelined) and a board (here the firmware's dispatcher in process, host.protocol.SimulatedPort)
driven by the same run end with the same weights, predictions and evaluations; chunking and
threads change nothing; and the run equals the per-sample loop host.simulate had before."""
import copy
import hashlib

import numpy as np
import pytest

from host import nets, train
from host.core import CModel
from host.model import weights_sha256
from host.schedule import epoch_order

CFG = dict(basis="sine", variant="m", rounding="stochastic", seed=11, tau=0.5)
EPOCHS = 3


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 40)
    model = nets.build("digits", seed=0, calib=x[:8], classes=10)
    nets.set_learning_rates(model, hidden=0.05, classifier=0.05, lls_m=1e-3)
    return model, x[:30], y[:30], x[30:], y[30:]


def sim_run(setup, threads, chunk, **kw):
    model, tx, ty, vx, vy = setup
    m = copy.deepcopy(model)
    backend = train.SimulatedCore(CModel(m, **CFG), threads=threads, chunk=chunk)
    out = train.run(backend, m, tx, ty, vx, vy, epochs=EPOCHS, lr_schedule="cosine", seed=3, progress=False, **kw)
    return weights_sha256(m), out


def test_chunks_and_threads_do_not_change_the_run(setup):
    sha, ref = sim_run(setup, 1, 1000)
    assert sha != weights_sha256(setup[0])            # it trained
    for threads, chunk in [(1, 1), (2, 7), (3, 64)]:
        got_sha, got = sim_run(setup, threads, chunk)
        assert got_sha == sha
        for k in ("train_preds", "history", "val_predictions", "local_accuracy", "evals"):
            assert got[k] == ref[k], k


def test_run_equals_the_per_sample_loop(setup):
    """What host.simulate.run did before host.train: train_step per sample, rates refreshed per epoch."""
    model, tx, ty, vx, vy = setup
    m = copy.deepcopy(model)
    cm = CModel(m, **CFG)
    base = [(L.lr, L.lls_m_lr) for L in m.layers]
    preds, hist = [], []
    for epoch in range(EPOCHS):
        train.apply_lr(m, base, train.lr_factor("cosine", epoch, EPOCHS))
        cm.refresh_learning_rates()
        correct = 0
        for i in epoch_order(len(ty), epoch, 3):
            r = cm.train_step(m.quantize_input(tx[i]), int(ty[i]))
            preds.append(r.pred)
            correct += r.pred == ty[i]
        val = [cm.infer(m.quantize_input(v), with_local=True) for v in vx]
        hist.append((correct / len(ty), float(np.mean([r.pred == t for r, t in zip(val, vy)]))))
    train.apply_lr(m, base, 1.0)
    sha, out = sim_run(setup, 2, 8)
    assert sha == weights_sha256(m)
    assert out["train_preds"] == [int(p) for p in preds]
    assert [(h["train_accuracy"], h["val_accuracy"]) for h in out["history"]] == hist
    assert out["local_accuracy"] == [float(np.mean([r.local_pred[li] == t for r, t in zip(val, vy)]))
                                     for li in range(len(m.layers))]


def test_board_and_simulated_core_share_the_run(setup):
    from host import modelfile, protocol
    from host.stream import Board, core_config
    model, tx, ty, vx, vy = setup
    m = copy.deepcopy(model)
    cm = CModel(m, **CFG)                       # gives the hidden layers their initial lls_m
    link = protocol.Link(protocol.SimulatedPort())
    link.load_model(modelfile.to_bytes(m))
    link.set_config(**core_config(cm))
    records = []
    board = train.run(Board(link), m, tx, ty, vx, vy, epochs=EPOCHS, lr_schedule="cosine", seed=3,
                      eval_every=25, progress=False, record=records.append)
    sha, sim = sim_run(setup, 2, 64, eval_every=25)
    assert hashlib.sha256(link.read_weights()).hexdigest() == sha
    for k in ("train_preds", "history", "val_predictions", "local_accuracy", "evals"):
        assert board[k] == sim[k], k
    assert [r["kind"] for r in records].count("train") == EPOCHS * len(ty)
    # the baseline before any step (epoch 0), every 25 samples, every epoch's end (30 samples each)
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 25, 30, 50, 60, 75, 90]
    assert [r["epoch"] for r in evals] == [0, round(25 / 30, 6), 1, round(50 / 30, 6), 2, 2.5, 3]
    assert evals[0]["baseline"] and board["val_accuracy_before"] == evals[0]["accuracy"] == sim["val_accuracy_before"]
    assert board["evals"][0]["step"] == 0


def test_epochs_0_only_evaluates(setup):
    model, tx, ty, vx, vy = setup
    m = copy.deepcopy(model)
    cm = CModel(m, **CFG)
    before = weights_sha256(m)
    out = train.run(train.SimulatedCore(cm, threads=1), m, tx, ty, vx, vy, epochs=0, lr_schedule="constant",
                    seed=0, progress=False)
    assert weights_sha256(m) == before and out["samples"] == 0 and out["history"] == []
    assert [e["step"] for e in out["evals"]] == [0]
    assert out["val_accuracy"] == out["val_accuracy_before"] is not None


def test_keep_rule_takes_training_only_when_it_fixes_significantly_more_than_it_breaks():
    y = np.array([1] * 10 + [0] * 10)
    before = np.zeros(20, int)                                   # right on the ten 0s
    assert train.keep_rule(y, before, before) == {"keep": "start", "fixed": 0, "broken": 0, "p": 1.0, "n": 20}
    five = before.copy()
    five[:5] = 1                                                 # fixes 5, breaks none: p = 1/32
    assert train.keep_rule(y, before, five)["keep"] == "trained"
    four = before.copy()
    four[:4] = 1                                                 # 4 of 4: p = 1/16, not below 0.05
    assert train.keep_rule(y, before, four) == {"keep": "start", "fixed": 4, "broken": 0, "p": 0.0625, "n": 20}
    swap = five.copy()
    swap[10:12] = 1                                              # fixes 5, breaks 2: p = 29/128
    d = train.keep_rule(y, before, swap)
    assert (d["keep"], d["fixed"], d["broken"], d["p"]) == ("start", 5, 2, round(29 / 128, 6))
    assert train.keep_rule(y, swap, before)["keep"] == "start"  # the other way round: worse
