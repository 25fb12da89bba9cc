"""Host side of the tinylls serial protocol, on the same C codec the firmware runs (via cffi).

The protocol (SLIP framing, header, CRC, commands, errors, retransmission, chunking) is specified
in docs/protocol.md; the codec and the device's command semantics are C (ccore/include/
tl_proto_api.h, ccore/src/tl_proto*.c). This module adds what only a host needs: timeouts,
retransmission, chunking and decoding of response payloads.

    link = Link(serial.serial_for_url("socket://127.0.0.1:4321", timeout=0.05))
    link.sync()                      # raises NoAnswerError when nothing answers
    link.load_model(blob)
    link.set_config(basis=0, variant=0, rounding=0, seed=3, basis_seed=0, inv_tau_q8=512)
    link.set_lr([(lr_mult, lr_shift, lls_m_lr_mult, lls_m_lr_shift), ...])   # one per layer
    res = link.train(model.quantize_input(pixels), label)

A retransmitted command carries the same sequence number and bytes; the device answers it from
its response cache without executing it again, so retrying is always safe (docs/protocol.md,
"Retransmission").
"""
from __future__ import annotations

import collections
import math
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from host._tinylls import ffi, lib
from host.train import Result  # noqa: F401  (the one result type, re-exported)

# ---------------------------------------------------------------- timing and retry policy
ACK_TIMEOUT = 0.3          # s: first answer (ACK, NAK or BUSY) to a command, plus its send time
                           # (until round trips were measured; then it adapts, see RTT_FACTOR)
ACK_TIMEOUT_MAX = 4.0      # s: each unanswered attempt doubles the wait, up to this
LINK_BYTES_PER_S = 8000    # conservative link speed (115200 baud ~ 11.5 KB/s, QEMU tcp ~ 22 KB/s)
BUSY_FIRST_TIMEOUT = 120.0 # s: result of a BUSY command whose duration was never measured
BUSY_MIN_TIMEOUT = 5.0     # s: floor of the adaptive BUSY timeout
BUSY_FACTOR = 3.0          # BUSY timeout = factor * slowest measured duration of that command
MAX_ATTEMPTS = 14          # attempts of a command on a clean link (the adaptive budget's floor), and
                           # attempts in a row that receive no byte at all before the link counts as dead
SYNC_ATTEMPTS = 4          # connect: silent INFO attempts in a row before giving up (a dead port fails fast)
SYNC_SECONDS = 15.0        # connect: bytes arrive but not one well-formed frame in this long: not our firmware
ATTEMPTS_CAP = 2000        # most attempts of one command on a live link, however damaging (a 470-byte
                           # SET_LR at 1e-2 flipped bytes goes through once in ~120)
GIVE_UP_PROBABILITY = 1e-9 # the attempt budget is sized so that a live link at the measured error rate
                           # fails a command less often than this
DEFAULT_ANSWER_BYTES = 48  # wire size assumed for an answer never seen before
CHUNK_MAX = lib.TL_PROTO_MAX_DATA  # data bytes per LOAD_DATA / INPUT / READ_WEIGHTS frame (1024)
CHUNK_MIN = 64             # smallest chunk the adaptation goes down to
CHUNK_ATTEMPTS = 4         # attempts of a chunk before it is split (while above CHUNK_MIN)
CHUNK_OVERHEAD = 64        # bytes-equivalent cost of one exchange (headers, answer, turnaround):
                           # the chunk that minimises cost per byte at byte error rate p is
                           # about sqrt(CHUNK_OVERHEAD / p) (256 at p = 1e-3; measured best on QEMU)
ERR_WINDOW = 256          # recent attempts the byte error rate is estimated from
ACK_TIMEOUT_MIN = 0.1      # s: floor of the round-trip-adapted first-answer timeout
RTT_FACTOR = 4.0           # first-answer timeout = RTT_FACTOR * smoothed round trip (+ send time)
READ_SLICE = 0.05          # s: granularity of serial reads

OP = {name[len("TL_PROTO_OP_"):]: getattr(lib, name) for name in dir(lib) if name.startswith("TL_PROTO_OP_")}
F_RESP, F_NAK, F_BUSY = lib.TL_PROTO_F_RESP, lib.TL_PROTO_F_NAK, lib.TL_PROTO_F_BUSY
MAX_PAYLOAD = lib.TL_PROTO_MAX_PAYLOAD
LINK_ERRORS = (lib.TL_PROTO_ERR_CRC, lib.TL_PROTO_ERR_MALFORMED, lib.TL_PROTO_ERR_OVERSIZE)
STAT_NAMES = ("frames_ok", "frames_crc", "frames_oversize", "frames_malformed", "naks", "duplicates",
              "unknown_ops", "train_steps", "evals", "last_train_insn", "last_infer_insn",
              "min_train_insn", "min_infer_insn", "loads", "bytes_rx", "bytes_tx")
COUNTER_KINDS = {lib.TL_PROTO_COUNTER_NONE: "none", lib.TL_PROTO_COUNTER_INSN: "instructions",
                 lib.TL_PROTO_COUNTER_CYCLES: "cycles"}


def byte_error_rate(attempts) -> float:
    """Maximum-likelihood probability p that one byte is damaged, from attempts given as (wire
    bytes B, went through): an attempt goes through with probability (1-p)^B = exp(-rB). The
    log-likelihood is concave in r, so its zero derivative (sum over failures of B/(exp(rB)-1) =
    sum over successes of B) is found by bisection on log r. A plain failures/bytes ratio would
    underestimate p badly when most large frames fail, which is when it matters."""
    if not attempts:
        return 0.0
    b = np.array([a for a, _ in attempts], dtype=np.float64)
    ok = np.array([o for _, o in attempts], dtype=bool)
    if ok.all():
        return 0.0
    b_fail, b_ok = b[~ok], b[ok].sum()
    lo, hi = math.log(1e-9), math.log(20.0)
    for _ in range(48):
        mid = 0.5 * (lo + hi)
        r = math.exp(mid)
        slope = float(np.sum(b_fail / np.expm1(np.minimum(b_fail * r, 700.0)))) - b_ok
        lo, hi = (mid, hi) if slope > 0 else (lo, mid)
    return -math.expm1(-math.exp(0.5 * (lo + hi)))


def strerror(code: int) -> str:
    return ffi.string(lib.tl_proto_strerror(int(code))).decode()


def op_name(op: int) -> str:
    return ffi.string(lib.tl_proto_op_name(int(op))).decode()


class ProtocolError(Exception):
    """The link or the device misbehaved (no answer, garbage); not a bug in the caller."""


class NoAnswerError(ProtocolError):
    """Every attempt of a command failed. `silent`: the last attempts received no byte at all (the
    other end is gone or never was), rather than damaged answers (a live link too bad to use)."""

    def __init__(self, message: str, silent: bool = False):
        super().__init__(message)
        self.silent = silent


class DeviceError(ProtocolError):
    """The device answered a command with a NAK."""

    def __init__(self, op: int, code: int, detail: int):
        self.op, self.code, self.detail = op, code, detail
        super().__init__(f"device rejected {op_name(op)}: {strerror(code)} (code {code}, detail {detail})")


# ---------------------------------------------------------------- codec (C)
@dataclass(frozen=True)
class Frame:
    op: int
    flags: int
    seq: int
    payload: bytes


def encode(op: int, seq: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """A SLIP-framed packet ready for the wire."""
    payload = bytes(payload)
    cap = 2 * (len(payload) + 12) + 2
    out = ffi.new("uint8_t[]", cap)
    n = ffi.new("int32_t *")
    st = lib.tl_proto_encode(op, flags, seq & 0xFFFF, ffi.from_buffer(payload), len(payload), out, cap, n)
    if st != 0:
        raise ValueError(f"encode: cannot frame op {op} with {len(payload)} payload bytes: {strerror(st)}")
    return bytes(ffi.buffer(out, n[0]))


def check(frame: bytes) -> Frame:
    """Verifies an unescaped frame (length field, CRC); raises ProtocolError naming the problem."""
    hdr = ffi.new("tl_proto_hdr *")
    st = lib.tl_proto_check(ffi.from_buffer(frame), len(frame), hdr)
    if st != 0:
        raise ProtocolError(f"bad frame ({len(frame)} bytes): {strerror(st)}")
    return Frame(hdr.op, hdr.flags, hdr.seq, bytes(frame[8:8 + hdr.len]))


class Decoder:
    """Incremental SLIP decoder (the C one): feed bytes, get whole unescaped frames and errors."""

    def __init__(self):
        self._d = ffi.new("tl_proto_dec *")
        lib.tl_proto_dec_init(self._d)
        self._used = ffi.new("int32_t *")
        self._ev = ffi.new("int32_t *")

    def feed(self, data: bytes) -> list:
        """Returns a list of `bytes` (a frame, unchecked) and `int` (a TL_PROTO_ERR_* code)."""
        out = []
        buf = ffi.from_buffer(data)
        pos, n = 0, len(data)
        while pos < n:
            lib.tl_proto_dec_feed(self._d, buf + pos, n - pos, self._used, self._ev)
            pos += self._used[0]
            if self._ev[0] == lib.TL_PROTO_EV_FRAME:
                out.append(bytes(ffi.buffer(self._d.buf, self._d.n)))
            elif self._ev[0] == lib.TL_PROTO_EV_ERROR:
                out.append(int(self._d.err))
        return out


# ---------------------------------------------------------------- results
# TRAIN / EVAL answers are host.train.Result (the one result type of host core and board):
# pred, logits (list), local_pred (list, -1 where the layer has no local head), insn (counter
# units, see Info.counter_kind, of this step on the device), steps (training steps the device
# model has taken).


@dataclass
class Info:
    proto: int
    n_layers: int
    loaded: bool
    arena_needed: int
    arena_cap: int
    blob_cap: int
    input_cap: int
    free_ram: int
    model_size: int
    model_crc: int
    weights_bytes: int
    weights_crc: int
    steps: int
    classes: int
    input_shape: tuple
    counter_kind: str
    max_payload: int
    board: str
    version: str
    config: dict              # the loaded model's training configuration (tl_train_cfg fields)
    input_in_arena: bool = False   # the firmware stages the input inside its arena (no buffer)
    model_in_flash: bool = False   # the loaded model is the one compiled into the firmware
    rom_size: int = 0         # model file compiled into the firmware (flash): size, CRC32; 0: none
    rom_crc: int = 0
    stack_used: int = 0       # the board's stack high-water mark since boot (bytes; 0: not measured)
    checkpoint: dict | None = None  # protocol 4: checkpoint flash, cursor, tag and slots (_parse_ckpt)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


_INFO = struct.Struct("<HH11I4i2I16s16s3i2Ii")
_INFO_V3 = struct.Struct("<3I")             # protocol 3: rom_size, rom_crc, stack_used after _INFO
_INFO_V4 = struct.Struct("<IIiIIII8I8I")    # protocol 4: checkpoint words after _INFO_V3
CKPT_ACTIONS = {"save": lib.TL_PROTO_CKPT_SAVE, "restore": lib.TL_PROTO_CKPT_RESTORE,
                "erase": lib.TL_PROTO_CKPT_ERASE}
CKPT_FOUND = {lib.TL_CKPT_NONE: "none", lib.TL_CKPT_RESTORED: "restored",
              lib.TL_CKPT_ALL_CORRUPT: "all corrupt (original weights)",
              lib.TL_CKPT_OTHER_MODEL: "another model's"}
CKPT_SLOT_STATES = {lib.TL_CKPT_SLOT_BLANK: "blank", lib.TL_CKPT_SLOT_VALID: "valid",
                    lib.TL_CKPT_SLOT_CORRUPT: "corrupt"}


def _parse_ckpt(v) -> dict:
    """INFO's checkpoint words (protocol 4) as a dict."""
    slots = [dict(state=CKPT_SLOT_STATES.get(v[15 + 4 * k], str(v[15 + 4 * k])), generation=v[16 + 4 * k],
                  step=v[17 + 4 * k], crc=v[18 + 4 * k]) for k in range(2)]
    return dict(flash=bool(v[0] & 1), found=CKPT_FOUND.get(v[1], str(v[1])), found_code=v[1], status=v[2],
                saves=v[3], every=v[4], epoch=v[5], index=v[6], tag=list(v[7:15]), slots=slots)
CONFIG_FIELDS = ("basis", "variant", "rounding", "seed", "basis_seed", "inv_tau_q8")   # SET_CONFIG order
_CONFIG = struct.Struct("<3i2Ii")
_LR = struct.Struct("<4i")                 # one layer of SET_LR


def _parse_result(p: bytes) -> Result:
    insn, steps, pred, classes, layers = struct.unpack_from("<IIiHH", p)
    logits = list(struct.unpack_from(f"<{classes}b", p, 16))
    local = list(struct.unpack_from(f"<{layers}b", p, 16 + classes))
    return Result(pred, logits=logits, local_pred=local, insn=insn, steps=steps)


@dataclass
class LinkStats:
    commands: int = 0
    retransmits: int = 0
    timeouts: int = 0
    bad_frames: int = 0       # received frames that failed SLIP/CRC checks
    link_naks: int = 0        # device reported our frame damaged
    stray: int = 0            # well-formed frames for another seq (late duplicates)
    read_resumes: int = 0     # READ_WEIGHTS read-backs continued from their last good offset
    max_attempts: int = 0     # most attempts any one command needed
    bytes_tx: int = 0
    bytes_rx: int = 0
    op_seconds: dict = field(default_factory=dict)


# ---------------------------------------------------------------- client
class Link:
    """Command/response client over any pyserial-like port (read/write/in_waiting/timeout)."""

    def __init__(self, port, trace=None, first_seq: int = 1):
        self.port = port
        self.trace = trace            # callable(str) or None: hex dump of every packet
        self.seq = first_seq & 0xFFFF
        self.dec = Decoder()
        self.last_info = None         # the last INFO answer (load_model looks for a model in flash)
        self.pending: list = []
        self.stats = LinkStats()
        self.chunk = CHUNK_MAX
        self.chunk_max = CHUNK_MAX        # lowered to what the device accepts (INFO max_payload)
        self.ack_timeout = ACK_TIMEOUT
        self.srtt = None                  # smoothed round trip of clean exchanges, s
        self._attempts = collections.deque(maxlen=ERR_WINDOW)   # (wire bytes, went through) per attempt
        self._rate = 0.0                  # byte error rate of _attempts (None: to be recomputed)
        self._answer_bytes: dict = {}     # op -> wire size of its last answer (the exchange's size)
        self.silent_run = 0               # attempts in a row, across commands, that received nothing
        self.heard = False                # a well-formed frame ever came back: the firmware is there
        self._t0 = time.monotonic()

    # ---- low level
    def _trace(self, direction: str, data, note: str = ""):
        if self.trace is None:
            return
        t = time.monotonic() - self._t0
        if isinstance(data, int):
            self.trace(f"{t:9.3f} {direction} error {strerror(data)}")
            return
        try:
            fr = check(data)
            head = (f"{op_name(fr.op)} seq={fr.seq} flags={fr.flags:#x} len={len(fr.payload)}")
        except ProtocolError as e:
            head = str(e)
        body = data[:64].hex(" ") + (" ..." if len(data) > 64 else "")
        self.trace(f"{t:9.3f} {direction} {head} {note}| {body}")

    def _write(self, wire: bytes):
        self.port.write(wire)
        self.stats.bytes_tx += len(wire)

    def _next_item(self, deadline: float):
        """The next decoded frame (bytes) or decoder error (int); None at the deadline."""
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.port.timeout = min(READ_SLICE, left)
            waiting = getattr(self.port, "in_waiting", 0) or 0
            data = self.port.read(max(1, waiting))
            if data:
                self.stats.bytes_rx += len(data)
                self.pending.extend(self.dec.feed(data))
        item = self.pending.pop(0)
        self._trace("RX", item)
        return item

    def _busy_timeout(self, op: int) -> float:
        t = self.stats.op_seconds.get(op)
        return BUSY_FIRST_TIMEOUT if t is None else max(BUSY_MIN_TIMEOUT, BUSY_FACTOR * t)

    def error_rate(self) -> float:
        """The measured probability that one wire byte is damaged, over the last ERR_WINDOW
        attempts (byte_error_rate); a lost frame is charged to its bytes like damage."""
        if self._rate is None:
            self._rate = byte_error_rate(self._attempts)
        return self._rate

    def attempt_budget(self, exchange_bytes: int) -> int:
        """Attempts a command of `exchange_bytes` (request + answer on the wire) gets: enough that
        a link damaging bytes at the measured rate fails it with probability GIVE_UP_PROBABILITY,
        at least MAX_ATTEMPTS, at most ATTEMPTS_CAP."""
        p = self.error_rate()
        if p <= 0:
            return MAX_ATTEMPTS
        ok = (1.0 - min(p, 0.999999)) ** exchange_bytes     # one attempt goes through
        if ok <= 1.0 / ATTEMPTS_CAP ** 2:
            return ATTEMPTS_CAP
        need = math.log(GIVE_UP_PROBABILITY) / math.log1p(-ok)
        return int(min(ATTEMPTS_CAP, max(MAX_ATTEMPTS, math.ceil(need))))

    def _note(self, nbytes: int, failed: bool):
        self._attempts.append((nbytes, not failed))
        self._rate = None

    def command(self, op: int, payload: bytes = b"", attempts: int | None = None, expect: int | None = None,
                silent_limit: int = MAX_ATTEMPTS, patience: float | None = None) -> bytes:
        """Sends one command until answered; returns the response data after the status word.

        Unanswered transmissions are repeated with the same seq and bytes (the device executes a
        command once and answers repeats from its cache). `attempts` None: as many as the link's
        measured error rate calls for (attempt_budget of the request plus `expect`ed answer bytes,
        re-evaluated after each attempt); an int: exactly that many. Gives up early when
        `silent_limit` attempts in a row (counted across commands) received no byte at all, or,
        with `patience` (s), when no well-formed frame ever came back within it. The wait for
        the first answer follows the measured round trip plus both frames' transfer time and
        doubles after each silent attempt up to ACK_TIMEOUT_MAX. Raises DeviceError on a NAK,
        NoAnswerError when it gives up."""
        self.seq = (self.seq + 1) & 0xFFFF
        seq = self.seq
        wire = encode(op, seq, payload)
        self.stats.commands += 1
        answer = expect if expect is not None else self._answer_bytes.get(op, DEFAULT_ANSWER_BYTES)
        exchange = len(wire) + answer
        base = self.ack_timeout
        if self.srtt is not None:
            base = min(self.ack_timeout, max(ACK_TIMEOUT_MIN, RTT_FACTOR * self.srtt))
        timeout = base + exchange / LINK_BYTES_PER_S
        t_first = time.monotonic()
        damaged = 0
        attempt = 0
        while True:
            budget = attempts if attempts is not None else self.attempt_budget(exchange)
            if attempt >= budget:
                break
            if self.silent_run >= silent_limit:
                break
            if patience is not None and not self.heard and time.monotonic() - t_first > patience:
                break
            if attempt:
                self.stats.retransmits += 1
            attempt += 1
            self.stats.max_attempts = max(self.stats.max_attempts, attempt)
            if self.trace is not None:
                self._trace("TX", check_unslip(wire), f"try {attempt} ")
            rx_before = self.stats.bytes_rx
            self._write(wire)
            t_sent = time.monotonic()
            deadline = t_sent + timeout
            busy_since = None
            while True:
                item = self._next_item(deadline)
                if item is None:
                    self.stats.timeouts += 1
                    if self.stats.bytes_rx == rx_before:
                        self.silent_run += 1
                        timeout = min(2 * timeout, ACK_TIMEOUT_MAX)
                    break                                   # retransmit
                self.silent_run = 0
                if isinstance(item, int):
                    self.stats.bad_frames += 1
                    damaged += 1
                    break                                   # likely our answer, damaged: ask again
                try:
                    fr = check(item)
                except ProtocolError:
                    self.stats.bad_frames += 1
                    damaged += 1
                    break
                self.heard = True
                if not fr.flags & F_RESP or fr.seq != seq or fr.op != op:
                    if fr.flags & F_NAK and fr.seq == seq and len(fr.payload) >= 4 \
                            and struct.unpack_from("<i", fr.payload)[0] in LINK_ERRORS:
                        self.stats.link_naks += 1
                        damaged += 1
                        break                               # our frame arrived damaged
                    self.stats.stray += 1
                    continue
                if fr.flags & F_BUSY:
                    busy_since = time.monotonic()
                    deadline = busy_since + self._busy_timeout(op)
                    continue
                status, = struct.unpack_from("<i", fr.payload)
                if status != 0:
                    if status in LINK_ERRORS:
                        self.stats.link_naks += 1
                        damaged += 1
                        break
                    detail = struct.unpack_from("<i", fr.payload, 4)[0] if len(fr.payload) >= 8 else 0
                    raise DeviceError(op, status, detail)
                if busy_since is not None:
                    took = time.monotonic() - busy_since
                    self.stats.op_seconds[op] = max(self.stats.op_seconds.get(op, 0.0), took)
                elif attempt == 1:
                    rtt = time.monotonic() - t_sent
                    self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
                if expect is None:
                    self._answer_bytes[op] = len(item) + 2
                self._note(len(wire) + len(item) + 2, failed=False)
                return fr.payload[4:]
            self._note(exchange, failed=True)
        port = getattr(self.port, "portstr", None) or getattr(self.port, "port", "?")
        took = time.monotonic() - t_first
        if self.silent_run >= silent_limit:
            raise NoAnswerError(
                f"no answer to {op_name(op)} (seq {seq}) after {attempt} attempts on {port}, the last "
                f"{self.silent_run} with nothing received: is the tinylls firmware running on the other end, "
                f"and is nothing else using the port?", silent=True)
        if not self.heard:
            raise NoAnswerError(
                f"no well-formed answer to {op_name(op)} (seq {seq}) on {port} in {took:.1f} s and {attempt} "
                f"attempts ({self.stats.bytes_rx} bytes received, {damaged} damaged or foreign frames): "
                f"wrong baud rate, or not the tinylls firmware?")
        raise NoAnswerError(
            f"the link is too bad: no intact answer to {op_name(op)} (seq {seq}) in {attempt} attempts over "
            f"{took:.1f} s on {port} ({damaged} damaged answers, measured byte error rate "
            f"{self.error_rate():.1e})")

    def _observe(self):
        """Picks the data chunk size for the measured byte error rate (see CHUNK_OVERHEAD)."""
        p = self.error_rate()
        best = self.chunk_max if p <= 0 else (CHUNK_OVERHEAD / p) ** 0.5
        chunk = CHUNK_MIN
        while chunk * 2 <= min(best, self.chunk_max):
            chunk *= 2
        self.chunk = chunk

    def _chunked(self, op: int, data: bytes, progress=None):
        """Sends data in offset-addressed chunks (idempotent commands). The chunk size follows the
        link's measured byte error rate (see CHUNK_OVERHEAD); a chunk that keeps failing is split
        and resent under a new seq; at CHUNK_MIN it gets the adaptive attempt budget."""
        off = 0
        while off < len(data):
            n = min(self.chunk, len(data) - off)
            small = self.chunk <= CHUNK_MIN
            try:
                self.command(op, struct.pack("<I", off) + data[off:off + n],
                             attempts=None if small else CHUNK_ATTEMPTS)
            except NoAnswerError as e:
                if small or e.silent:
                    raise
                self.chunk = max(CHUNK_MIN, min(self.chunk, n) // 2)
                continue
            off += n
            if progress:
                progress(n)
            self._observe()

    # ---- commands
    def sync(self, attempts: int = SYNC_ATTEMPTS, patience: float = SYNC_SECONDS) -> Info:
        """First contact: INFO. A port where nothing answers fails after `attempts` silent tries in
        a row (seconds); one that sends bytes but never a well-formed frame, after `patience`
        seconds; a live link, however damaging, gets the adaptive attempt budget."""
        self.silent_run = 0
        p = self.command(OP["INFO"], silent_limit=attempts, patience=patience)
        return self._parse_info(p)

    def info(self) -> Info:
        return self._parse_info(self.command(OP["INFO"]))

    def _parse_info(self, p: bytes) -> Info:
        v = _INFO.unpack_from(p)
        rom_size, rom_crc, stack_used = (_INFO_V3.unpack_from(p, _INFO.size)
                                         if len(p) >= _INFO.size + _INFO_V3.size else (0, 0, 0))
        v4_at = _INFO.size + _INFO_V3.size
        ckpt = _parse_ckpt(_INFO_V4.unpack_from(p, v4_at)) if len(p) >= v4_at + _INFO_V4.size else None
        self.last_info = Info(
            proto=v[0], n_layers=v[1], loaded=bool(v[2] & lib.TL_PROTO_INFO_LOADED), arena_needed=v[3],
            arena_cap=v[4], blob_cap=v[5], input_cap=v[6], free_ram=v[7], model_size=v[8], model_crc=v[9],
            weights_bytes=v[10], weights_crc=v[11], steps=v[12], classes=v[13],
            input_shape=(v[14], v[15], v[16]), counter_kind=COUNTER_KINDS.get(v[17], str(v[17])),
            max_payload=v[18], board=v[19].rstrip(b"\0").decode(errors="replace"),
            version=v[20].rstrip(b"\0").decode(errors="replace"),
            config=dict(zip(CONFIG_FIELDS, v[21:27])),
            input_in_arena=bool(v[2] & lib.TL_PROTO_INFO_INPUT_IN_ARENA),
            model_in_flash=bool(v[2] & lib.TL_PROTO_INFO_MODEL_IN_FLASH),
            rom_size=rom_size, rom_crc=rom_crc, stack_used=stack_used, checkpoint=ckpt)
        # data frames carry a u32 offset (READ_WEIGHTS answers 12 bytes of head): stay within the
        # largest payload this device accepts
        self.chunk_max = max(CHUNK_MIN, min(CHUNK_MAX, self.last_info.max_payload - 12))
        self.chunk = min(self.chunk, self.chunk_max)
        return self.last_info

    def load_model(self, blob: bytes, progress=None) -> dict:
        """LOAD_BEGIN, chunks, LOAD_END: the device checks the CRC32 and parses the file before use.

        When the last INFO showed a model in the firmware's flash that is this file, this file
        without its host-only area (host.modelfile.strip_host), or its device identity
        (host.modelfile.device_identity: also without learning rates, what `make MODEL=` compiles
        in), nothing is sent: LOAD_BEGIN names it, the device answers "resident" and LOAD_END
        copies its trainable tensors to RAM afresh; when the flash holds the identity, SET_LR then
        gives the device this file's own learning rates, so it holds exactly the file asked for.
        Returns the arena, shape and the (size, CRC32) the device now holds (model_size,
        model_crc: INFO reports the same)."""
        blob = bytes(blob)
        rates = None                                  # SET_LR after a resident load, if the flash lacks them
        rom = (self.last_info.rom_size, self.last_info.rom_crc) if self.last_info else (0, 0)
        if rom[0]:
            from host import modelfile
            cands = [blob]
            try:
                cands += [modelfile.strip_host(blob), modelfile.device_identity(blob)]
            except modelfile.ModelFileError:
                pass                                  # not a model file: the device will say so
            for cand in cands:
                if (len(cand), zlib.crc32(cand)) == rom:
                    if cand is cands[-1] and cand not in cands[:-1]:
                        rates = [tuple(e[f] for f in modelfile.RATE_FIELDS)
                                 for e in modelfile.layer_entries(blob, modelfile.read_header(blob))]
                    blob = cand
                    break
        p = self.command(OP["LOAD_BEGIN"], struct.pack("<II", len(blob), zlib.crc32(blob)))
        resident = len(p) >= 4 and struct.unpack_from("<I", p)[0] == 1
        if not resident:
            self._chunked(OP["LOAD_DATA"], blob, progress)
        elif progress:
            progress(len(blob))
        arena, n_layers, classes = struct.unpack_from("<IHH", self.command(OP["LOAD_END"]))
        if resident and rates is not None:
            self.set_lr(rates)      # the flash holds the model without rates: the file's own follow
        return {"arena_bytes": arena, "n_layers": n_layers, "classes": classes, "resident": resident,
                "model_size": len(blob), "model_crc": zlib.crc32(blob)}

    def set_config(self, *, basis: int, variant: int, rounding: int, seed: int, basis_seed: int,
                   inv_tau_q8: int):
        """SET_CONFIG: the loaded model's training configuration (TL_BASIS_*, TL_LLS_*, TL_ROUND_*
        codes, seeds, 1/tau in Q8); resets the device's step counter. NAK (DeviceError) on a value
        the device refuses, which then keeps its previous configuration."""
        self.command(OP["SET_CONFIG"], _CONFIG.pack(int(basis), int(variant), int(rounding),
                                                    int(seed) & 0xFFFFFFFF, int(basis_seed) & 0xFFFFFFFF,
                                                    int(inv_tau_q8)))

    def set_lr(self, rates) -> None:
        """SET_LR: per layer (lr_mult, lr_shift, lls_m_lr_mult, lls_m_lr_shift), quantized
        multipliers for every layer of the loaded model, in one frame."""
        rates = [tuple(int(v) for v in r) for r in rates]
        self.command(OP["SET_LR"], struct.pack("<I", len(rates)) + b"".join(_LR.pack(*r) for r in rates))

    def put_input(self, tensor) -> tuple[int, int]:
        data = np.ascontiguousarray(tensor, np.int8).tobytes()
        self._chunked(OP["INPUT"], data)
        return len(data), zlib.crc32(data)

    def train(self, tensor, label: int) -> Result:
        n, crc = self.put_input(tensor)
        return _parse_result(self.command(OP["TRAIN"], struct.pack("<iII", int(label), n, crc)))

    def evaluate(self, tensor, with_local: bool = True) -> Result:
        n, crc = self.put_input(tensor)
        return _parse_result(self.command(OP["EVAL"], struct.pack("<III", int(bool(with_local)), n, crc)))

    # camera adaptation (protocol 5; host.adapt.board_adapt's schedule, tl_adapt.c on the board)
    def adapt_begin(self, layer: int) -> None:
        """ADAPT BEGIN: zero the board's statistics of `layer` (it must carry reference statistics)."""
        self.command(OP["ADAPT"], struct.pack("<II", lib.TL_PROTO_ADAPT_BEGIN, int(layer)))

    def adapt_feed(self, tensor) -> tuple[int, int]:
        """ADAPT_FEED one unlabelled model input: (counter units of the step, images fed so far)."""
        n, crc = self.put_input(tensor)
        return struct.unpack_from("<II", self.command(OP["ADAPT_FEED"], struct.pack("<II", n, crc)))

    def adapt_apply(self, layer: int) -> tuple[int, int]:
        """ADAPT APPLY: the board updates the layer; (images, crc32 of its bias, out_mult, out_shift)."""
        return struct.unpack_from("<II", self.command(OP["ADAPT"], struct.pack("<II", lib.TL_PROTO_ADAPT_APPLY,
                                                                               int(layer))))

    def evaluate_exit(self, tensor, first_layer: int, threshold_q16: int) -> tuple[Result, int]:
        """EVAL_EXIT (protocol 5): early-exit inference on the board (tl_model_infer_exit).
        Returns the result (insn: this inference's counter units) and the exit layer
        (n_layers - 1: the classifier answered)."""
        n, crc = self.put_input(tensor)
        p = self.command(OP["EVAL_EXIT"], struct.pack("<IiII", int(first_layer), int(threshold_q16), n, crc))
        res = _parse_result(p)
        classes, layers = struct.unpack_from("<HH", p, 12)
        (exit_layer,) = struct.unpack_from("<i", p, 16 + classes + layers)
        return res, exit_layer

    def device_stats(self) -> dict:
        p = self.command(OP["STATS"])
        return dict(zip(STAT_NAMES, struct.unpack_from(f"<{len(STAT_NAMES)}I", p)))

    def read_weights(self, progress=None, into: bytearray | None = None) -> bytes:
        """The READ_WEIGHTS stream (what host.model.weights_sha256 hashes), chunk size adapting
        to the link as in _chunked. Each chunk is checked on arrival (frame CRC32, the offset
        asked, the stream's total size unchanged). `into`: the bytes read so far, extended in
        place, so after a NoAnswerError a new call goes on from the last good offset instead of
        starting again from 0 (the caller keeps the bytearray)."""
        out = into if into is not None else bytearray()
        if out:
            self.stats.read_resumes += 1
        total = None
        while total is None or len(out) < total:
            small = self.chunk <= CHUNK_MIN
            ask = self.chunk
            try:
                p = self.command(OP["READ_WEIGHTS"], struct.pack("<II", len(out), ask),
                                 attempts=None if small else CHUNK_ATTEMPTS, expect=ask + 24)
            except NoAnswerError as e:
                if small or e.silent:
                    raise
                self.chunk = max(CHUNK_MIN, ask // 2)
                continue
            now, off = struct.unpack_from("<II", p)
            if total is not None and now != total:
                raise ProtocolError(f"READ_WEIGHTS: the weight stream changed size ({total} -> {now} bytes) "
                                    f"while being read")
            total = now
            if off != len(out):
                raise ProtocolError(f"READ_WEIGHTS answered offset {off}, asked {len(out)}")
            if len(p) == 8 and len(out) < total:
                raise ProtocolError(f"READ_WEIGHTS returned no data at offset {off} of {total}")
            if len(out) + len(p) - 8 > total:
                raise ProtocolError(f"READ_WEIGHTS returned {len(p) - 8} bytes at offset {off}, past the "
                                    f"stream's {total}")
            out += p[8:]
            if progress:
                progress(len(p) - 8)
            self._observe()
        return bytes(out)

    def reset(self):
        self.command(OP["RESET"])

    def checkpoint(self, action: str = "save") -> int:
        """CHECKPOINT: "save" (-> generation written), "restore" (-> TL_CKPT_* found), "erase"."""
        p = self.command(OP["CHECKPOINT"], struct.pack("<I", CKPT_ACTIONS[action]))
        return struct.unpack_from("<I", p)[0]

    def ckpt_config(self, every: int = 0, epoch: int = 0, index: int = 0, tag=(0,) * 8) -> None:
        """CKPT_CONFIG: automatic checkpoint interval (steps, 0 off), data cursor of the next TRAIN,
        the run's tag (8 u32, stored in checkpoints)."""
        tag = [int(t) & 0xFFFFFFFF for t in tag]
        if len(tag) != lib.TL_CKPT_TAG_WORDS:
            raise ValueError(f"tag: {lib.TL_CKPT_TAG_WORDS} words")
        self.command(OP["CKPT_CONFIG"], struct.pack("<III8I", int(every), int(epoch), int(index), *tag))


def check_unslip(wire: bytes) -> bytes:
    """The unescaped frame inside one SLIP packet (for tracing what we send)."""
    items = Decoder().feed(wire)
    return items[0] if items and isinstance(items[0], bytes) else wire


def stderr_trace(line: str):
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the device, in process
class SimulatedPort:
    """A pyserial-like port whose other end is the firmware's dispatcher (ccore/src/tl_proto_dev.c)
    running in this process on the host build of the core. Tests use it to exercise the protocol
    without a board; `drop_rx` / `flip` hooks let them damage traffic deterministically."""

    def __init__(self, blob_cap: int = 4 << 20, arena_cap: int = 1 << 20, input_cap: int = 1 << 18,
                 max_layers: int = 64, board: str = "host-sim", rom: bytes | None = None, flash=None):
        """input_cap 0 stages the input in the arena (as the firmware does); rom: a model file the
        device holds in "flash" (its trainable tensors go to the blob buffer); flash: a
        host.flashsim.NorFlash for checkpoints (kept across SimulatedPorts: a reboot)."""
        self._keep = []
        self.blob = ffi.new("uint32_t[]", (blob_cap + 3) // 4)
        self.layers = ffi.new("tl_layer[]", max_layers)
        self.arena = ffi.new("uint64_t[]", max((arena_cap + 7) // 8, 1))
        self.input = ffi.new("int8_t[]", input_cap) if input_cap else ffi.NULL
        self.rom = ffi.new("uint32_t[]", (len(rom) + 3) // 4) if rom else ffi.NULL
        if rom:
            ffi.memmove(self.rom, rom, len(rom))
        self.board = ffi.new("char[]", board.encode())
        self.rx = bytearray()                     # bytes the device sent, not yet read
        self.timeout = 0.05
        self.portstr = "sim://"
        self.tx_filter = None                     # callable(bytes) -> bytes applied host -> device
        self.rx_filter = None                     # callable(bytes) -> bytes applied device -> host

        @ffi.callback("void(void *, const uint8_t *, int32_t)")
        def _write(user, data, n):
            chunk = bytes(ffi.buffer(data, n))
            self.rx += self.rx_filter(chunk) if self.rx_filter else chunk

        self._write_cb = _write
        cfg = ffi.new("tl_proto_dev_cfg *")
        cfg.blob = ffi.cast("uint8_t *", self.blob)
        cfg.blob_cap = blob_cap
        cfg.layers = self.layers
        cfg.max_layers = max_layers
        cfg.arena = self.arena
        cfg.arena_cap = arena_cap
        cfg.input = self.input
        cfg.input_cap = input_cap
        cfg.write = _write
        cfg.counter = ffi.NULL
        cfg.user = ffi.NULL
        cfg.counter_kind = lib.TL_PROTO_COUNTER_NONE
        cfg.free_ram = 0
        cfg.board = self.board
        cfg.rom = ffi.cast("uint8_t *", self.rom)
        cfg.rom_size = len(rom) if rom else 0
        self.flash = flash
        cfg.flash = flash.tl_flash() if flash is not None else ffi.NULL
        self._flash_c = cfg.flash
        self.dev = ffi.new("tl_proto_dev *")
        st = lib.tl_proto_dev_init(self.dev, cfg)
        if st != 0:
            raise ValueError(f"tl_proto_dev_init: {strerror(st)}")

    @property
    def in_waiting(self) -> int:
        return len(self.rx)

    def write(self, data: bytes) -> int:
        data = bytes(data)
        if self.tx_filter:
            data = self.tx_filter(data)
        if data:
            lib.tl_proto_dev_rx(self.dev, ffi.from_buffer(data), len(data))
        return len(data)

    def read(self, n: int = 1) -> bytes:
        if not self.rx:
            time.sleep(min(self.timeout or 0, 0.001))
            return b""
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def close(self):
        pass
