"""A TCP proxy that damages SLIP traffic on purpose: flips bytes, drops and duplicates whole frames.

Used to prove that host.stream and the firmware survive a bad serial link (tests/test_firmware.py):

    python -m host.lossyproxy --target 127.0.0.1:4321 --listen 4322 --flip 0.001 --drop 0.01 --dup 0.01 --seed 1
    python -m host.stream --port socket://127.0.0.1:4322 ...

Each direction is cut into frames at SLIP END bytes; a frame is dropped with probability `drop`,
otherwise each of its bytes is XORed with a random non-zero value with probability `flip`, and the
(possibly damaged) frame is sent twice with probability `dup` (a retransmitting modem or a
repeated DMA buffer: the copy carries the same damage). All decisions come from a seeded generator
per direction, so a run is reproducible given the same traffic. The proxy accepts one client at a
time and connects to the target when it arrives.
"""
from __future__ import annotations

import argparse
import random
import socket
import sys
import threading
import time

from host import cli_common

TOOL = "host.lossyproxy"
from dataclasses import dataclass

END = 0xC0
CONNECT_PATIENCE = 10.0   # s: how long to retry connecting to the target for a new client


@dataclass
class Damage:
    frames: int = 0
    dropped: int = 0
    flipped: int = 0
    duplicated: int = 0


class _Mangler:
    """Splits a byte stream at END bytes and damages it frame by frame."""

    def __init__(self, flip: float, drop: float, rng: random.Random, stats: Damage, dup: float = 0.0):
        self.flip, self.drop, self.dup, self.rng, self.stats = flip, drop, dup, rng, stats
        self.buf = bytearray()

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            self.buf.append(b)
            if b != END:
                continue
            frame, self.buf = self.buf, bytearray()
            if len(frame) == 1:               # a leading END or idle filler: pass through
                out += frame
                continue
            self.stats.frames += 1
            if self.rng.random() < self.drop:
                self.stats.dropped += 1
                out.append(END)               # keep the delimiter so the next frame stays intact
                continue
            for i in range(len(frame)):
                if self.rng.random() < self.flip:
                    frame[i] ^= self.rng.randrange(1, 256)
                    self.stats.flipped += 1
            out += frame
            if self.dup and self.rng.random() < self.dup:
                self.stats.duplicated += 1
                out += frame
        return bytes(out)


class LossyProxy:
    """Listens on 127.0.0.1:listen_port (0 = any free port, see .port) and relays to target."""

    def __init__(self, target: tuple[str, int], flip: float = 1e-3, drop: float = 0.01, seed: int = 0,
                 listen_port: int = 0, dup: float = 0.0):
        self.target, self.flip, self.drop, self.dup, self.seed = target, flip, drop, dup, seed
        self.up = Damage()        # host -> device
        self.down = Damage()      # device -> host
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", listen_port))
        self._srv.listen(1)
        self.port = self._srv.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._manglers: list[_Mangler] = []
        self._accept = threading.Thread(target=self._serve, name="lossyproxy-accept", daemon=True)

    def start(self) -> "LossyProxy":
        self._accept.start()
        return self

    def _serve(self):
        rng_seed = random.Random(self.seed)
        while not self._stop.is_set():
            try:
                self._srv.settimeout(0.2)
                client, _ = self._srv.accept()
            except (socket.timeout, OSError):
                continue
            upstream = self._connect_target()
            if upstream is None:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(0.2)
            self._socks += [client, upstream]
            for src, dst, stats in ((client, upstream, self.up), (upstream, client, self.down)):
                m = _Mangler(self.flip, self.drop, random.Random(rng_seed.random()), stats, self.dup)
                self._manglers.append(m)
                t = threading.Thread(target=self._pump, args=(src, dst, m), daemon=True)
                t.start()
                self._threads.append(t)

    def _connect_target(self, patience: float = CONNECT_PATIENCE):
        """The target may still be starting (QEMU opens its socket after a moment): retry."""
        end = time.monotonic() + patience
        while not self._stop.is_set():
            try:
                return socket.create_connection(self.target, timeout=5)
            except OSError:
                if time.monotonic() > end:
                    return None
                time.sleep(0.05)
        return None

    def _pump(self, src: socket.socket, dst: socket.socket, m: _Mangler):
        while not self._stop.is_set():
            try:
                data = src.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                dst.sendall(m.feed(data))
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def set_damage(self, flip: float | None = None, drop: float | None = None, dup: float | None = None):
        """Changes the damage from now on, in both directions, for the current client and later
        ones (drop=1.0: an outage)."""
        for m in [self] + list(self._manglers):
            m.flip = m.flip if flip is None else flip
            m.drop = m.drop if drop is None else drop
            m.dup = m.dup if dup is None else dup

    def close(self):
        self._stop.set()
        for s in self._socks + [self._srv]:
            try:
                s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=1)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def summary(self) -> dict:
        return {"up": vars(self.up), "down": vars(self.down), "flip": self.flip, "drop": self.drop,
                "dup": self.dup, "seed": self.seed}


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--target: expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv=None) -> int:
    ap = cli_common.ArgumentParser(tool=TOOL, description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=_hostport, required=True, help="HOST:PORT to relay to (e.g. QEMU's serial)")
    ap.add_argument("--listen", type=int, default=0, help="port on 127.0.0.1 to listen on (default: any free)")
    ap.add_argument("--flip", type=float, default=1e-3, help="probability of flipping each byte (default 0.001)")
    ap.add_argument("--drop", type=float, default=0.01, help="probability of dropping each frame (default 0.01)")
    ap.add_argument("--dup", type=float, default=0.0,
                    help="probability of sending each frame twice (default 0)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = ap.parse_args(argv)
    for name in ("flip", "drop", "dup"):
        v = getattr(args, name)
        if not 0.0 <= v <= 1.0:
            return cli_common.fail(TOOL, f"--{name} must be a probability in [0, 1], got {v}")
    try:
        proxy = LossyProxy(args.target, args.flip, args.drop, args.seed, args.listen, args.dup).start()
    except OSError as e:
        return cli_common.fail(TOOL, f"cannot listen on 127.0.0.1:{args.listen}: {e}")
    print(f"lossyproxy: socket://127.0.0.1:{proxy.port} -> {args.target[0]}:{args.target[1]} "
          f"(flip {args.flip}, drop {args.drop}, dup {args.dup}, seed {args.seed}); Ctrl-C stops",
          file=sys.stderr, flush=True)
    try:
        while True:
            threading.Event().wait(1.0)
    except KeyboardInterrupt:       # the way to stop it: one line with the traffic summary, 130
        return cli_common.interrupted(TOOL, f"traffic: {proxy.summary()}")
    finally:
        proxy.close()


if __name__ == "__main__":
    sys.exit(cli_common.run_main(TOOL, main))
