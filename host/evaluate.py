"""Accuracy (and logits) of a tinylls model on a dataset, computed by the C core.

    python -m host.evaluate --model M --data PATH [--json OUT] [--dump-logits OUT.npy]

M is a tinylls model file (python -m host.quantize ...) or a full-int8 .tflite (imported on the
fly for LiteRT arithmetic). PATH is anything `host.datasets.open` reads (EEMBC vww01 folder,
MLPerf person/non_person folders, tinylls shards, ...). RGB data is converted to grey (ITU-R 601
luma, as Pillow's "L") when the model takes one channel. Pixels become the int8 input the way
the model's reference code feeds it: q = pixel - 128 for every model imported here (the input
quantization 1/255, -128, and TFLM person_detection's own convention), else
`Model.quantize_input`. Prediction = argmax of the int8 logits (the classifier output before
any softmax; the softmax of a 2-class model can tie where the logits do not).
`--engine ref` runs the numpy oracle host.int8_ref instead of the C core.
`--early-exit P|auto` also reports early-exit inference from the LLS heads (host/early_exit.py,
the board's EVAL_EXIT): stop at the first layer >= --first-layer whose head is at least P sure;
auto picks the first layer and P on a validation split of the training part (--exit-val), so it
needs --part val (the held-out images), never choosing on the images it reports.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import numpy as np

from host import cli_common
from host.model import Model

TOOL = "host.evaluate"


def load_model(path: str, reference: str = "litert") -> Model:
    """A tinylls model file or a .tflite, by content."""
    from host import modelfile, safeio      # a regular file before its first bytes are read: a FIFO would block
    safeio.check_file(path, modelfile.MAX_MODEL_BYTES, "model file", error=modelfile.ModelFileError)
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"TLLS":
        return modelfile.load(path)
    from host.tflite_import import import_tflite
    return import_tflite(path, reference=reference)


def model_input(model: Model, pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) pixels -> the int8 tensor the model takes (grey if it has 1 channel)."""
    from host.datasets import to_grey
    c = model.input_shape[2]
    if pixels.shape[-1] == 3 and c == 1:
        pixels = to_grey(pixels)
    if tuple(pixels.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"data images are {pixels.shape[1:]}, model {model.name!r} takes {model.input_shape}")
    if model.meta.get("input_q") == "pixel-128":
        return (pixels.astype(np.int16) - 128).astype(np.int8)
    return np.stack([model.quantize_input(p) for p in pixels])


def inference_view(model: Model) -> Model:
    """The model with every layer frozen (shared arrays): inference needs no update factors."""
    m = copy.copy(model)
    m.layers = [copy.copy(layer) for layer in model.layers]
    for layer in m.layers:
        layer.trainable = False
    return m


def logits_c(model: Model, x: np.ndarray, progress: bool = True) -> np.ndarray:
    from host.core import CModel
    from host.train import default_threads
    from tqdm import tqdm
    cm = CModel(inference_view(model))
    out = np.zeros((len(x), model.classes), np.int8)
    with tqdm(total=len(x), desc="evaluate", unit="img", disable=not progress, file=sys.stderr) as bar:
        for s in range(0, len(x), 256):
            out[s: s + 256] = cm.infer_many(x[s: s + 256], with_local=False, threads=default_threads())[1]
            bar.update(len(out[s: s + 256]))
    return out


def logits_ref(model: Model, x: np.ndarray, progress: bool = True) -> np.ndarray:
    from host import int8_ref
    from tqdm import tqdm
    parts = []
    for s in tqdm(range(0, len(x), 64), desc="evaluate (ref)", unit="batch", disable=not progress, file=sys.stderr):
        parts.append(int8_ref.run_model(model, x[s: s + 64]))
    return np.concatenate(parts) if parts else np.zeros((0, model.classes), np.int8)


def evaluate(model: Model, images: np.ndarray, labels: np.ndarray, *, engine: str = "c",
             progress: bool = True) -> dict:
    x = model_input(model, images)
    t0 = time.perf_counter()
    logits = (logits_c if engine == "c" else logits_ref)(model, x, progress)
    seconds = time.perf_counter() - t0
    pred = logits.argmax(axis=1)
    labels = np.asarray(labels)
    k = model.classes
    conf = np.zeros((k, k), np.int64)
    for t, p in zip(labels, pred):
        if 0 <= t < k:
            conf[t, p] += 1
    correct = int((pred == labels).sum())
    return {"n": int(len(labels)), "correct": correct, "accuracy": correct / max(len(labels), 1),
            "confusion": conf.tolist(), "engine": engine, "seconds": round(seconds, 3), "logits": logits}


def build_parser() -> argparse.ArgumentParser:
    p = cli_common.ArgumentParser(tool=TOOL, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="tinylls model file or full-int8 .tflite")
    p.add_argument("--data", required=True, help="dataset path (anything host.datasets.open reads)")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON")
    p.add_argument("--dump-logits", metavar="OUT.npy", help="save the int8 logits (N, classes)")
    p.add_argument("--part", choices=("all", "val", "train"), default="all",
                   help="which images of --data: all, or the validation / training part of the split "
                        "host.simulate and host.stream train with (--val-split)")
    p.add_argument("--val-split", default=None, metavar="F|N",
                   help="with --part: the validation fraction / count, as in host.simulate (default 25%%)")
    p.add_argument("--shift", action="store_true",
                   help="'new camera' shift of the images, as host.simulate --shift")
    p.add_argument("--limit", type=cli_common.int_at_least(1), help="only the first N images (default: all)")
    p.add_argument("--engine", choices=("c", "ref"), default="c", help="C core (default) or numpy oracle")
    p.add_argument("--reference", choices=("litert", "tflm"), default="litert",
                   help="for a .tflite model: whose arithmetic to reproduce (default litert)")
    p.add_argument("--early-exit", metavar="P|auto", default=None,
                   help="also report early exit from the LLS heads at confidence threshold P (a probability), "
                        "or auto: picked on --exit-val of the training part (needs --part val)")
    p.add_argument("--first-layer", metavar="N|auto", default=None,
                   help="with --early-exit: first layer allowed to exit; auto: picked on --exit-val with the "
                        "threshold (needs --part val) (default: 0 for a threshold P, auto for --early-exit auto)")
    p.add_argument("--exit-val", default=None, metavar="F|N",
                   help="with --early-exit auto: validation part of the training images (default 25%%)")
    p.add_argument("--max-drop", type=float, default=0.01,
                   help="with --early-exit auto: validation accuracy the pick may lose against the full network")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def early_exit_report(model: Model, images, labels, args) -> dict:
    """--early-exit: the test figures of one (first layer, threshold), given or picked on validation."""
    from host import early_exit as E
    from host.core import CModel
    cm = CModel(inference_view(model))
    fwd, head = E.layer_costs(cm)
    eligible = E.eligible_layers(model)
    first = None
    if args.first_layer not in (None, "auto"):
        try:
            first = int(args.first_layer)
        except ValueError:
            raise ValueError(f"--first-layer {args.first_layer!r}: give a layer index or auto") from None
        if first not in eligible:
            raise ValueError(f"--first-layer {first}: layers with a head are {eligible[0]}..{eligible[-1]} "
                             "(not average pooling)")
    ht = E.collect(cm, model_input(model, images), not args.quiet)
    labels = np.asarray(labels)
    thr = None if args.early_exit == "auto" else E.threshold_q16(float(args.early_exit))
    if args.early_exit == "auto" or args.first_layer == "auto":
        # what is not given is picked on the validation part of the training images
        val, _ = E.splits(args.data, args.val_split, args.exit_val, args.shift, args.limit)
        hv = E.collect(cm, model_input(model, val[0]), not args.quiet)
        picked = E.choose(hv, val[1], fwd, head, max_drop=args.max_drop,
                          first_layers=None if first is None else [first],
                          thresholds=None if thr is None else [thr])
        out = E.point(ht, labels, picked["first_layer"], picked["threshold_q16"], fwd, head)
        out["picked_on_val"] = picked
    else:
        out = E.point(ht, labels, 0 if first is None else first, thr, fwd, head)
    out["full_macs"] = int(fwd.sum())
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from host import datasets
    from host.modelfile import ModelFileError
    from host.tflite_import import TfliteImportError
    from host.outputs import OutputError, Outputs
    known = (OSError, ValueError, ModelFileError, TfliteImportError, datasets.DataError, OutputError)
    try:
        from host.core import TinyllsError
        known = known + (TinyllsError,)
    except ImportError:
        pass
    outputs = None
    try:
        outputs = Outputs({"--json": args.json, "--dump-logits": args.dump_logits})
        if args.val_split is not None and args.part == "all":
            raise ValueError("--val-split chooses the split of --part val / train; with --part all it has no effect")
        if args.early_exit is None and (args.first_layer is not None or args.exit_val is not None):
            raise ValueError("--first-layer / --exit-val apply to --early-exit; give --early-exit P|auto")
        if "auto" in (args.early_exit, args.first_layer) and args.part != "val":
            raise ValueError(f"--early-exit / --first-layer auto pick on the training part: evaluate --part val "
                             f"(the held-out images), not --part {args.part}")
        if not 0.0 <= args.max_drop <= 1.0:
            raise ValueError(f"--max-drop {args.max_drop}: must be a fraction in [0, 1]")
        if args.early_exit not in (None, "auto"):
            from host.early_exit import threshold_q16
            try:
                threshold_q16(float(args.early_exit))
            except ValueError:
                raise ValueError(f"--early-exit {args.early_exit!r}: give a probability in [0, 1] or auto") from None
        if args.early_exit is not None and args.engine != "c":
            raise ValueError("--early-exit runs the C core: drop --engine ref")
        model = load_model(args.model, args.reference)
        if args.part == "all":
            ds = datasets.open(args.data)
        else:
            from host.simulate import UsageError, load_data
            try:
                ds = load_data(args.data, None, args.val_split)[0 if args.part == "train" else 1]
            except UsageError as e:
                raise ValueError(str(e)) from None
        images, labels = ds.images, ds.labels
        if args.shift:
            from host.simulate import camera_shift
            images = camera_shift(images)
        if args.limit is not None:
            images, labels = images[: args.limit], labels[: args.limit]
        rep = evaluate(model, images, labels, engine=args.engine, progress=not args.quiet)
        if args.early_exit is not None:
            rep["early_exit"] = early_exit_report(model, images, labels, args)
    except known as exc:
        return cli_common.fail(TOOL, exc)
    except KeyboardInterrupt:
        return cli_common.interrupted(TOOL)
    finally:
        if outputs is not None and outputs.tmp and sys.exc_info()[0] is not None:
            outputs.discard()
    logits = rep.pop("logits")
    rep.update(model=args.model, data=args.data, part=args.part, val_split=args.val_split, shift=args.shift,
               model_name=model.name)
    print(f"accuracy {100 * rep['accuracy']:.2f}% ({rep['correct']}/{rep['n']}) model={args.model} "
          f"data={args.data} engine={rep['engine']} ({rep['seconds']:.1f} s)")
    ee = rep.get("early_exit")
    if ee:
        print(f"early exit: accuracy {100 * ee['accuracy']:.2f}% at {ee['mean_macs'] / 1e6:.3f} M MACs per image "
              f"({100 * ee['macs_fraction']:.1f}% of {ee['full_macs'] / 1e6:.3f} M, heads included), "
              f"{100 * ee['exited']:.1f}% exited; first layer {ee['first_layer']}, threshold {ee['threshold']}"
              + (" (picked on validation)" if "picked_on_val" in ee else ""))
    import io
    if args.json:
        outputs.write_text("--json", json.dumps(rep, indent=2) + "\n")
    if args.dump_logits:
        buf = io.BytesIO()
        np.save(buf, logits)
        outputs.temp("--dump-logits").write_bytes(buf.getvalue())
    for path in outputs.commit():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_common.run_main(TOOL, main))
