"""Early exit from the LLS heads: accuracy vs mean MACs, as JSON (and a PNG with --plot).

    python bench/early_exit.py [--model M.tlm|M.tflite] [--data PATH] [--shift] [--val-split F|N]
                               [--exit-val F|N] [--first-layer N|auto] [--thresholds 0.5,0.9,...]
                               [--max-drop 0.01] [--limit N] [--json OUT] [--plot OUT.png]

Any model file (or a full-int8 .tflite, imported on the fly): the pretrained detector, a
fine-tuned one (host.simulate --save-model), an adapted one. The test images are the held-out
part host.simulate evaluates on (--val-split, default 25%: 200 of the 800 EEMBC images); the
threshold and first eligible layer are picked on a validation split of the *training* part
(--exit-val, default 25% of it), never on test images: the fewest mean MACs (heads included)
whose validation accuracy is at least the full network's minus --max-drop. Reported: the test
curve (accuracy, mean MACs, fraction exited, exit layers) for every --thresholds value at the
picked first layer (or --first-layer), the same on validation, the picked point's test figures
once, and each head's test accuracy. Costs in host/early_exit.py (layers from Layer.macs(),
heads' pooling + norm + projection counted). Same integers as the board's EVAL_EXIT
(tl_model_infer_exit). One thread.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))  # bench/report.py, also when a test imports this file
from report import emit  # noqa: E402

from host import cli_common  # noqa: E402

TOOL = "bench/early_exit.py"
SHARED = Path(os.environ.get("TINYLLS_SHARED", REPO.parent / "shared"))
DEFAULT_MODEL = (SHARED / "datasets" / "mlperf-tiny-vww-models" / "benchmark" / "training" / "visual_wake_words"
                 / "trained_models" / "vww_96_int8.tflite")
DEFAULT_DATA = SHARED / "datasets" / "vww01-eembc"


def build_parser() -> argparse.ArgumentParser:
    from host import early_exit as E
    p = cli_common.ArgumentParser(tool=TOOL, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="tinylls model file or full-int8 .tflite")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="dataset path (anything host.datasets.open reads)")
    p.add_argument("--shift", action="store_true", help="'new camera' shift of every image, as host.simulate --shift")
    p.add_argument("--val-split", default=None, metavar="F|N",
                   help="held-out test part, as host.simulate's --val-split (default 25%%)")
    p.add_argument("--exit-val", default=None, metavar="F|N",
                   help=f"validation part of the training images that picks the threshold "
                        f"(default {round(100 * E.DEFAULT_EXIT_VAL)}%%)")
    p.add_argument("--first-layer", default="auto", metavar="N|auto",
                   help="first layer allowed to exit; auto: picked on validation with the threshold")
    p.add_argument("--thresholds", default=",".join(str(t) for t in E.DEFAULT_CURVE),
                   help="probability thresholds of the reported curve")
    p.add_argument("--max-drop", type=float, default=0.01,
                   help="accuracy the pick may lose on validation against the full network (fraction)")
    p.add_argument("--limit", type=cli_common.int_at_least(1), help="only the first N images of each part")
    p.add_argument("--json", metavar="OUT", help="also write the JSON here")
    p.add_argument("--plot", metavar="OUT.png", help="plot accuracy vs mean MACs to this PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def plot(out: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    full = out["full_macs"] / 1e6
    for part, style in (("curve_test", "o-"), ("curve_val", "s--")):
        pts = out[part]
        ax.plot([q["mean_macs"] / 1e6 for q in pts], [100 * q["accuracy"] for q in pts], style,
                label=f"{part.split('_')[1]} (first layer {out['curve_first_layer']})")
        if part == "curve_test":
            for q in pts:
                ax.annotate(f"{q['threshold']:g}", (q["mean_macs"] / 1e6, 100 * q["accuracy"]), fontsize=7)
    ft = out["full"]["test"]
    ax.plot([full], [100 * ft["accuracy"]], "k*", markersize=12, label="full network (test)")
    pk = out["picked_test"]
    ax.plot([pk["mean_macs"] / 1e6], [100 * pk["accuracy"]], "r^", markersize=10,
            label=f"picked on val: layer {pk['first_layer']}, p>={pk['threshold']}")
    ax.set_xlabel("mean MACs per image (M, heads included)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"early exit: {Path(out['model_path']).name}{' (shifted)' if out['shift'] else ''}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from host import datasets
    from host import early_exit as E
    from host.core import TinyllsError
    from host.evaluate import load_model
    from host.modelfile import ModelFileError
    from host.tflite_import import TfliteImportError
    try:
        curve = E.parse_thresholds(args.thresholds)
        if not 0.0 <= args.max_drop <= 1.0:
            raise ValueError(f"--max-drop {args.max_drop}: must be a fraction in [0, 1]")
        first = None
        if args.first_layer != "auto":
            try:
                first = int(args.first_layer)
            except ValueError:
                raise ValueError(f"--first-layer {args.first_layer!r}: give a layer index or auto") from None
        model = load_model(args.model)
        if first is not None and first not in E.eligible_layers(model):
            raise ValueError(f"--first-layer {first}: layers with a head are "
                             f"{E.eligible_layers(model)[0]}..{E.eligible_layers(model)[-1]} (not average pooling)")
        val, test = E.splits(args.data, args.val_split, args.exit_val, args.shift, args.limit)
        out = E.study(model, val, test, first_layer=first, curve=curve, max_drop=args.max_drop,
                      progress=not args.quiet)
    except (OSError, ValueError, ModelFileError, TfliteImportError, datasets.DataError, TinyllsError) as exc:
        return cli_common.fail(TOOL, exc)
    out.update(model_path=args.model, data=args.data, shift=args.shift, val_split=args.val_split,
               exit_val=args.exit_val)
    if args.plot:
        plot(out, args.plot)
    return emit(out, args.json)


if __name__ == "__main__":
    sys.exit(cli_common.run_main(TOOL, main))
