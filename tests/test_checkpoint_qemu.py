"""Issue 12 end to end on the emulated Cortex-M4: the mps2-an386 firmware's checkpoint flash is a
host file reached through semihosting (firmware/boards/mps2-an386/flash.c) that persists across
QEMU runs and cuts the power at a chosen erase/program. Each QEMU run is one power-on."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools import need, need_module

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_firmware import build_firmware  # noqa: E402

pytestmark = [pytest.mark.firmware]
SEMIHOSTING = ["-semihosting-config", "enable=on,target=native"]
CFG = dict(basis=0, variant=0, rounding=0, seed=11, basis_seed=0, inv_tau_q8=512)


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    need("make", "make")
    need("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi")
    need("qemu-system-arm", "qemu-system-arm")
    need_module("platformio", "make -C firmware builds with PlatformIO (pip install platformio)")
    return build_firmware(tmp_path_factory.mktemp("fw-ckpt"), arena_bytes=16384, blob_bytes=65536)


def reference_weights(blob, xs, steps):
    """The in-process dispatcher trained without interruption: what the board must hold."""
    from host import protocol as P
    ref = P.Link(P.SimulatedPort())
    ref.load_model(blob)
    ref.set_config(**CFG)
    for i in range(steps):
        ref.train(xs[i % len(xs)], i % 10)
    return ref.read_weights()


class PowerOn:
    """One QEMU run on the flash file in `d`: link up, model loaded (LOAD resets to the file's
    weights), then the newest checkpoint restored."""

    def __init__(self, elf, d, blob):
        from host import protocol as P
        from host.stream import QemuBoard
        self.board = QemuBoard(str(elf), extra_args=SEMIHOSTING, cwd=str(d))
        self.port = self.board.connect()
        self.link = P.Link(self.port)
        self.boot_info = self.link.sync()
        self.link.load_model(blob)

    def close(self):
        self.port.close()
        return self.board.close()


def test_power_cuts_on_the_emulated_m4_flash(elf, tiny, tmp_path):
    from serial import SerialException
    from host import protocol as P
    from host.flashsim import (FLASH_FILE, POWER_CUT_EXIT, make_flash_file, read_flash_file,
                               region_bytes_for, set_flash_cut)
    from host.modelfile import train_ram_bytes
    model, blob, calib = tiny
    xs = [model.quantize_input(c) for c in calib]
    path = tmp_path / FLASH_FILE
    make_flash_file(path, region_bytes_for(train_ram_bytes(blob) + 16 * 8))

    # power-on 1: train 4 steps with a checkpoint every 2 (steps 2 and 4)
    run = PowerOn(elf, tmp_path, blob)
    ck = run.boot_info.checkpoint
    assert ck["flash"] and ck["found"] == "none"
    assert run.link.checkpoint("restore") == 0                   # TL_CKPT_NONE: blank flash
    run.link.set_config(**CFG)
    run.link.ckpt_config(every=2, epoch=0, index=0, tag=[7] * 8)
    for i in range(4):
        run.link.train(xs[i], i % 10)
    info = run.link.info()
    assert info.checkpoint["saves"] == 2 and info.checkpoint["status"] == 0
    assert [s["generation"] for s in info.checkpoint["slots"]] == [1, 2]
    w4 = run.link.read_weights()
    assert w4 == reference_weights(blob, xs, 4)
    run.close()
    _, t = read_flash_file(path)
    per_save = t["ops"] // 2
    assert t["violations"] == 0 and t["erases"] > 0

    # power-ons 2..: each restores step 4, trains steps 5 and 6 (whose checkpoint goes to slot A)
    # and loses power at one erase/program of that save: the first erase, a data page, the record
    outcomes = []
    for cut in (1, per_save // 2, per_save):
        set_flash_cut(path, cut)
        run = PowerOn(elf, tmp_path, blob)
        assert run.link.checkpoint("restore") == 1               # TL_CKPT_RESTORED
        assert run.link.info().steps == 4 and run.link.read_weights() == w4
        run.link.train(xs[4], 4)
        with pytest.raises((P.ProtocolError, SerialException)):  # no answer: the board stopped
            run.link.train(xs[5], 5)
        code = run.close()
        assert code == POWER_CUT_EXIT
        outcomes.append(code)
    _, t = read_flash_file(path)
    assert t["cuts"] == 3 and t["violations"] == 0

    # the last power-on: previous checkpoint (step 4) back; steps 5, 6 again -> the uninterrupted weights
    run = PowerOn(elf, tmp_path, blob)
    assert run.boot_info.checkpoint["slots"][1]["state"] == "valid"
    assert run.link.checkpoint("restore") == 1
    info = run.link.info()
    assert info.steps == 4 and info.checkpoint["index"] == 4 and info.checkpoint["tag"] == [7] * 8
    run.link.train(xs[4], 4)
    run.link.train(xs[5], 5)                                     # checkpoint at step 6 completes
    assert run.link.read_weights() == reference_weights(blob, xs, 6)
    assert run.link.info().checkpoint["slots"][0]["generation"] == 3
    run.close()


@pytest.fixture(scope="module")
def default_elf(elf, tmp_path_factory):
    """The firmware with its default buffers (1 MB blob, 256 KB arena): room for the 96x96 net."""
    return build_firmware(tmp_path_factory.mktemp("fw-default"))


def test_stream_resume_after_sigkill_and_board_reset_equals_uninterrupted_and_simulate(default_elf, tmp_path):
    """The must-show (bench/resume_demo.py): 32 samples, host.stream SIGKILLed after sample 13, the
    board (QEMU) killed after sample 21, resumed twice: weights_sha256 equal to an uninterrupted
    host.stream run and to host.simulate; then a resume with other options is refused, naming them."""
    import json
    import subprocess
    sys.path.insert(0, str(ROOT / "bench"))
    import resume_demo
    out = tmp_path / "demo.json"
    elf = default_elf
    assert resume_demo.main(["--elf", str(elf), "--dir", str(tmp_path / "run"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["equal"] and res["run_a"]["exit"] == -9 and res["run_b"]["exit"] == 2
    assert [(r["epoch"], r["index"]) for r in res["resumes"]] == [(0, 12), (1, 4)]
    refused = subprocess.run(resume_demo.stream_cmd(elf, ["--checkpoint-every", "4", "--flash-dir",
                                                          str(tmp_path / "run" / "flash"), "--resume",
                                                          "--lr-schedule", "constant"]),
                             cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2 and "training options" in refused.stderr, refused.stderr
