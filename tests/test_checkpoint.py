"""Issue 12: learned weights survive power loss and restarts.

The checkpoint code of the core (ccore/src/tl_checkpoint.c) runs in this process against an
emulated NOR flash (host/flashsim.py) for the power-cut sweep, bit flips and wear figures; the
protocol's CHECKPOINT / CKPT_CONFIG / INFO words through the in-process dispatcher
(host.protocol.SimulatedPort), with a reboot = a new dispatcher on the same flash. No board."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from host import protocol as P
from host._tinylls import lib
from host.flashsim import NorFlash, region_bytes_for

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import powercut  # noqa: E402

VWW_TENSOR_BYTES = 223_160       # trainable tensors of the VWW-size MobileNetV1-0.25 96x96 net


@pytest.fixture(scope="module")
def vww():
    return powercut.vww_size_model()


# ---------------------------------------------------------------- emulated NOR
def test_nor_emulator_refuses_and_counts_zero_to_one_programs():
    fl = NorFlash(2 * 4096)
    fl.program(0, b"\x0f" * 16)
    with pytest.raises(ValueError):
        fl.program(0, b"\xf0" * 16)          # would need 0 -> 1: NOR cannot
    assert fl.violations == 1
    assert fl.mem[:16] == b"\x00" * 16       # as real NOR: only the 1 -> 0 part happened
    with pytest.raises(ValueError):
        fl.program(250, b"\x00" * 16)        # crosses a page
    fl.erase(0)
    assert fl.mem[:4096] == b"\xff" * 4096 and fl.erases == 1
    fl.program(0, b"\xf0" * 16)
    assert fl.violations == 1


# ---------------------------------------------------------------- power cuts
def test_power_cut_sweep_vww_size_every_metadata_op_and_every_16th_data_program(vww):
    """CI sweep: every erase and the commit record, every 16th data program (plus the first and
    last), and a cut after the last operation. The full sweep (every operation): bench/powercut.py."""
    res = powercut.sweep(16, vww)
    assert res["tensor_bytes"] == VWW_TENSOR_BYTES
    assert res["corrupt"] == 0, res["corrupt_points"]
    assert res["recovered_new"] == 1                          # only once the record is complete
    assert res["recovered_previous"] == res["cut_points"] - 1
    assert res["cut_points"] >= res["save_erases"] + 1 + res["data_programs"] // 16
    assert res["complete_save_status"] == 0 and res["complete_save_restores_new"]
    assert res["flash_violations"] == 0


def test_first_save_cut_leaves_original_weights(vww):
    """No checkpoint yet: a cut during the very first save restores nothing (blank/corrupt), the
    board keeps the weights of the model file."""
    model, blob, flash, rig, payload, prev, new = powercut.prepare(vww)
    flash.mem[:] = b"\xff" * flash.size
    for cut in (1, 56, 300, 930):
        flash.mem[:] = b"\xff" * flash.size
        flash.revive()
        flash.reset_counters()
        r = powercut.Rig(vww, flash, blob)
        powercut._copy_state(rig, r)
        assert r.scan() == 0
        flash.cut_at = cut
        assert r.save() == lib.TL_ERR_FLASH
        flash.revive()
        boot = powercut.Rig(vww, flash, blob)
        original = boot.fingerprint()
        s, found = boot.restore()
        assert s == 0 and found in (lib.TL_CKPT_NONE, lib.TL_CKPT_ALL_CORRUPT)
        assert boot.fingerprint() == original


# ---------------------------------------------------------------- corruption
def _two_generations(vww):
    model, blob, flash, rig, payload, prev, new = powercut.prepare(vww)   # A: gen 1, B: gen 2 (= prev)
    return blob, flash, prev, payload


def _boot(vww, flash, blob):
    b = powercut.Rig(vww, flash, blob)
    s, found = b.restore()
    assert s == 0
    return b, found


@pytest.mark.parametrize("where", ["payload_first", "payload_last", "record", "record_crc"])
def test_one_flipped_bit_in_the_newest_slot_falls_back_to_the_other(vww, where):
    blob, flash, prev, payload = _two_generations(vww)
    b, found = _boot(vww, flash, blob)
    assert found == lib.TL_CKPT_RESTORED and b.st.generation == 2 and b.fingerprint() == prev
    half = flash.size // 2                                    # slot B
    addr = {"payload_first": half + 256, "payload_last": half + 256 + payload - 1,
            "record": half + 8, "record_crc": half + 4 * 27}[where]
    flash.flip_bit(addr, 3)
    b, found = _boot(vww, flash, blob)
    assert found == lib.TL_CKPT_RESTORED and b.st.generation == 1
    assert b.slots[1].state == lib.TL_CKPT_SLOT_CORRUPT and b.slots[0].state == lib.TL_CKPT_SLOT_VALID
    assert b.fingerprint() != prev and b.st.step == 2


def test_both_slots_corrupt_keeps_original_weights_and_says_so(vww):
    blob, flash, prev, payload = _two_generations(vww)
    flash.flip_bit(256 + 1000, 0)                             # slot A payload
    flash.flip_bit(flash.size // 2 + 256 + 5000, 7)           # slot B payload
    b = powercut.Rig(vww, flash, blob)
    original = b.fingerprint()
    s, found = b.restore()
    assert s == 0 and found == lib.TL_CKPT_ALL_CORRUPT
    assert b.fingerprint() == original and b.m.step == 0


def test_generation_counter_wraps_and_the_later_save_still_wins(vww):
    """A slot at generation 2^32 - 1 (a record found on flash, CRC and all: fuzz/fuzz_checkpoint.c)
    must not outrank the saves after it: generations compare in serial-number order (RFC 1982)."""
    model, blob, flash, rig, payload, prev, new = powercut.prepare(vww)   # A: gen 1, B: gen 2 on flash
    rig.slots[0].generation, rig.slots[1].generation = 0xFFFFFFFD, 0xFFFFFFFE   # as if saved 2^32 - 2 times
    rig.m.step += 1
    assert rig.save() == 0 and rig.st.generation == 0xFFFFFFFF                  # into A
    rig.m.step += 1
    assert rig.save() == 0 and rig.st.generation == 0                           # into B: the counter wraps
    want = rig.fingerprint()
    b, found = _boot(vww, flash, blob)
    assert found == lib.TL_CKPT_RESTORED and b.st.generation == 0 and b.fingerprint() == want


def test_checkpoint_of_another_model_is_not_restored(vww):
    blob, flash, prev, payload = _two_generations(vww)
    b = powercut.Rig(vww, flash, blob)
    b.st.model_crc ^= 1                                        # a different model file
    original = b.fingerprint()
    s, found = b.restore()
    assert s == 0 and found == lib.TL_CKPT_OTHER_MODEL and b.fingerprint() == original


# ---------------------------------------------------------------- wear
def test_wear_figures_from_the_flash_counters(vww):
    w = powercut.wear(vww, checkpoints=6)
    payload = VWW_TENSOR_BYTES + 16 * 28
    assert w["bytes_programmed_per_checkpoint"] == payload + lib.TL_CKPT_RECORD_BYTES
    assert w["erases_per_checkpoint"] == -(-(256 + payload) // 4096)   # one slot's sectors
    assert w["sector_erase_cycles_per_checkpoint"] == 0.5               # A and B alternate
    assert w["flash_violations"] == 0
    assert w["checkpoints_per_hour"] > 0 and w["years_to_endurance"] > 0


# ---------------------------------------------------------------- protocol
# the `tiny` fixture (a small digits model, its model file, calibration images): conftest.py

def _tiny_flash(blob):
    from host.modelfile import train_ram_bytes
    return NorFlash(region_bytes_for(train_ram_bytes(blob) + 16 * 64))


def test_protocol_auto_checkpoint_and_restore_after_reboot_model_in_flash(tiny):
    model, blob, calib = tiny
    flash = _tiny_flash(blob)
    link = P.Link(P.SimulatedPort(rom=blob, input_cap=0, flash=flash))
    info = link.info()
    assert info.checkpoint["flash"] and info.checkpoint["found"] == "none"
    assert [s["state"] for s in info.checkpoint["slots"]] == ["blank", "blank"]
    link.load_model(blob)
    link.set_config(basis=0, variant=0, rounding=0, seed=7, basis_seed=0, inv_tau_q8=512)
    link.ckpt_config(every=3, epoch=2, index=10, tag=range(8))
    xs = [model.quantize_input(c) for c in calib]
    for i in range(5):
        link.train(xs[i], i % 10)
    info = link.info()
    ck = info.checkpoint
    assert ck["saves"] == 1 and ck["status"] == 0 and ck["index"] == 15 and ck["epoch"] == 2
    assert ck["slots"][0] == dict(state="valid", generation=1, step=3, crc=ck["slots"][0]["crc"])
    assert link.checkpoint("save") == 2                      # now: step 5, slot B
    w5 = link.read_weights()
    link.train(xs[5], 5)                                     # not checkpointed (step 6 is: every 3)
    link.train(xs[6], 6)                                     # step 7: lost with the power
    # power cut: a new dispatcher on the same flash boots and restores the newest checkpoint (step 6)
    link2 = P.Link(P.SimulatedPort(rom=blob, input_cap=0, flash=flash))
    info2 = link2.info()
    ck2 = info2.checkpoint
    assert ck2["found"] == "restored" and info2.steps == 6 and ck2["index"] == 16
    assert ck2["tag"] == list(range(8)) and ck2["every"] == 3 and info2.config["seed"] == 7
    # the steps 6 and 7 again from there: same weights as the uninterrupted device
    ref = P.Link(P.SimulatedPort(rom=blob, input_cap=0))
    ref.load_model(blob)
    ref.set_config(basis=0, variant=0, rounding=0, seed=7, basis_seed=0, inv_tau_q8=512)
    for i in range(7):
        ref.train(xs[i], i % 10)
    link2.train(xs[6], 6)
    assert link2.read_weights() == ref.read_weights()
    assert w5 != ref.read_weights()


def test_protocol_restore_command_loaded_model_and_errors(tiny):
    model, blob, calib = tiny
    link = P.Link(P.SimulatedPort())
    with pytest.raises(P.DeviceError) as e:
        link.checkpoint("save")
    assert e.value.code == lib.TL_PROTO_ERR_NO_FLASH
    assert link.info().checkpoint["flash"] is False
    flash = _tiny_flash(blob)
    link = P.Link(P.SimulatedPort(flash=flash))
    with pytest.raises(P.DeviceError) as e:
        link.checkpoint("save")
    assert e.value.code == lib.TL_PROTO_ERR_NO_MODEL
    link.load_model(blob)
    x = model.quantize_input(calib[0])
    link.train(x, 1)
    w1 = link.read_weights()
    assert link.checkpoint("save") == 1
    link.train(x, 2)
    assert link.read_weights() != w1
    # a LOAD gives the file's weights back; RESTORE brings the checkpoint
    link.load_model(blob)
    assert link.checkpoint("restore") == lib.TL_CKPT_RESTORED
    assert link.read_weights() == w1 and link.info().steps == 1
    # one flipped bit in the only slot: restore finds nothing usable, the model is untouched
    flash.flip_bit(256 + 3, 0)
    link.load_model(blob)
    w0 = link.read_weights()
    assert link.checkpoint("restore") == lib.TL_CKPT_ALL_CORRUPT
    info = link.info()
    assert info.checkpoint["found"].startswith("all corrupt") and link.read_weights() == w0
    assert info.checkpoint["slots"][0]["state"] == "corrupt"
    link.checkpoint("erase")
    assert [s["state"] for s in link.info().checkpoint["slots"]] == ["blank", "blank"]
    assert flash.violations == 0


def test_info_answer_fits_the_response_cache():
    link = P.Link(P.SimulatedPort(flash=NorFlash(4 * 4096)))
    p = link.command(lib.TL_PROTO_OP_INFO)
    assert len(p) + 4 + lib.TL_PROTO_HDR_BYTES == lib.TL_PROTO_MAX_RESP    # status + INFO words
    assert struct.unpack_from("<H", p)[0] == lib.TL_PROTO_VERSION == 5


# ---------------------------------------------------------------- resume through host.train.run
class _PowerLoss(Exception):
    pass


def test_board_run_resumed_twice_equals_the_uninterrupted_run():
    """host.train.run over host.stream.Board on the in-process dispatcher with checkpoint flash
    (LLS-M, sine basis, cosine schedule over 3 epochs of 30): the power is lost after sample 37
    and after sample 71 (the dispatcher and its RAM are thrown away, the flash is kept); each
    restart loads the model, restores the newest checkpoint (every 4 samples) and calls run with
    start = the checkpoint's data cursor. The weights equal the simulated core's uninterrupted run."""
    import copy
    import hashlib

    from host import modelfile, nets, train
    from host.core import CModel
    from host.model import weights_sha256
    from host.resume import differences, run_tag
    from host.stream import Board, core_config

    cfg = dict(basis="sine", variant="m", rounding="stochastic", seed=11, tau=0.5)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 40)
    model = nets.build("digits", seed=0, calib=x[:8], classes=10)
    nets.set_learning_rates(model, hidden=0.05, classifier=0.05, lls_m=1e-3)
    tx, ty, vx, vy = x[:30], y[:30], x[30:], y[30:]
    kw = dict(epochs=3, lr_schedule="cosine", seed=3, progress=False)

    ref_model = copy.deepcopy(model)
    train.run(train.SimulatedCore(CModel(ref_model, **cfg), threads=1), ref_model, tx, ty, vx, vy, **kw)
    want = weights_sha256(ref_model)

    m = copy.deepcopy(model)
    cm = CModel(m, **cfg)                      # gives the hidden layers their initial lls_m
    blob = modelfile.to_bytes(m)
    config = core_config(cm)
    tag = run_tag(blob, tx, ty, seed=3, epochs=3, options={"cfg": config}, every=4)
    flash = NorFlash(region_bytes_for(lib.tl_ckpt_payload_bytes(cm._m, int(cm._m.cfg.variant))))

    class Dying(Board):
        def __init__(self, link, every, tag, die_after):
            super().__init__(link, every, tag)
            self.die_after = die_after

        def train(self, xs, ys):
            out = []
            for xi, yi in zip(xs, ys):
                if self.link.info().steps >= self.die_after:
                    raise _PowerLoss
                out += super().train(xi[None], yi[None])
            return out

    starts = []
    for die_after in (37, 71, None):
        link = P.Link(P.SimulatedPort(flash=flash))
        link.load_model(blob)
        link.set_config(**config)
        start = (0, 0)
        if starts:                             # a restart: resume
            assert link.checkpoint("restore") == lib.TL_CKPT_RESTORED
            ck = link.info().checkpoint
            assert differences(tag, ck["tag"]) == []
            start = (ck["epoch"], ck["index"])
        starts.append(start)
        board = Dying(link, 4, tag, die_after if die_after is not None else 1 << 30)
        try:
            train.run(board, copy.deepcopy(m), tx, ty, vx, vy, start=start, **kw)
        except _PowerLoss:
            continue
    assert starts == [(0, 0), (1, 6), (2, 8)]           # checkpoints at steps 36 and 68
    assert hashlib.sha256(link.read_weights()).hexdigest() == want
    assert flash.violations == 0
    # another seed is another run: differences() names it
    other = run_tag(blob, tx, ty, seed=4, epochs=3, options={"cfg": config}, every=4)
    assert differences(other, tag) == ["seed: 4 here, 3 in the checkpoint"]


def test_restore_of_another_models_checkpoint_shows_its_tag(tiny):
    from host import modelfile, nets
    model, blob, calib = tiny
    other = nets.build("digits", seed=1, calib=calib, classes=10)
    nets.set_learning_rates(other, hidden=0.05, classifier=0.05)
    flash = _tiny_flash(blob)
    link = P.Link(P.SimulatedPort(flash=flash))
    link.load_model(blob)
    link.ckpt_config(0, 0, 0, tag=[9, 8, 7, 6, 5, 4, 3, 2])
    assert link.checkpoint("save") == 1
    link.load_model(modelfile.to_bytes(other))
    link.ckpt_config(0, 0, 0, tag=[0] * 8)
    w = link.read_weights()
    assert link.checkpoint("restore") == lib.TL_CKPT_OTHER_MODEL
    info = link.info()
    assert info.checkpoint["found"] == "another model's" and info.checkpoint["tag"] == [9, 8, 7, 6, 5, 4, 3, 2]
    assert link.read_weights() == w and info.steps == 0
