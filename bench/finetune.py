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
"""
from __future__ import annotations

import argparse
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="pretrained, last-layer, recipe; seed 0; 2 epochs")
    p.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2)")
    p.add_argument("--epochs", type=int, default=None, help=f"default {recipes.RECIPE_EPOCHS}")
    p.add_argument("--methods", default=None, help=f"comma-separated from {', '.join(METHODS)}")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model file (.tlm) or full-int8 .tflite")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="dataset path (EEMBC vww01 folder)")
    p.add_argument("--json", help="also write the JSON object to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
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
