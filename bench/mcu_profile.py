"""The instruction profile of bench/mcu_perf.py: the firmware built with -DTL_PROFILE samples the
interrupted PC every ~500 instructions (firmware/app/profile.c) with the layer and phase the model
was in; this module runs it, maps the samples to layers, functions and source lines with the ELF,
and prices the sampled instruction mix with a Cortex-M4 cycle model. The samples are a uniform
sample of the instruction stream, so a share of samples estimates a share of instructions; the
estimated counts are those shares times the normal (unprofiled) build's measured totals."""
from __future__ import annotations

import bisect
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np

CROSS = "arm-none-eabi-"
PROFILE_FILE = "tinylls-profile.bin"

# Cortex-M4 cycle model (Cortex-M4 TRM, "Processor instruction timings"), per instruction: loads
# and stores 2 (LDRD/STRD 3, LDM/STM/PUSH/POP 1 + registers), multiplies and MACs 1 (the M4 does
# 32x32->64 MACs in one cycle), divides 7 (2..12, data dependent), branches 3 when taken and 1 when
# not, everything else 1. Which branches are taken is not sampled: unconditional branches, calls
# and returns count as taken, a conditional branch backwards (a loop's) as taken, forwards (an
# early exit or skipped case) as not taken. A model: it ignores pipelined neighbouring loads
# (cheaper) and wait states of real flash (dearer).
BRANCH_TAKEN = 3


def _reg_count(operands: str) -> int:
    m = re.search(r"\{([^}]*)\}", operands)
    if not m:
        return 1
    n = 0
    for part in m.group(1).split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-")
            n += int(b.strip()[1:]) - int(a.strip()[1:]) + 1
        elif part:
            n += 1
    return n


def insn_cycles(addr: int, mnem: str, ops: str) -> int:
    base = mnem.split(".")[0]
    cond = r"(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)"
    if base in ("pop", "ldm", "ldmia", "ldmdb", "ldmfd") or re.fullmatch(r"(pop|ldm(ia|db|fd)?)" + cond, base):
        return 1 + _reg_count(ops) + (BRANCH_TAKEN - 1 if "pc" in ops else 0)
    if base in ("push", "stm", "stmia", "stmdb", "stmfd") or re.fullmatch(r"(push|stm(ia|db|fd)?)" + cond, base):
        return 1 + _reg_count(ops)
    if base.startswith(("ldrd", "strd")):
        return 3
    if base.startswith(("ldr", "str", "ldrex", "strex")):
        return BRANCH_TAKEN if re.match(r"pc\b", ops) else 2
    if base in ("sdiv", "udiv"):
        return 7
    if base in ("b", "bl", "blx", "bx") or base.startswith("tb"):
        return BRANCH_TAKEN
    if base in ("cbz", "cbnz"):
        return 1
    if re.fullmatch(r"b" + cond, base):
        m = re.match(r"\s*([0-9a-f]+)", ops)
        return BRANCH_TAKEN if m and int(m.group(1), 16) <= addr else 1
    return 1


def disassembly(elf: Path) -> dict:
    """address -> (mnemonic, operands) of every instruction of the ELF's code"""
    out = subprocess.run([CROSS + "objdump", "-d", "--no-show-raw-insn", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(\S+)\s*([^;]*)", line)
        if m and not m.group(2).startswith("."):
            table[int(m.group(1), 16)] = (m.group(2), m.group(3).strip())
    return table


def functions(elf: Path):
    """(sorted starts, names) of the ELF's function symbols"""
    out = subprocess.run([CROSS + "nm", "-n", "--defined-only", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    starts, names = [], []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            starts.append(int(parts[0], 16) & ~1)
            names.append(parts[2])
    return starts, names


def source_lines(elf: Path, pcs) -> dict:
    """pc -> (innermost function, file:line), inlined code named by the inlined function"""
    pcs = sorted(pcs)
    if not pcs:
        return {}
    out = subprocess.run([CROSS + "addr2line", "-f", "-e", str(elf)], input="\n".join(hex(p) for p in pcs),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    res = {}
    for k, pc in enumerate(pcs):
        fn, loc = out[2 * k], out[2 * k + 1]
        loc = loc.split(" (")[0]
        res[pc] = (fn, Path(loc.split(":")[0]).name + ":" + loc.rsplit(":", 1)[-1])
    return res


def run_profile(elf: Path, blob: bytes, xs, ys, workdir: Path) -> dict:
    """The samples of each inference and each training step, as uint32 arrays (layer+1 << 24 | pc)."""
    from host import protocol
    from host.stream import QemuBoard

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / PROFILE_FILE
    cuts = {"infer": [], "train": []}
    with QemuBoard(str(elf), extra_args=["-semihosting-config", "enable=on,target=native"], cwd=str(workdir)) as board:
        link = protocol.Link(board.connect())
        link.sync()
        link.load_model(blob)
        link.sync()
        for x, y in zip(xs, ys):
            for kind in ("infer", "train"):
                a = path.stat().st_size
                if kind == "infer":
                    link.evaluate(x, with_local=False)
                else:
                    link.train(x, int(y))
                link.sync()  # answered after the command's samples are flushed
                cuts[kind].append((a, path.stat().st_size))
    data = path.read_bytes()
    return {kind: [np.frombuffer(data[a:b], dtype="<u4") for a, b in spans] for kind, spans in cuts.items()}


def summarize(samples, elf: Path, total_insn: int, layer_names, top: int = 12) -> dict:
    """Shares of layers (forward / local learning), functions and source lines, scaled to total_insn,
    and the cycle model's mean cycles per instruction; only the samples taken inside the model's
    layer loop count (not the link's CRC and idle loop while an image arrives)."""
    s = np.concatenate(samples)
    total = len(s)
    s = s[(s >> 24) > 0]  # inside the model's layer loop: what the board's counter measures
    tags = s >> 24
    n = max(len(s), 1)
    scale = total_insn / n
    starts, names = functions(elf)
    dis = disassembly(elf)
    pcs = (s & 0xFFFFFF).astype(np.int64)
    uniq, counts = np.unique(pcs, return_counts=True)
    lines = source_lines(elf, uniq.tolist())
    by_fn, by_line, by_sym = Counter(), Counter(), Counter()
    cycles = 0
    unknown = 0
    for pc, c in zip(uniq.tolist(), counts.tolist()):
        fn, loc = lines.get(pc, ("?", "?"))
        by_fn[fn] += c
        by_line[f"{fn} {loc}"] += c
        k = bisect.bisect_right(starts, pc) - 1
        by_sym[names[k] if k >= 0 else "?"] += c
        if pc in dis:
            cycles += c * insn_cycles(pc, *dis[pc])
        else:
            unknown += c
            cycles += c
    layers = Counter((int(t) - 1) for t in tags[tags > 0])
    per_layer = []
    for li, name in enumerate(layer_names):
        fwd, lls = layers.get(2 * li, 0), layers.get(2 * li + 1, 0)
        per_layer.append({"layer": li, "name": name, "forward_insn_est": int(round(fwd * scale)),
                          "lls_insn_est": int(round(lls * scale)),
                          "share": round((fwd + lls) / n, 4)})

    def table(counter):
        return [{"where": k, "share": round(v / n, 4), "insn_est": int(round(v * scale))}
                for k, v in counter.most_common(top)]

    return {"samples": int(n), "samples_outside_model": int(total - len(s)),
            "layers": per_layer, "functions_top": table(by_fn), "symbols_top": table(by_sym),
            "lines_top": table(by_line), "cycles_per_insn_model": round(cycles / n, 3),
            "unresolved_pcs": int(unknown)}
