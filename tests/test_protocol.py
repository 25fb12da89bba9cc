"""The serial protocol: C codec (through cffi) against an independent Python oracle, the device
dispatcher (ccore/src/tl_proto_dev.c) running in process, and the host client on a damaged link.
Fast: no board, no emulator."""
from __future__ import annotations

import hashlib
import random
import struct
import zlib

import numpy as np
import pytest

from host import protocol as P
from host._tinylls import lib

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD


# ---------------------------------------------------------------- oracle
def ref_frame(op, flags, seq, payload):
    body = struct.pack("<BBHI", op, flags, seq, len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def ref_slip(frame):
    out = bytearray([END])
    for b in frame:
        out += bytes([ESC, ESC_END]) if b == END else bytes([ESC, ESC_ESC]) if b == ESC else bytes([b])
    return bytes(out + bytes([END]))


def nak_code(frame_bytes):
    fr = P.check(frame_bytes)
    assert fr.flags & P.F_RESP
    return struct.unpack_from("<i", fr.payload)[0], fr


def sim_roundtrip(port, wire):
    """Bytes the simulated device answers to `wire`, split into checked frames."""
    port.rx.clear()
    port.write(wire)
    return [P.check(f) for f in P.Decoder().feed(bytes(port.rx)) if isinstance(f, bytes)]


# ---------------------------------------------------------------- codec
@pytest.mark.parametrize("n", [0, 1, 7, 255, 1000, P.MAX_PAYLOAD])
def test_encode_matches_oracle_and_round_trips(n):
    rng = random.Random(n)
    payload = bytes(rng.choice([END, ESC, 0, 1, 0x7F, 0xFF, rng.randrange(256)]) for _ in range(n))
    wire = P.encode(9, 0xBEEF, payload, flags=3)
    assert wire == ref_slip(ref_frame(9, 3, 0xBEEF, payload))
    frames = P.Decoder().feed(wire)
    assert frames == [ref_frame(9, 3, 0xBEEF, payload)]
    assert P.check(frames[0]) == P.Frame(9, 3, 0xBEEF, payload)


def test_decoder_byte_by_byte_equals_bulk_and_skips_noise():
    wires = [P.encode(op, op * 3, bytes([END, ESC] * op)) for op in range(1, 6)]
    stream = b"\xc0\xc0" + b"".join(wires) + b"\xc0"
    d = P.Decoder()
    one = [x for b in stream for x in d.feed(bytes([b]))]
    assert one == P.Decoder().feed(stream)
    assert [P.check(f).op for f in one] == [1, 2, 3, 4, 5]


def test_decoder_reports_bad_escape_and_oversize_then_recovers():
    good = P.encode(1, 1)
    d = P.Decoder()
    assert d.feed(b"\xc0\x01\xdb\x05\x02\x03\xc0" + good) == [lib.TL_PROTO_ERR_MALFORMED, P.Decoder().feed(good)[0]]
    big = b"\xc0" + b"\x11" * (lib.TL_PROTO_MAX_FRAME + 1) + b"\xc0"
    items = d.feed(big + good)
    assert items[0] == lib.TL_PROTO_ERR_OVERSIZE and P.check(items[1]).op == 1 and len(items) == 2
    # exactly MAX_FRAME bytes is still a frame (it fails only the CRC check)
    items = d.feed(b"\xc0" + b"\x11" * lib.TL_PROTO_MAX_FRAME + b"\xc0")
    assert len(items) == 1 and len(items[0]) == lib.TL_PROTO_MAX_FRAME


def test_check_rejects_every_single_byte_flip():
    frame = ref_frame(6, 0, 77, bytes(range(40)))
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x5A
        with pytest.raises(P.ProtocolError, match="CRC32"):
            P.check(bytes(bad))


def test_check_rejects_length_field_lie_and_short_frames():
    body = struct.pack("<BBHI", 1, 0, 5, 3) + b"ab"            # says 3 bytes, carries 2
    with pytest.raises(P.ProtocolError, match="MALFORMED"):
        P.check(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(P.ProtocolError, match="MALFORMED"):
        P.check(b"\x01\x02\x03")


def test_encode_refuses_oversize_payload():
    with pytest.raises(ValueError, match="OVERSIZE"):
        P.encode(1, 1, b"\0" * (P.MAX_PAYLOAD + 1))


def test_strerror_names_protocol_and_core_codes():
    assert P.strerror(lib.TL_PROTO_ERR_LABEL).startswith("TL_PROTO_ERR_LABEL")
    assert "label" in P.strerror(lib.TL_ERR_LABEL).lower()
    assert P.op_name(lib.TL_PROTO_OP_TRAIN) == "TRAIN"


# ---------------------------------------------------------------- device dispatcher
def test_info_on_a_fresh_device():
    link = P.Link(P.SimulatedPort(blob_cap=4096, arena_cap=1024, input_cap=256, board="unit"))
    info = link.sync()
    assert (info.proto, info.loaded, info.blob_cap, info.arena_cap, info.input_cap, info.board) == \
           (lib.TL_PROTO_VERSION, False, 4096, 1024, 256, "unit")


def test_bad_frames_get_naks_change_nothing_and_device_keeps_running():
    port = P.SimulatedPort(blob_cap=4096)
    stats0 = sim_roundtrip(port, P.encode(lib.TL_PROTO_OP_STATS, 1))[0].payload
    # corrupted CRC
    wire = bytearray(P.encode(lib.TL_PROTO_OP_RESET, 2))
    wire[-3] ^= 0x01
    (nak,) = sim_roundtrip(port, bytes(wire))
    assert nak.flags & P.F_NAK and struct.unpack_from("<i", nak.payload)[0] == lib.TL_PROTO_ERR_CRC
    # oversize and bad escape
    (nak,) = sim_roundtrip(port, b"\xc0" + b"\x01" * 3000 + b"\xc0")
    assert struct.unpack_from("<i", nak.payload)[0] == lib.TL_PROTO_ERR_OVERSIZE
    (nak,) = sim_roundtrip(port, b"\xc0\x01\x00\xdb\x00\xc0")
    assert struct.unpack_from("<i", nak.payload)[0] == lib.TL_PROTO_ERR_MALFORMED
    # unknown command, wrong payload sizes, commands needing a model
    for op, payload, code in [(0x55, b"", lib.TL_PROTO_ERR_UNKNOWN_OP),
                              (lib.TL_PROTO_OP_INFO, b"x", lib.TL_PROTO_ERR_PAYLOAD),
                              (lib.TL_PROTO_OP_TRAIN, b"\0" * 11, lib.TL_PROTO_ERR_PAYLOAD),
                              (lib.TL_PROTO_OP_TRAIN, b"\0" * 12, lib.TL_PROTO_ERR_NO_MODEL),
                              (lib.TL_PROTO_OP_EVAL, b"\0" * 12, lib.TL_PROTO_ERR_NO_MODEL),
                              (lib.TL_PROTO_OP_INPUT, b"\0" * 8, lib.TL_PROTO_ERR_NO_MODEL),
                              (lib.TL_PROTO_OP_READ_WEIGHTS, b"\0" * 8, lib.TL_PROTO_ERR_NO_MODEL),
                              (lib.TL_PROTO_OP_LOAD_DATA, b"\0" * 8, lib.TL_PROTO_ERR_NO_LOAD),
                              (lib.TL_PROTO_OP_LOAD_END, b"", lib.TL_PROTO_ERR_NO_LOAD),
                              (lib.TL_PROTO_OP_LOAD_BEGIN, struct.pack("<II", 4097, 0), lib.TL_PROTO_ERR_TOO_BIG)]:
        with pytest.raises(P.DeviceError) as e:
            P.Link(port, first_seq=op * 7).command(op, payload)
        assert e.value.code == code, (op, P.strerror(e.value.code))
    st = P.Link(port, first_seq=999).device_stats()
    assert st["frames_crc"] == 1 and st["frames_oversize"] == 1 and st["frames_malformed"] == 1
    assert st["unknown_ops"] == 1 and st["loads"] == 0 and st["train_steps"] == 0
    assert len(stats0) == 4 + 4 * lib.TL_PROTO_N_STATS


def test_retransmitted_command_is_answered_from_cache_not_executed():
    port = P.SimulatedPort()
    wire = P.encode(lib.TL_PROTO_OP_STATS, 42)
    first = sim_roundtrip(port, wire)
    again = sim_roundtrip(port, wire)
    # STATS executed twice would count one more received frame; the cached answer is identical
    assert again == first
    fresh = sim_roundtrip(port, P.encode(lib.TL_PROTO_OP_STATS, 43))[0]
    names = dict(zip(P.STAT_NAMES, struct.unpack_from(f"<{lib.TL_PROTO_N_STATS}I", fresh.payload, 4)))
    assert names["duplicates"] == 1 and names["frames_ok"] == 3
    # a different command reusing the seq is not a duplicate (seq and CRC must both match)
    other = sim_roundtrip(port, P.encode(lib.TL_PROTO_OP_INFO, 43))
    assert [f.op for f in other] == [lib.TL_PROTO_OP_INFO] * 2 and other[0].flags & P.F_BUSY


def test_model_load_verifies_crc_before_use():
    link = P.Link(P.SimulatedPort())
    blob = bytes(random.Random(1).randrange(256) for _ in range(5000))
    link.command(lib.TL_PROTO_OP_LOAD_BEGIN, struct.pack("<II", len(blob), zlib.crc32(blob) ^ 1))
    link._chunked(lib.TL_PROTO_OP_LOAD_DATA, blob)
    with pytest.raises(P.DeviceError, match="TL_PROTO_ERR_MODEL_CRC"):
        link.command(lib.TL_PROTO_OP_LOAD_END)
    with pytest.raises(P.DeviceError) as e:          # right CRC: the model file parser rejects it
        link.load_model(blob)
    assert e.value.code not in (lib.TL_PROTO_ERR_MODEL_CRC, 0) and e.value.op == lib.TL_PROTO_OP_LOAD_END
    with pytest.raises(P.DeviceError, match="TL_PROTO_ERR_RANGE"):
        link.command(lib.TL_PROTO_OP_LOAD_BEGIN, struct.pack("<II", 100, 0))
        link.command(lib.TL_PROTO_OP_LOAD_DATA, struct.pack("<I", 90) + b"\0" * 11)
    assert not link.info().loaded


# ---------------------------------------------------------------- damaged link
class Damager:
    """Deterministic link damage for SimulatedPort: drops whole writes, flips bytes."""

    def __init__(self, seed, flip, drop):
        self.rng, self.flip, self.drop = random.Random(seed), flip, drop
        self.dropped = self.flipped = 0

    def __call__(self, data: bytes) -> bytes:
        if self.rng.random() < self.drop:
            self.dropped += 1
            return b""
        out = bytearray(data)
        for i in range(len(out)):
            if self.rng.random() < self.flip:
                out[i] ^= self.rng.randrange(1, 256)
                self.flipped += 1
        return bytes(out)


def test_link_delivers_intact_data_through_flips_and_drops():
    port = P.SimulatedPort()
    port.tx_filter = up = Damager(1, flip=3e-3, drop=0.05)
    port.rx_filter = down = Damager(2, flip=3e-3, drop=0.05)
    link = P.Link(port)
    link.ack_timeout = 0.01
    blob = bytes(random.Random(3).randrange(256) for _ in range(20000))
    with pytest.raises(P.DeviceError) as e:
        link.load_model(blob)
    # the device got every byte right (its CRC check passed); only the model parser said no
    assert e.value.code != lib.TL_PROTO_ERR_MODEL_CRC and e.value.op == lib.TL_PROTO_OP_LOAD_END
    assert up.flipped and up.dropped and down.dropped and link.stats.retransmits > 0
    assert link.chunk < P.CHUNK_MAX                  # the chunk size adapted to the error rate
    port.tx_filter = port.rx_filter = None
    st = link.device_stats()
    assert st["frames_crc"] + st["frames_malformed"] > 0 and st["duplicates"] > 0


def test_no_answer_is_a_clear_error():
    class Dead:
        timeout, portstr, in_waiting = 0.01, "dead://", 0

        def write(self, b):
            return len(b)

        def read(self, n=1):
            return b""

    link = P.Link(Dead())
    link.ack_timeout = 0.01
    with pytest.raises(P.NoAnswerError, match="no answer to INFO.*dead://"):
        link.sync(attempts=2)


# ---------------------------------------------------------------- with a real (tiny) model
# tl_modelfile_load gives a loaded model host.core.CModel's default configuration (square basis,
# stochastic rounding, seed 0, basis seed 0, tau 0.5 = host.simulate.TAU): no SET_CONFIG needed
# for the host and the device to agree with defaults.

# `tiny` (conftest.py): a small digits model, its model file and its calibration images

def test_train_repeated_after_lost_ack_trains_once(tiny):
    model, blob, calib = tiny
    port = P.SimulatedPort()
    link = P.Link(port)
    link.load_model(blob)
    x = model.quantize_input(calib[0])
    n, crc = link.put_input(x)
    w0 = link.read_weights()
    wire = P.encode(lib.TL_PROTO_OP_TRAIN, 500, struct.pack("<iII", 3, n, crc))
    first = [f for f in sim_roundtrip(port, wire) if not f.flags & P.F_BUSY]
    again = sim_roundtrip(port, wire)                # the ACK was "lost": same frame again
    again2 = sim_roundtrip(port, wire)
    assert again == first == again2                  # cached answer, no BUSY, no new step
    w1 = P.Link(port, first_seq=600).read_weights()
    assert w1 != w0 and P.Link(port, first_seq=700).info().steps == 1
    # the same control with a fresh seq does train again: the check above could fail
    sim_roundtrip(port, P.encode(lib.TL_PROTO_OP_TRAIN, 501, struct.pack("<iII", 3, n, crc)))
    assert P.Link(port, first_seq=800).info().steps == 2


def test_read_weights_answer_is_streamed_and_repeated_identically(tiny):
    """READ_WEIGHTS answers are not kept whole (the device caches TL_PROTO_MAX_RESP bytes): the data
    is re-read from the model for a retransmission, and the bytes on the wire are the same frame."""
    model, blob, calib = tiny
    port = P.SimulatedPort()
    link = P.Link(port)
    link.load_model(blob)
    stream = link.read_weights()
    assert len(stream) > lib.TL_PROTO_MAX_DATA
    assert lib.TL_PROTO_MAX_RESP < lib.TL_PROTO_MAX_FRAME
    windows = ((0, lib.TL_PROTO_MAX_DATA), (5, 1 << 20), (len(stream) - 3, 64), (len(stream), 8))
    for seq, (off, ask) in enumerate(windows, 900):
        wire = P.encode(lib.TL_PROTO_OP_READ_WEIGHTS, seq, struct.pack("<II", off, ask))
        port.rx.clear()
        port.write(wire)
        first_bytes = bytes(port.rx)
        again = sim_roundtrip(port, wire)
        port.rx.clear()
        port.write(wire)
        assert bytes(port.rx) == first_bytes                     # byte for byte, CRC included
        n = min(ask, lib.TL_PROTO_MAX_DATA, len(stream) - off)
        want = struct.pack("<iII", 0, len(stream), off) + stream[off:off + n]
        assert first_bytes == ref_slip(ref_frame(lib.TL_PROTO_OP_READ_WEIGHTS, P.F_RESP, seq, want))
        assert again[0].payload == want
    st = P.Link(port, first_seq=50).device_stats()
    assert st["duplicates"] == 8


def test_wrong_image_size_and_bad_label_are_nakked_without_training(tiny):
    model, blob, calib = tiny
    link = P.Link(P.SimulatedPort())
    link.load_model(blob)
    w0 = link.read_weights()
    x = model.quantize_input(calib[0])
    with pytest.raises(P.DeviceError, match="TL_PROTO_ERR_RANGE"):
        link.put_input(np.zeros(x.size + 1, np.int8))
    n, crc = link.put_input(x)
    for payload, code in [(struct.pack("<iII", 10, n, crc), lib.TL_PROTO_ERR_LABEL),
                          (struct.pack("<iII", -1, n, crc), lib.TL_PROTO_ERR_LABEL),
                          (struct.pack("<iII", 1, n - 1, crc), lib.TL_PROTO_ERR_SIZE),
                          (struct.pack("<iII", 1, n, crc ^ 1), lib.TL_PROTO_ERR_INPUT_CRC)]:
        with pytest.raises(P.DeviceError) as e:
            link.command(lib.TL_PROTO_OP_TRAIN, payload)
        assert e.value.code == code
    assert link.read_weights() == w0 and link.info().steps == 0
    r = link.train(x, 1)                             # and it still trains afterwards
    assert r.steps == 1 and len(r.logits) == 10 and len(r.local_pred) == len(model.layers)


def test_device_matches_host_core_bit_for_bit(tiny):
    from host.core import CModel
    from host.model import weights_sha256
    from host import modelfile
    model, blob, calib = tiny
    host_model = modelfile.from_bytes(blob)
    cm = CModel(host_model)                          # defaults = the model file loader's
    link = P.Link(P.SimulatedPort())
    link.load_model(blob)
    labels = [3, 1, 4, 1, 5, 9, 2, 6]
    for img, y in zip(calib, labels):
        x = model.quantize_input(img)
        r_dev, r_host = link.train(x, y), cm.train_step(x, y)
        assert r_dev.pred == r_host.pred
    import hashlib
    assert hashlib.sha256(link.read_weights()).hexdigest() == weights_sha256(host_model)


# ---------------------------------------------------------------- SET_CONFIG / SET_LR
# Oracle: the payload layouts written down from tl_proto_api.h, independently of host/protocol.py.
def ref_set_config(basis, variant, rounding, seed, basis_seed, inv_tau_q8):
    return struct.pack("<iiiIIi", basis, variant, rounding, seed, basis_seed, inv_tau_q8)


def ref_set_lr(rates):
    return struct.pack("<I", len(rates)) + b"".join(struct.pack("<iiii", *r) for r in rates)


class Recorder:
    """A SimulatedPort that also keeps every byte the host wrote."""

    def __init__(self):
        self.port = P.SimulatedPort()
        self.sent = bytearray()

    def __getattr__(self, name):
        return getattr(self.port, name)

    def write(self, data):
        self.sent += data
        return self.port.write(data)


def device_code(fn):
    with pytest.raises(P.DeviceError) as e:
        fn()
    return e.value.code, e.value.detail


def lls_variant_blob(model, variant):
    """The model file of `model` with the identity LLS modulation CModel gives `variant`."""
    import copy
    from host import modelfile
    from host.core import CModel
    m = copy.deepcopy(model)
    CModel(m, variant=variant)
    return m, modelfile.to_bytes(m)


def test_set_config_and_set_lr_frames_match_the_oracle(tiny):
    model, blob, calib = tiny
    rec = Recorder()
    link = P.Link(rec, first_seq=40)
    link.load_model(blob)
    cfg = dict(basis=lib.TL_BASIS_SINE, variant=lib.TL_LLS_PLAIN, rounding=lib.TL_ROUND_NEAREST,
               seed=0xDEADBEEF, basis_seed=7, inv_tau_q8=300)
    rec.sent.clear()
    link.set_config(**cfg)
    assert bytes(rec.sent) == ref_slip(ref_frame(lib.TL_PROTO_OP_SET_CONFIG, 0, link.seq,
                                                 ref_set_config(*cfg.values())))
    assert link.info().config == cfg
    rates = [(1 << 30, -5, 0, 0), (0, 0, (1 << 31) - 1, 30), (1 << 30, -31, 1 << 30, 0), (0, 0, 0, 0)]
    rec.sent.clear()
    link.set_lr(rates)
    assert bytes(rec.sent) == ref_slip(ref_frame(lib.TL_PROTO_OP_SET_LR, 0, link.seq, ref_set_lr(rates)))
    layers = rec.port.dev.model.layers
    assert [(layers[i].lr_mult, layers[i].lr_shift, layers[i].lls_m_lr_mult, layers[i].lls_m_lr_shift)
            for i in range(len(rates))] == rates


def test_set_config_refuses_bad_values_and_changes_nothing(tiny):
    model, blob, calib = tiny
    link = P.Link(P.SimulatedPort())
    good = dict(basis=0, variant=0, rounding=0, seed=0, basis_seed=0, inv_tau_q8=512)
    assert device_code(lambda: link.set_config(**good)) == (lib.TL_PROTO_ERR_NO_MODEL, 0)
    link.load_model(blob)
    assert link.info().config == good                # the loader's defaults (= CModel's)
    link.set_config(**dict(good, seed=9, inv_tau_q8=256))
    link.train(model.quantize_input(calib[0]), 1)
    before = link.info()
    assert before.steps == 1 and before.config["seed"] == 9
    for field, bad in [("basis", 3), ("basis", -1), ("variant", 3), ("rounding", 2), ("inv_tau_q8", 0),
                       ("inv_tau_q8", (1 << 16) + 1), ("inv_tau_q8", -512)]:
        code, detail = device_code(lambda: link.set_config(**dict(good, **{field: bad})))
        assert (code, detail) == (lib.TL_PROTO_ERR_CONFIG, P.CONFIG_FIELDS.index(field)), (field, bad)
    # LLS-M on a file without lls_m arrays: the core refuses (its trainable hidden layers need them)
    code, detail = device_code(lambda: link.set_config(**dict(good, variant=lib.TL_LLS_M)))
    assert (code, detail) == (lib.TL_ERR_MODEL, P.CONFIG_FIELDS.index("variant"))
    assert device_code(lambda: link.command(lib.TL_PROTO_OP_SET_CONFIG, b"\0" * 23)) == \
        (lib.TL_PROTO_ERR_PAYLOAD, 24)
    after = link.info()
    assert (after.config, after.steps, after.weights_crc) == (before.config, 1, before.weights_crc)
    # the control: a valid SET_CONFIG is taken and restarts the step counter
    link.set_config(**dict(good, basis=lib.TL_BASIS_RANDOM, basis_seed=5, inv_tau_q8=65536))
    after = link.info()
    assert after.steps == 0 and after.config == dict(good, basis=2, basis_seed=5, inv_tau_q8=65536)


def test_set_config_variant_must_fit_the_files_lls_m(tiny):
    from host.core import CModel
    from host.model import weights_sha256
    model, blob, calib = tiny
    m_model, m_blob = lls_variant_blob(model, "m")
    link = P.Link(P.SimulatedPort())
    link.load_model(m_blob)
    assert link.info().config["variant"] == lib.TL_LLS_M
    code, detail = device_code(lambda: link.set_config(basis=0, variant=lib.TL_LLS_MXM, rounding=0, seed=0,
                                                      basis_seed=0, inv_tau_q8=512))
    assert (code, detail) == (lib.TL_PROTO_ERR_CONFIG, P.CONFIG_FIELDS.index("variant"))
    # PLAIN ignores the modulation; READ_WEIGHTS still carries it whole, as weights_sha256 hashes it
    link.set_config(basis=0, variant=lib.TL_LLS_PLAIN, rounding=0, seed=0, basis_seed=0, inv_tau_q8=512)
    cm = CModel(m_model, variant="plain")
    for img, y in zip(calib[:3], [2, 7, 1]):
        assert link.train(model.quantize_input(img), y).pred == cm.train_step(model.quantize_input(img), y).pred
    import hashlib
    assert hashlib.sha256(link.read_weights()).hexdigest() == weights_sha256(m_model)


def test_set_lr_refuses_bad_rates_and_changes_nothing(tiny):
    from host import modelfile
    from host.core import CModel
    from host.model import weights_sha256
    from host.stream import layer_rates
    model, blob, calib = tiny
    link = P.Link(P.SimulatedPort())
    assert device_code(lambda: link.set_lr([(0, 0, 0, 0)] * 4))[0] == lib.TL_PROTO_ERR_NO_MODEL
    link.load_model(blob)
    n = len(model.layers)
    ok = [(1 << 30, -3, 0, 0)] * n
    for rates, want in [(ok[:-1], (lib.TL_PROTO_ERR_PAYLOAD, 4 + 16 * n)),
                        (ok + ok[:1], (lib.TL_PROTO_ERR_PAYLOAD, 4 + 16 * n)),
                        (ok[:2] + [((1 << 30) - 1, -3, 0, 0)] + ok[3:], (lib.TL_ERR_QUANT, 2)),
                        (ok[:1] + [(1 << 30, 31, 0, 0)] + ok[2:], (lib.TL_ERR_QUANT, 1)),
                        (ok[:3] + [(0, 0, 1 << 30, -32)], (lib.TL_ERR_QUANT, 3)),
                        (ok[:3] + [(0, 0, -(1 << 30), 0)], (lib.TL_ERR_QUANT, 3))]:
        assert device_code(lambda: link.set_lr(rates)) == want, rates
    # nothing was applied, not even the valid layers before the bad one: the device still trains
    # with the file's rates, bit for bit like the host core with the model's own lr
    host_model = modelfile.from_bytes(blob)
    cm = CModel(host_model)
    for img, y in zip(calib[:3], [3, 1, 4]):
        x = model.quantize_input(img)
        assert link.train(x, y).pred == cm.train_step(x, y).pred
    import hashlib
    assert hashlib.sha256(link.read_weights()).hexdigest() == weights_sha256(host_model)
    assert layer_rates(host_model)[0] != ok[0]       # so a partial update would have shown


def test_device_follows_config_and_lr_schedule_like_the_simulation(tiny):
    """The host.stream recipe (SET_CONFIG from the CModel, SET_LR per epoch from layer_rates) on the
    in-process device, against host.simulate's recipe (apply_lr + refresh_learning_rates)."""
    import copy
    import hashlib
    from host.core import CModel
    from host.model import weights_sha256
    from host.simulate import apply_lr, lr_factor
    from host.stream import core_config, layer_rates
    model, _, calib = tiny
    labels = [3, 1, 4, 1, 5, 9, 2, 6]
    cfg = dict(basis="sine", variant="m", rounding="stochastic", seed=11, tau=0.25)

    def simulate(with_schedule_on_device=True):
        sim = copy.deepcopy(model)
        nets_lr = [(L.lr, L.lls_m_lr) for L in sim.layers]
        cm = CModel(sim, **cfg)                      # gives the hidden layers their lls_m
        from host import modelfile
        blob = modelfile.to_bytes(sim)
        link = P.Link(P.SimulatedPort())
        link.load_model(blob)
        link.set_config(**core_config(cm))
        for epoch in range(3):
            apply_lr(sim, nets_lr, lr_factor("cosine", epoch, 3))
            cm.refresh_learning_rates()
            rates = layer_rates(sim)
            # exactly what the simulation's core got
            assert rates == [(L.lr_mult, L.lr_shift, L.lls_m_lr_mult, L.lls_m_lr_shift) if L.trainable
                             else (0, 0, 0, 0) for L in cm._layers[0:len(sim.layers)]]
            if with_schedule_on_device or epoch == 0:
                link.set_lr(rates)
            for img, y in zip(calib, labels):
                x = sim.quantize_input(img)
                r_dev, r_host = link.train(x, y), cm.train_step(x, y)
                if with_schedule_on_device:
                    assert r_dev.pred == r_host.pred
        dev_sha = hashlib.sha256(link.read_weights()).hexdigest()
        return dev_sha, weights_sha256(sim), link.info()

    dev_sha, host_sha, info = simulate()
    assert dev_sha == host_sha and info.steps == 3 * len(labels)
    assert info.config == dict(basis=lib.TL_BASIS_SINE, variant=lib.TL_LLS_M, rounding=lib.TL_ROUND_STOCHASTIC,
                               seed=11, basis_seed=0, inv_tau_q8=1024)
    # the control: without the schedule on the device, the weights differ
    dev_sha, host_sha, _ = simulate(with_schedule_on_device=False)
    assert dev_sha != host_sha


def test_retransmitted_set_config_is_not_executed_twice(tiny):
    model, blob, calib = tiny
    port = P.SimulatedPort()
    link = P.Link(port, first_seq=100)
    link.load_model(blob)
    wire = P.encode(lib.TL_PROTO_OP_SET_CONFIG, 900, ref_set_config(0, 0, 0, 4, 0, 512))
    first = sim_roundtrip(port, wire)
    again = sim_roundtrip(port, wire)
    assert first == again and first[0].flags == P.F_RESP and not first[0].flags & P.F_BUSY
    wire_lr = P.encode(lib.TL_PROTO_OP_SET_LR, 901, ref_set_lr([(1 << 30, -8, 0, 0)] * len(model.layers)))
    assert sim_roundtrip(port, wire_lr) == sim_roundtrip(port, wire_lr)
    st = P.Link(port, first_seq=950).device_stats()
    assert st["duplicates"] == 2


# ---------------------------------------------------------------- model in flash, input in the arena
def test_model_in_flash_with_input_in_the_arena_trains_like_the_host(tiny):
    """The firmware layout of issue 6 (make MODEL=...): the model file in "flash", only its trainable
    tensors in a RAM buffer of exactly their size, the input staged inside the arena. A LOAD of that
    file sends no data; training matches the host core bit for bit; a reload restores the file's
    weights; another file that fits the RAM buffer still loads over the link."""
    from host import modelfile
    from host.core import CModel
    from host.model import weights_sha256
    model, blob, calib = tiny
    dev_blob = modelfile.strip_host(blob)
    need = modelfile.train_ram_bytes(blob)
    with pytest.raises(ValueError, match="RAM for the trainable tensors"):
        P.SimulatedPort(blob_cap=need - 4, input_cap=0, rom=dev_blob)
    with pytest.raises(ValueError, match="TL_PROTO_ERR_ARENA"):
        P.SimulatedPort(blob_cap=need, arena_cap=64, input_cap=0, rom=dev_blob)
    link = P.Link(P.SimulatedPort(blob_cap=need, input_cap=0, rom=dev_blob))
    info = link.sync()
    assert info.loaded and info.model_in_flash and info.input_in_arena and info.input_cap == 0
    assert (info.rom_size, info.rom_crc) == (len(dev_blob), zlib.crc32(dev_blob))
    assert info.blob_cap == need < len(dev_blob) and info.weights_bytes == need
    w0 = link.read_weights()
    resident = link.command(lib.TL_PROTO_OP_LOAD_BEGIN, struct.pack("<II", len(dev_blob), zlib.crc32(dev_blob)))
    assert struct.unpack_from("<I", resident)[0] == 1
    with pytest.raises(P.DeviceError) as e:
        link.command(lib.TL_PROTO_OP_LOAD_DATA, struct.pack("<I", 0) + dev_blob[:16])
    assert e.value.code == lib.TL_PROTO_ERR_IN_FLASH and "flash" in P.strerror(e.value.code)
    before = link.stats.bytes_tx
    loaded = link.load_model(blob)                   # the full file: recognised by its stripped twin
    assert loaded["resident"] and (loaded["model_size"], loaded["model_crc"]) == (info.rom_size, info.rom_crc)
    assert link.stats.bytes_tx - before < 100        # LOAD_BEGIN + LOAD_END only
    cm = CModel(modelfile.from_bytes(blob))
    labels = [3, 1, 4, 1, 5, 9]
    for img, y in zip(calib, labels):
        x = model.quantize_input(img)
        r = link.train(x, y)
        assert r.pred == cm.train_step(x, y).pred
        assert link.evaluate(x).local_pred == cm.infer(x, with_local=True).local_pred.tolist()
    assert hashlib.sha256(link.read_weights()).hexdigest() == weights_sha256(cm.model)
    # a step consumes the staged input (layer 1 writes over it): the next one must stage it again
    n, crc = link.put_input(x)
    link.command(lib.TL_PROTO_OP_TRAIN, struct.pack("<iII", 0, n, crc))
    with pytest.raises(P.DeviceError) as e:
        link.command(lib.TL_PROTO_OP_TRAIN, struct.pack("<iII", 0, n, crc))
    assert e.value.code == lib.TL_PROTO_ERR_INPUT_CRC
    link.load_model(blob)
    assert link.read_weights() == w0 and link.info().steps == 0
    # a file of another model that fits the buffer loads over the link, in place, not "in flash"
    small = modelfile.strip_host(modelfile.to_bytes(_tiny_fc()))
    assert len(small) <= need
    assert not link.load_model(small)["resident"]
    info = link.info()
    assert info.loaded and not info.model_in_flash and info.model_crc == zlib.crc32(small)
    with pytest.raises(P.DeviceError) as e:          # not a model file: the device's parser says so
        link.load_model(b"not a model file" * 4)
    assert e.value.op == lib.TL_PROTO_OP_LOAD_END and e.value.code == lib.TL_ERR_MAGIC
    assert link.load_model(blob)["resident"] and link.read_weights() == w0


def _tiny_fc():
    from host.model import Layer, Model
    rng = np.random.default_rng(1)
    fc = Layer("fc", (2, 2, 1), (1, 1, 2), act="none", in_scale=0.02, in_zp=0, out_scale=0.05, out_zp=0,
               w_scale=np.full(2, 0.01), weights=rng.integers(-100, 100, (2, 4)).astype(np.int8),
               bias=np.zeros(2, np.int32), lr=0.01, name="fc")
    return Model([fc], classes=2, input_scale=0.02, input_zp=0, name="tiny-fc")
