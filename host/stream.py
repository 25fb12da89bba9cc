"""Stream a dataset to a board running the tinylls firmware: train on-device, evaluate, read back.

    python -m host.stream --port /dev/ttyACM0 --data ../shared/datasets/vww01-eembc \\
        --model vww.tlm --epochs 1 --log runs/a.jsonl --plot runs/a.png --json runs/a.json
    python -m host.stream --qemu firmware/build/mps2-an386/tinylls.elf --data ... --model ...

PORT is a serial device or any pyserial URL (socket://127.0.0.1:4321, loop://, spy://...);
--qemu starts `qemu-system-arm -M mps2-an386` with the given firmware on a free TCP port itself.

Simulate before you flash: the training options (--data, --model, --epochs, --seed, --rule,
--train-layers, --lr-*, --lr-schedule, --rounding, --limit, --val-limit, --shift, ...) are
host.simulate's own (`add_training_args`), and the run is built by `host.simulate.prepare`, so
data, model, trainable layers, base learning rates and training configuration are the objects the
simulation uses, and the run itself is host.train.run, the simulation's own, over a `Board`
backend. The board gets that model file, its configuration (SET_CONFIG), and before every epoch
the learning rates of the schedule (SET_LR); it trains the samples in
host.schedule.epoch_order(n, epoch, --seed) order and evaluates the validation samples after every
--eval-every training samples and at the end. `python -m host.simulate` with the same training
options prints the same `weights_sha256`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from host.train import layer_rates  # noqa: F401  (SET_LR payload: one definition, in host.train)

QEMU = "qemu-system-arm"
QEMU_MACHINE = "mps2-an386"
# The emulator for a firmware ELF, by its e_machine: (program, Debian package, machine options).
QEMU_BY_ELF_MACHINE = {
    40: (QEMU, "qemu-system-arm", ["-M", QEMU_MACHINE, "-semihosting-config", "enable=on,target=native"]),
    243: ("qemu-system-riscv32", "qemu-system-misc", ["-M", "virt", "-bios", "none"]),   # rv32-virt
}
QEMU_CONNECT_TIMEOUT = 10.0   # s: QEMU must open its serial socket within this
SERIAL_BAUD = 115200          # real boards (firmware/boards/*): 115200 8N1


class StreamError(Exception):
    """Bad input or environment (file, port, firmware); reported as one line, exit 2."""


class LinkLost(StreamError):
    """The link became too bad to finish a run the board had started. `partial` is the summary of
    what is known (its "complete" is false): main writes it as the --json and exits 2."""

    def __init__(self, message: str, partial: dict):
        super().__init__(message)
        self.partial = partial


READBACK_ROUNDS = 3           # read-back attempts, each going on from the last good offset
READBACK_PAUSE = 1.0          # s between them (a link outage may pass)


# ---------------------------------------------------------------- the run, shared with host.simulate
def prepare_run(args):
    """(Setup, CModel) of the run: host.simulate.prepare, then the host core bound to the model
    with the run's configuration. The CModel checks the configuration against the model, plans the
    arena and gives LLS-M/MxM layers their initial modulation exactly as the simulation does (the
    model file sent to the board then carries it)."""
    from host import simulate
    from host.core import CModel, TinyllsError
    from host.datasets import DataError
    try:
        setup = simulate.prepare(args)
        cm = CModel(setup.model, **setup.config)
        # the same adaptation step as host.simulate, decided and simulated on the host's copy of the
        # C core; the board is sent the file as it was (cm.original_blob) and adapts itself over
        # the link with the same images and layers (run: ADAPT / ADAPT_FEED, checked bit for bit)
        from host import modelfile
        cm.original_blob = modelfile.to_bytes(setup.model)
        cm.adaptation = simulate.adapt_before_training(
            args, setup, cm, (lambda *a: None) if getattr(args, "quiet", False)
            else (lambda *a: print(*a, file=sys.stderr, flush=True)))
    except (simulate.UsageError, DataError, TinyllsError, FileNotFoundError, ValueError) as e:
        raise StreamError(str(e)) from e
    return setup, cm


def core_config(cm) -> dict:
    """SET_CONFIG fields: the tl_train_cfg the simulation's core runs with, read from that very
    CModel (codes, seeds and 1/tau in Q8 exactly as host.core set them)."""
    from host.protocol import CONFIG_FIELDS
    c = cm.config
    return {k: int(getattr(c, k)) for k in CONFIG_FIELDS}


# ---------------------------------------------------------------- the board
def board_adapt(link, cm, adaptation: dict, progress=False) -> list[int]:
    """The board adapts itself as the host simulated it (host.adapt.board_adapt's schedule: per
    layer ADAPT begin, one ADAPT_FEED per unlabelled image, ADAPT apply), each layer's result
    checked against the host's (crc32 of bias, out_mult, out_shift). Returns the counter units of
    every feed (the board's instructions per adaptation image and layer)."""
    from tqdm import tqdm

    from host import adapt
    if not adaptation.get("applied"):
        return []
    x = cm.adapt_images_x
    layers = adapt.board_layers(cm, adaptation["k"])
    insn = []
    with tqdm(total=len(layers) * len(x), unit="img", desc="adapt", disable=not progress, leave=False) as bar:
        for i in layers:
            link.adapt_begin(i)
            for xi in x:
                insn.append(int(link.adapt_feed(xi)[0]))
                bar.update(1)
            images, crc = link.adapt_apply(i)
            want = adapt.layer_crc(cm, i)
            if images != len(x) or crc != want:
                raise StreamError(f"adaptation of layer {i}: the board's bias/multipliers (crc32 {crc:08x}, {images} "
                                  f"images) differ from the host's ({want:08x}, {len(x)} images)")
    return insn


class Board:
    """A board over the serial link as a host.train backend: one sample per TRAIN / EVAL command,
    the schedule's learning rates by SET_LR before every epoch."""
    train_chunk = 1
    eval_chunk = 1

    def __init__(self, link, checkpoint_every: int = 0, tag=None):
        self.link = link
        self.train_insn: list[int] = []
        self.checkpoint_every = int(checkpoint_every)
        self.tag = list(tag) if tag is not None else [0] * 8

    def begin_epoch(self, epoch: int, index: int) -> None:
        """With checkpoints on: the board's data cursor and run tag (CKPT_CONFIG), so that each
        automatic checkpoint records where the run stands."""
        if self.checkpoint_every:
            self.link.ckpt_config(self.checkpoint_every, epoch, index, self.tag)

    def set_learning_rates(self, rates) -> None:
        self.link.set_lr(rates)

    def train(self, x, y) -> list:
        out = [self.link.train(xi, int(yi)) for xi, yi in zip(x, y)]
        self.train_insn += [r.insn for r in out]
        return out

    def evaluate(self, x) -> list:
        return [self.link.evaluate(xi, with_local=True) for xi in x]

    def postfix(self) -> dict:
        return {"retx": self.link.stats.retransmits}

    @property
    def samples_trained(self) -> int:
        """TRAIN commands the board answered in this run (a resumed run: since the resume)."""
        return len(self.train_insn)


def _die_with_parent() -> None:
    """In the QEMU child before exec (Linux): SIGKILL when the host process dies, so a killed
    host.stream leaves no emulated board holding the port and the checkpoint flash file.
    Linux ties this signal to the *thread* that started the child, so it is only asked for from
    the main thread: a board started by a worker thread (host.fleet runs boards in threads) would
    otherwise be killed when that thread ends, between two rounds."""
    try:
        import ctypes
        import signal
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QemuBoard:
    """QEMU running a firmware ELF (mps2-an386 or rv32-virt, by the ELF's machine), serial on a local TCP port.

    `-icount shift=0` makes instruction counts deterministic (the firmware reports them);
    `wait=on` holds the guest until we connect, `nodelay=on` keeps the link fast (~22 KB/s)."""

    def __init__(self, elf: str, port: int | None = None, extra_args=(), cwd=None):
        """cwd: QEMU's working directory (where the mps2-an386 firmware's semihosting finds its
        checkpoint flash file, host/flashsim.py)."""
        if not Path(elf).is_file():
            raise StreamError(f"--qemu {elf}: no such firmware file (build it with `make -C firmware`)")
        with open(elf, "rb") as f:
            head = f.read(20)
        e_machine = int.from_bytes(head[18:20], "little") if head[:4] == b"\x7fELF" else None
        if e_machine not in QEMU_BY_ELF_MACHINE:
            raise StreamError(f"--qemu {elf}: not an ARM or RISC-V firmware ELF (e_machine {e_machine})")
        self.qemu, package, machine = QEMU_BY_ELF_MACHINE[e_machine]
        exe = shutil.which(self.qemu)
        if exe is None:
            raise StreamError(f"--qemu: {self.qemu} not found on PATH (Debian: apt-get install "
                              f"--no-install-recommends {package})")
        self.port = port or free_port()
        self.url = f"socket://127.0.0.1:{self.port}"
        self.cmd = [exe, *machine, "-nographic", "-monitor", "none", "-icount", "shift=0", "-kernel", str(elf),
                    "-serial", f"tcp:127.0.0.1:{self.port},server=on,wait=on,nodelay=on", *extra_args]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=cwd,
                                     preexec_fn=_die_with_parent if threading.current_thread() is
                                     threading.main_thread() else None)

    def connect(self, timeout: float = QEMU_CONNECT_TIMEOUT):
        """Opens the serial socket once QEMU listens (wait=on: the guest starts when we connect)."""
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace").strip()
                raise StreamError(f"{self.qemu} exited with status {self.proc.returncode}: {out[-400:]}")
            try:
                return open_port(self.url)
            except StreamError:
                if time.monotonic() > end:
                    raise StreamError(f"{self.qemu} did not open 127.0.0.1:{self.port} within {timeout:.0f} s") from None
                time.sleep(0.05)

    def close(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_port(url: str, timeout: float = 0.05, retry_for: float = 0.0):
    """A pyserial port for a device path or URL, with clear errors for missing and busy ports."""
    import serial
    end = time.monotonic() + retry_for
    while True:
        try:
            if "://" in url:
                return serial.serial_for_url(url, timeout=timeout, baudrate=SERIAL_BAUD)
            if not os.path.exists(url):
                raise StreamError(f"--port {url}: no such device (is the board plugged in? "
                                  f"`python -m serial.tools.list_ports` lists ports)")
            return serial.Serial(url, SERIAL_BAUD, timeout=timeout, exclusive=True)
        except serial.SerialException as e:
            if time.monotonic() < end:
                time.sleep(0.05)
                continue
            msg = str(e)
            if "busy" in msg.lower() or "Errno 16" in msg or "lock" in msg.lower():
                raise StreamError(f"--port {url}: port busy ({msg}); close the other program using it "
                                  f"(serial monitor, another host.stream)") from e
            raise StreamError(f"--port {url}: cannot open ({msg})") from e


# ---------------------------------------------------------------- run
def _now() -> float:
    return round(time.time(), 3)


def flash_model_name(elf: str | None) -> str | None:
    """The model file a firmware ELF was built with (`make MODEL=`), from the header export-c
    generated in its build folder (BUILD/pio/BOARD/model/fw_model.h); None if unknown."""
    import re
    if not elf:
        return None
    for h in sorted(Path(elf).resolve().parent.glob("pio/*/model/fw_model.h")):
        m = re.search(r"export-c (\S+)`", h.read_text(errors="replace"))
        if m:
            return m.group(1)
    return None


def check_board_takes(args, info, blob: bytes, name: str) -> None:
    """Refuse, before anything is sent, a model the board can neither recognise in its flash nor
    receive: one line naming the model the firmware holds and how to build one for this model."""
    from host import modelfile
    ids = {(len(b), zlib.crc32(b)) for b in (blob, modelfile.strip_host(blob), modelfile.device_identity(blob))}
    if info.rom_size and (info.rom_size, info.rom_crc) in ids:
        return
    if len(blob) <= info.blob_cap:
        return
    if args.model:
        build = f"make -C firmware BOARD={info.board} MODEL={args.model}"
    else:
        build = (f"save the starting model with `python -m host.simulate <the same options> --epochs 0 "
                 f"--save-model start.tlm`, then make -C firmware BOARD={info.board} MODEL=start.tlm")
    if info.rom_size:
        held = flash_model_name(getattr(args, "qemu", None))
        held = f"{held} ({info.rom_size} bytes, CRC32 {info.rom_crc:08x})" if held else \
            f"another model ({info.rom_size} bytes, CRC32 {info.rom_crc:08x})"
        raise StreamError(f"the firmware holds {held} in flash, not {name}, and has room for "
                          f"{info.blob_cap} bytes of a model sent over the link ({name}: {len(blob)} bytes); "
                          f"build a firmware for this model: {build}")
    raise StreamError(f"{name} is {len(blob)} bytes, the firmware's model buffer holds {info.blob_cap}: "
                      f"build a firmware for this model: {build} (or BLOB_BYTES={len(blob)})")


def link_summary(link) -> dict:
    """The host side's link counters (retransmissions, timeouts, damaged frames, ...) and the byte
    error rate it measured last."""
    out = {k: v for k, v in vars(link.stats).items() if k != "op_seconds"}
    out["byte_error_rate"] = float(f"{link.error_rate():.3g}")
    return out


def save_model_from(model, weights: bytes, path: str) -> None:
    """The board's trained weights read back (READ_WEIGHTS) into a model file at `path`: the run's
    model (structure, quantization, base learning rates) with the board's tensors."""
    import copy

    from host import modelfile
    from host.model import load_weight_stream
    m = copy.deepcopy(model)
    load_weight_stream(m, weights)
    modelfile.save(m, path)


def run(args, log=None, progress=True, outputs=None) -> dict:
    """`outputs` (host.outputs.Outputs): where --save-model goes (a temporary name; the caller
    commits it)."""
    from tqdm import tqdm

    from host import modelfile, protocol, simulate, train
    from host.model import weights_sha256

    # the data, the model and the run first: a mistake there is said before a board is touched
    setup, cm = prepare_run(args)
    qemu = None
    port = None
    try:
        qemu_dir = None
        if args.qemu and args.flash_dir:
            # the emulated board's checkpoint flash (host/flashsim.py): made before QEMU starts,
            # sized for this run's model, kept across runs
            from host.flashsim import FLASH_FILE, make_flash_file, region_bytes_for
            qemu_dir = Path(args.flash_dir)
            qemu_dir.mkdir(parents=True, exist_ok=True)
            if not (qemu_dir / FLASH_FILE).is_file():
                need = protocol.lib.tl_ckpt_payload_bytes(cm._m, int(cm._m.cfg.variant))
                make_flash_file(qemu_dir / FLASH_FILE, region_bytes_for(need))
        if args.qemu:
            qemu = QemuBoard(args.qemu, extra_args=["-semihosting-config", "enable=on,target=native"]
                             if qemu_dir else (), cwd=str(qemu_dir) if qemu_dir else None)
            port = qemu.connect()
        else:
            port = open_port(args.port)
        link = protocol.Link(port, trace=protocol.stderr_trace if args.trace else None)
        if args.chunk:
            link.chunk = args.chunk
        try:
            info = link.sync()
        except protocol.NoAnswerError as e:
            raise StreamError(f"--port {args.port or (qemu and qemu.url)}: the firmware does not answer "
                              f"({e})") from e
        if info.proto != protocol.lib.TL_PROTO_VERSION:
            raise StreamError(f"firmware speaks protocol {info.proto}, this host speaks "
                              f"{protocol.lib.TL_PROTO_VERSION}: reflash the firmware")

        model = setup.model
        tr_x, tr_y, va_x, va_y = setup.train_x, setup.train_y, setup.val_x, setup.val_y
        adaptation = getattr(cm, "adaptation", None) or {}
        # with adaptation: the file before it (the board adapts itself below)
        blob = cm.original_blob if adaptation.get("applied") else modelfile.to_bytes(model)
        config = core_config(cm)
        model_name = simulate.model_name(args, model)
        check_board_takes(args, info, blob, model_name)

        link.reset()
        with tqdm(total=len(blob), unit="B", unit_scale=True, desc="load model", disable=not progress,
                  leave=False) as bar:
            loaded = link.load_model(blob, progress=bar.update)
        link.set_config(**config)
        info = link.info()
        if (info.model_size, info.model_crc) != (loaded["model_size"], loaded["model_crc"]):
            raise StreamError("board reports a different model (size, CRC32) than the one loaded")
        if info.config != config or info.steps != 0:
            raise StreamError(f"board reports training configuration {info.config} (step {info.steps}), "
                              f"sent {config}")
        adapt_insn = board_adapt(link, cm, adaptation, progress)

        def write(rec):
            if log is not None:
                log.write(json.dumps(rec) + "\n")
                log.flush()

        n_train, n_val = len(tr_y), len(va_y)
        write({"kind": "start", "t": _now(), "device": info.as_dict(), "model": model_name,
               "data": args.data, "val_data": args.val_data, "val_split": args.val_split,
               "shift": bool(args.shift), "epochs": args.epochs, "seed": args.seed, "rule": args.rule,
               "config": setup.config, "device_config": config, "lr_schedule": args.lr_schedule,
               "train_samples": n_train, "val_samples": n_val, "eval_samples": n_val,
               "arena_bytes": loaded["arena_bytes"],
               "host_arena_bytes": cm.arena_bytes})

        start, resumed = (0, 0), None
        every = args.checkpoint_every or 0
        tag = None
        if every or args.resume:
            from host.resume import differences, run_tag
            if not (info.checkpoint and info.checkpoint["flash"]):
                raise StreamError(f"--checkpoint-every / --resume: the board ({info.board}) has no checkpoint "
                                  "flash" + (" (--qemu: give --flash-dir)" if args.qemu and not args.flash_dir else ""))
            options = {"rule": args.rule, "lr_schedule": args.lr_schedule, "config": setup.config,
                       "device_config": config,
                       "adaptation": [adaptation.get("k", 0), adaptation.get("images", 0)],
                       "rates": [tuple(int(v) for v in r) for r in train.layer_rates(model)]}
            tag = run_tag(blob, tr_x, tr_y, seed=args.seed, epochs=args.epochs, options=options, every=every)
        if args.resume:
            found = link.checkpoint("restore")
            info = link.info()
            ck = info.checkpoint
            if found == protocol.lib.TL_CKPT_OTHER_MODEL:
                raise StreamError("--resume: the checkpoint on the board is of another run (another model "
                                  "file); differs: " + "; ".join(differences(tag, ck["tag"]) or ["model file"]))
            if found != protocol.lib.TL_CKPT_RESTORED:
                raise StreamError(f"--resume: nothing to resume on the board: its checkpoint flash holds "
                                  f"{protocol.CKPT_FOUND.get(found, found)} checkpoint(s) "
                                  f"(slots: {', '.join(sl['state'] for sl in ck['slots'])})")
            diff = differences(tag, ck["tag"])
            if diff:
                raise StreamError("--resume: the checkpoint on the board is of another run; differs: "
                                  + "; ".join(diff))
            if info.config != config:
                raise StreamError(f"--resume: the checkpoint's training configuration {info.config} differs "
                                  f"from this run's {config}")
            start = (ck["epoch"], ck["index"])
            if info.steps != start[0] * n_train + start[1]:
                raise StreamError(f"--resume: the checkpoint's step {info.steps} does not match its data cursor "
                                  f"(epoch {start[0]}, index {start[1]} of {n_train})")
            resumed = {"epoch": start[0], "index": start[1], "step": info.steps,
                       "generation": max(sl["generation"] for sl in ck["slots"] if sl["state"] == "valid")}
            write({"kind": "resume", "t": _now(), **resumed})
        board = Board(link, every, tag)
        first_step = start[0] * n_train + start[1]
        partial = {"complete": False, "stopped_in": "training", "resumed_from": resumed,
                   "checkpoint_every": every, "data": args.data, "model": model_name, "rule": args.rule,
                   "seed": args.seed,
                   "epochs": args.epochs, "train_samples": n_train, "eval_samples": n_val,
                   "initial_weights_sha256": weights_sha256(model)}

        def lost(phase: str, e: Exception) -> LinkLost:
            """What is known when the link gives up in `phase`, and the one line saying so."""
            steps = first_step + board.samples_trained
            partial.update(stopped_in=phase, error=str(e), device_steps=steps,
                           total_steps=n_train * args.epochs, link=link_summary(link))
            if every:
                last = ", and one at the end of training" if phase == "read-back" else ""
                how = (f"the board keeps its state and its checkpoints (every {every} samples{last}): "
                       f"run again with --resume (same options) to finish with the same weights")
            else:
                how = ("the board keeps its state, but without --checkpoint-every the run cannot be resumed: "
                       "give --checkpoint-every K to make a run on this link resumable")
            partial["resume"] = how
            return LinkLost(f"the link is too bad to finish the run ({phase} stopped at step {steps} of "
                            f"{n_train * args.epochs}): {e}; {how}", partial)

        try:
            out = train.run(board, model, tr_x, tr_y, va_x, va_y, epochs=args.epochs,
                            lr_schedule=args.lr_schedule, seed=args.seed,
                            eval_every=args.eval_every, progress=progress, record=write, start=start)
        except ValueError as e:              # a learning rate too large for a quantized multiplier
            raise StreamError(str(e)) from e
        except protocol.ProtocolError as e:
            raise lost("training", e) from e
        partial.update({k: out[k] for k in ("samples", "train_accuracy", "history", "evals", "train_preds")})
        partial.update(eval_accuracy=out["val_accuracy"], eval_accuracy_before=out["val_accuracy_before"],
                       local_accuracy=out["local_accuracy"], eval_preds=out["val_predictions"])
        kept = simulate.keep_decision(args, out, va_y)
        if kept["keep"] == "start":
            # --keep auto refused the training: the board goes back to the model it started from,
            # the same way it got there (the file, its configuration, the same adaptation checked
            # layer by layer), so what it keeps and what is read back is that model
            try:
                link.reset()
                link.load_model(blob)
                link.set_config(**config)
                board_adapt(link, cm, adaptation, progress)
                if every:
                    link.checkpoint("erase")     # no trained state left to resume into
            except protocol.ProtocolError as e:
                raise lost("return to the starting model", e) from e
        write({"kind": "keep", "t": _now(), **kept})

        weights = bytearray()                # the read-back so far: a failed round goes on from here
        try:
            if every and kept["keep"] == "trained" and board.samples_trained and \
                    (first_step + board.samples_trained) % every:
                # the trained state in flash too, so a read-back the link cannot finish is resumed
                # without training again (the data cursor stands at the end of the last epoch)
                link.checkpoint("save")
            with tqdm(total=info.weights_bytes or None, unit="B", unit_scale=True, desc="read weights",
                      disable=not progress, leave=False) as wbar:
                for round_ in range(READBACK_ROUNDS):
                    try:
                        link.read_weights(progress=wbar.update, into=weights)
                        break
                    except protocol.NoAnswerError:
                        if round_ == READBACK_ROUNDS - 1:
                            raise
                        time.sleep(READBACK_PAUSE)
                        link.silent_run = 0
            weights = bytes(weights)
            info_end = link.info()
        except protocol.ProtocolError as e:
            partial["weights_bytes_read"] = len(weights)
            raise lost("read-back", e) from e
        if zlib.crc32(weights) != info_end.weights_crc:
            raise StreamError(f"weights read back (CRC32 {zlib.crc32(weights):08x}) differ from the "
                              f"board's own CRC32 {info_end.weights_crc:08x}")
        try:
            dev_stats = link.device_stats()
        except protocol.ProtocolError as e:      # the weights are in: a counter lost is no lost run
            dev_stats = {"error": str(e)}
        if outputs is not None and "--save-model" in outputs:
            save_model_from(model, weights, str(outputs.temp("--save-model")))
        summary = {
            "complete": True,
            "resumed_from": resumed,
            "checkpoint_every": every,
            "data": args.data,
            "val_data": args.val_data,
            "val_split": args.val_split,
            "shift": bool(args.shift),
            "adaptation": getattr(cm, "adaptation", None),
            "model": model_name,
            "rule": args.rule,
            "config": setup.config,
            "device_config": config,
            "lr_schedule": args.lr_schedule,
            "samples": out["samples"],
            "train_samples": n_train,
            "eval_samples": n_val,
            "epochs": args.epochs,
            "seed": args.seed,
            # as host.simulate: accuracy of the last epoch's on-device predictions while training
            "train_accuracy": out["train_accuracy"],
            "eval_accuracy": out["val_accuracy"],
            "eval_accuracy_before": out["val_accuracy_before"],
            "kept": kept,
            "local_accuracy": out["local_accuracy"],
            "history": out["history"],
            "evals": out["evals"],
            "eval_preds": out["val_predictions"],
            "train_preds": out["train_preds"],
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
            "initial_weights_sha256": weights_sha256(model),     # the host copy is never trained
            "weights_crc32": f"{zlib.crc32(weights):08x}",
            "weights_bytes": len(weights),
            "mcu_train_insn_median": int(np.median(board.train_insn)) if board.train_insn else None,
            "mcu_adapt_insn_median": int(np.median(adapt_insn)) if adapt_insn else None,
            "mcu_infer_insn_median": out["insn_median"],
            "counter": info.counter_kind,
            "train_seconds": round(out["train_seconds"], 3),
            "samples_per_s": round(out["samples"] / out["train_seconds"], 3) if out["train_seconds"] > 0 else None,
            "device": info_end.as_dict(),
            "device_stats": dev_stats,
            "link": link_summary(link),
        }
        write({"kind": "end", "t": _now(), **{k: summary[k] for k in ("weights_sha256", "train_accuracy",
                                                                      "eval_accuracy", "eval_accuracy_before",
                                                                      "link")}})
        return summary
    finally:
        if port is not None:
            try:
                port.close()
            except Exception:
                pass
        if qemu is not None:
            qemu.close()


def plot(log_path: str, png_path: str, title: str = ""):
    """The run's plot (host.runlog.plot) from its JSONL log."""
    from host import runlog
    runlog.plot(runlog.read(log_path), png_path, title)


def build_parser() -> argparse.ArgumentParser:
    from host.simulate import add_training_args
    from host.cli_common import ArgumentParser
    ap = ArgumentParser(tool="host.stream", description=__doc__.split("\n\n")[0],
                        epilog="Exit status: 0 ok, 2 bad input, port or firmware problem, 130 Ctrl-C.")
    ap.add_argument("--port", help="serial device (/dev/ttyACM0) or pyserial URL (socket://127.0.0.1:4321); "
                    "or use --qemu")
    ap.add_argument("--qemu", metavar="ELF", help="start qemu-system-arm -M mps2-an386 with this firmware")
    # the training run: host.simulate's options, so both train the same way
    add_training_args(ap)
    ap.add_argument("--eval-every", type=int, default=0, metavar="K",
                    help="also evaluate after every K training samples (default: only at the end)")
    ap.add_argument("--log", help="JSONL log, one record per sample and per evaluation (written whole at the end; "
                                  "with --checkpoint-every / --resume a journal written as the run goes)")
    ap.add_argument("--plot", help="PNG accuracy curve (needs --log or writes a temporary one)")
    ap.add_argument("--json", help="summary JSON (accuracies, samples, weights_sha256)")
    ap.add_argument("--save-model", metavar="OUT.tlm",
                    help="write the board's trained weights, read back, as a model file")
    ap.add_argument("--chunk", type=int, help="initial payload bytes per data frame (default 1024)")
    ap.add_argument("--trace", action="store_true", help="hex dump of every packet on stderr")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                    help="the board checkpoints its trained state to flash after every K training samples "
                         "(0: off; the board needs checkpoint flash, docs/protocol.md)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the run from the board's newest checkpoint (same data and options, "
                         "else refused saying what differs)")
    ap.add_argument("--flash-dir", metavar="DIR",
                    help="--qemu: directory of the emulated board's checkpoint flash file "
                         "(tinylls-flash.bin, made if missing; persists across runs)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from host import protocol, simulate
    from host.cli_common import fail, interrupted
    from host.outputs import OutputError, Outputs
    if bool(args.port) == bool(args.qemu):
        return fail("host.stream", "give either --port PORT, or --qemu ELF to start the emulated board")
    for name in ("epochs", "eval_every", "limit", "val_limit", "checkpoint_every"):
        v = getattr(args, name)
        if v is not None and v < 0:
            return fail("host.stream", f"--{name.replace('_', '-')} must be >= 0, got {v}")
    if args.chunk is not None and not protocol.CHUNK_MIN <= args.chunk <= protocol.CHUNK_MAX:
        return fail("host.stream", f"--chunk must be in [{protocol.CHUNK_MIN}, {protocol.CHUNK_MAX}], got {args.chunk}")
    outputs = None
    log = None
    try:
        simulate.check_args(args)
        # every output checked (folders made) before the board is touched; written to temporary
        # names, renamed only when the whole run succeeded - except the JSONL log of a checkpointed
        # run (--checkpoint-every / --resume): that run is made to survive a crash, so its log is a
        # journal written in place (appended to on --resume), kept whatever happens
        outputs = Outputs({"--json": args.json, "--log": args.log, "--plot": args.plot,
                           "--save-model": args.save_model})
        journal = bool(args.log) and bool(args.checkpoint_every or args.resume)
        if journal:
            log = open(outputs.paths["--log"], "a" if args.resume else "w", encoding="utf-8")
        elif args.log or args.plot:
            log = open(outputs.temp("--log"), "w", encoding="utf-8") if args.log else \
                open(Path(outputs.temp("--plot")).with_suffix(".jsonl"), "w", encoding="utf-8")
        summary = run(args, log=log, progress=not args.quiet, outputs=outputs)
        if log is not None:
            log.close()
        if args.plot:
            from host import runlog
            plot(log.name, str(outputs.temp("--plot")), runlog.title_of(summary))
            if not args.log:
                os.unlink(log.name)
        if args.json:
            outputs.write_text("--json", json.dumps(summary, indent=2) + "\n")
        written = outputs.commit()
    except LinkLost as e:
        return _link_lost(e, outputs, log, args)
    except (StreamError, protocol.ProtocolError, simulate.UsageError, OutputError, OSError) as e:
        _discard(outputs, log, args)
        return fail("host.stream", e)
    except KeyboardInterrupt:
        _discard(outputs, log, args)
        return interrupted("host.stream")
    except BaseException:
        _discard(outputs, log, args)
        raise
    if summary["kept"]["keep"] == "start" and args.epochs:
        print(f"kept the model before training: {summary['kept']['reason']}")
    print(json.dumps({k: summary[k] for k in ("samples", "eval_samples", "train_accuracy", "eval_accuracy_before",
                                             "eval_accuracy", "weights_sha256", "mcu_train_insn_median",
                                             "mcu_infer_insn_median")}))
    for path in written:
        print(f"wrote {path}")
    return 0


def _link_lost(e: LinkLost, outputs, log, args) -> int:
    """The run stopped on a link too bad to finish it: the --json written with what is known
    ("complete": false) and the --log kept; the one line, exit 2."""
    from host.cli_common import fail
    if log is not None:
        log.close()
        if not args.log:
            os.unlink(log.name)
    written = []
    if outputs is not None:
        if args.json:
            outputs.write_text("--json", json.dumps(e.partial, indent=2) + "\n")
        for flag in ("--plot", "--save-model"):
            t = outputs.tmp.pop(flag, None)
            if t is not None and t.exists():
                t.unlink()
        written = outputs.commit()
    return fail("host.stream", f"{e}" + (f" (wrote {', '.join(written)})" if written else ""))


def _discard(outputs, log, args) -> None:
    if log is not None:
        log.close()
        if not args.log:
            try:
                os.unlink(log.name)
            except FileNotFoundError:
                pass
    if outputs is not None:
        outputs.discard()


if __name__ == "__main__":
    from host.cli_common import run_main
    sys.exit(run_main("host.stream", main))
