"""Instruction counts and the RAM of on-board training on an emulated Cortex-M4, as JSON.

    python bench/mcu.py [--model vww.tlm] [--steps 3] [--json out.json] [--load-over-uart]
    python bench/mcu.py --board rv32-virt ...   (RV32IMC under qemu-system-riscv32 -M virt)
    python bench/mcu.py --tflite ../shared/.../vww_96_int8.tflite   (imported on the fly)

Without --model/--tflite it measures the network of issue 6: MobileNetV1-0.25 96x96x3, 2 classes,
every layer trained, built from scratch as bench/mcu_perf.py builds it (host.nets, grid head,
seed 0, learning rates 1e-3 / 1e-2).

Builds firmware/ for mps2-an386 with the model compiled into flash (`make MODEL=file.tlm`: every
static buffer sized exactly for this model by its own planner figures, see firmware/README.md),
runs it under `qemu-system-arm -icount shift=0` (each instruction = 1 ns of virtual time; SysTick
counts 1 per 40 instructions), loads the model (resident: no data sent), runs --steps inference
and training steps on random inputs, reads the weights back and checks them against the host
build of the core trained on the same inputs (`weights_bit_identical`). Counts exclude the serial
link; they are deterministic up to the 40-instruction tick. This is a benchmark, not a test.
--load-over-uart measures the other firmware layout instead: the model file sent over the link
into a RAM buffer of its size and trained in place (the layout before issue 6).

How the RAM figure is made (mcu_train_ram_bytes), nothing estimated:
  static  .data + .bss of the ELF that ran (arm-none-eabi-size -A): the trainable tensors
          (weights, int32 biases, LLS modulation: train_tensor_bytes), the arena (which also holds
          the staged input), the layer table, the protocol state (frame decoder, response cache),
          the UART ring and everything else the link put in RAM (sizes of the big symbols in
          ram_symbols). No heap exists (no malloc; newlib's sbrk is never linked in).
  stack   stack_used_bytes: the firmware paints its stack reserve at reset and INFO reports the
          deepest word ever overwritten (main code and interrupts share the one stack), read
          after boot, LOAD, the training steps, inference with every local head and READ_WEIGHTS.
          Beside it, stack_callchain_bytes: the deepest call chain of the -fstack-usage frames
          (gcc -fcallgraph-info=su; indirect calls resolved to the firmware's three callbacks,
          plus the deepest interrupt handler and a 104-byte FPU exception frame) - a static
          bound the measured figure must not exceed.
  mcu_train_ram_bytes = data + bss + stack_used_bytes; mcu_train_ram_bytes_static_bound uses
  stack_callchain_bytes instead. The linker's stack reserve (stack_reserved_bytes) is a build
  setting, not a need, and is not counted.
bp_activation_bytes is what a backprop trainer keeps of activations (input + every layer's
output, tl_model_bp_activation_bytes); bp_equivalent_ram_bytes = mcu_train_ram_bytes - arena_bytes
+ bp_activation_bytes, the same firmware with the arena replaced by those activations (a lower
bound for backprop: no gradient buffers counted).

--adapt-layers K (issue 16): the model gets camera-adaptation reference statistics for its first K
layers (host.adapt.add_reference on random clean inputs: the RAM and instructions do not depend
on their values), the firmware is built with them, and before the training steps the board adapts
those layers (ADAPT / ADAPT_FEED) on --adapt-images random images; mcu_adapt_insn: per adapted
layer, the median counter units of one ADAPT_FEED (that image through the layers before it plus
the layer's statistics); mcu_adapt_insn_per_image: their sum, what adapting K layers costs per
unlabelled image; adapt_bit_identical: every layer's bias/multipliers (APPLY's crc32) equal the
host's (host.adapt.board_adapt). The RAM figure then includes what adaptation adds (the adapted
layers' bias/out_mult/out_shift copies, the statistics' arena bytes past the plan).

Other keys: mcu_infer_insn, mcu_train_insn (median over --steps), macs (multiply-accumulates of one
forward pass), mcu_infer_insn_per_mac, mcu_train_over_infer, arena_bytes (tl_model_arena_bytes,
input included), model_bytes (the .tlm file), flash_model_bytes (what is compiled in: the file
without its host-only area), sections and flash_bytes (text + data), stack_max_frame_bytes and
the deepest frames.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/report.py, also when a test imports this file
from report import emit  # noqa: E402

STACK_BYTES = 32768            # linker reserve of the build (painted and measured, not counted)
CALLBACKS = ("link_write", "link_counter", "link_stack_used")   # firmware/app/main.c: the only indirect calls
# The emulated boards (make -C firmware BOARD=...): binutils prefix, reset entry of the call graph,
# interrupt handlers that can nest on the stack, and the exception frame the hardware pushes.
BOARDS = {
    "mps2-an386": dict(cross="arm-none-eabi-", root="Reset_Handler",
                       isrs=("UART0RX_Handler", "SysTick_Handler", "HardFault_Handler", "Default_Handler"),
                       exception_frame=104),   # Cortex-M4F extended exception frame (lazy FP stacking)
    # interrupts are never taken (WFI is woken through mie alone); a trap exits QEMU
    "rv32-virt": dict(cross="riscv64-unknown-elf-", root="reset_c", isrs=(), exception_frame=0),
}
# the configuration tl_modelfile_load gives a loaded model (host.core.CModel's defaults)
FILE_TRAIN_CFG = dict(basis="square", rounding="stochastic", seed=0, basis_seed=0, tau=0.5)


def macs_of(model) -> int:
    return sum(L.macs() for L in model.layers)


def size_of(elf: Path, cross: str = "arm-none-eabi-") -> dict:
    out = subprocess.run([cross + "size", "-A", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sec = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sec[parts[0]] = int(parts[1])
    text = sec.get(".text", 0) + sec.get(".ARM.exidx", 0) + sec.get(".rodata", 0)
    data, bss = sec.get(".data", 0), sec.get(".bss", 0)
    return {"text": text, "data": data, "bss": bss, "flash_bytes": text + data, "static_ram_bytes": data + bss}


def ram_symbols(elf: Path, top: int = 8, cross: str = "arm-none-eabi-") -> dict:
    """The largest .data/.bss symbols (<cross>nm), bytes."""
    out = subprocess.run([cross + "nm", "-S", "--size-sort", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "bBdD":
            syms.append((int(parts[1], 16), parts[3]))
    syms.sort(reverse=True)
    return {name: size for size, name in syms[:top]}


def stack_usage(build: Path) -> dict:
    frames = []
    for su in build.rglob("*.su"):
        for line in su.read_text().splitlines():
            m = re.match(r"(.+?)\t(\d+)\t(\S+)", line)
            if m:
                frames.append((int(m.group(2)), m.group(1).split(":")[-1], m.group(3)))
    frames.sort(reverse=True)
    return {"stack_max_frame_bytes": frames[0][0] if frames else None,
            "stack_frames": [{"function": f, "bytes": b, "kind": k} for b, f, k in frames[:6]],
            "stack_reserved_bytes": STACK_BYTES}


def stack_callchain(build: Path, root: str = "Reset_Handler", isrs=BOARDS["mps2-an386"]["isrs"],
                    exception_frame: int = BOARDS["mps2-an386"]["exception_frame"]) -> dict:
    """Deepest call chain from `root` over gcc's -fcallgraph-info=su graphs (one .ci per object).
    Static functions are named file:function, global ones by name; __indirect_call goes to the
    firmware's callbacks; calls into the C library (no .ci) count 0 and are listed."""
    size, edges, dynamic = {}, {}, []
    node_re = re.compile(r'node: \{ title: "([^"]+)" label: "[^"]*?\\n[^"]*?\\n(\d+) bytes \(([^)]*)\)"')
    edge_re = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
    for ci in build.rglob("*.ci"):
        text = ci.read_text()
        for title, nbytes, kind in node_re.findall(text):
            size[title] = int(nbytes)
            if kind != "static":
                dynamic.append(title)
        for src, dst in edge_re.findall(text):
            edges.setdefault(src, set()).add(dst)
    by_name = {t.split(":")[-1]: t for t in size}

    def resolve(t):
        if t == "__indirect_call":
            return [by_name[c] for c in CALLBACKS if c in by_name]
        return [t if t in size else by_name.get(t, t)]

    external, memo = set(), {}

    def depth(t, path):
        if t in memo:
            return memo[t]
        if t in path:
            raise RuntimeError(f"recursion through {t}: no static stack bound")
        if t not in size:
            external.add(t)
            return 0, [t]
        best, chain = 0, []
        for d in edges.get(t, ()):
            for r in resolve(d):
                v, c = depth(r, path | {t})
                if v > best:
                    best, chain = v, c
        memo[t] = (size[t] + best, [t] + chain)
        return memo[t]

    total, chain = depth(by_name.get(root, root), frozenset())
    isr = max((depth(by_name[n], frozenset())[0] for n in isrs if n in by_name), default=0)
    return {"stack_callchain_bytes": total + isr + exception_frame,
            "stack_callchain": [c.split(":")[-1] for c in chain],
            "stack_callchain_thread_bytes": total, "stack_callchain_isr_bytes": isr + exception_frame,
            "stack_callchain_unknown": sorted(external), "stack_dynamic_frames": sorted(dynamic)}


def build_firmware(build: Path, path: Path, blob_len: int, arena: int, over_uart: bool,
                   board: str = "mps2-an386") -> Path:
    if over_uart:
        sizes = [f"ARENA_BYTES={arena}", f"BLOB_BYTES={(blob_len + 3) // 4 * 4}"]
    else:
        sizes = [f"MODEL={path}"]
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "firmware"), f"BOARD={board}", f"BUILD={build}",
                        f"PYTHON={sys.executable}", f"STACK_BYTES={STACK_BYTES}", *sizes],
                       capture_output=True, text=True)
    if r.returncode != 0:
        from host.stream import StreamError
        raise StreamError(f"firmware build failed: {(r.stdout + r.stderr).strip()[-800:]}")
    return build / "tinylls.elf"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/mcu.py", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="tinylls model file (default: MobileNetV1-0.25 96x96x3 from scratch)")
    src.add_argument("--tflite", help="int8 .tflite to import (host.tflite_import) instead of --model")
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate when importing --tflite")
    ap.add_argument("--steps", type=int, default=3, help="inference and training steps to run (median)")
    ap.add_argument("--load-over-uart", action="store_true",
                    help="measure the firmware that receives the model file over the link into RAM instead")
    ap.add_argument("--board", choices=sorted(BOARDS), default="mps2-an386",
                    help="emulated board to build and run (default mps2-an386, Cortex-M4F)")
    ap.add_argument("--adapt-layers", type=int, default=0,
                    help="add adaptation statistics for the first K layers and measure the board adapting them "
                         "(default 0: no adaptation)")
    ap.add_argument("--adapt-images", type=int, default=2, help="images fed per adapted layer (default 2)")
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    from host import modelfile, protocol
    from host.core import CModel
    from host.model import weights_sha256
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
            elif not args.model:
                from host import nets
                calib = np.random.default_rng(0).integers(0, 256, size=(8, 96, 96, 3), dtype=np.uint8)
                model = nets.build("mobilenet", seed=0, calib=calib, classes=2, head="grid")
                nets.set_learning_rates(model, 1e-3, 1e-2)
                path = Path(tmp) / "mobilenet_v1_0.25_96.tlm"
                modelfile.save(model, str(path))
                model = modelfile.load(str(path))
            else:
                path = Path(args.model).resolve()
                if not path.is_file():
                    raise StreamError(f"--model {path}: no such file")
                model = modelfile.load(str(path))
            if args.adapt_layers:
                from host import adapt
                clean = np.random.default_rng(1).integers(-128, 128, (4,) + tuple(model.input_shape), dtype=np.int8)
                adapt.add_reference(model, clean, args.adapt_layers)
                path = Path(tmp) / ("adapt-" + path.name)
                modelfile.save(model, str(path))
                model = modelfile.load(str(path))
            blob = path.read_bytes()
            host_cm = CModel(model, **FILE_TRAIN_CFG)
            arena = host_cm.arena_bytes
            in_bytes = int(np.prod(model.input_shape))
            build = Path(tmp) / "build"
            bd = BOARDS[args.board]
            elf = build_firmware(build, path, len(blob), arena, args.load_over_uart, args.board)
            rng = np.random.default_rng(0)
            infer, train = [], []
            adapt_out = {}
            with QemuBoard(str(elf)) as board:
                link = protocol.Link(board.connect())
                link.sync()
                loaded = link.load_model(blob)
                if args.adapt_layers:
                    from host import adapt
                    xs = rng.integers(-128, 128, (args.adapt_images,) + tuple(model.input_shape), dtype=np.int8)
                    want = adapt.board_adapt(host_cm, xs, args.adapt_layers)
                    per_layer, same = {}, True
                    for w in tqdm(want, desc="qemu adaptation", file=sys.stderr):
                        link.adapt_begin(w["layer"])
                        per_layer[w["layer"]] = int(np.median([link.adapt_feed(x)[0] for x in xs]))
                        same &= tuple(link.adapt_apply(w["layer"])) == (w["images"], w["crc"])
                    adapt_out = {"adapt_layers": [w["layer"] for w in want], "adapt_images": args.adapt_images,
                                 "mcu_adapt_insn": per_layer,
                                 "mcu_adapt_insn_per_image": int(sum(per_layer.values())),
                                 "adapt_bit_identical": bool(same)}
                for k in tqdm(range(args.steps), desc="qemu steps", file=sys.stderr):
                    x = rng.integers(-128, 128, in_bytes, dtype=np.int8)
                    infer.append(link.evaluate(x, with_local=False).insn)
                    train.append(link.train(x, k % model.classes).insn)
                    host_cm.train_step(x.reshape(model.input_shape), k % model.classes)
                link.evaluate(x, with_local=True)
                weights = link.read_weights()
                info = link.info()
            sizes = size_of(elf, bd["cross"])
            callchain = stack_callchain(build, bd["root"], bd["isrs"], bd["exception_frame"])
            ram = sizes["static_ram_bytes"] + info.stack_used
            out = {
                "model": str(args.model or args.tflite or "mobilenet_v1_0.25_96 (host.nets, grid head, seed 0)"),
                "layout": "model file in RAM, loaded over the link" if args.load_over_uart
                else "model in flash, trainable tensors in RAM",
                "board": info.board,
                "counter": info.counter_kind,
                "mcu_infer_insn": int(np.median(infer)),
                "mcu_train_insn": int(np.median(train)),
                "macs": macs_of(model),
                "weights_bit_identical": hashlib.sha256(weights).hexdigest() == weights_sha256(model),
                "model_resident_in_flash": loaded["resident"],
                "input_in_arena": info.input_in_arena,
                "arena_bytes": arena,
                "model_bytes": len(blob),
                "flash_model_bytes": info.rom_size,
                "train_tensor_bytes": modelfile.train_ram_bytes(blob),
                "input_bytes": in_bytes,
                "mcu_train_ram_bytes": ram,
                "mcu_train_ram_bytes_static_bound": sizes["static_ram_bytes"] + callchain["stack_callchain_bytes"],
                "stack_used_bytes": info.stack_used,
                **{k: callchain[k] for k in ("stack_callchain_bytes", "stack_callchain_thread_bytes",
                                             "stack_callchain_isr_bytes", "stack_callchain")},
                "bp_activation_bytes": host_cm.bp_activation_bytes,
                "bp_equivalent_ram_bytes": ram - arena + host_cm.bp_activation_bytes,
                "sections": {k: sizes[k] for k in ("text", "data", "bss")},
                **sizes,
                "ram_symbols": ram_symbols(elf, cross=bd["cross"]),
                **stack_usage(build),
                "stack_callchain_unknown": callchain["stack_callchain_unknown"],
                "stack_dynamic_frames": callchain["stack_dynamic_frames"],
                **adapt_out,
                "steps": args.steps,
                "infer_insn_all": infer,
                "train_insn_all": train,
            }
            if info.stack_used >= STACK_BYTES:
                out["warning"] = "the stack reached the end of its reserve: stack_used_bytes is a lower bound"
            out["mcu_infer_insn_per_mac"] = round(out["mcu_infer_insn"] / max(out["macs"], 1), 3)
            out["mcu_train_over_infer"] = round(out["mcu_train_insn"] / max(out["mcu_infer_insn"], 1), 3)
    except (StreamError, protocol.ProtocolError, OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return emit(out, args.json)


if __name__ == "__main__":
    sys.exit(main())
