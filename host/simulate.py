"""python -m host.simulate: on-device training, simulated on the host with the very same C core.

With no arguments it trains MobileNetV1-0.25 (96x96x3, 2 classes) from scratch with LLS on the
project's own synthetic person / no-person scenes. `--data PATH` reads any dataset layout
`host.datasets.open` knows (e.g. the EEMBC VWW folder), `--model FILE` fine-tunes a model file
(`python -m host.quantize import-tflite ...`). The run is host.train.run on the simulated core
(each epoch through the C epoch runner, pipelined over the cores, in chunks of 128 samples), the
very run host.stream drives a board with, so a board fed the same data, model, epochs and seed
ends with the same weights (`weights_sha256`).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import numpy as np

from host.train import apply_lr, lr_factor  # noqa: F401  (the schedule, where it was before host.train)

RULES = {  # --rule -> (basis, variant)
    "lls-square": ("square", "plain"),
    "lls-sine": ("sine", "plain"),
    "lls-random": ("random", "plain"),
    "lls-m": ("square", "m"),
    "lls-mxm": ("square", "mxm"),
}

# The built-in default, measured on the 2-core machine (README "Results"): 4 epochs, cosine
# schedule; LLS hidden layers at 3e-5 (1e-4 and 3e-4 drift the features faster than the
# classifier follows: 0.863 / 0.743 val), classifier at 3e-2; the classifier reads the flattened
# last map ("grid": LLS writes class evidence into position, a global average pool erases it);
# the easiest synthetic scenes (harder ones are not learned from scratch in this budget).
DEFAULT_EPOCHS = 4
DEFAULT_LR_HIDDEN = 3e-5
DEFAULT_LR_CLASSIFIER = 3e-2
DEFAULT_HEAD = "grid"
DEFAULT_DIFFICULTY = 0.0
DEFAULT_ALPHA = 0.25
LR_RANGE = (1e-9, 1.0)     # a learning rate outside this is a typo (the recipes use 3e-6 .. 3e-2)


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


def add_training_args(p: argparse.ArgumentParser) -> None:
    """The options that define a training run; host.stream takes the same ones, so a board and
    the simulation given the same values train identically."""
    from host.cli_common import int_at_least

    p.add_argument("--difficulty", type=float, default=None,
                   help=f"synthetic data only: clutter, noise and figure-size variation in [0, 1] "
                        f"(default {DEFAULT_DIFFICULTY})")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (default: generated person/no-person scenes) or a dataset path "
                        "(EEMBC VWW folder, MLPerf person/non_person folders, tinylls shards, ...)")
    p.add_argument("--val-split", default=None, metavar="F|N",
                   help="validation part of --data: a fraction (0.25), percentage (25%%) or count of images, "
                        "drawn by the seeded permutation of host.datasets.vww_split (default 25%%: 800 images "
                        "give the published 600 / 200)")
    p.add_argument("--val-data", default=None, metavar="PATH",
                   help="a separate validation data set (then all of --data trains; default: split --data)")
    p.add_argument("--model", help="model file to fine-tune (default: MobileNetV1 from scratch)")
    p.add_argument("--epochs", type=int_at_least(0), default=None,
                   help=f"passes over the training set, 0: only evaluate (default {DEFAULT_EPOCHS} from "
                        "scratch, host.recipes.RECIPE_EPOCHS when fine-tuning --model)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds initialisation, sample order and stochastic rounding")
    p.add_argument("--rule", choices=sorted(RULES), default="lls-square", help="learning rule / basis")
    p.add_argument("--lr-hidden", type=float, default=None,
                   help=f"learning rate of LLS hidden layers (default {DEFAULT_LR_HIDDEN} from scratch)")
    p.add_argument("--lr-classifier", type=float, default=None,
                   help=f"learning rate of the last layer (default {DEFAULT_LR_CLASSIFIER} from scratch)")
    p.add_argument("--train-layers", default="all",
                   help="'all', 'last' (classifier only) or N (the last N weighted layers)")
    p.add_argument("--lr-schedule", choices=["cosine", "constant"], default=None,
                   help="per-epoch learning-rate schedule (cosine: from the base rate towards 0; default "
                        "cosine from scratch, constant when fine-tuning --model, as measured)")
    p.add_argument("--rounding", choices=["stochastic", "nearest"], default="stochastic",
                   help="rounding of weight updates")
    p.add_argument("--alpha", type=float, default=None,
                   help=f"MobileNet width multiplier, from scratch only (default {DEFAULT_ALPHA})")
    p.add_argument("--head", choices=["grid", "gap"], default=None,
                   help=f"from scratch only: classifier on the flattened last map (grid) or after global "
                        f"pooling (default {DEFAULT_HEAD})")
    p.add_argument("--limit", type=int_at_least(0), default=0,
                   help="use at most this many training samples (default 0: all)")
    p.add_argument("--shift", action="store_true",
                   help="'new camera' shift: x' = clip(0.45 x + 10), then a 3x3 box blur (finetune.md)")
    p.add_argument("--val-limit", type=int_at_least(0), default=0,
                   help="evaluate on at most this many validation samples (default 0: all)")
    p.add_argument("--adapt", choices=("auto", "on", "off"), default="auto",
                   help="label-free camera adaptation before training (host.adapt): auto adapts when the model "
                        "file carries reference statistics and the validation split shows a significant gain "
                        "(host.adapt.choose); on: always (the model must carry statistics); off: never (default auto)")
    p.add_argument("--adapt-images", type=int_at_least(1), default=64,
                   help="unlabelled training images the adaptation reads (labels ignored; default 64)")
    p.add_argument("--adapt-layers", default="auto", metavar="K|auto",
                   help="adapt the first K layers, or auto: the K among 1, 2, 3, 5, 7 (up to the layers with "
                        "statistics) that host.adapt.choose picks on the validation split (default auto)")
    p.add_argument("--keep", choices=("auto", "last"), default="auto",
                   help="fine-tuning a --model: auto keeps the trained model only when it fixes significantly "
                        "more validation images than it breaks against the model before training (one-sided "
                        "sign test, p < 0.05), else returns to that model (adapted, if it was); last: keep "
                        "whatever training gives. From scratch, and without a validation split, training is "
                        "always kept (default auto)")


def parse_args(argv=None) -> argparse.Namespace:
    from host.cli_common import ArgumentParser

    p = ArgumentParser(tool="host.simulate",
                       description="Simulate on-device LLS training on the host with the tinylls C core.")
    add_training_args(p)
    p.add_argument("--json", help="write the summary as JSON to this file")
    p.add_argument("--log", help="JSONL log: one record per training sample and per evaluation (host.runlog)")
    p.add_argument("--plot", help="PNG: validation accuracy per epoch from the epoch-0 baseline, running "
                                  "training accuracy, local heads")
    p.add_argument("--save-model", help="write the trained model to this model file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- data and model
def load_data(spec: str, difficulty: float | None, val_split=None, val_data: str | None = None,
              log=None):
    """(train, val) Datasets. synthetic: its own default split. A path: `val_data` is the
    validation set (all of `spec` trains), else `val_split` (host.datasets.parse_val_split; default
    25%) of `spec` by host.datasets.vww_split's seeded permutation (800 images: 600 / 200)."""
    from host import datasets

    if spec == "synthetic":
        if val_split is not None or val_data is not None:
            raise UsageError("--val-split / --val-data apply to a --data path; the synthetic scenes "
                             "come with their own validation set")
        d = DEFAULT_DIFFICULTY if difficulty is None else difficulty
        if not 0.0 <= d <= 1.0:
            raise UsageError(f"--difficulty must be in [0, 1], got {d}")
        return datasets.synthetic.default_split(0, difficulty=d)
    ds = _open(spec, "--data", log)
    if val_data is not None:
        if val_split is not None:
            raise UsageError("give --val-split or --val-data, not both")
        return ds.sorted_by_id(), _open(val_data, "--val-data", log).sorted_by_id()
    frac = datasets.DEFAULT_VAL_SPLIT if val_split is None else datasets.parse_val_split(val_split)
    n_train, _ = datasets.split_counts(len(ds), frac, f"--data {spec}")
    return datasets.vww_split(ds, seed=0, n_train=n_train)


def _open(path: str, flag: str, log=None):
    from host import datasets

    if path == "synthetic" or path.startswith("synthetic:"):
        raise UsageError(f"{flag} {path}: give a data set path here")
    ds = datasets.open(path)
    if len(ds) == 0:
        raise UsageError(f"{flag} {path}: no images")
    note = ds.meta.get("converted") if isinstance(getattr(ds, "meta", None), dict) else None
    if note:                       # said once, even with --quiet: the model sees other pixels than the files hold
        print(f"warning: {flag} {path}: {note}", file=sys.stderr, flush=True)
    return ds


def camera_shift(images: np.ndarray) -> np.ndarray:
    """The 'new camera' of finetune.md: darker, low contrast, blurred."""
    x = np.clip(0.45 * images.astype(np.float64) + 10.0, 0, 255)
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = images.shape[1:3]
    blur = sum(pad[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0
    return np.clip(np.round(blur), 0, 255).astype(np.uint8)


def grey_shift(images: np.ndarray) -> np.ndarray:
    """A grey-sensor camera: every pixel's BT.601 luma (0.299 R + 0.587 G + 0.114 B, rounded)
    in all three channels."""
    y = np.round(images.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    return np.repeat(np.clip(y, 0, 255).astype(np.uint8)[..., None], images.shape[-1], -1)


def colour_cast_shift(images: np.ndarray) -> np.ndarray:
    """A strong warm colour cast (wrong white balance): R x 1.3 + 20, G x 1.0, B x 0.55,
    clipped to 0..255, rounded."""
    x = images.astype(np.float64) * np.array([1.3, 1.0, 0.55]) + np.array([20.0, 0.0, 0.0])
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


# the camera shifts of the adaptation study (bench/finetune.py, docs/finetune.md), by name
SHIFTS = {"new-camera": camera_shift, "grey": grey_shift, "colour-cast": colour_cast_shift}


def select_trainable(model, spec: str) -> None:
    weighted = [i for i, L in enumerate(model.layers) if L.has_weights]
    if spec == "all":
        keep = set(weighted)
    elif spec == "last":
        keep = {weighted[-1]}
    else:
        try:
            n = int(spec)
        except ValueError:
            raise UsageError(f"--train-layers must be all, last or a number, got {spec!r}") from None
        if not 1 <= n <= len(weighted):
            raise UsageError(f"--train-layers {n}: the model has {len(weighted)} weighted layers")
        keep = set(weighted[-n:])
    for i, L in enumerate(model.layers):
        L.trainable = i in keep


def build_model(args, train):
    from host import nets, recipes

    if args.model:
        import os

        from host import modelfile

        if not os.path.isfile(args.model):
            raise UsageError(f"--model {args.model}: no such file (make one with `python -m host.quantize "
                             f"import-tflite IN.tflite -o {args.model}`)")
        model = modelfile.load(args.model)
        if args.lr_hidden is None and args.lr_classifier is None and args.train_layers == "all":
            recipes.finetune_recipe(model)   # the measured field recipe (docs/finetune.md)
            return model
        lr_h = recipes.RECIPE_LR_HIDDEN if args.lr_hidden is None else args.lr_hidden
        lr_c = recipes.RECIPE_LR_CLASSIFIER if args.lr_classifier is None else args.lr_classifier
    else:
        h, w, c = train.images.shape[1:]
        if h != w:
            raise UsageError(f"from-scratch MobileNet needs square images, the data is {h}x{w}")
        model = nets.build("mobilenet", seed=args.seed, calib=train.images[:16], classes=2,
                           alpha=model_alpha(args), resolution=h, channels=c, head=args.head or DEFAULT_HEAD)
        lr_h = DEFAULT_LR_HIDDEN if args.lr_hidden is None else args.lr_hidden
        lr_c = DEFAULT_LR_CLASSIFIER if args.lr_classifier is None else args.lr_classifier
    nets.set_learning_rates(model, lr_h, lr_c)
    select_trainable(model, args.train_layers)
    return model


def model_alpha(args) -> float:
    return DEFAULT_ALPHA if args.alpha is None else args.alpha


def model_name(args, model) -> str:
    return args.model or f"mobilenet_v1_{model_alpha(args)}_{model.input_shape[0]}"


def match_channels(images: np.ndarray, channels: int, what: str) -> np.ndarray:
    from host.datasets.base import to_grey

    if images.shape[-1] == channels:
        return images
    if channels == 1 and images.shape[-1] == 3:
        return to_grey(images)
    raise UsageError(f"{what} has {images.shape[-1]} channels, the model expects {channels}")


# ---------------------------------------------------------------------------- the run
@dataclass
class Setup:
    """Everything a run needs, decided once: host.simulate and host.stream both start here."""
    model: object              # host.model.Model with trainable flags and base learning rates set
    train_x: np.ndarray        # (N, H, W, C) uint8, in dataset order (epoch_order permutes indices)
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    config: dict               # CModel training configuration: basis, variant, rounding, seed, tau


TAU = 0.5


def resolve_defaults(args) -> None:
    """Fill the options whose default depends on the job: from scratch or fine-tuning --model."""
    from host import recipes

    if args.epochs is None:
        args.epochs = recipes.RECIPE_EPOCHS if args.model else DEFAULT_EPOCHS
    if args.lr_schedule is None:
        args.lr_schedule = "constant" if args.model else "cosine"


def check_args(args) -> None:
    """Options that make no sense, or that the run would silently ignore: UsageError naming the
    flag (one line, exit 2), before any data is read."""
    if args.epochs is not None and args.epochs < 0:
        raise UsageError(f"--epochs must be >= 0 (0: evaluate only), got {args.epochs}")
    for name in ("limit", "val_limit"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0 (0: all), got {getattr(args, name)}")
    import os
    if args.model and not os.path.isfile(args.model):
        raise UsageError(f"--model {args.model}: no such file (make one with `python -m host.quantize "
                         f"import-tflite IN.tflite -o {args.model}`)")
    for flag, v in (("--data", args.data), ("--val-data", args.val_data)):
        if v is not None and v != "synthetic" and not v.startswith("synthetic:") and not os.path.exists(v):
            raise UsageError(f"{flag} {v}: no such file or folder")
    if args.model:
        for flag, v in (("--alpha", args.alpha), ("--head", args.head)):
            if v is not None:
                raise UsageError(f"{flag} builds a model from scratch; it has no effect with --model {args.model}")
    if args.alpha is not None and not 0.0 < args.alpha <= 4.0:
        raise UsageError(f"--alpha must be in (0, 4], got {args.alpha}")
    if args.difficulty is not None and args.data != "synthetic":
        raise UsageError(f"--difficulty shapes the synthetic scenes; it has no effect with --data {args.data}")
    for flag, v in (("--lr-hidden", args.lr_hidden), ("--lr-classifier", args.lr_classifier)):
        if v is not None and not LR_RANGE[0] <= v <= LR_RANGE[1]:
            raise UsageError(f"{flag} {v}: a learning rate must be within [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}]")
    from host.adapt import parse_k
    try:
        args.adapt_k = parse_k(args.adapt_layers)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.adapt == "on" and not args.model:
        raise UsageError("--adapt on needs --model (a model file with adaptation statistics)")
    if args.val_split is not None:
        from host.datasets import parse_val_split
        try:
            parse_val_split(args.val_split)
        except ValueError as e:
            raise UsageError(str(e)) from None


def prepare(args, log=None) -> Setup:
    check_args(args)
    resolve_defaults(args)
    train, val = load_data(args.data, args.difficulty, args.val_split, args.val_data, log)
    model = build_model(args, train)
    c = model.input_shape[2]
    tr_x = match_channels(train.images, c, f"--data {args.data}")
    va_x = match_channels(val.images, c, f"--data {args.data}")
    if tr_x.shape[1:] != model.input_shape:
        raise UsageError(f"--data images are {tr_x.shape[1:]}, the model expects {model.input_shape}")
    if va_x.shape[1:] != model.input_shape:
        raise UsageError(f"--val-data images are {va_x.shape[1:]}, the model expects {model.input_shape}")
    if args.shift:
        tr_x, va_x = camera_shift(tr_x), camera_shift(va_x)
    tr_y, va_y = train.labels, val.labels
    if args.limit:
        tr_x, tr_y = tr_x[: args.limit], tr_y[: args.limit]
    if args.val_limit:
        va_x, va_y = va_x[: args.val_limit], va_y[: args.val_limit]
    basis, variant = RULES[args.rule]
    config = dict(basis=basis, variant=variant, rounding=args.rounding, seed=args.seed, tau=TAU)
    return Setup(model, tr_x, tr_y, va_x, va_y, config)


def adapt_before_training(args, setup: Setup, cm, log=lambda *a: None) -> dict:
    """The adaptation step in front of host.train.run (host.simulate and host.stream): host.adapt's
    field_step on this run's training images (unlabelled) and validation split; cm (and, through
    Layer.adapt_quant, the model file written from setup.model) is adapted in place."""
    from host import adapt, train

    mode, k = getattr(args, "adapt", "off"), getattr(args, "adapt_k", "auto")
    if mode == "off" or (mode == "auto" and not adapt.model_reference(setup.model)):
        return adapt.field_step(cm, "off" if mode == "off" else mode, k, 0, setup.train_x[:0], setup.val_x[:0],
                                setup.val_y[:0], args.seed)
    tr = train.quantize(setup.model, setup.train_x)
    va = train.quantize(setup.model, setup.val_x)
    try:
        return adapt.field_step(cm, mode, k, args.adapt_images, tr, va, np.asarray(setup.val_y), args.seed, log)
    except ValueError as e:
        raise UsageError(str(e).replace("the model file", f"--model {args.model}")) from None


def keep_decision(args, out: dict, val_y) -> dict:
    """host.simulate's and host.stream's --keep after host.train.run: host.train.keep_rule when
    fine-tuning a --model with --keep auto and the run evaluated the starting model; otherwise
    the trained model is kept, with the reason."""
    from host import train

    if args.keep == "last":
        return {"keep": "trained", "reason": "--keep last"}
    if not args.model:
        return {"keep": "trained", "reason": "trained from scratch: nothing to return to"}
    if out.get("val_predictions_before") is None:
        return {"keep": "trained", "reason": "no evaluation of the starting model (no validation split, "
                                             "or a resumed run)"}
    d = train.keep_rule(val_y, out["val_predictions_before"], out["val_predictions"])
    d["reason"] = (f"on {d['n']} validation images training fixed {d['fixed']} and broke {d['broken']} "
                   f"(sign test p = {d['p']:.3g}" + (")" if d["keep"] == "trained" else
                                                      f", not below {train.SIGN_TEST_ALPHA}): the model before "
                                                      "training is kept"))
    return d


def run(args, threads: int | None = None, outputs=None) -> dict:
    """The run of `args` on the simulated core (host.train.run over host.train.SimulatedCore);
    `threads`: cores the C epoch runner pipelines over (default host.train.default_threads()).
    `outputs` (host.outputs.Outputs): where --log, --plot and --save-model go (temporary names;
    the caller commits them)."""
    from host import adapt, runlog, train
    from host.core import CModel
    from host.model import weights_sha256

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    setup = prepare(args, log=log)
    model = setup.model
    cm = CModel(model, **setup.config)
    adaptation = adapt_before_training(args, setup, cm, log)
    start = adapt.snapshot(cm) if args.keep == "auto" and args.model else None   # what --keep auto may return to
    backend = train.SimulatedCore(cm, threads=threads)
    name = model_name(args, model)
    log(f"model {model.name}: {len(model.layers)} layers, input {model.input_shape}, {model.classes} classes; "
        f"train {len(setup.train_y)}, val {len(setup.val_y)} samples ({args.data}); "
        f"{backend.threads} thread(s)")
    log(f"scratch arena {cm.arena_bytes} B (largest layer in+out {cm.max_layer_bytes} B); "
        f"a backprop trainer keeps {cm.bp_activation_bytes} B of activations")
    head = {"data": args.data, "val_data": args.val_data, "val_split": args.val_split, "model": name,
            "rule": args.rule, "epochs": args.epochs, "seed": args.seed, "lr_schedule": args.lr_schedule,
            "shift": bool(args.shift), "config": setup.config, "adaptation": adaptation,
            "train_samples": int(len(setup.train_y)), "val_samples": int(len(setup.val_y))}
    want_log = outputs is not None and ("--log" in outputs or "--plot" in outputs)
    records: list[dict] = []
    logf = outputs.open_text("--log") if outputs is not None and "--log" in outputs else None
    try:
        def write(rec):
            if logf is not None:
                logf.write(json.dumps(rec) + "\n")
            if "--plot" in outputs and rec["kind"] in ("train", "eval"):
                records.append(rec)
        write({"kind": "start", **head}) if want_log else None
        out = train.run(backend, model, setup.train_x, setup.train_y, setup.val_x, setup.val_y,
                        epochs=args.epochs, lr_schedule=args.lr_schedule, seed=args.seed,
                        progress=not args.quiet, log=log, record=write if want_log else None)
        kept = keep_decision(args, out, setup.val_y)
        if kept["keep"] == "start":
            adapt.restore(cm, start)
        log(f"keep ({args.keep}): {kept['keep']} model; {kept['reason']}")
        write({"kind": "keep", **kept}) if want_log else None
        summary = {
            **head,
            "train_accuracy": out["train_accuracy"], "val_accuracy": out["val_accuracy"],
            "val_accuracy_before": out["val_accuracy_before"],
            "kept": kept,
            "per_layer_accuracy": [None if not L.has_weights else a
                                   for a, L in zip(out["local_accuracy"] or [0.0] * len(model.layers), model.layers)],
            "history": out["history"],
            "evals": out["evals"],
            "val_predictions": out["val_predictions"],
            "scratch_bytes": cm.arena_bytes, "max_layer_bytes": cm.max_layer_bytes,
            "bp_activation_bytes": cm.bp_activation_bytes,
            "weights_sha256": weights_sha256(model),
            "threads": backend.threads,
            "seconds": out["seconds"], "train_seconds": out["train_seconds"],
            "samples_per_second": out["samples_per_second"],
        }
        if want_log:
            write({"kind": "end", **{k: summary[k] for k in ("weights_sha256", "train_accuracy", "val_accuracy",
                                                             "val_accuracy_before")}})
    finally:
        if logf is not None:
            logf.close()
    if outputs is not None and "--plot" in outputs:
        runlog.plot(records, str(outputs.temp("--plot")), runlog.title_of(summary))
    if outputs is not None and "--save-model" in outputs:
        from host import modelfile

        modelfile.save(model, str(outputs.temp("--save-model")))
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    from host.cli_common import fail, interrupted
    from host.core import TinyllsError
    from host.datasets import DataError
    from host.outputs import OutputError, Outputs

    outputs = None
    try:
        outputs = Outputs({"--json": args.json, "--log": args.log, "--plot": args.plot,
                           "--save-model": args.save_model})
        summary = run(args, outputs=outputs)
        if args.json:
            outputs.write_text("--json", json.dumps(summary, indent=2) + "\n")
        written = outputs.commit()
    except (UsageError, DataError, TinyllsError, OutputError, FileNotFoundError, ValueError, OSError) as exc:
        if outputs is not None:
            outputs.discard()
        return fail("host.simulate", exc)
    except KeyboardInterrupt:
        if outputs is not None:
            outputs.discard()
        return interrupted("host.simulate")
    except BaseException:
        if outputs is not None:
            outputs.discard()
        raise
    before = summary["val_accuracy_before"]
    fmt = (lambda v: "-" if v is None else f"{v:.3f}")
    if summary["kept"]["keep"] == "start" and args.epochs:
        print(f"kept the model before training: {summary['kept']['reason']}")
    print(f"validation accuracy {fmt(before)} before, {fmt(summary['val_accuracy'])} after {args.epochs} epoch(s); "
          f"train accuracy {fmt(summary['train_accuracy'])}, {summary['samples_per_second']:.1f} samples/s, "
          f"weights sha256 {summary['weights_sha256'][:16]}...")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from host.cli_common import run_main
    sys.exit(run_main("host.simulate", main))
