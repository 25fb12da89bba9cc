"""Cortex-M figures of record for issue 6, as JSON: the firmware built twice (DSP fast paths and
-DTL_FORCE_GENERIC), instruction counts under QEMU -icount shift=0 for inference and LLS training
of MobileNetV1-0.25 96x96x3 (2 classes), and the weights read back after the same training steps,
which must be bit-identical between the two builds (board vs host: tests/test_firmware.py).

    python bench/mcu_perf.py [--model FILE.tlm] [--steps 3] [--json out.json]

Without --model it builds the from-scratch network (host.nets, head "grid", seed 0) and trains
every layer. Keys: mcu_infer_insn_per_mac, mcu_train_over_infer, arena_bytes (the DSP build), the
same with a _generic suffix, dsp_generic_weights_identical, plus the sections (arm-none-eabi-size)
and deepest stack frames (-fstack-usage) of this build, which receives the model file over the
link. The RAM of on-board training (mcu_train_ram_bytes: model in flash, measured stack) is
bench/mcu.py's figure. A benchmark, not a test.

The instruction profile (a third build, -DTL_PROFILE: bench/mcu_profile.py, firmware/app/profile.c;
--no-profile skips it): mcu_profile_infer / mcu_profile_train give per layer the estimated
instructions of its forward pass and of its local learning, and the top functions (inlined code
under the inlined function's name), symbols and source lines, each as a share of the sampled
instructions and that share of the DSP build's measured count. mcu_infer_cycles_per_mac_est (and
_train_) is a MODEL, not a measurement: the sampled instruction mix priced with Cortex-M4 timings
(loads/stores 2, MACs 1, taken branches 3; bench/mcu_profile.py) times instructions per MAC.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from report import emit  # noqa: E402

STACK_BYTES = 32768
# the training configuration tl_modelfile_load gives a loaded model (as tests/test_firmware.py)
FILE_TRAIN_CFG = dict(basis="square", rounding="stochastic", seed=0, basis_seed=0, tau=1.0)


def build(build_dir: Path, arena: int, blob_len: int, in_bytes: int, extra: str) -> Path:
    env = dict(os.environ, EXTRA_CFLAGS=extra)
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "firmware"), "BOARD=mps2-an386", f"BUILD={build_dir}",
                        f"ARENA_BYTES={arena}", f"BLOB_BYTES={(blob_len + 3) // 4 * 4}",
                        f"INPUT_BYTES={in_bytes}", f"STACK_BYTES={STACK_BYTES}", f"-j{os.cpu_count() or 2}"],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"firmware build failed ({extra or 'default'}): {r.stderr.strip()[-800:]}")
    return build_dir / "tinylls.elf"


def run_board(elf: Path, blob: bytes, xs, ys) -> dict:
    from host import protocol
    from host.stream import QemuBoard

    infer, train = [], []
    with QemuBoard(str(elf)) as board:
        link = protocol.Link(board.connect())
        link.sync()
        link.load_model(blob)
        for x, y in zip(xs, ys):
            infer.append(link.evaluate(x, with_local=False).insn)
            train.append(link.train(x, int(y)).insn)
        weights = link.read_weights()
    return {"infer": infer, "train": train, "weights_sha256": hashlib.sha256(weights).hexdigest()}


def profile(tmp: Path, arena: int, blob: bytes, in_bytes: int, xs, ys, model, out: dict) -> dict:
    import mcu_profile

    elf = build(tmp / "build_profile", arena, len(blob), in_bytes, "-DTL_PROFILE")
    samples = mcu_profile.run_profile(elf, blob, xs, ys, tmp / "profile_run")
    names = [f"{k} {L.kind} {L.kernel[0]}x{L.kernel[1]} {L.in_shape[2]}->{L.out_shape[2]} "
             f"{L.out_shape[0]}x{L.out_shape[1]}" for k, L in enumerate(model.layers)]
    res = {}
    for kind in ("infer", "train"):
        prof = mcu_profile.summarize(samples[kind], elf, out[f"mcu_{kind}_insn"], names)
        res[f"mcu_profile_{kind}"] = prof
        res[f"mcu_{kind}_cycles_per_mac_est"] = round(prof["cycles_per_insn_model"] * out[f"mcu_{kind}_insn"]
                                                      / max(out["macs"], 1), 3)
    res["mcu_cycles_est_note"] = ("model, not measurement: sampled instruction mix x Cortex-M4 TRM timings "
                                  "(load/store 2, MAC 1, taken branch 3; bench/mcu_profile.py)")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/mcu_perf.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="tinylls model file (default: MobileNetV1-0.25 96x96x3 from scratch)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--no-profile", action="store_true", help="skip the profiled build and its run")
    args = ap.parse_args(argv)
    from mcu import macs_of, size_of, stack_usage

    from host import modelfile, nets
    from host.core import CModel

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model:
            path = Path(args.model)
        else:
            rng = np.random.default_rng(0)
            m = nets.build("mobilenet", seed=0, calib=rng.integers(0, 256, size=(8, 96, 96, 3), dtype=np.uint8),
                           classes=2, head="grid")
            nets.set_learning_rates(m, 1e-3, 1e-2)
            path = tmp / "mobilenet.tlm"
            modelfile.save(m, str(path))
        blob = path.read_bytes()
        model = modelfile.load(str(path))
        host_cm = CModel(model, **FILE_TRAIN_CFG)
        arena = host_cm.arena_bytes
        in_bytes = int(np.prod(model.input_shape))
        rng = np.random.default_rng(1)
        xs = [rng.integers(-128, 128, in_bytes, dtype=np.int8) for _ in range(args.steps)]
        ys = [k % model.classes for k in range(args.steps)]
        out = {"model": str(args.model or "mobilenet_v1_0.25_96 (host.nets, grid head, seed 0)"),
               "board": "mps2-an386 (Cortex-M4, QEMU -icount shift=0)", "steps": args.steps,
               "macs": macs_of(model)}
        runs = {}
        for tag, extra in (("dsp", ""), ("generic", "-DTL_FORCE_GENERIC")):
            elf = build(tmp / f"build_{tag}", arena, len(blob), in_bytes, extra)
            r = run_board(elf, blob, xs, ys)
            runs[tag] = r
            infer, train = int(np.median(r["infer"])), int(np.median(r["train"]))
            sfx = "" if tag == "dsp" else "_generic"
            out[f"mcu_infer_insn{sfx}"] = infer
            out[f"mcu_train_insn{sfx}"] = train
            out[f"mcu_infer_insn_per_mac{sfx}"] = round(infer / max(out["macs"], 1), 3)
            out[f"mcu_train_over_infer{sfx}"] = round(train / max(infer, 1), 3)
            if tag == "dsp":
                sizes = size_of(elf)
                stack = stack_usage(tmp / f"build_{tag}")
        out["dsp_generic_weights_identical"] = runs["dsp"]["weights_sha256"] == runs["generic"]["weights_sha256"]
        out["weights_sha256"] = {"dsp": runs["dsp"]["weights_sha256"], "generic": runs["generic"]["weights_sha256"]}
        out["arena_bytes"] = arena
        out["model_bytes"] = len(blob)
        out["input_bytes"] = in_bytes
        out["bp_activation_bytes"] = host_cm.bp_activation_bytes
        out.update(sizes)
        out.update(stack)
        out["infer_insn_all"] = runs["dsp"]["infer"]
        out["train_insn_all"] = runs["dsp"]["train"]
        if not args.no_profile:
            out.update(profile(tmp, arena, blob, in_bytes, xs, ys, model, out))
    return emit(out, args.json)


if __name__ == "__main__":
    sys.exit(main())
