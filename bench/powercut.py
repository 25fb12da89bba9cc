"""Power cuts during a checkpoint save, swept over every flash operation, as JSON.

    python bench/powercut.py [--every K] [--json out.json]

The checkpoint writer of the C core (ccore/src/tl_checkpoint.c) runs in this process against an
emulated NOR flash (host/flashsim.py: 4 KB sectors, 256 B pages, erase -> 0xFF, programs may only
clear bits). The state is that of the VWW-size network: MobileNetV1-0.25 96x96x3, 2 classes, every
layer trained, built from scratch by host.nets (grid head, seed 0) - its trainable tensors are
223,160 B, as those of the imported VWW model.

Setup: two training steps, checkpoint (generation 1, slot A), two steps, checkpoint (generation 2,
slot B), two more steps: the "new" state. Its save (generation 3) goes to slot A over generation 1.
For every cut point N (the N-th erase or program of that save, left half done, nothing after it)
and once after the last operation (the record is complete), the board "reboots": a fresh model with the original weights restores from the flash and is
compared (weights stream CRC, step, rates) with the previous state (generation 2) and the new one.
  recovered_previous  the restore gave generation 2 exactly
  recovered_new       the restore gave generation 3 exactly (only possible once the record is in)
  corrupt             anything else (must be 0)
--every K sweeps every metadata operation (the erases and the commit record) and every K-th data
program instead of all of them (the test suite's sweep uses K <= 16).

Wear: the emulated flash counts erases and bytes programmed; checkpoints per hour at the default
interval follow from the step time (52.6 M instructions per training step on the Cortex-M4 DSP
build, README "Performance", at 216 MHz and one instruction per cycle: an STM32F746 estimate,
printed as an assumption), years to the 10,000-cycle endurance from the most-erased sector.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from host import modelfile, nets  # noqa: E402
from host._tinylls import ffi, lib  # noqa: E402
from host.core import CModel  # noqa: E402
from host.flashsim import NorFlash, region_bytes_for  # noqa: E402

SECTOR, PAGE = 4096, 256
DEFAULT_EVERY = 1000                 # automatic checkpoint interval (steps) the wear figures assume
STEP_INSN = 52.6e6                   # README: DSP build, instructions per training step
CPU_HZ = 216e6                       # STM32F746 (assumption: 1 instruction per cycle)
ENDURANCE = 10_000                   # erase cycles per sector (typical NOR / STM32F7 datasheet)


def vww_size_model(seed: int = 0):
    calib = np.random.default_rng(seed).integers(0, 256, size=(8, 96, 96, 3), dtype=np.uint8)
    model = nets.build("mobilenet", seed=seed, calib=calib, classes=2, head="grid")
    nets.set_learning_rates(model, 1e-3, 1e-2)
    return model


class Rig:
    """One model + flash + checkpoint state, as a board holds them."""

    def __init__(self, model, flash: NorFlash, blob: bytes):
        self.cm = CModel(copy.deepcopy(model))     # CModel trains the Model's arrays in place
        self.m = self.cm._m
        self.flash = flash
        self.f = flash.tl_flash()
        self.slots = ffi.new("tl_ckpt_slot[2]")
        self.st = ffi.new("tl_ckpt_state *")
        self.st.model_size = len(blob)
        self.st.model_crc = zlib.crc32(blob)
        self.variant = int(self.m.cfg.variant)

    def scan(self) -> int:
        return lib.tl_ckpt_scan(self.f, self.slots)

    def save(self) -> int:
        self.st.step = self.m.step
        self.st.cfg = self.m.cfg
        self.st.lls_variant = self.variant
        return lib.tl_ckpt_save(self.f, self.m, self.st, self.slots)

    def restore(self) -> tuple[int, int]:
        found = ffi.new("int32_t *")
        s = lib.tl_ckpt_restore(self.f, self.m, self.st, self.variant, self.slots, found)
        return s, found[0]

    def fingerprint(self) -> tuple:
        crc = ffi.new("uint32_t *")
        lib.tl_proto_weights_crc(self.m, crc)
        rates = tuple((L.lr_mult, L.lr_shift, L.lls_m_lr_mult, L.lls_m_lr_shift)
                      for L in (self.m.layers[i] for i in range(self.m.n_layers)))
        return int(crc[0]), int(self.m.step), rates


def train(rig: Rig, n: int, rng) -> None:
    for _ in range(n):
        x = rng.integers(-128, 128, size=(96, 96, 3), dtype=np.int8)
        rig.cm.train_step(x, int(rng.integers(0, 2)))


def new_rig(model=None):
    """(model, its model file, its checkpoint payload bytes, a new flash region sized for its checkpoint payload, a rig on it);
    default model: the VWW-size one."""
    model = model or vww_size_model()
    blob = modelfile.to_bytes(model)
    cm_probe = CModel(model)
    payload = lib.tl_ckpt_payload_bytes(cm_probe._m, int(cm_probe._m.cfg.variant))
    flash = NorFlash(region_bytes_for(payload, SECTOR, PAGE), SECTOR, PAGE)
    return model, blob, payload, flash, Rig(model, flash, blob)


def prepare(model=None):
    """(model, blob, flash with generations 1 and 2, rig holding the new state, fingerprints)."""
    model, blob, payload, flash, rig = new_rig(model)
    rng = np.random.default_rng(1)
    assert rig.scan() == 0
    train(rig, 2, rng)
    assert rig.save() == 0 and rig.st.generation == 1
    train(rig, 2, rng)
    assert rig.save() == 0 and rig.st.generation == 2
    prev = rig.fingerprint()
    train(rig, 2, rng)
    new = rig.fingerprint()
    return model, blob, flash, rig, payload, prev, new


def save_ops(flash: NorFlash, rig: Rig) -> list:
    """The erase/program sequence of the next save (run on a copy of the flash, then undone)."""
    snap = bytes(flash.mem), list(flash.sector_erases)
    flash.record_ops, flash.log = True, []
    flash.reset_counters()
    slots = ffi.new("tl_ckpt_slot[2]")
    ffi.memmove(slots, rig.slots, ffi.sizeof(slots))
    st = ffi.new("tl_ckpt_state *")
    ffi.memmove(st, rig.st, ffi.sizeof(st[0]))
    st.step = rig.m.step
    assert lib.tl_ckpt_save(rig.f, rig.m, st, slots) == 0
    ops, counters = flash.log, flash.counters()
    flash.record_ops = False
    flash.mem[:] = snap[0]
    flash.sector_erases = snap[1]
    return ops, counters


def sweep(every: int = 1, model=None) -> dict:
    model, blob, flash, rig, payload, prev, new = prepare(model)
    ops, counters = save_ops(flash, rig)
    record = len(ops)                                    # the commit record is the last program
    data = [i + 1 for i, op in enumerate(ops) if op[0] == "program" and i + 1 != record]
    meta = [i + 1 for i, op in enumerate(ops) if op[0] == "erase"] + [record]
    points = sorted(set(meta) | set(data[::every]) | {data[0], data[-1]}) if every > 1 else list(range(1, record + 1))
    base_mem, base_wear = bytes(flash.mem), list(flash.sector_erases)
    slots0 = bytes(ffi.buffer(rig.slots))
    out = dict(cut_points=0, recovered_previous=0, recovered_new=0, corrupt=0, corrupt_points=[])
    for n in points + [0]:                               # 0: no cut (the save completes)
        flash.mem[:] = base_mem
        flash.sector_erases = list(base_wear)
        flash.revive()
        flash.reset_counters()
        ffi.memmove(rig.slots, slots0, len(slots0))
        victim = Rig(model, flash, blob)                 # the board that saves (holds the new state)
        ffi.memmove(victim.slots, rig.slots, ffi.sizeof(rig.slots))
        _copy_state(rig, victim)
        flash.cut_at = n
        s = victim.save()
        flash.revive()
        booted = Rig(model, flash, blob)                 # next boot: original weights, then restore
        rs, found = booted.restore()
        fp = booted.fingerprint() if rs == 0 and found == lib.TL_CKPT_RESTORED else None
        if n == 0:          # the cut after the last operation: the record is in, save returned
            out["complete_save_status"] = int(s)
            out["complete_save_restores_new"] = fp == new
        out["cut_points"] += 1
        if fp == prev:
            out["recovered_previous"] += 1
        elif fp == new:
            out["recovered_new"] += 1
        else:
            out["corrupt"] += 1
            out["corrupt_points"].append(n)
    out.update(save_operations=record, save_erases=sum(op[0] == "erase" for op in ops),
               save_programs=sum(op[0] == "program" for op in ops), data_programs=len(data),
               swept_every=every, payload_bytes=payload, flash_violations=flash.violations,
               tensor_bytes=payload - 16 * int(rig.m.n_layers))
    return out


def _copy_state(src: Rig, dst: Rig) -> None:
    """dst's model takes src's tensors, rates and step (through the weights of the CModels)."""
    if getattr(src.cm, "_blob", None) is not None:        # CModel parses the model file in its own blob
        dst.cm._blob[...] = src.cm._blob
    else:
        for a, b in zip(src.cm._keep, dst.cm._keep):
            b[...] = a
    for i in range(src.m.n_layers):
        for k in ("lr_mult", "lr_shift", "lls_m_lr_mult", "lls_m_lr_shift"):
            setattr(dst.m.layers[i], k, getattr(src.m.layers[i], k))
    dst.m.step = src.m.step
    dst.m.cfg = src.m.cfg
    assert dst.fingerprint() == src.fingerprint()


def wear(model=None, checkpoints: int = 10, every: int = DEFAULT_EVERY) -> dict:
    """Counters over `checkpoints` saves of the VWW-size state, and what they mean for the flash."""
    model, blob, payload, flash, rig = new_rig(model)
    assert rig.scan() == 0
    for _ in range(checkpoints):
        rig.m.step += every
        assert rig.save() == 0
    c = flash.counters()
    per_sector = c["max_sector_erases"] / checkpoints        # erase cycles of the most-worn sector per checkpoint
    step_s = STEP_INSN / CPU_HZ
    per_hour = 3600.0 / (every * step_s)
    years = ENDURANCE / (per_sector * per_hour * 24 * 365.25)
    # the interval (steps) that makes the most-worn sector last 10 years
    steps_10y = per_sector * 10 * 365.25 * 24 * 3600 / (ENDURANCE * step_s)
    return dict(flash_bytes=flash.size, sector_bytes=SECTOR, page_bytes=PAGE,
                bytes_programmed_per_checkpoint=c["bytes_programmed"] / checkpoints,
                erases_per_checkpoint=c["erases"] / checkpoints,
                programs_per_checkpoint=c["programs"] / checkpoints,
                sector_erase_cycles_per_checkpoint=per_sector,
                default_every_steps=every, step_seconds_assumed=round(step_s, 4),
                checkpoints_per_hour=round(per_hour, 2),
                years_to_endurance=round(years, 4), endurance_cycles=ENDURANCE,
                every_steps_for_10_years=int(np.ceil(steps_10y)), flash_violations=c["violations"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=1, help="sweep every K-th data program (1: all)")
    ap.add_argument("--json", help="also write the JSON here")
    a = ap.parse_args(argv)
    t = time.time()
    model = vww_size_model()
    res = sweep(a.every, model)
    res["wear"] = wear(model)
    res["seconds"] = round(time.time() - t, 1)
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(text + "\n")
    return 0 if res["corrupt"] == 0 and res.get("complete_save_restores_new") else 1


if __name__ == "__main__":
    sys.exit(main())
