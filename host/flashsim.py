"""An emulated NOR flash for the checkpoint code (ccore/src/tl_checkpoint.c) run in this process.

NOR semantics: erase a whole sector -> every byte 0xFF; a program may only clear bits (1 -> 0)
inside one page; a program that would set a bit (0 -> 1) is refused and counted (`violations`),
and, as real NOR does, only clears bits. Counters: erases, programs, bytes programmed, per-sector
erase counts (wear). A power cut: `cut_at = N` stops the device at its N-th erase-or-program
(1-based): that operation is left half done (a torn page: the first half of its bytes programmed;
a torn erase: the first half of the sector erased) and every later operation fails, as if the
board had lost power; `revive()` is the next boot.

`tl_flash()` gives the C structure with callbacks into this object (keep the returned object
alive while C uses it).
"""
from __future__ import annotations

import struct

from ._tinylls import ffi, lib


class PowerCut(Exception):
    pass


class NorFlash:
    def __init__(self, size: int, sector_bytes: int = 4096, page_bytes: int = 256):
        assert size % sector_bytes == 0 and sector_bytes % page_bytes == 0
        self.size, self.sector_bytes, self.page_bytes = size, sector_bytes, page_bytes
        self.mem = bytearray(b"\xff" * size)
        self.sector_erases = [0] * (size // sector_bytes)
        self.erases = self.programs = self.bytes_programmed = self.reads = 0
        self.violations = 0
        self.cut_at = 0          # stop at this erase/program (1-based count of ops); 0: never
        self.ops = 0             # erases + programs so far (since the counters were reset)
        self.dead = False
        self.log = []            # (kind, addr, n) of every op when record_ops is set
        self.record_ops = False
        self._cbs = None

    # ------------------------------------------------------------ device operations
    def _tick(self) -> bool:
        """Counts an op; True when this op is the one the power cut tears."""
        if self.dead:
            raise PowerCut
        self.ops += 1
        return self.cut_at and self.ops == self.cut_at

    def erase(self, addr: int) -> None:
        if addr % self.sector_bytes or not 0 <= addr < self.size:
            raise ValueError(f"erase at {addr:#x}: not a sector start")
        torn = self._tick()
        if self.record_ops:
            self.log.append(("erase", addr, self.sector_bytes))
        n = self.sector_bytes // 2 if torn else self.sector_bytes
        self.mem[addr:addr + n] = b"\xff" * n
        self.erases += 1
        self.sector_erases[addr // self.sector_bytes] += 1
        if torn:
            self.dead = True
            raise PowerCut

    def program(self, addr: int, data: bytes) -> None:
        n = len(data)
        if n == 0 or addr // self.page_bytes != (addr + n - 1) // self.page_bytes or addr + n > self.size:
            raise ValueError(f"program {n} bytes at {addr:#x}: crosses a page or the end")
        torn = self._tick()
        if self.record_ops:
            self.log.append(("program", addr, n))
        k = n // 2 if torn else n
        old = self.mem[addr:addr + k]
        new = bytes(a & b for a, b in zip(old, data[:k]))
        if any((~o & d) & 0xFF for o, d in zip(old, data[:k])):
            self.violations += 1        # a 0 -> 1 bit asked for: NOR cannot, the bit stays 0
        self.mem[addr:addr + k] = new
        self.programs += 1
        self.bytes_programmed += k
        if torn:
            self.dead = True
            raise PowerCut
        if new != bytes(data):
            raise ValueError(f"program at {addr:#x} would set bits 0 -> 1")

    def read(self, addr: int, n: int) -> bytes:
        if self.dead:
            raise PowerCut
        self.reads += 1
        return bytes(self.mem[addr:addr + n])

    def revive(self) -> None:
        """The next boot: power is back, no cut pending."""
        self.dead = False
        self.cut_at = 0

    def reset_counters(self) -> None:
        self.erases = self.programs = self.bytes_programmed = self.reads = self.ops = 0

    def counters(self) -> dict:
        return dict(erases=self.erases, programs=self.programs, bytes_programmed=self.bytes_programmed,
                    violations=self.violations, max_sector_erases=max(self.sector_erases))

    def flip_bit(self, addr: int, bit: int = 0) -> None:
        self.mem[addr] ^= 1 << bit

    # ------------------------------------------------------------ C view
    def tl_flash(self):
        """A `tl_flash *` whose callbacks are this object's operations (a failure or power cut
        returns -1 to C)."""
        @ffi.callback("int32_t(void *, uint32_t)")
        def _erase(user, addr):
            try:
                self.erase(addr)
                return 0
            except (PowerCut, ValueError):
                return -1

        @ffi.callback("int32_t(void *, uint32_t, const uint8_t *, int32_t)")
        def _program(user, addr, data, n):
            try:
                self.program(addr, bytes(ffi.buffer(data, n)))
                return 0
            except (PowerCut, ValueError):
                return -1

        @ffi.callback("int32_t(void *, uint32_t, uint8_t *, int32_t)")
        def _read(user, addr, out, n):
            try:
                ffi.memmove(out, self.read(addr, n), n)
                return 0
            except PowerCut:
                return -1

        f = ffi.new("tl_flash *")
        f.size, f.sector_bytes, f.page_bytes = self.size, self.sector_bytes, self.page_bytes
        f.erase, f.program, f.read = _erase, _program, _read
        f.user = ffi.NULL
        self._cbs = (_erase, _program, _read, f)
        return f


# ---------------------------------------------------------------- the mps2-an386 flash file
FLASH_FILE = "tinylls-flash.bin"          # firmware/boards/mps2-an386/flash.c, in QEMU's directory
TRAILER = ("magic", "erases", "programs", "bytes_programmed", "cut_at", "ops", "violations", "cuts",
           "sector_bytes", "page_bytes")
TRAILER_BYTES = 64
TRAILER_MAGIC = 0x53464C54                # "TLFS"
POWER_CUT_EXIT = 0x50                     # QEMU's exit status when the emulated flash cut the power


def make_flash_file(path, size: int, sector_bytes: int = 4096, page_bytes: int = 256) -> None:
    """An erased emulated flash for the mps2-an386 firmware: size bytes of 0xFF + the trailer."""
    assert size % sector_bytes == 0
    words = [TRAILER_MAGIC, 0, 0, 0, 0, 0, 0, 0, sector_bytes, page_bytes]
    with open(path, "wb") as f:
        f.write(b"\xff" * size + struct.pack(f"<{TRAILER_BYTES // 4}I", *(words + [0] * (16 - len(words)))))


def read_flash_file(path) -> tuple[bytes, dict]:
    """(flash bytes, trailer counters) of an emulated flash file."""
    data = open(path, "rb").read()
    words = struct.unpack_from(f"<{len(TRAILER)}I", data, len(data) - TRAILER_BYTES)
    return data[:-TRAILER_BYTES], dict(zip(TRAILER, words))


def set_flash_cut(path, after_ops: int) -> int:
    """Arms the power cut of an emulated flash file at its `after_ops`-th next erase/program
    (0 disarms); returns the absolute op number."""
    _, t = read_flash_file(path)
    cut = t["ops"] + after_ops if after_ops else 0
    with open(path, "r+b") as f:
        f.seek(-TRAILER_BYTES + 4 * TRAILER.index("cut_at"), 2)
        f.write(struct.pack("<I", cut))
    return cut


def region_bytes_for(payload_bytes: int, sector_bytes: int = 4096, page_bytes: int = 256) -> int:
    """Smallest region whose two slots each hold a record page plus the payload."""
    per_slot = -(-(page_bytes + payload_bytes) // sector_bytes) * sector_bytes
    return 2 * per_slot


__all__ = ["NorFlash", "PowerCut", "region_bytes_for", "make_flash_file", "read_flash_file", "set_flash_cut", "lib"]
