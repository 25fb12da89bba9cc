"""Will this model train on that board? Exact RAM and flash per board and trainable set.

    python -m host.plan [--model vww.tlm] [--board disco_f746ng] [--train-layers none,last,4,all] [--json OUT]
    (also: tinylls plan)

Without --model it plans the network `python -m host.simulate` trains from scratch by default
(MobileNetV1-0.25, 96x96x3, 2 classes, grid head). It also prints what host.simulate logs about
the model bound to the C core: the scratch arena, the largest layer (input + output) and the
activations a backprop trainer would keep.

For every board of the local PlatformIO platform (firmware/platform/boards/*.json: capacities
`upload.maximum_ram_size` / `maximum_size`, and the port's own figures under "tinylls") and every
trainable set (`none` = inference only, `last` = the classifier, N = the last N weighted layers,
`all`; default: none, 1..n, all), the RAM and flash of the firmware built with that model compiled
into flash (`make -C firmware BOARD=B MODEL=M`), from the planner that build is sized by
(host.quantize.size_report, which writes fw_model.h: tl_model_arena_bytes and the trainable tensor
bytes of tl_modelfile_load_rom):

  static RAM = trainable tensors (g_blob, 8-byte words, at least one)
             + arena, the input staged inside (g_arena, 8-byte words)
             + layer table (n_layers x the port's sizeof(tl_layer): tinylls.layer_bytes)
             + the port's fixed RAM (protocol state, UART ring, counters: tinylls.fixed_ram_bytes)
             = .data + .bss of that ELF, exactly;
  RAM        = static RAM + tinylls.stack_bytes, a stack allowance that covers the measured
               high-water mark (tests/test_plan.py: allowance - measured < STACK_MARGIN);
  flash      = the model without its host-only area + the port's code (tinylls.code_bytes,
               measured with the model compiled in, +-1 KB).

It prints which configurations fit each board and the largest trainable set (last N layers) that
does. With --board it refuses a model that does not fit even for inference, or a --train-layers
choice that does not fit, naming the bytes it is short (exit 2).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from host import cli_common

ROOT = Path(__file__).resolve().parents[1]
# the board definitions of the local PlatformIO platform; an installed package carries them as
# host/boards (pyproject's package-dir), a source checkout reads them in place
BOARDS_DIR = ROOT / "firmware" / "platform" / "boards"
if not BOARDS_DIR.is_dir():
    BOARDS_DIR = Path(__file__).resolve().parent / "boards"
STACK_MARGIN = 2048     # bytes: stack allowance minus the measured high-water mark stays below this


TOOL = "host.plan"


class PlanError(Exception):
    pass


def default_model():
    """host.simulate's from-scratch default net with its defaults (seed 0, all layers trainable)."""
    from host import nets, simulate
    from host.datasets import synthetic

    calib = synthetic.make(16, seed=0, difficulty=simulate.DEFAULT_DIFFICULTY).images
    model = nets.build("mobilenet", seed=0, calib=calib, classes=2, alpha=0.25, resolution=96, channels=3,
                       head=simulate.DEFAULT_HEAD)
    nets.set_learning_rates(model, simulate.DEFAULT_LR_HIDDEN, simulate.DEFAULT_LR_CLASSIFIER)
    return model


def core_figures(model) -> dict:
    """What host.simulate logs about a model bound to the C core (every layer trainable)."""
    from host.core import CModel
    cm = CModel(model)
    return {"scratch_bytes": cm.arena_bytes, "max_layer_bytes": cm.max_layer_bytes,
            "bp_activation_bytes": cm.bp_activation_bytes}


def load_boards(boards_dir: Path = BOARDS_DIR) -> dict:
    boards = {}
    for path in sorted(boards_dir.glob("*.json")):
        d = json.loads(path.read_text())
        t = d.get("tinylls")
        if not t:
            continue
        boards[path.stem] = {"name": d["name"], "ram_bytes": int(d["upload"]["maximum_ram_size"]),
                             "flash_bytes": int(d["upload"]["maximum_size"]), **{k: int(v) for k, v in t.items()}}
    if not boards:
        raise PlanError(f"no board definitions with tinylls figures in {boards_dir}")
    return boards


def weighted_layers(model) -> list[int]:
    return [i for i, L in enumerate(model.layers) if L.kind in ("conv", "dwconv", "fc")]


def parse_sets(spec: str | None, n_weighted: int) -> list[str]:
    if not spec:
        return ["none"] + [str(n) for n in range(1, n_weighted)] + ["all"]
    out = []
    for s in spec.split(","):
        s = s.strip()
        if s in ("none", "last", "all"):
            out.append(s)
        else:
            try:
                n = int(s)
            except ValueError:
                raise PlanError(f"--train-layers: {s!r} is not none, last, all or a number") from None
            if not 0 <= n <= n_weighted:
                raise PlanError(f"--train-layers {n}: the model has {n_weighted} weighted layers")
            out.append(str(n))
    return out


def trainable_count(spec: str, n_weighted: int) -> int:
    return {"none": 0, "last": 1, "all": n_weighted}.get(spec, None) if spec in ("none", "last", "all") else int(spec)


def model_figures(model, n_train: int) -> dict:
    """The planner's figures (host.quantize.size_report) for `model` with its last n_train weighted
    layers trainable, the file stripped as `make MODEL=` compiles it."""
    from host import modelfile, quantize
    keep = set(weighted_layers(model)[len(weighted_layers(model)) - n_train:]) if n_train else set()
    saved = [L.trainable for L in model.layers]
    try:
        for i, L in enumerate(model.layers):
            L.trainable = i in keep
        device = modelfile.strip_host(modelfile.to_bytes(model))
    finally:
        for L, t in zip(model.layers, saved):
            L.trainable = t
    rep = quantize.size_report(device)
    if "arena_bytes" not in rep:
        raise PlanError(rep.get("note", "the C core is not built (python host/_build_ffi.py)"))
    return {"model_flash_bytes": rep["flash_bytes"], "n_layers": rep["n_layers"],
            "train_tensor_bytes": rep["train_ram_bytes"], "arena_bytes": rep["arena_bytes"]}


def board_plan(fig: dict, board: dict) -> dict:
    blob = max((fig["train_tensor_bytes"] + 7) // 8, 1) * 8
    arena = (fig["arena_bytes"] + 7) // 8 * 8
    layers = fig["n_layers"] * board["layer_bytes"]
    static = blob + arena + layers + board["fixed_ram_bytes"]
    ram = static + board["stack_bytes"]
    flash = fig["model_flash_bytes"] + board["code_bytes"]
    return {"static_ram_bytes": static, "stack_allowance_bytes": board["stack_bytes"], "ram_bytes": ram,
            "flash_bytes": flash, "ram_capacity": board["ram_bytes"], "flash_capacity": board["flash_bytes"],
            "ram_short_bytes": max(0, ram - board["ram_bytes"]),
            "flash_short_bytes": max(0, flash - board["flash_bytes"]),
            "fits": ram <= board["ram_bytes"] and flash <= board["flash_bytes"],
            "parts": {"g_blob": blob, "g_arena": arena, "g_layers": layers, "fixed": board["fixed_ram_bytes"]}}


def plan(model, boards: dict, sets: list[str]) -> dict:
    n_weighted = len(weighted_layers(model))
    counts = sorted({trainable_count(s, n_weighted) for s in sets} | {0, n_weighted})
    figs = {n: model_figures(model, n) for n in counts}
    out = {"weighted_layers": n_weighted, "stack_margin_bytes": STACK_MARGIN, "boards": {}}
    for name, board in boards.items():
        rows = []
        for s in sets:
            n = trainable_count(s, n_weighted)
            rows.append({"train_layers": s, "trainable": n, **figs[n], **board_plan(figs[n], board)})
        # the largest trainable set that fits: last N layers, N as large as possible (RAM grows with N)
        best = None
        for n in range(n_weighted, -1, -1):
            if n not in figs:
                figs[n] = model_figures(model, n)
            if board_plan(figs[n], board)["fits"]:
                best = n
                break
        out["boards"][name] = {"name": board["name"], "configs": rows, "largest_trainable": best,
                               "largest_trainable_spec": None if best is None else
                               ("all" if best == n_weighted else "none" if best == 0 else str(best))}
    return out


def print_plan(p: dict, model_name: str):
    print(f"{model_name}: {p['weighted_layers']} weighted layers; RAM = .data + .bss (exact) + stack allowance; "
          f"flash = model + code")
    for name, b in p["boards"].items():
        print(f"\n{name} ({b['name']}): RAM {b['configs'][0]['ram_capacity']:,} B, flash "
              f"{b['configs'][0]['flash_capacity']:,} B")
        print(f"  {'train':>6} {'tensors':>9} {'arena':>7} {'static RAM':>11} {'RAM':>9} {'flash':>9}  fits")
        for r in b["configs"]:
            short = ", ".join(([f"{r['ram_short_bytes']:,} B RAM"] if r["ram_short_bytes"] else [])
                              + ([f"{r['flash_short_bytes']:,} B flash"] if r["flash_short_bytes"] else []))
            short = f"  short {short}" if short else ""
            print(f"  {r['train_layers']:>6} {r['train_tensor_bytes']:>9,} {r['arena_bytes']:>7,} "
                  f"{r['static_ram_bytes']:>11,} {r['ram_bytes']:>9,} {r['flash_bytes']:>9,}  "
                  f"{'yes' if r['fits'] else 'no'}{short}")
        best = b["largest_trainable_spec"]
        print(f"  largest trainable set that fits: " + ("nothing (not even inference)" if best is None else
              "inference only" if best == "none" else f"the last {best} weighted layers" if best != "all"
              else "all layers"))


def build_parser():
    ap = cli_common.ArgumentParser(tool=TOOL, description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="tinylls model file (.tlm) (default: host.simulate's from-scratch "
                                    "MobileNetV1-0.25 96x96x3)")
    ap.add_argument("--board", help="one board (default: every board of firmware/platform/boards)")
    ap.add_argument("--train-layers", help="comma-separated: none, last, all, N (default: none, 1..n, all)")
    ap.add_argument("--json", help="also write the plan here as JSON")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from host import modelfile
    from host.core import TinyllsError
    try:
        boards = load_boards()
        if args.board:
            if args.board not in boards:
                raise PlanError(f"--board {args.board}: not one of {', '.join(boards)}")
            boards = {args.board: boards[args.board]}
        if args.model:
            try:
                model = modelfile.load(args.model)
            except (OSError, modelfile.ModelFileError) as e:
                raise PlanError(e if isinstance(e, modelfile.ModelFileError) else f"--model {args.model}: {e}") from None
        else:
            model = default_model()
        sets = parse_sets(args.train_layers, len(weighted_layers(model)))
        p = plan(model, boards, sets)
        p.update(core_figures(model))
    except (PlanError, TinyllsError, ValueError) as e:
        return cli_common.fail(TOOL, e)
    name = args.model or f"{model.name} (host.simulate's from-scratch default)"
    print(f"scratch arena {p['scratch_bytes']} B (largest layer in+out {p['max_layer_bytes']} B); "
          f"a backprop trainer keeps {p['bp_activation_bytes']} B of activations")
    p["model"] = name
    print_plan(p, name)
    if args.json:
        Path(args.json).write_text(json.dumps(p, indent=2) + "\n")
    if args.board:
        b = p["boards"][args.board]
        refused = [r for r in b["configs"] if not r["fits"] and (args.train_layers or r["train_layers"] == "none")]
        if refused:
            r = refused[0]
            what = "inference" if r["train_layers"] == "none" else f"--train-layers {r['train_layers']}"
            parts = []
            if r["ram_short_bytes"]:
                parts.append(f"{r['ram_short_bytes']:,} bytes of RAM short (needs {r['ram_bytes']:,}, has "
                             f"{r['ram_capacity']:,})")
            if r["flash_short_bytes"]:
                parts.append(f"{r['flash_short_bytes']:,} bytes of flash short (needs {r['flash_bytes']:,}, has "
                             f"{r['flash_capacity']:,})")
            return cli_common.fail(TOOL, f"{name} does not fit {args.board} for {what}: {'; '.join(parts)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_common.run_main(TOOL, main))
