"""Instruction counts of the firmware on an emulated Cortex-M4, with MACs and memory sizes, as JSON.

    python bench/mcu.py --model vww.tlm [--steps 3] [--json out.json]
    python bench/mcu.py --tflite ../shared/.../vww_96_int8.tflite   (imported on the fly)

Builds firmware/ for mps2-an386 with the arena, model and input buffers sized exactly for the
model (the host planner's tl_model_arena_bytes), runs it under `qemu-system-arm -icount shift=0`
(each instruction = 1 ns of virtual time; SysTick counts 1 per 40 instructions) and reports the
counts the firmware measures around tl_model_infer / tl_model_train_step. Counts exclude the
serial link; they are deterministic up to the 40-instruction tick. This is a benchmark, not a test.

Keys: mcu_infer_insn, mcu_train_insn (median over --steps), macs (multiply-accumulates of one
forward pass), mcu_infer_insn_per_mac, mcu_train_over_infer, arena_bytes, model_bytes,
flash_bytes (text + data), ram_bytes (data + bss + stack reserve), mcu_train_ram_bytes (the RAM
training needs: arena + model file + input), stack_max_frame_bytes and the deepest frames
(-fstack-usage), plus the build's sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STACK_BYTES = 32768


def macs_of(model) -> int:
    total = 0
    for L in model.layers:
        oh, ow, oc = L.out_shape
        kh, kw = L.kernel
        if L.kind == "conv":
            total += oh * ow * oc * kh * kw * L.in_shape[2]
        elif L.kind == "dwconv":
            total += oh * ow * oc * kh * kw
        elif L.kind == "fc":
            total += oc * int(np.prod(L.in_shape))
    return int(total)


def size_of(elf: Path) -> dict:
    out = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sec = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sec[parts[0]] = int(parts[1])
    text = sec.get(".text", 0) + sec.get(".ARM.exidx", 0)
    data, bss = sec.get(".data", 0), sec.get(".bss", 0)
    return {"text": text, "data": data, "bss": bss, "flash_bytes": text + data,
            "ram_bytes": data + bss + STACK_BYTES}


def stack_usage(build: Path) -> dict:
    frames = []
    for su in (build / "obj").glob("*.su"):
        for line in su.read_text().splitlines():
            m = re.match(r"(.+?)\t(\d+)\t(\S+)", line)
            if m:
                frames.append((int(m.group(2)), m.group(1).split(":")[-1], m.group(3)))
    frames.sort(reverse=True)
    return {"stack_max_frame_bytes": frames[0][0] if frames else None,
            "stack_frames": [{"function": f, "bytes": b, "kind": k} for b, f, k in frames[:6]],
            "stack_reserved_bytes": STACK_BYTES}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/mcu.py", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="tinylls model file")
    src.add_argument("--tflite", help="int8 .tflite to import (host.tflite_import) instead of --model")
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate when importing --tflite")
    ap.add_argument("--steps", type=int, default=3, help="inference and training steps to run (median)")
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    from host import modelfile, protocol
    from host.core import CModel
    from host.stream import QemuBoard, StreamError
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.tflite:
                from host import nets
                from host.tflite_import import import_tflite
                model = import_tflite(args.tflite)
                nets.set_learning_rates(model, hidden=args.lr, classifier=args.lr)
                path = Path(tmp) / "model.tlm"
                modelfile.save(model, str(path))
            else:
                path = Path(args.model)
                if not path.is_file():
                    raise StreamError(f"--model {path}: no such file")
                model = modelfile.load(str(path))
            blob = path.read_bytes()
            arena = CModel(modelfile.load(str(path))).arena_bytes
            in_bytes = int(np.prod(model.input_shape))
            build = Path(tmp) / "build"
            r = subprocess.run(["make", "-s", "-C", str(ROOT / "firmware"), "BOARD=mps2-an386", f"BUILD={build}",
                                f"ARENA_BYTES={arena}", f"BLOB_BYTES={(len(blob) + 3) // 4 * 4}",
                                f"INPUT_BYTES={in_bytes}", f"STACK_BYTES={STACK_BYTES}",
                                f"-j{os.cpu_count() or 2}"], capture_output=True, text=True)
            if r.returncode != 0:
                raise StreamError(f"firmware build failed: {r.stderr.strip()[-600:]}")
            elf = build / "tinylls.elf"
            rng = np.random.default_rng(0)
            infer, train = [], []
            with QemuBoard(str(elf)) as board:
                link = protocol.Link(board.connect())
                link.sync()
                link.load_model(blob)
                for k in tqdm(range(args.steps), desc="qemu steps", file=sys.stderr):
                    x = rng.integers(-128, 128, in_bytes, dtype=np.int8)
                    infer.append(link.evaluate(x, with_local=False).insn)
                    train.append(link.train(x, k % model.classes).insn)
                info = link.info()
            sizes = size_of(elf)
            out = {
                "model": str(args.model or args.tflite),
                "board": info.board,
                "counter": info.counter_kind,
                "mcu_infer_insn": int(np.median(infer)),
                "mcu_train_insn": int(np.median(train)),
                "macs": macs_of(model),
                "arena_bytes": arena,
                "model_bytes": len(blob),
                "input_bytes": in_bytes,
                "mcu_train_ram_bytes": arena + len(blob) + in_bytes,
                **sizes,
                **stack_usage(build),
                "steps": args.steps,
                "infer_insn_all": infer,
                "train_insn_all": train,
            }
            out["mcu_infer_insn_per_mac"] = round(out["mcu_infer_insn"] / max(out["macs"], 1), 3)
            out["mcu_train_over_infer"] = round(out["mcu_train_insn"] / max(out["mcu_infer_insn"], 1), 3)
    except (StreamError, protocol.ProtocolError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
