"""Issue 12's must-show: a run interrupted twice resumes to the same weights, as JSON.

    python bench/resume_demo.py --elf firmware/build/mps2-an386/tinylls.elf [--json out.json]

32 training samples (--limit 16 --epochs 2: the epoch boundary and the cosine schedule's second
rates fall inside the interrupted part) of the from-scratch MobileNetV1-0.25 96x96 on synthetic
scenes, on the emulated Cortex-M4 with checkpoint flash (--flash-dir, every --every samples):
  run A  `python -m host.stream ... --checkpoint-every K` killed with SIGKILL once its log shows
         sample 13 (QEMU goes with it: the board loses power);
  run B  `... --resume`: restores the newest checkpoint, goes on; the board (QEMU) is killed once
         the log shows sample 21 (a reset: host.stream fails, its link dead);
  run C  `... --resume` again: runs to the end.
Compared with an uninterrupted host.stream run (no checkpoints) and host.simulate with the same
training options: the three weights_sha256 must be equal.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--limit", "16", "--epochs", "2", "--val-limit", "2", "--seed", "0"]


def stream_cmd(elf, extra):
    return [sys.executable, "-m", "host.stream", "--qemu", str(elf), "--quiet", *TRAIN, *extra]


def train_steps(log: Path) -> int:
    """Largest training step recorded in a host.stream JSONL log so far."""
    step = 0
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue                     # a line being written
            if r.get("kind") == "train":
                step = max(step, r["step"])
    return step


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run_until(cmd, log: Path, step: int, kill: str, timeout: float = 900) -> dict:
    """Runs cmd until its log shows `step`, then SIGKILLs host.stream ("host") or its QEMU
    child ("board"); returns what happened."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + timeout
    killed = None
    while proc.poll() is None and time.monotonic() < end:
        seen = train_steps(log)
        if seen >= step:
            if kill == "host":
                proc.send_signal(signal.SIGKILL)
                killed = {"killed": "host.stream (SIGKILL)", "after_sample": seen}
            else:
                qemu = [c for c in children(proc.pid)]
                for c in qemu:
                    os.kill(c, signal.SIGKILL)
                killed = {"killed": "board (QEMU SIGKILL)", "after_sample": seen, "qemu_pids": qemu}
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    return {**(killed or {}), "exit": proc.returncode, "stderr_tail": err.strip().splitlines()[-1:] if err else []}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--elf", required=True, help="mps2-an386 firmware (make -C firmware)")
    ap.add_argument("--every", type=int, default=4, help="checkpoint interval (samples)")
    ap.add_argument("--dir", help="working directory (default: a temporary one)")
    ap.add_argument("--json", help="also write the JSON here")
    a = ap.parse_args(argv)
    d = Path(a.dir or tempfile.mkdtemp(prefix="tinylls-resume-"))
    d.mkdir(parents=True, exist_ok=True)
    flash = d / "flash"
    t0 = time.time()
    res = {"train_options": TRAIN, "checkpoint_every": a.every, "dir": str(d)}

    sim = subprocess.run([sys.executable, "-m", "host.simulate", "--quiet", *TRAIN, "--json", str(d / "sim.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert sim.returncode == 0, sim.stderr[-2000:]
    res["simulate_sha256"] = json.loads((d / "sim.json").read_text())["weights_sha256"]

    ref = subprocess.run(stream_cmd(a.elf, ["--json", str(d / "ref.json")]), cwd=ROOT, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    res["uninterrupted_sha256"] = json.loads((d / "ref.json").read_text())["weights_sha256"]

    ck = ["--checkpoint-every", str(a.every), "--flash-dir", str(flash)]
    res["run_a"] = run_until(stream_cmd(a.elf, ck + ["--log", str(d / "a.jsonl")]), d / "a.jsonl", 13, "host")
    res["run_b"] = run_until(stream_cmd(a.elf, ck + ["--resume", "--log", str(d / "b.jsonl"), "--json", str(d / "b.json")]),
                             d / "b.jsonl", 21, "board")
    c = subprocess.run(stream_cmd(a.elf, ck + ["--resume", "--log", str(d / "c.jsonl"), "--json", str(d / "c.json")]),
                       cwd=ROOT, capture_output=True, text=True)
    assert c.returncode == 0, c.stderr[-2000:]
    cj = json.loads((d / "c.json").read_text())
    resumes = [json.loads(line) for name in ("b.jsonl", "c.jsonl") for line in (d / name).read_text().splitlines()
               if '"kind": "resume"' in line]
    res["resumes"] = resumes
    res["resumed_sha256"] = cj["weights_sha256"]
    res["resumed_from_last"] = cj["resumed_from"]
    res["device_checkpoint_end"] = cj["device"]["checkpoint"]
    res["equal"] = res["resumed_sha256"] == res["uninterrupted_sha256"] == res["simulate_sha256"]
    res["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0 if res["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
