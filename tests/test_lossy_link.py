"""Issue 18, the link: no run is lost to a bad serial link (emulated Cortex-M4 behind host.lossyproxy).

The matrix streams one small run (MobileNetV1-0.02 on 48x48 images, 2 training samples) through
byte flips 1e-3 and 1e-2, frame drops 1e-2, frame duplicates 1e-2 and all three at once (flips at
the report's 3e-3 there): each run
either completes with host.simulate's weights, or stops with one line saying the link is too bad
and is resumed (--resume, from the board's checkpoint flash) until it does. Then the two reported
defects: (1) training finished under combined faults, then the read-back failed and nothing was
written; (2) connect gave up after 4 INFO attempts at 1e-2 flipped bytes.

One firmware build for the module; each test starts its own board (QEMU) with its own flash file.
"""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from tools import need, need_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_firmware import build_firmware  # noqa: E402

pytestmark = [pytest.mark.firmware]
SEMIHOSTING = ["-semihosting-config", "enable=on,target=native"]
RUN = ["--alpha", "0.02", "--limit", "2", "--val-limit", "1", "--epochs", "1", "--seed", "6"]
RESUMES_ALLOWED = 4          # a run on these links that needs more resumes than this is lost


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny shard data set: 48x48 images keep every INPUT short, so the link, not the data, is tested."""
    from host.datasets import Dataset, shards
    rng = np.random.default_rng(18)
    images = rng.integers(0, 256, (8, 48, 48, 3), dtype=np.uint8)
    labels = np.arange(8) % 2
    out = tmp_path_factory.mktemp("data") / "tiny48"
    shards.write(Dataset(images, labels, [f"img{i}" for i in range(8)], "synthetic", name="tiny48"), out)
    return out


def run_args(data: Path) -> list:
    return ["--data", str(data), *RUN]


@pytest.fixture(scope="module")
def plan(data):
    """host.stream's own plan of the run: arena, model file size, checkpoint payload."""
    import argparse

    from host import modelfile, protocol, simulate, stream
    p = argparse.ArgumentParser()
    simulate.add_training_args(p)
    setup, cm = stream.prepare_run(p.parse_args(run_args(data)))
    return {"arena": cm.arena_bytes, "blob": len(modelfile.to_bytes(setup.model)),
            "ckpt": protocol.lib.tl_ckpt_payload_bytes(cm._m, int(cm._m.cfg.variant))}


@pytest.fixture(scope="module")
def elf(plan, tmp_path_factory):
    need("make", "make")
    need("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi")
    need("qemu-system-arm", "qemu-system-arm")
    need_module("platformio", "make -C firmware builds with PlatformIO (pip install platformio)")
    return build_firmware(tmp_path_factory.mktemp("fw-lossy"), arena_bytes=plan["arena"],
                          blob_bytes=(plan["blob"] + 4095) // 4096 * 4096)


@pytest.fixture(scope="module")
def simulated(data, tmp_path_factory) -> str:
    """weights_sha256 of `python -m host.simulate` with the run's options: what every board must end with."""
    from host import simulate
    js = tmp_path_factory.mktemp("sim") / "sim.json"
    assert simulate.main(run_args(data) + ["--json", str(js), "--quiet"]) == 0
    return json.loads(js.read_text())["weights_sha256"]


class LossyBoard:
    """An emulated board with checkpoint flash, reached through a LossyProxy."""

    def __init__(self, elf: Path, d: Path, plan: dict, seed: int, **damage):
        from host.flashsim import FLASH_FILE, make_flash_file, region_bytes_for
        from host.lossyproxy import LossyProxy
        from host.stream import QemuBoard
        make_flash_file(d / FLASH_FILE, region_bytes_for(plan["ckpt"]))
        self.board = QemuBoard(str(elf), extra_args=SEMIHOSTING, cwd=str(d))
        self.proxy = LossyProxy(("127.0.0.1", self.board.port), seed=seed, **damage).start()
        self.url = f"socket://127.0.0.1:{self.proxy.port}"

    def close(self):
        self.proxy.close()
        self.board.close()          # twice is harmless: the fixture closes every board it made


@pytest.fixture
def lossy(elf, plan, tmp_path):
    made = []

    def make(seed=1, flip=0.0, drop=0.0, dup=0.0):
        d = tmp_path / f"board-{len(made)}"
        d.mkdir()
        b = LossyBoard(elf, d, plan, seed, flip=flip, drop=drop, dup=dup)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def stream(url: str, data: Path, out: Path, *extra) -> tuple[int, dict | None]:
    from host import stream as S
    rc = S.main(["--port", url, *run_args(data), "--checkpoint-every", "1", "--json", str(out), "--quiet", *extra])
    return rc, (json.loads(out.read_text()) if out.is_file() else None)


def run_to_the_end(url: str, data: Path, tmp_path: Path, capsys) -> tuple[dict, list]:
    """host.stream, then --resume while it stops on the link: (the completed summary, the stops)."""
    stops = []
    rc, summary = stream(url, data, tmp_path / "run.json")
    while rc != 0:
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "the link is too bad to finish the run" in err[0], err
        assert summary is not None and summary["complete"] is False, "no JSON of the stopped run"
        assert "--resume" in summary["resume"]
        stops.append(summary)
        assert len(stops) <= RESUMES_ALLOWED, stops
        (tmp_path / "run.json").unlink()
        rc, summary = stream(url, data, tmp_path / "run.json", "--resume")
    assert summary["complete"] is True
    return summary, stops


MATRIX = {                                  # name: damage per byte (flip) or per frame (drop, dup)
    "flips-1e-3": dict(flip=1e-3),
    "flips-1e-2": dict(flip=1e-2),
    "drops-1e-2": dict(drop=1e-2),
    "dups-1e-2": dict(dup=1e-2),
    "combined": dict(flip=3e-3, drop=1e-2, dup=1e-2),    # the report's defect 1 (1e-2 flips: ~60 s more)
}


def damage_was_felt(damage: dict, seen: dict, summary: dict) -> bool:
    """Did the proxy do each kind of damage asked for, and did the host have to deal with it? (A
    dropped BUSY frame or a duplicated last answer costs nothing: such a run proves nothing.)"""
    kinds = {"flip": "flipped", "drop": "dropped", "dup": "duplicated"}
    done = all(seen["up"][kinds[k]] + seen["down"][kinds[k]] > 0 for k, v in damage.items() if v)
    link = summary["link"]
    # damage or loss: retransmissions, in the JSON, and a measured error rate
    felt_loss = not (damage.get("flip") or damage.get("drop")) or \
        (link["retransmits"] > 0 and link["byte_error_rate"] > 0)
    # a request sent twice is answered from the device's cache, an answer sent twice is stray
    felt_dup = not damage.get("dup") or summary["device_stats"]["duplicates"] + link["stray"] > 0
    return done and felt_loss and felt_dup


SEEDS_PER_CASE = 6           # a small run has ~150 frames: at 1e-2 per frame, 1 seed in 5 damages none


@pytest.mark.parametrize("name", list(MATRIX))
def test_lossy_link_matrix_never_loses_the_run(name, lossy, data, simulated, tmp_path, capsys):
    damage = MATRIX[name]
    for seed in range(3, 3 + SEEDS_PER_CASE):
        b = lossy(seed=seed, **damage)
        summary, stops = run_to_the_end(b.url, data, tmp_path, capsys)
        seen = b.proxy.summary()
        assert summary["weights_sha256"] == simulated
        assert summary["weights_sha256"] != summary["initial_weights_sha256"]    # it did train
        assert summary["device"]["steps"] == 2                                    # no TRAIN applied twice
        if damage_was_felt(damage, seen, summary):
            break                            # else this seed proved nothing: the next one
        b.close()
    assert damage_was_felt(damage, seen, summary), (seen, summary["link"], summary["device_stats"])
    link = summary["link"]
    print(f"{name}: {link['commands']} commands, {link['retransmits']} retransmissions, "
          f"at most {link['max_attempts']} attempts, measured byte error rate {link['byte_error_rate']}, "
          f"{len(stops)} stop(s), seed {seed}; proxy {seen}")


def read_weights_offsets(monkeypatch, on_read=None) -> list:
    """Records the offset of every READ_WEIGHTS the host sends; on_read(offset) may act on it."""
    from host import protocol as P
    offsets = []
    command = P.Link.command

    def spy(self, op, payload=b"", *a, **kw):
        if op == P.OP["READ_WEIGHTS"]:
            off = struct.unpack_from("<I", payload)[0]
            offsets.append(off)
            if on_read:
                on_read(off)
        return command(self, op, payload, *a, **kw)

    monkeypatch.setattr(P.Link, "command", spy)
    return offsets


def quick_silence(monkeypatch):
    """A dead link is declared after MAX_ATTEMPTS silent attempts whose wait doubles up to
    ACK_TIMEOUT_MAX (~40 s); capped at 0.2 s here so the outages below cost seconds."""
    from host import protocol as P
    monkeypatch.setattr(P, "ACK_TIMEOUT_MAX", 0.2)
    monkeypatch.setattr("host.stream.READBACK_PAUSE", 0.2)


def test_defect1_read_back_outage_goes_on_from_the_last_good_offset(lossy, data, simulated, tmp_path,
                                                                    monkeypatch, capsys):
    """Combined faults of the report (flips 3e-3, drops and duplicates 1e-2), and the link goes
    dark in the middle of the read-back: the next round goes on from the last good offset."""
    quick_silence(monkeypatch)
    b = lossy(seed=5, flip=3e-3, drop=1e-2, dup=1e-2)
    rounds = []
    from host import protocol as P
    read = P.Link.read_weights

    def read_rounds(self, progress=None, into=None):
        rounds.append(len(into) if into is not None else 0)
        if len(rounds) == 2:
            b.proxy.set_damage(drop=1e-2)                    # the outage is over
        return read(self, progress, into)

    monkeypatch.setattr(P.Link, "read_weights", read_rounds)
    offsets = read_weights_offsets(monkeypatch, lambda off: off >= 1024 and len(rounds) == 1
                                   and b.proxy.set_damage(drop=1.0))
    rc, summary = stream(b.url, data, tmp_path / "run.json")
    assert rc == 0, capsys.readouterr().err
    assert summary["complete"] and summary["weights_sha256"] == simulated
    assert len(rounds) == 2 and rounds[1] >= 1024 and summary["link"]["read_resumes"] == 1
    assert offsets == sorted(offsets) and offsets.count(0) == 1             # never from 0 again


def test_defect1_link_lost_after_training_keeps_the_run(lossy, data, simulated, tmp_path, monkeypatch, capsys):
    """The reported failure: training finished, then the read-back could not be finished. Now: one
    line, exit 2, the JSON with what is known (complete false), and --resume ends with the
    simulated weights without training again."""
    quick_silence(monkeypatch)
    b = lossy(seed=7, flip=3e-3, drop=1e-2, dup=1e-2)
    read_weights_offsets(monkeypatch, lambda off: off >= 2048 and b.proxy.set_damage(drop=1.0))
    rc, summary = stream(b.url, data, tmp_path / "run.json")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "the link is too bad to finish the run (read-back stopped at step 2 of 2)" in err[0], err
    assert "--resume" in err[0] and "run.json" in err[0]
    assert summary["complete"] is False and summary["stopped_in"] == "read-back"
    assert summary["device_steps"] == 2 and summary["samples"] == 2 and summary["train_accuracy"] is not None
    assert summary["weights_bytes_read"] >= 2048 and summary["link"]["retransmits"] > 0
    monkeypatch.undo()
    b.proxy.set_damage(drop=1e-2)                             # the link comes back, still bad
    (tmp_path / "run.json").unlink()
    rc, summary = stream(b.url, data, tmp_path / "run.json", "--resume")
    assert rc == 0, capsys.readouterr().err
    assert summary["complete"] and summary["weights_sha256"] == simulated
    assert summary["resumed_from"]["step"] == 2                # the checkpoint at the end: no step again
    assert summary["device"]["steps"] == 2


def test_defect2_connect_survives_one_percent_flipped_bytes(lossy):
    """At 1e-2 flipped bytes an INFO answer (~280 bytes on the wire) arrives intact about one time
    in 17: 4 attempts failed the connect ~4 times in 5. Ten connects in a row must all succeed."""
    from host import protocol as P
    b = lossy(seed=11, flip=1e-2)
    port = __import__("host.stream", fromlist=["open_port"]).open_port(b.url)
    try:
        attempts = []
        for k in range(10):
            link = P.Link(port, first_seq=1000 * (k + 1))
            info = link.sync()
            assert info.board == "mps2-an386"
            attempts.append(link.stats.max_attempts)
        assert max(attempts) > 4, attempts        # the old limit would have given up on these links
    finally:
        port.close()


# ---------------------------------------------------------------- the policy itself, without a board
def test_byte_error_rate_is_the_maximum_likelihood_estimate():
    """Mixed frame sizes, most large ones failing: failures/bytes would say ~2e-3 at p = 1e-2."""
    import random

    from host.protocol import byte_error_rate
    for p in (1e-3, 1e-2):
        rng = random.Random(18)
        attempts = []
        for _ in range(4000):
            size = rng.choice([40, 60, 500, 1100])
            attempts.append((size, rng.random() < (1 - p) ** size))
        assert abs(byte_error_rate(attempts) - p) < 0.15 * p
    assert byte_error_rate([(100, True)] * 5) == 0.0 and byte_error_rate([]) == 0.0
    assert byte_error_rate([(100, False)] * 5) > 0.5


def flipping(p: float, seed: int):
    rng = np.random.default_rng(seed)

    def damage(data: bytes) -> bytes:
        b = np.frombuffer(data, np.uint8).copy()
        hit = rng.random(len(b)) < p
        b[hit] ^= rng.integers(1, 256, int(hit.sum()), dtype=np.uint8)
        return b.tobytes()
    return damage


def test_attempts_grow_with_the_measured_error_rate_and_silence_still_fails_fast():
    from host import protocol as P
    port = P.SimulatedPort()
    port.tx_filter, port.rx_filter = flipping(1e-2, 1), flipping(1e-2, 2)
    link = P.Link(port)
    for _ in range(5):                           # defect 2 in process: 4 attempts were not enough
        assert link.sync().proto == P.lib.TL_PROTO_VERSION
    assert link.stats.max_attempts > P.SYNC_ATTEMPTS
    assert 3e-3 < link.error_rate() < 3e-2
    assert link.attempt_budget(480) > link.attempt_budget(60) >= P.MAX_ATTEMPTS

    class Chatter:                               # bytes, but never a frame: not the firmware
        timeout, portstr, in_waiting = 0.01, "chatter://", 0

        def write(self, b):
            return len(b)

        def read(self, n=1):
            return b"\x55\x13\xc0"

    t = __import__("time").monotonic()
    with pytest.raises(P.NoAnswerError, match="no well-formed answer to INFO.*wrong baud rate"):
        P.Link(Chatter()).sync(patience=1.0)
    assert __import__("time").monotonic() - t < 5
