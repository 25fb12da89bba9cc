"""Field fine-tuning study in the integer runtime (issue 3, part 3): methods x clean/shifted x seeds.

    python bench/finetune.py [--quick] [--seeds 0,1,2] [--epochs 5] [--methods recipe,last-layer,...]
                             [--model M.tlm|M.tflite] [--data PATH] [--json OUT]

Split and "new camera" shift of ../shared/notes/finetune.md (host.datasets.vww_split, 600 train /
200 test; host.simulate.camera_shift applied to train and test). Every run starts from the same
pretrained int8 model (default: MLPerf Tiny vww_96_int8.tflite from the shared folder, imported
in memory bit-exact with LiteRT), trains batch 1 in the C core with the sample order of
host.schedule.epoch_order, and reports test accuracy after the last epoch (and after each epoch in
"history"). Prints one JSON object on stdout; a tqdm bar (training images) goes to stderr.
--quick: pretrained, last-layer and recipe, seed 0, 2 epochs.

--study adapt (issue 16): label-free camera adaptation (host.adapt) with and without labels, under
the shifts of host.simulate.SHIFTS (new camera, grey camera, strong colour cast) and clean pixels,
methods pretrained / adapt-only / classifier-only / adapt+classifier / adapt+recipe, >= 5 seeds.
Honest selection: per seed, a validation split (--val-count images, seeded permutation) is carved
from the 600 training images; the fit part provides the clean reference statistics, the unlabelled
adaptation images (--adapt-images, labels ignored) and the labelled training images. The depth k
of the adaptation (0 = none among --adapt-ks), the learning rate (a grid per method) and the epoch
count (1..--epochs) are all chosen on the validation split; then, as host.simulate's --keep auto
does, the trained model is kept only when it fixes significantly more validation images than it
breaks against the model training started from (host.train.keep_rule), else that model is. The
200 test images are evaluated once, for the chosen model, and reported with the validation
accuracy that chose it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))  # bench/report.py, also when a test imports this file
from report import emit  # noqa: E402

from host import recipes  # noqa: E402

SHARED = Path(os.environ.get("TINYLLS_SHARED", REPO.parent / "shared"))
DEFAULT_MODEL = (SHARED / "datasets" / "mlperf-tiny-vww-models" / "benchmark" / "training" / "visual_wake_words"
                 / "trained_models" / "vww_96_int8.tflite")
DEFAULT_DATA = SHARED / "datasets" / "vww01-eembc"

# the float results of ../shared/notes/finetune.md, for the table (clean, shifted)
FLOAT_NOTES = {
    "pretrained": (83.5, 64.5), "last-layer": (86.0, 75.8), "full-backprop": (85.3, 79.2),
    "lls-all-1e-5": (85.5, 78.2), "lls-last4": (86.3, 76.7),
}


def _layers_lr(hidden: float, classifier: float, last_n: int | None = None, lls_m: float = 0.0):
    """A setup: LLS on all weighted layers (or the last `last_n`), one hidden and one classifier rate."""
    def setup(model):
        weighted = [i for i, L in enumerate(model.layers) if L.has_weights]
        keep = set(weighted if last_n is None else weighted[-last_n:])
        for i, L in enumerate(model.layers):
            L.trainable = i in keep
            L.lr = classifier if i == len(model.layers) - 1 else hidden
            L.lls_m_lr = lls_m
    return setup


# name -> (setup(model), CModel options, what it is)
METHODS = {
    "pretrained": (None, {}, "no training"),
    "last-layer": (recipes.last_layer_recipe, {}, f"last layer only, lr {recipes.LAST_LAYER_LR}"),
    "recipe": (recipes.finetune_recipe, {},
               f"host.recipes.finetune_recipe: LLS all layers lr {recipes.RECIPE_LR_HIDDEN}, "
               f"classifier {recipes.RECIPE_LR_CLASSIFIER}"),
    "lls-all-1e-5": (_layers_lr(1e-5, 3e-3), {}, "LLS all layers lr 1e-5, classifier 3e-3 (float notes' best)"),
    "lls-last4": (_layers_lr(1e-5, 3e-3, last_n=9), {}, "LLS on the last 4 blocks (8 layers) + classifier 3e-3"),
    "recipe-nearest": (recipes.finetune_recipe, {"rounding": "nearest"}, "the recipe, round-to-nearest updates"),
    "recipe-lls-mxm": (_layers_lr(recipes.RECIPE_LR_HIDDEN, recipes.RECIPE_LR_CLASSIFIER, lls_m=1e-3),
                       {"variant": "mxm"}, "the recipe with LLS-MxM (modulation lr 1e-3)"),
}
QUICK_METHODS = ["pretrained", "last-layer", "recipe"]


def load_split(data: str, model):
    """(train_x, train_y, test_x, test_y) as int8 model inputs, for clean and shifted pixels."""
    from host import datasets
    from host.evaluate import model_input
    from host.simulate import camera_shift

    train, test = datasets.vww_split(datasets.open(data), seed=0)
    out = {}
    for cond, f in (("clean", lambda a: a), ("shifted", camera_shift)):
        out[cond] = (model_input(model, f(train.images)), np.asarray(train.labels, np.int64),
                     model_input(model, f(test.images)), np.asarray(test.labels, np.int64))
    return out


def accuracy(cm, x, y) -> float:
    return float(np.mean([cm.infer(xi).pred == yi for xi, yi in zip(x, y)]))


def finetune(base, setup, opts: dict, split, epochs: int, seed: int, bar=None) -> tuple[float, list]:
    """Copy `base`, apply `setup`, train `epochs` passes in the C core; (final test acc, per-epoch)."""
    import copy

    from host.core import CModel
    from host.schedule import epoch_order

    model = copy.deepcopy(base)
    xtr, ytr, xte, yte = split
    if setup is None:
        for L in model.layers:
            L.trainable = False
        return accuracy(CModel(model), xte, yte), []
    setup(model)
    cm = CModel(model, seed=seed, **opts)
    history = []
    for epoch in range(epochs):
        for i in epoch_order(len(ytr), epoch, seed):
            cm.train_step(xtr[i], int(ytr[i]))
        if bar is not None:
            bar.update(len(ytr))
        history.append(accuracy(cm, xte, yte))
    return history[-1], history


def floors(res: dict) -> dict:
    """Issue 3 (a)/(b) for the recipe, on the seed means."""
    pre_c, pre_s = res["pretrained"]["clean"]["mean"], res["pretrained"]["shifted"]["mean"]
    rec_c, rec_s = res["recipe"]["clean"]["mean"], res["recipe"]["shifted"]["mean"]
    out = {"a_clean_within_1pt": rec_c >= pre_c - 0.01,
           "b_half_drop_recovered": rec_s - pre_s >= 0.5 * (pre_c - pre_s),
           "recovered_fraction": (rec_s - pre_s) / (pre_c - pre_s) if pre_c > pre_s else None}
    if "last-layer" in res:
        out["b_not_worse_than_last_layer"] = rec_s >= res["last-layer"]["shifted"]["mean"]
    return out


# ---------------------------------------------------------------------------- issue 16: adaptation study
ADAPT_METHODS = ("pretrained", "adapt-only", "classifier-only", "adapt+classifier", "adapt+recipe")
ADAPT_SHIFTS = ("new-camera", "grey", "colour-cast", "clean")
# first k layers, 0 = not adapted: host.adapt's field candidates up to the statistics a default
# model file carries (host.quantize --stats-layers 7), i.e. what a board can adapt
ADAPT_KS = (0, 1, 2, 3, 5, 7)
CLASSIFIER_LRS = (1e-3, 3e-3, 1e-2)      # last-layer rate grid (recipes.LAST_LAYER_LR in the middle)
RECIPE_HIDDEN_LRS = (1e-6, 3e-6, 1e-5)   # recipe hidden-rate grid (classifier at recipes.RECIPE_LR_CLASSIFIER)


def _train_select(cm, fit_x, fit_y, val_x, val_y, epochs: int, seed: int, bar=None):
    """Train cm in place for up to `epochs` epochs; keep the state of the epoch with the best
    validation accuracy (ties: fewer epochs). Returns (best epoch, val accuracy, val per epoch)."""
    from host import adapt
    from host.schedule import epoch_order

    best = (-1.0, 0, adapt.snapshot(cm))
    hist = []
    for epoch in range(epochs):
        for i in epoch_order(len(fit_y), epoch, seed):
            cm.train_step(fit_x[i], int(fit_y[i]))
        if bar is not None:
            bar.update(len(fit_y))
        acc = adapt.accuracy(cm, val_x, val_y)
        hist.append(acc)
        if acc > best[0]:
            best = (acc, epoch + 1, adapt.snapshot(cm))
    adapt.restore(cm, best[2])
    return best[1], best[0], hist


def adapt_study(base, data_path: str, shifts, methods, seeds, epochs: int, n_adapt: int, n_val: int,
                bar=None, on_shift=None) -> dict:
    """{shift: {method: {test/val mean, min, max, runs}}}; see the module docstring."""
    import copy

    from host import adapt, datasets
    from host import train as host_train
    from host.core import CModel
    from host.evaluate import model_input
    from host.simulate import SHIFTS

    train, test = datasets.vww_split(datasets.open(data_path), seed=0)
    tr_img, tr_y = train.images, np.asarray(train.labels, np.int64)
    te_y = np.asarray(test.labels, np.int64)
    clean_tr = model_input(base, tr_img)
    frozen = copy.deepcopy(base)
    for L in frozen.layers:
        L.trainable = False
    out: dict = {}
    for shift in shifts:
        f = (lambda a: a) if shift == "clean" else SHIFTS[shift]
        sh_tr, sh_te = model_input(base, f(tr_img)), model_input(base, f(test.images))
        runs = {m: [] for m in methods}
        for seed in seeds:
            perm = np.random.default_rng(1000 + seed).permutation(len(tr_y))
            val, fit = perm[:n_val], perm[n_val:]
            unl = fit[np.random.default_rng(2000 + seed).permutation(len(fit))[:n_adapt]]
            vx, vy, fx, fy = sh_tr[val], tr_y[val], sh_tr[fit], tr_y[fit]
            # reference statistics: the clean fit images through the original network
            ref = adapt.reference_stats(CModel(copy.deepcopy(frozen)), clean_tr[fit], max(ADAPT_KS))
            # the rule: k on validation (pretrained classifier), 0 = no adaptation
            cm0 = CModel(copy.deepcopy(frozen))
            k, kscores = adapt.choose(cm0, ref, sh_tr[unl], vx, vy, ADAPT_KS)
            for m in methods:
                rec = {"seed": seed, "k": k if m.startswith("adapt") else 0}
                if m == "pretrained":
                    cm = CModel(copy.deepcopy(frozen))
                    rec["val"] = adapt.accuracy(cm, vx, vy)
                elif m == "adapt-only":
                    cm = cm0
                    rec["val"], rec["k_val"] = kscores[k], {str(a): b for a, b in kscores.items()}
                else:
                    setup = (recipes.last_layer_recipe if m in ("classifier-only", "adapt+classifier")
                             else recipes.finetune_recipe)
                    grid = (CLASSIFIER_LRS if setup is recipes.last_layer_recipe else RECIPE_HIDDEN_LRS)
                    # the model training starts from (adapted with the rule's k, or the pretrained one):
                    # the field run's --keep auto returns to it unless training wins significantly
                    start_cm = cm0 if rec["k"] else CModel(copy.deepcopy(frozen))
                    start_preds = adapt.predictions(start_cm, vx)
                    best = None
                    for lr in grid:
                        model = copy.deepcopy(base)
                        setup(model)
                        for i, L in enumerate(model.layers):
                            if L.trainable:
                                last = i == len(model.layers) - 1
                                if setup is recipes.last_layer_recipe or not last:
                                    L.lr = lr
                        cm = CModel(model, seed=seed)
                        if rec["k"]:
                            adapt.adapt(cm, ref, sh_tr[unl], rec["k"])
                        ep, vacc, hist = _train_select(cm, fx, fy, vx, vy, epochs, seed, bar)
                        if best is None or vacc > best[0]:
                            best = (vacc, lr, ep, hist, cm)
                    rec.update(val=best[0], lr=best[1], epochs=best[2], val_history=best[3])
                    cm = best[4]
                    kept = host_train.keep_rule(vy, start_preds, adapt.predictions(cm, vx))
                    rec.update(kept=kept["keep"], fixed=kept["fixed"], broken=kept["broken"], trained_val=best[0])
                    if kept["keep"] == "start":
                        cm = start_cm
                        rec["val"] = adapt.accuracy(cm, vx, vy)
                rec["test"] = adapt.accuracy(cm, sh_te, te_y)       # once, for the chosen model
                runs[m].append(rec)
        out[shift] = {m: {**{f"{w}_{s}": float(fn([r[w] for r in rs]))
                             for w in ("test", "val") for s, fn in (("mean", np.mean), ("std", np.std),
                                                                     ("min", np.min), ("max", np.max))},
                          "runs": rs} for m, rs in runs.items()}
        if on_shift is not None:
            on_shift(out)
    return out


def adapt_main(args) -> int:
    from tqdm import tqdm

    from host.evaluate import load_model

    t0 = time.time()
    seeds = [int(s) for s in (args.seeds or "0,1,2,3,4").split(",")]
    shifts = args.shifts.split(",") if args.shifts else list(ADAPT_SHIFTS)
    methods = args.methods.split(",") if args.methods else list(ADAPT_METHODS)
    bad = [m for m in methods if m not in ADAPT_METHODS] + [s for s in shifts if s not in ADAPT_SHIFTS]
    if bad:
        print(f"bench/finetune.py: error: unknown method/shift {bad[0]!r} (methods: {', '.join(ADAPT_METHODS)}; "
              f"shifts: {', '.join(ADAPT_SHIFTS)})", file=sys.stderr)
        return 2
    epochs = args.epochs or recipes.RECIPE_EPOCHS
    base = load_model(args.model)
    n_fit = 600 - args.val_count
    n_trained = sum(m not in ("pretrained", "adapt-only") for m in methods)
    bar = tqdm(total=len(shifts) * len(seeds) * n_trained * 3 * epochs * n_fit, unit="img", file=sys.stderr,
               disable=args.quiet, dynamic_ncols=True)
    from host.simulate import SHIFTS

    def document(res):
        return {
            "study": "adapt (issue 16)", "model": args.model, "data": args.data,
            "split": f"vww_split(seed=0): 600 train / 200 test; per seed {args.val_count} validation images carved "
                     f"from the 600 train (permutation seed 1000+seed), the rest fit",
            "shifts": {s: (SHIFTS[s].__doc__ or "").strip().split("\n")[0] if s in SHIFTS else "none" for s in shifts},
            "adapt_images": args.adapt_images, "adapt_ks": ADAPT_KS, "classifier_lrs": CLASSIFIER_LRS,
            "recipe_hidden_lrs": RECIPE_HIDDEN_LRS, "max_epochs": epochs, "seeds": seeds,
            "results": res,
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]},
            "seconds": round(time.time() - t0, 1),
        }

    def partial(res):       # each finished shift is kept (a long run may be cut short)
        if args.json:
            Path(args.json + ".partial").write_text(json.dumps(document(res), indent=1) + "\n", encoding="utf-8")

    res = adapt_study(base, args.data, shifts, methods, seeds, epochs, args.adapt_images, args.val_count, bar,
                      on_shift=partial)
    bar.close()
    return emit(document(res), args.json, indent=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="pretrained, last-layer, recipe; seed 0; 2 epochs")
    p.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2)")
    p.add_argument("--epochs", type=int, default=None, help=f"default {recipes.RECIPE_EPOCHS}")
    p.add_argument("--methods", default=None, help=f"comma-separated from {', '.join(METHODS)}")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model file (.tlm) or full-int8 .tflite")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="dataset path (EEMBC vww01 folder)")
    p.add_argument("--json", help="also write the JSON object to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--study", choices=("finetune", "adapt"), default="finetune",
                   help="adapt: the camera-adaptation study of issue 16 (see the module docstring)")
    p.add_argument("--shifts", default=None, help=f"--study adapt: comma-separated from {', '.join(ADAPT_SHIFTS)} "
                                                  "(default all)")
    p.add_argument("--adapt-images", type=int, default=64, help="--study adapt: unlabelled adaptation images")
    p.add_argument("--val-count", type=int, default=150, help="--study adapt: validation images carved from the 600 train")
    args = p.parse_args(argv)
    if args.study == "adapt":
        for path in (args.model, args.data):
            if not Path(path).exists():
                print(f"bench/finetune.py: {path} is missing (set TINYLLS_SHARED or pass --model/--data)",
                      file=sys.stderr)
                return 2
        if not 1 <= args.adapt_images <= 600 - args.val_count or not 1 <= args.val_count < 600:
            print(f"bench/finetune.py: error: --adapt-images {args.adapt_images} / --val-count {args.val_count} "
                  "out of range", file=sys.stderr)
            return 2
        return adapt_main(args)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    epochs = args.epochs or (2 if args.quick else recipes.RECIPE_EPOCHS)
    methods = args.methods.split(",") if args.methods else (QUICK_METHODS if args.quick else list(METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    for path in (args.model, args.data):
        if not Path(path).exists():
            print(f"bench/finetune.py: {path} is missing (set TINYLLS_SHARED or pass --model/--data)",
                  file=sys.stderr)
            return 2
    if "pretrained" not in methods:
        methods = ["pretrained"] + methods
    from tqdm import tqdm

    from host.evaluate import load_model

    t0 = time.time()
    base = load_model(args.model)
    data = load_split(args.data, base)
    n_train = len(data["clean"][1])
    trained = [m for m in methods if METHODS[m][0] is not None]
    bar = tqdm(total=len(trained) * 2 * len(seeds) * epochs * n_train, unit="img", file=sys.stderr,
               disable=args.quiet, dynamic_ncols=True)
    res: dict = {}
    for name in methods:
        setup, opts, what = METHODS[name]
        res[name] = {"what": what}
        for cond in ("clean", "shifted"):
            runs = []
            for seed in (seeds if setup is not None else [0]):
                bar.set_description(f"{name} {cond} s{seed}")
                acc, hist = finetune(base, setup, opts, data[cond], epochs, seed, bar)
                runs.append({"seed": seed, "accuracy": acc, "history": hist})
            accs = [r["accuracy"] for r in runs]
            res[name][cond] = {"mean": float(np.mean(accs)), "min": float(np.min(accs)),
                               "max": float(np.max(accs)), "runs": runs}
    bar.close()
    out = {
        "model": args.model, "data": args.data, "split": "vww_split(seed=0): 600 train / 200 test",
        "shift": "x' = clip(0.45 x + 10), 3x3 box blur (host.simulate.camera_shift)",
        "epochs": epochs, "seeds": seeds, "batch": 1,
        "recipe": {"lr_hidden": recipes.RECIPE_LR_HIDDEN, "lr_classifier": recipes.RECIPE_LR_CLASSIFIER,
                   "epochs": recipes.RECIPE_EPOCHS, "rounding": recipes.RECIPE_ROUNDING, "rule": recipes.RECIPE_RULE},
        "methods": res, "floors": floors(res) if "recipe" in res else None, "float_notes": FLOAT_NOTES,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]},
        "seconds": round(time.time() - t0, 1),
    }
    return emit(out, args.json, indent=1)


if __name__ == "__main__":
    sys.exit(main())
