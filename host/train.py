"""The one training run: epochs, learning-rate schedule, sample order, evaluation, history,
progress bar and summary, over a small backend interface.

    from host import train
    summary = train.run(train.SimulatedCore(cm), model, tr_x, tr_y, va_x, va_y,
                        epochs=4, lr_schedule="cosine", seed=0)

A backend is where the weights live and the arithmetic happens; `run` never touches weights
itself. Two backends exist: `SimulatedCore` (the C core on this host, host.core.CModel, an epoch
chunk per C call pipelined over the cores) and `host.stream.Board` (a board over the serial link).
Both are driven identically: before every epoch `set_learning_rates(layer_rates(model))` with
the rates of the schedule; the samples of host.schedule.epoch_order(n, epoch, seed) as int8
inputs (Model.quantize_input), `train_chunk` at a time, in order; `evaluate` of the validation
samples after every epoch (`eval_each_epoch`), every `eval_every` training samples and at the
end. So a board and the simulation fed the same run end with the same weights.

`layer_rates` is the one place that turns learning rates into the core's quantized multipliers
(host.core.CModel, host.stream's SET_LR and the model files all use it).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from host.model import quantize_multiplier

QUANTIZE_BLOCK = 256          # inputs quantized per numpy call (float64 intermediate: ~55 MB at 96x96x3)
# Samples per C epoch-runner call: the progress bar's step. Each call balances its pipeline stages
# on its first two samples, trained on one core (measured, MobileNetV1-0.25 96x96 on 2 cores: 64 per
# call ran 13% below a whole-epoch call, 128 within 2%; splits timed from Python were worse still).
SIM_CHUNK = 128
PRECOMPUTE_BYTES = 1 << 30   # training sets up to this size are quantized once per run, larger ones per chunk
MAX_THREADS = 8               # the runner's pipeline has a stage per thread; few layers pay off beyond this


@dataclass
class Result:
    """One sample trained or evaluated, by any backend (host core or board)."""
    pred: int
    logits: Sequence[int] | None = None       # classifier outputs (int8 values); None if not reported
    local_pred: Sequence[int] | None = None   # per layer LLS head argmax, -1 where none; None if not asked
    local_loss: Sequence[float] | None = None  # per layer local cross-entropy, nan where none (host core)
    insn: int | None = None                   # board: counter units of this step (Info.counter_kind)
    steps: int | None = None                  # board: training steps its model has taken


# ---------------------------------------------------------------------------- which model to keep
SIGN_TEST_ALPHA = 0.05


def sign_test_p(fixed: int, broken: int) -> float:
    """One-sided exact sign (McNemar) test: the probability of at least `fixed` successes in
    fixed + broken fair coin flips, i.e. that a change fixes this many more validation images than
    it breaks by chance alone (host.adapt's choice of depth and `keep_rule` below)."""
    from math import comb

    n = fixed + broken
    if n == 0:
        return 1.0
    return sum(comb(n, j) for j in range(fixed, n + 1)) / 2.0 ** n


def keep_rule(val_y, before, after, alpha: float = SIGN_TEST_ALPHA) -> dict:
    """Keep a fine-tuned model or return to the one it started from (host.simulate / host.stream
    --keep auto): the trained model is kept only when, on the validation split, it fixes
    significantly more images than it breaks against the starting model (the paired predictions
    `before` / `after`; one-sided exact sign test, p < alpha). Training that moves a few images
    (noise) is not taken, so the result is never worse than the start on that split. Returns
    {"keep": "trained" | "start", "fixed", "broken", "p", "n"}."""
    y = np.asarray(val_y)
    ok0, ok1 = np.asarray(before) == y, np.asarray(after) == y
    fixed, broken = int(np.sum(ok1 & ~ok0)), int(np.sum(ok0 & ~ok1))
    p = sign_test_p(fixed, broken)
    return {"keep": "trained" if fixed > broken and p < alpha else "start", "fixed": fixed, "broken": broken,
            "p": round(p, 6), "n": int(len(y))}


# ---------------------------------------------------------------------------- learning rates
def rate_multipliers(lr: float, lls_m_lr: float) -> tuple[int, int, int, int]:
    """(lr_mult, lr_shift, lls_m_lr_mult, lls_m_lr_shift) of one layer's rates."""
    return (*quantize_multiplier(float(lr)), *quantize_multiplier(float(lls_m_lr)))


def layer_rates(model) -> list[tuple[int, int, int, int]]:
    """Per layer the quantized learning-rate multipliers the core trains with (SET_LR payload):
    trainable weighted layers get their Layer.lr / lls_m_lr, the others 0 (never used)."""
    return [rate_multipliers(L.lr, L.lls_m_lr) if L.trainable and L.has_weights else (0, 0, 0, 0)
            for L in model.layers]


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier of `epoch` (0-based): cosine goes base * (1 + cos(pi e / E)) / 2."""
    if schedule == "constant":
        return 1.0
    return float(0.5 * (1.0 + np.cos(np.pi * epoch / epochs)))


def apply_lr(model, base_lr: list, factor: float) -> None:
    for L, (lr, lr_m) in zip(model.layers, base_lr):
        L.lr, L.lls_m_lr = lr * factor, lr_m * factor


def quantize(model, images: np.ndarray) -> np.ndarray:
    """uint8 images (n, H, W, C) -> int8 model inputs, exactly Model.quantize_input per image
    (a pixel's value depends on that pixel alone, so uint8 images go through a 256-entry table)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        lut = model.quantize_input(np.arange(256, dtype=np.uint8))
        if np.array_equal(lut.astype(np.int16), np.arange(256) - 128):    # q = p - 128: flip the top bit
            return np.ascontiguousarray(images).view(np.int8) ^ np.int8(-128)
        return lut.take(images)
    out = np.empty(images.shape, np.int8)
    for s in range(0, len(images), QUANTIZE_BLOCK):
        out[s: s + QUANTIZE_BLOCK] = model.quantize_input(images[s: s + QUANTIZE_BLOCK])
    return out


def default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_THREADS))


# ---------------------------------------------------------------------------- backends
class Backend(Protocol):
    """Where a run trains. `train` must train the samples in the order given, one step each, and
    may be called with any split of an epoch into chunks: the weights must not depend on it."""
    train_chunk: int          # samples per train() call (the progress bar's step)
    eval_chunk: int           # samples per evaluate() call, 0: the whole set at once

    def set_learning_rates(self, rates: list[tuple[int, int, int, int]]) -> None: ...

    def train(self, x: np.ndarray, y: np.ndarray) -> list[Result]: ...

    def evaluate(self, x: np.ndarray) -> list[Result]: ...   # with local_pred per layer

    def postfix(self) -> dict: ...                            # extra progress-bar fields


class SimulatedCore:
    """The host C core (host.core.CModel): training through the C epoch runner, pipelined over
    `threads` cores (bit-identical to per-sample tl_model_train_step for any threads and chunking),
    evaluation with local heads over `threads` cores."""

    def __init__(self, cm, threads: int | None = None, chunk: int = SIM_CHUNK):
        self.cm = cm
        self.threads = min(default_threads() if threads is None else max(1, int(threads)), len(cm.model.layers))
        self.train_chunk = chunk
        self.eval_chunk = 0

    def set_learning_rates(self, rates) -> None:
        self.cm.set_learning_rates(rates)

    def train(self, x, y) -> list[Result]:
        from host.csrc import runner
        preds = runner.train_epoch(self.cm, x, y, threads=self.threads)
        return [Result(int(p)) for p in preds]

    def evaluate(self, x) -> list[Result]:
        preds, logits, local = self.cm.infer_many(x, with_local=True, threads=self.threads)
        return [Result(int(p), lg, lp) for p, lg, lp in zip(preds, logits, local)]

    def postfix(self) -> dict:
        return {}


# ---------------------------------------------------------------------------- the run
def _now() -> float:
    return round(time.time(), 3)


def _sample_record(kind: str, r: Result, **fields) -> dict:
    def ints(v):
        return None if v is None else [int(a) for a in v]
    return {"kind": kind, "t": _now(), **fields, "pred": int(r.pred), "logits": ints(r.logits),
            "local_pred": ints(r.local_pred), "insn": r.insn}


def run(backend: Backend, model, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
        val_y: np.ndarray, *, epochs: int, lr_schedule: str, seed: int, eval_each_epoch: bool = True,
        eval_every: int = 0, progress: bool = True, record: Callable[[dict], None] | None = None,
        log: Callable[[str], None] | None = None, baseline: bool = True,
        start: tuple[int, int] = (0, 0)) -> dict:
    """Train `backend` for `epochs` passes over (train_x uint8, train_y) and evaluate it on
    (val_x, val_y). The model's Layer.lr / lls_m_lr are the base rates (left as they were); the
    schedule scales them per epoch. The validation set is evaluated before the first step
    (step 0, epoch 0: the baseline), after every epoch (`eval_each_epoch`), every `eval_every`
    samples and at the end; `epochs` = 0 only evaluates. `baseline=False` skips the step-0
    evaluation (a caller that measured it already). `record` receives one dict per training
    sample ("train"), per evaluated sample ("eval_sample") and per evaluation ("eval"); `log` one
    line per evaluation.

    start = (epoch, index): resume a run whose backend already holds the weights of the samples
    before position `index` of epoch `epoch`'s order (a board restored from a checkpoint): the run
    goes on from there exactly as the uninterrupted one would (same rates, order, steps; no second
    baseline); training accuracies then count the samples of this call only. A backend with a
    `begin_epoch(epoch, index)` method is told where each epoch (or the resumed part of one)
    starts, after its rates are set."""
    from tqdm import tqdm

    from host.schedule import epoch_order

    n_train, n_val = len(train_y), len(val_y)
    train_y = np.asarray(train_y)
    val_y = np.asarray(val_y)
    val_q = quantize(model, val_x) if n_val else None
    # int8 inputs of the whole training set once (as large as the uint8 images), else per chunk
    train_q = quantize(model, train_x) if np.asarray(train_x).nbytes <= PRECOMPUTE_BYTES else None
    base_lr = [(L.lr, L.lls_m_lr) for L in model.layers]
    total = n_train * epochs
    history, evals, train_preds = [], [], []
    start_epoch, start_index = int(start[0]), int(start[1])
    if not (0 <= start_epoch <= epochs and 0 <= start_index <= n_train):
        raise ValueError(f"start {start}: outside {epochs} epochs of {n_train} samples")
    first_step = start_epoch * n_train + start_index
    state = {"step": first_step, "correct": 0}
    train_seconds = 0.0

    def evaluate(step: int, epoch: float) -> dict:
        eval_chunk = backend.eval_chunk or n_val
        results: list[Result] = []
        with tqdm(total=n_val, desc="eval", unit="img", disable=not progress or eval_chunk >= n_val,
                  leave=False, file=sys.stderr) as bar:
            for s in range(0, n_val, eval_chunk):
                part = backend.evaluate(val_q[s: s + eval_chunk])
                if record is not None:
                    for j, r in enumerate(part, start=s):
                        record(_sample_record("eval_sample", r, step=step, index=j, label=int(val_y[j])))
                results += part
                bar.update(len(part))
        preds = np.array([r.pred for r in results], np.int64)
        local = np.array([r.local_pred for r in results], np.int64).reshape(n_val, -1)
        insn = [r.insn for r in results if r.insn is not None]
        rec = {"kind": "eval", "t": _now(), "step": step, "epoch": epoch, "n": n_val,
               "baseline": step == 0,
               "accuracy": float(np.mean(preds == val_y)), "preds": [int(p) for p in preds],
               "local_accuracy": [float(a) for a in np.mean(local == val_y[:, None], axis=0)],
               "insn_median": int(np.median(insn)) if insn else None}
        evals.append(rec)
        if record is not None:
            record(rec)
        if log is not None:
            when = "before training" if step == 0 else f"epoch {epoch:g}, step {step}"
            log(f"{when}: val {rec['accuracy']:.3f}  local heads " +
                " ".join(f"{a:.2f}" if L.has_weights else "-" for a, L in zip(rec["local_accuracy"], model.layers)))
        return rec

    def eval_due(step: int) -> bool:
        return bool(eval_every) and step % eval_every == 0 and step < total

    def done_epochs(step: int) -> float:
        return round(step / n_train, 6) if n_train else float(epochs)

    t0 = time.perf_counter()
    try:
        if n_val and first_step == 0 and (baseline or epochs == 0):   # the baseline: the model as it came
            evaluate(0, 0)
        for epoch in range(start_epoch, epochs):
            factor = lr_factor(lr_schedule, epoch, epochs)
            apply_lr(model, base_lr, factor)
            try:
                rates = layer_rates(model)
            except ValueError as e:          # a rate too large for a quantized multiplier
                raise ValueError(f"epoch {epoch + 1} learning rates: {e}") from e
            backend.set_learning_rates(rates)
            s0 = start_index if epoch == start_epoch else 0
            if hasattr(backend, "begin_epoch"):
                backend.begin_epoch(epoch, s0)
            order = epoch_order(n_train, epoch, seed)
            correct = 0
            chunk = max(1, backend.train_chunk)
            with tqdm(total=n_train, initial=s0, desc=f"epoch {epoch + 1}/{epochs}", unit="img",
                      disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
                s = s0
                while s < n_train:
                    e = min(n_train, s + chunk)
                    if eval_every:            # a chunk never crosses an evaluation point
                        e = min(e, s + eval_every - state["step"] % eval_every)
                    idx = order[s:e]
                    t1 = time.perf_counter()
                    xq = train_q[idx] if train_q is not None else quantize(model, train_x[idx])
                    results = backend.train(xq, train_y[idx].astype(np.int32))
                    train_seconds += time.perf_counter() - t1
                    for i, r in zip(idx, results):
                        state["step"] += 1
                        ok = int(r.pred == train_y[i])
                        correct += ok
                        state["correct"] += ok
                        train_preds.append(int(r.pred))
                        if record is not None:
                            record(_sample_record("train", r, step=state["step"], epoch=epoch, index=int(i),
                                                  label=int(train_y[i]),
                                                  running_accuracy=state["correct"] / (state["step"] - first_step)))
                    bar.update(e - s)
                    bar.set_postfix(train_acc=f"{correct / (e - s0):.3f}", **backend.postfix())
                    s = e
                    if n_val and eval_due(state["step"]):
                        evaluate(state["step"], done_epochs(state["step"]))
            entry = {"epoch": epoch + 1, "train_accuracy": correct / (n_train - s0) if n_train > s0 else None,
                     "lr_factor": factor}
            if eval_each_epoch and n_val:     # unless an eval_every point fell on the epoch's end
                done = evals and evals[-1]["step"] == state["step"]
                entry["val_accuracy"] = (evals[-1] if done else evaluate(state["step"], epoch + 1))["accuracy"]
            history.append(entry)
        if n_val and not (evals and evals[-1]["step"] == total):
            evaluate(total, epochs)
    finally:
        apply_lr(model, base_lr, 1.0)
    seconds = time.perf_counter() - t0
    last = evals[-1] if evals else None
    return {
        "epochs": epochs, "seed": seed, "lr_schedule": lr_schedule,
        "samples": total, "train_samples": int(n_train), "val_samples": int(n_val),
        "start_step": first_step,                 # > 0: resumed (trained this call: samples - start_step)
        "train_accuracy": history[-1]["train_accuracy"] if history else None,
        "val_accuracy": last["accuracy"] if last else None,
        "val_accuracy_before": evals[0]["accuracy"] if evals else None,
        "local_accuracy": last["local_accuracy"] if last else [],
        "val_predictions": last["preds"] if last else [],
        # the starting model's, when this call evaluated it (step 0; not when resumed): keep_rule
        "val_predictions_before": evals[0]["preds"] if evals and evals[0]["step"] == 0 else None,
        "history": history,
        "evals": [{k: e[k] for k in ("step", "epoch", "n", "accuracy", "local_accuracy")} for e in evals],
        "train_preds": train_preds,
        "insn_median": last["insn_median"] if last else None,
        "seconds": seconds, "train_seconds": train_seconds,
        "samples_per_second": total / seconds if seconds > 0 else 0.0,
    }
