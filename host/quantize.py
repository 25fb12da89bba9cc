"""Make tinylls model files, and C sources for firmware.

    python -m host.quantize import-tflite IN.tflite -o OUT [--reference litert|tflm]
    python -m host.quantize from-keras IN.h5 -o OUT --calib DATA [--calib-count 100]
    python -m host.quantize export-c MODEL -o DIR [--name NAME] [--keep-host]

import-tflite  full-int8 TFLite MobileNet-style network (host.tflite_import); --reference picks
               whose FULLY_CONNECTED rounding to reproduce (LiteRT, default, or TFLite Micro).
from-keras     float Keras .h5 (host.keras_import): BatchNorm folded, per-channel symmetric int8
               weights, activation ranges calibrated on the first N images of DATA's training
               split (host.datasets.vww_split); prints float and int8 accuracy when --eval DATA.
export-c       NAME_model.h / NAME_model.c: the model file as a 4-byte aligned const array for
               tl_modelfile_load_rom (stays in flash; trainable tensors copied to RAM) or
               tl_modelfile_load, and a size report (flash bytes, RAM bytes to infer and train).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from host import cli_common, modelfile

TOOL = "host.quantize"


def _summary(model, blob: bytes, notes: list[str]) -> str:
    d = modelfile.describe(blob)
    kinds = {}
    for layer in model.layers:
        kinds[layer.kind] = kinds.get(layer.kind, 0) + 1
    s = (f"{model.name}: {len(model.layers)} layers ({', '.join(f'{v} {k}' for k, v in kinds.items())}), "
         f"input {model.input_shape}, {model.classes} classes, file {d['file_bytes']} bytes "
         f"(tensors {d['tensor_bytes']}, host-only {d['host_only_bytes']})")
    if notes:
        s += f"\nnote: {len(notes)} update factor(s) stored as 0 (see the file's JSON 'notes'), e.g. {notes[0]}"
    return s


def stats_images(model, path: str, count: int) -> np.ndarray:
    """Clean model inputs for the adaptation reference statistics: the first `count` images of the
    training part of `path` (host.datasets.vww_split, seed 0: never its test images)."""
    from host import datasets
    from host.evaluate import model_input
    ds = datasets.open(path)
    train, _ = datasets.vww_split(ds, seed=0)
    if not 1 <= count <= len(train):
        raise ValueError(f"--stats-images {count}: {path} has {len(train)} training images")
    return model_input(model, train.images[:count])


def add_stats(model, args) -> str:
    """Reference statistics (host.adapt.add_reference) from --stats-data; a summary line."""
    from host import adapt
    if not 1 <= args.stats_layers < len(model.layers):
        raise ValueError(f"--stats-layers {args.stats_layers}: outside 1..{len(model.layers) - 1} "
                         "(the last layer is never adapted)")
    x = stats_images(model, args.stats_data, args.stats_images)
    layers = adapt.add_reference(model, x, args.stats_layers)
    ram = 12 * sum(model.layers[i].out_c for i in layers)
    return (f"adaptation statistics: layers {layers[0]}..{layers[-1]} ({len(layers)} weighted) from {len(x)} clean "
            f"images of {args.stats_data}; a board adapting them needs <= {ram} B more RAM")


def _save(model, path: str) -> None:
    """Write the model file, then print what it holds (read back from the file)."""
    notes: list[str] = []
    modelfile.save(model, path, notes)
    with open(path, "rb") as f:
        print(_summary(model, f.read(), notes))


def cmd_import_tflite(args) -> int:
    from host.tflite_import import import_tflite
    model = import_tflite(args.input, reference=args.reference)
    if args.stats_data:
        print(add_stats(model, args))
    _save(model, args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_add_stats(args) -> int:
    model = modelfile.load(args.model)
    print(add_stats(model, args))
    _save(model, args.output)
    print(f"wrote {args.output}")
    return 0


def _stats_args(p, required: bool) -> None:
    from host.adapt import DEFAULT_STATS_IMAGES, DEFAULT_STATS_LAYERS
    p.add_argument("--stats-data", required=required, metavar="DATA",
                   help="clean images (host.datasets.open; its training part) for the camera-adaptation reference "
                        "statistics stored in the file (format version 2)" + ("" if required else "; default: none"))
    p.add_argument("--stats-images", type=int, default=DEFAULT_STATS_IMAGES,
                   help=f"images the statistics are computed on (default {DEFAULT_STATS_IMAGES})")
    p.add_argument("--stats-layers", type=int, default=DEFAULT_STATS_LAYERS,
                   help=f"statistics for the first K layers: the deepest adaptation a board can do, each adapted "
                        f"layer costing 12 B of RAM per channel (default {DEFAULT_STATS_LAYERS})")


def calibration_images(path: str, count: int, seed: int) -> np.ndarray:
    from host import datasets
    ds = datasets.open(path)
    train, _ = datasets.vww_split(ds, seed=seed, n_train=min(600, len(ds)))
    if count < 1 or count > len(train):
        raise ValueError(f"--calib-count {count}: {path} has {len(train)} training images")
    return train.images[:count]


def cmd_from_keras(args) -> int:
    from tqdm import tqdm

    from host import keras_import
    net = keras_import.read_h5(args.input)
    calib = calibration_images(args.calib, args.calib_count, args.seed)
    if calib.shape[-1] == 3 and net.input_shape[2] == 1:
        from host.datasets import to_grey
        calib = to_grey(calib)
    with tqdm(total=len(net.layers), desc="quantize", unit="layer", file=sys.stderr) as bar:
        model = keras_import.quantize(net, calib, progress=lambda i, n: bar.update(1))
    model.meta["calibration"] = {"data": os.path.abspath(args.calib), "count": args.calib_count, "seed": args.seed}
    _save(model, args.output)
    if args.eval:
        from host import datasets
        from host.evaluate import evaluate
        ds = datasets.open(args.eval)
        float_acc = float((net.forward(ds.images).argmax(1) == ds.labels).mean())
        rep = evaluate(model, ds.images, ds.labels, engine=args.engine)
        print(f"float accuracy {100 * float_acc:.2f}%, int8 accuracy {100 * rep['accuracy']:.2f}% "
              f"on {rep['n']} images of {args.eval} (engine {args.engine})")
    print(f"wrote {args.output}")
    return 0


def _c_ident(name: str) -> str:
    s = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") or "model"
    return ("m_" + s) if s[0].isdigit() else s


def size_report(blob: bytes) -> dict:
    """Flash and RAM a board needs for this device blob, using the C core for the arena size."""
    hdr = modelfile.read_header(blob)
    rep = {"flash_bytes": len(blob), "n_layers": hdr["n_layers"], "tensor_bytes": hdr["host_off"] - hdr["data_off"],
           "train_ram_bytes": modelfile.train_ram_bytes(blob)}
    try:
        from host._tinylls import ffi, lib
    except ImportError:
        rep["note"] = "C core not built: arena and struct sizes unknown"
        return rep
    buf = ffi.new("uint32_t[]", (len(blob) + 3) // 4)
    ffi.memmove(buf, blob, len(blob))
    layers = ffi.new("tl_layer[]", lib.TL_MAX_LAYERS)
    m = ffi.new("tl_model *")
    need = ffi.new("int32_t *")
    # the board's loader: the blob stays in flash, only trainable tensors go to RAM (a size query)
    s = lib.tl_modelfile_load_rom(ffi.cast("uint8_t *", buf), len(blob), ffi.NULL, 0, need, layers,
                                  lib.TL_MAX_LAYERS, m)
    if s == lib.TL_ERR_RAM and need[0] > 0:
        ram = ffi.new("uint32_t[]", (need[0] + 3) // 4)
        s = lib.tl_modelfile_load_rom(ffi.cast("uint8_t *", buf), len(blob), ffi.cast("uint8_t *", ram), need[0],
                                      need, layers, lib.TL_MAX_LAYERS, m)
    if s != 0:
        raise modelfile.ModelFileError(f"the C loader rejects this model: {ffi.string(lib.tl_strerror(s)).decode()} "
                                       f"(code {s})")
    if need[0] != rep["train_ram_bytes"]:
        raise modelfile.ModelFileError(f"trainable tensor bytes: C loader {need[0]}, host.modelfile "
                                       f"{rep['train_ram_bytes']}")
    arena = lib.tl_model_arena_bytes(m)
    structs = hdr["n_layers"] * ffi.sizeof("tl_layer") + ffi.sizeof("tl_model")
    # camera adaptation (format version 2): the arena bytes past the plan its statistics need on a
    # board (input staged in the arena), the largest over the layers that carry statistics
    adapt_extra = max([int(lib.tl_adapt_extra_bytes(m, i, 1)) for i in range(hdr["n_layers"])
                       if layers[i].adapt_ref != ffi.NULL] or [0])
    if adapt_extra < 0:
        raise modelfile.ModelFileError(f"adaptation arena plan: {ffi.string(lib.tl_strerror(adapt_extra)).decode()}")
    rep.update(arena_bytes=int(arena), adapt_arena_bytes=adapt_extra,
               adapt_layers=[i for i in range(hdr["n_layers"]) if layers[i].adapt_ref != ffi.NULL],
               input_offset=int(lib.tl_model_input_offset(m)), struct_bytes=int(structs),
               ram_bytes_infer=int(arena + structs),
               ram_bytes_train=int(rep["train_ram_bytes"] + arena + adapt_extra + structs),
               bp_activation_bytes=int(lib.tl_model_bp_activation_bytes(m)))
    rep["explain"] = ("the blob stays in flash (tl_modelfile_load_rom); infer: RAM = arena (the input is staged "
                      "in it at input_offset) + layer structs; train: + train_ram_bytes, the weights, biases "
                      "and LLS modulation of the trainable layers, which training updates (copied to RAM)")
    return rep


def cmd_export_c(args) -> int:
    from host.modelfile import read_model_file
    blob = read_model_file(args.model)
    modelfile.check_device(blob, args.model)         # what a board's loader accepts, or the field named
    # the board's copy: no host-only area, no learning rates (they come by SET_LR; the host
    # recognises the model in flash by this identity, host.modelfile.device_identity)
    device = blob if args.keep_host else modelfile.device_identity(blob)
    name = _c_ident(args.name or os.path.splitext(os.path.basename(args.model))[0])
    rep = size_report(device)
    os.makedirs(args.output, exist_ok=True)
    words = np.frombuffer(device + b"\0" * (-len(device) % 4), "<u4")
    guard = f"{name.upper()}_MODEL_H"
    h = (f"/* Generated by `python -m host.quantize export-c {os.path.basename(args.model)}`; do not edit. */\n"
         f"#ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n\n"
         f"/* tinylls model file (layout: docs/modelfile.md), {len(device)} bytes, stored as words so it is\n"
         f" * 4-byte aligned as the loaders require. Keep it in flash: tl_modelfile_load_rom copies only\n"
         f" * what training writes ({name.upper()}_TRAIN_RAM_BYTES: weights, biases, LLS modulation of the\n"
         f" * trainable layers) to RAM; or copy it all to RAM for tl_modelfile_load. The arena\n"
         f" * (tl_model_arena_bytes) also holds the input tensor at tl_model_input_offset. */\n"
         f"#define {name.upper()}_MODEL_BYTES {len(device)}u\n"
         f"#define {name.upper()}_MODEL_LAYERS {rep['n_layers']}\n"
         f"#define {name.upper()}_TRAIN_RAM_BYTES {rep['train_ram_bytes']}u\n"
         + (f"#define {name.upper()}_ARENA_BYTES {rep['arena_bytes']}u\n" if "arena_bytes" in rep else "")
         + (f"/* arena bytes past the plan that camera adaptation's statistics need (tl_adapt_extra_bytes) */\n"
            f"#define {name.upper()}_ADAPT_BYTES {rep['adapt_arena_bytes']}u\n" if rep.get("adapt_arena_bytes") else "")
         + f"extern const uint32_t {name}_model[{len(words)}];\n\n#endif /* {guard} */\n")
    lines = [", ".join(f"0x{int(w):08x}u" for w in words[i: i + 8]) for i in range(0, len(words), 8)]
    c = (f"/* Generated by `python -m host.quantize export-c {os.path.basename(args.model)}`; do not edit. */\n"
         f'#include "{name}_model.h"\n\n'
         f"const uint32_t {name}_model[{len(words)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n")
    with open(os.path.join(args.output, f"{name}_model.h"), "w") as f:
        f.write(h)
    with open(os.path.join(args.output, f"{name}_model.c"), "w") as f:
        f.write(c)
    with open(os.path.join(args.output, f"{name}_size.json"), "w") as f:
        json.dump(rep, f, indent=2)
    print(f"wrote {args.output}/{name}_model.h, {name}_model.c, {name}_size.json")
    print(f"flash {rep['flash_bytes']} bytes" + ("" if "arena_bytes" not in rep else
          f"; RAM to infer {rep['ram_bytes_infer']} bytes (arena {rep['arena_bytes']}, input inside), "
          f"RAM to train {rep['ram_bytes_train']} bytes (trainable tensors {rep['train_ram_bytes']} + arena "
          f"+ structs)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = cli_common.ArgumentParser(tool=TOOL, description=__doc__.split("\n\n")[0],
                                  epilog=__doc__.split("\n\n", 2)[2])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("import-tflite", help="full-int8 .tflite -> model file")
    a.add_argument("input", help="the .tflite file")
    a.add_argument("-o", "--output", required=True, help="model file to write")
    _stats_args(a, required=False)
    a.add_argument("--reference", choices=("litert", "tflm"), default="litert",
                   help="interpreter whose FULLY_CONNECTED rounding to match (default litert)")
    a.set_defaults(func=cmd_import_tflite)
    k = sub.add_parser("from-keras", help="float Keras .h5 -> calibrated int8 model file")
    k.add_argument("input", help="the .h5 file")
    k.add_argument("-o", "--output", required=True, help="model file to write")
    k.add_argument("--calib", required=True, metavar="DATA", help="calibration dataset (host.datasets.open)")
    k.add_argument("--calib-count", type=int, default=100, help="calibration images (default 100)")
    k.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    k.add_argument("--eval", metavar="DATA", help="also report float and int8 accuracy on DATA")
    k.add_argument("--engine", choices=("c", "ref"), default="c", help="engine for --eval (default c)")
    k.set_defaults(func=cmd_from_keras)
    s = sub.add_parser("add-stats", help="model file + clean images -> model file with adaptation statistics")
    s.add_argument("model", help="tinylls model file")
    s.add_argument("-o", "--output", required=True, help="model file to write")
    _stats_args(s, required=True)
    s.set_defaults(func=cmd_add_stats)

    e = sub.add_parser("export-c", help="model file -> C sources + size report")
    e.add_argument("model", help="tinylls model file")
    e.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    e.add_argument("--name", help="C identifier prefix (default: from the file name)")
    e.add_argument("--keep-host", action="store_true", help="keep the host-only JSON/scales in the blob")
    e.set_defaults(func=cmd_export_c)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from host.keras_import import KerasImportError
    from host.tflite_import import TfliteImportError
    known: tuple = (OSError, ValueError, modelfile.ModelFileError, TfliteImportError, KerasImportError)
    try:
        from host.datasets import DataError
        known += (DataError,)
    except ImportError:
        pass
    try:
        from host.core import TinyllsError
        known += (TinyllsError,)
    except ImportError:
        pass
    try:
        return args.func(args)
    except known as exc:
        return cli_common.fail(TOOL, exc)
    except KeyboardInterrupt:
        return cli_common.interrupted(TOOL)


if __name__ == "__main__":
    sys.exit(cli_common.run_main(TOOL, main))
