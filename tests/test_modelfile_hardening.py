"""Issue 18, defects 4 and 5: the host reads a model file exactly when the board's loader does, and
a malformed file is one ModelFileError naming the file and the field, in every tool.

Defect 4: host.modelfile.load accepted files tl_modelfile_load refuses (an input of 65,536 rows, a
          layer height of 2e9).
Defect 5: files with a valid CRC but broken content raised KeyError ('lr', 'leaky_alpha', 'name',
          'meta') and OverflowError out of host.simulate.
The mutation loop re-computes the CRC after each mutation, so every mutant reaches the content
checks; it compares host.modelfile.from_bytes with tl_modelfile_load called here directly."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from test_modelfile import c_load, small_model

from host import modelfile
from host.modelfile import (
    LAYER_ENTRY_BYTES,
    LAYER_FIELDS,
    LAYER_TABLE_OFF,
    ModelFileError,
)

HEADER_WORDS = ("classes", "in_h", "in_w", "in_c", "input_zp", "n_layers", "layer_table_off",
                "layer_entry_bytes", "data_off", "host_off", "host_len", "json_len")


def with_crc(blob) -> bytes:
    b = bytearray(blob)
    struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:])))
    return bytes(b)


def layer_word(i: int, field: str) -> int:
    return LAYER_TABLE_OFF + i * LAYER_ENTRY_BYTES + 4 * LAYER_FIELDS.index(field)


def set_word(blob: bytes, off: int, value: int) -> bytes:
    b = bytearray(blob)
    struct.pack_into("<I", b, off, value & 0xFFFFFFFF)
    return with_crc(b)


def with_json(blob: bytes, edit) -> bytes:
    """`blob` with its host JSON replaced by edit(doc), padded with spaces to the same length (so the
    scale arrays after it stay where the table says)."""
    hdr = modelfile.read_header(blob)
    doc = json.loads(blob[hdr["host_off"]: hdr["host_off"] + hdr["json_len"]])
    edit(doc)
    js = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert len(js) <= hdr["json_len"], "the edit must not lengthen the JSON"
    b = bytearray(blob)
    b[hdr["host_off"]: hdr["host_off"] + hdr["json_len"]] = js + b" " * (hdr["json_len"] - len(js))
    return with_crc(b)


def host_verdict(blob: bytes) -> tuple[str, str]:
    """("ok" | "ModelFileError" | other exception's name, message) of from_bytes."""
    try:
        modelfile.from_bytes(blob, where="mutant.tlm")
    except ModelFileError as e:
        return "ModelFileError", str(e)
    except Exception as e:  # noqa: BLE001 - any other class is the defect this file tests
        return type(e).__name__, str(e)
    return "ok", ""


@pytest.fixture(scope="module")
def blob() -> bytes:
    return modelfile.to_bytes(small_model())


# ------------------------------------------------------------------------------ defect 4


@pytest.mark.parametrize("field, value, named", [
    ("in_h", 65536, "in_h=65536"),                 # the model input and layer 0, consistently
    ("out_h", 2_000_000_000, "out_h=2000000000"),
])
def test_defect4_shapes_the_c_loader_refuses_are_refused_naming_the_field(blob, field, value, named):
    bad = set_word(blob, layer_word(0, field), value)
    if field == "in_h":
        bad = set_word(bad, 20, value)              # the model header's in_h too: only the size is wrong
    status = c_load(bad)[0]
    assert status == -3                            # TL_ERR_SHAPE, as the issue reports
    with pytest.raises(ModelFileError) as info:
        modelfile.from_bytes(bad, where="big.tlm")
    msg = str(info.value)
    assert msg.startswith("big.tlm: layer 0: " + named) and "code -3" in msg, msg


def test_c_loader_refusals_after_the_shapes_are_named_too(blob):
    cases = [
        (layer_word(1, "in_zp"), 5, "layer 1: in_zp=5"),                   # chaining of zero points
        (layer_word(2, "lr_shift"), 40, "layer 2: lr_mult="),               # not a quantized multiplier
        (layer_word(0, "reserved1"), 1, "layer 0: reserved1=1"),
        (layer_word(4, "kind"), 9, "layer 4: kind=9"),
        (layer_word(3, "weights_off"), 64, "layer 3: weights_off=64"),      # avgpool with a tensor
        (layer_word(3, "stride_h"), 32767, "layer 3: stride_h=32767: more than the core's 64"),   # tl_model_prepare
        (layer_word(3, "flags"), 1, "layer 3: flags=0x1: an avgpool layer has nothing to train"),
        (16, 40, "classes=40"),
        (32, 300, "input_zp=300"),
    ]
    for off, value, named in cases:
        bad = set_word(blob, off, value)
        assert c_load(bad)[0] < 0
        kind, msg = host_verdict(bad)
        assert kind == "ModelFileError" and msg.startswith("mutant.tlm: " + named) and "C loader" in msg, msg


# ------------------------------------------------------------------------------ defect 5


@pytest.mark.parametrize("edit, named", [
    (lambda d: d["layers"][0].pop("lr"), "host JSON layers[0]: field 'lr' missing"),
    (lambda d: d["layers"][1].pop("leaky_alpha"), "layers[1]: field 'leaky_alpha' missing"),
    (lambda d: d["layers"][2].pop("name"), "layers[2]: field 'name' missing"),
    (lambda d: d.pop("meta"), "field 'meta' missing"),
    (lambda d: d.update(layers=d["layers"][:2]), "host JSON layers: 2, the layer table has 5"),
    (lambda d: d["layers"][0].update(lr="fast"), "layers[0].lr='fast': not a number"),
    (lambda d: d["layers"][0].update(lr=-1.0), "layers[0].lr=-1.0"),
    (lambda d: d["layers"][0].update(lr=1e300), "layers[0].lr=1e+300"),
    (lambda d: d["layers"][1].update(leaky_alpha=None), "layers[1].leaky_alpha=None"),
    (lambda d: d["layers"][0].update(lls_m_shape=[3, 99]), "layers[0].lls_m_shape=[3, 99]"),
    (lambda d: d["layers"][0].update(lls_m_shape=[10 ** 30]), "layers[0].lls_m_shape="),
    (lambda d: d.update(input_scale=0), "input_scale=0"),
    (lambda d: d.update(meta=[]), "meta: a list"),
    (lambda d: d.update(name=7), "name=7"),
    (lambda d: d.update(layers={}), "host JSON layers: dict"),
])
def test_defect5_broken_host_json_with_a_valid_crc_is_one_named_error(blob, edit, named):
    bad = with_json(blob, edit)
    assert c_load(bad)[0] == 0                       # the board does not read this area
    kind, msg = host_verdict(bad)
    assert kind == "ModelFileError" and msg.startswith("mutant.tlm: ") and named in msg, (kind, msg)


def test_defect5_json_that_is_not_an_object_or_too_deep(blob):
    hdr = modelfile.read_header(blob)
    for text in (b"[1, 2]", b"[" * 5000 + b"]" * 5000, b"{\"a\": 1e999999}", b"\xff\xfe"):
        if len(text) > hdr["json_len"]:
            continue
        b = bytearray(blob)
        b[hdr["host_off"]: hdr["host_off"] + hdr["json_len"]] = text + b" " * (hdr["json_len"] - len(text))
        kind, msg = host_verdict(with_crc(b))
        assert kind == "ModelFileError" and "host" in msg, (text[:20], kind, msg)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5, 0.0, 5e-324])
def test_defect5_bad_float_scales_are_named(blob, value):
    hdr = modelfile.read_header(blob)
    so = modelfile.layer_entries(blob, hdr)[1]["scales_off"]
    for j in (1, 3):                                  # out_scale, then w_scale[1]
        b = bytearray(blob)
        struct.pack_into("<d", b, so + 8 * j, value)
        kind, msg = host_verdict(with_crc(b))
        if j == 3 and value in (0.0, 5e-324):
            assert kind == "ok", msg                  # a dead channel: legal (its factors are stored as 0)
            continue
        assert kind == "ModelFileError" and "layer 1 ('dw1')" in msg and ("out_scale" if j == 1 else "w_scale[1]") in msg, \
            (value, j, kind, msg)


def test_defect5_scales_off_outside_the_host_area(blob):
    for value in (0, 0xFFFFFFF8, len(blob) - 8, modelfile.read_header(blob)["host_off"]):
        bad = set_word(blob, layer_word(2, "scales_off"), value)
        assert c_load(bad)[0] == 0
        kind, msg = host_verdict(bad)
        assert kind == "ModelFileError" and "layer 2 ('pw1')" in msg and f"scales_off={value}" in msg, msg


def test_check_device_needs_no_host_area_but_the_c_loaders_approval(blob):
    dev = modelfile.strip_host(blob)
    assert modelfile.check_device(dev, "dev.tlm")["host_len"] == 0
    with pytest.raises(ModelFileError, match=r"^dev\.tlm: layer 0: out_h=2000000000"):
        modelfile.check_device(set_word(dev, layer_word(0, "out_h"), 2_000_000_000), "dev.tlm")


# ------------------------------------------------------------------------------ the mutation loop

# words worth setting to edge values: the boundaries of every limit the loader applies
EDGES = (0, 1, 2, 3, -1, 127, 128, -128, -129, 255, 256, 32767, 32768, 32769, 65536, 1 << 26, (1 << 26) + 1,
         1 << 30, 2_000_000_000, 0x7FFFFFFF, -0x80000000)


def mutate(blob: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One seeded mutation of a valid file, CRC re-computed; returns (bytes, what was done)."""
    hdr = modelfile.read_header(blob)
    b = bytearray(blob)
    choice = rng.integers(8)
    if hdr["json_len"] == 0 and choice in (4, 5):     # a device blob: no host-only area to mutate
        choice = 7
    if choice <= 2:                                   # a layer-table or model-header word
        n_words = (hdr["data_off"] - 16) // 4
        w = int(rng.integers(n_words))
        off = 16 + 4 * w
        old = struct.unpack_from("<i", b, off)[0]
        value = int(rng.choice(EDGES)) if choice == 0 else old + int(rng.integers(-3, 4)) if choice == 1 \
            else old ^ (1 << int(rng.integers(32)))
        struct.pack_into("<I", b, off, value & 0xFFFFFFFF)
        what = f"word at {off} {old} -> {value}"
    elif choice == 3:                                 # bytes of the tensor area (multipliers, bias)
        for _ in range(int(rng.integers(1, 4))):
            off = int(rng.integers(hdr["data_off"], hdr["host_off"]))
            b[off] = int(rng.integers(256))
        what = "tensor bytes"
    elif choice == 4:                                 # bytes of the host-only area (JSON, scales)
        for _ in range(int(rng.integers(1, 4))):
            off = int(rng.integers(hdr["host_off"], len(b)))
            b[off] = int(rng.integers(256))
        what = "host bytes"
    elif choice == 5:                                 # a JSON value replaced
        doc_len = hdr["json_len"]
        doc = json.loads(blob[hdr["host_off"]: hdr["host_off"] + doc_len])
        i = int(rng.integers(len(doc["layers"])))
        key = str(rng.choice(["lr", "leaky_alpha", "lls_m_lr", "name", "lls_m_shape"]))
        value = [None, "x", [], {}, -1, 0, 1e308, True, [1, 2], 2 ** 70][int(rng.integers(10))]
        if rng.integers(4) == 0:
            doc["layers"][i].pop(key, None)
        else:
            doc["layers"][i][key] = value
        js = json.dumps(doc, sort_keys=True).encode()[:doc_len]      # cut when it grew: broken JSON
        b[hdr["host_off"]: hdr["host_off"] + doc_len] = js + b" " * (doc_len - len(js))
        what = f"JSON layers[{i}].{key}"
    elif choice == 6:                                 # cut short or lengthened, body_len kept honest
        cut = int(rng.integers(16, len(b) + 64))
        b = b[:cut] + bytes(max(0, cut - len(b)))
        struct.pack_into("<I", b, 8, len(b) - 16)
        what = f"length {cut}"
    else:                                             # any single bit
        bit = int(rng.integers(16 * 8, len(b) * 8))
        b[bit // 8] ^= 1 << (bit % 8)
        what = f"bit {bit}"
    return with_crc(b), what


def test_mutations_host_accepts_exactly_what_the_c_loader_accepts(blob):
    from host.core import CModel
    rng = np.random.default_rng(18)
    counts = {"c_refused": 0, "both_ok": 0, "host_only_refused": 0}
    x = np.zeros((8, 8, 3), np.int8)
    unnamed = 0
    for k in range(3000):
        bad, what = mutate(blob, rng)
        c_status = c_load(bad)[0]
        kind, msg = host_verdict(bad)
        assert kind in ("ok", "ModelFileError"), f"mutation {k} ({what}): {kind}: {msg}"
        if kind == "ok":
            assert c_status == 0, f"mutation {k} ({what}): host accepts what the C loader refuses ({c_status})"
            counts["both_ok"] += 1
            if counts["both_ok"] % 10 == 1:          # an accepted file runs (what host.simulate does next)
                CModel(modelfile.from_bytes(bad)).train_step(x, 1)
        elif c_status != 0:
            counts["c_refused"] += 1
            # refused by read_header's own checks (length, CRC, header words) or by the C loader, named
            assert msg.startswith("mutant.tlm: "), f"mutation {k} ({what}): {msg}"
            if "C loader" in msg:
                assert f"code {c_status})" in msg, f"mutation {k} ({what}): {msg}"
                unnamed += "the model as a whole" in msg
        else:                                         # refused by the host alone: its own area only
            counts["host_only_refused"] += 1
            assert ("host" in msg or "scales" in msg or "scale" in msg) and msg.startswith("mutant.tlm: "), \
                f"mutation {k} ({what}): the C loader accepts, the host says: {msg}"
    # the loop must reach every verdict, or it proves nothing
    assert min(counts.values()) >= 50, counts
    # every refusal names its field (a check added to the C loader must be named in _first_problem too)
    assert unnamed == 0, (unnamed, counts)


def test_device_blobs_check_device_accepts_exactly_what_the_c_loader_accepts(blob):
    """What export-c compiles (no host-only area): here the verdicts must agree on every mutant."""
    dev = modelfile.device_identity(blob)
    rng = np.random.default_rng(19)
    agree = {True: 0, False: 0}
    for k in range(1500):
        bad, what = mutate(dev, rng)
        c_ok = c_load(bad)[0] == 0
        try:
            modelfile.check_device(bad, "dev.tlm")
            host_ok = True
        except ModelFileError as e:
            host_ok = False
            assert str(e).startswith("dev.tlm: ") and "the model as a whole" not in str(e), (k, what, str(e))
        assert host_ok == c_ok, f"mutation {k} ({what}): host {host_ok}, C loader {c_ok}"
        agree[c_ok] += 1
    assert min(agree.values()) >= 100, agree


def test_from_bytes_on_arbitrary_bytes_raises_only_model_file_errors():
    rng = np.random.default_rng(5)
    for n in list(range(80)) + [200, 1000]:
        for _ in range(5):
            raw = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            if n >= 16 and rng.integers(2):
                raw[:16] = b"TLLS" + struct.pack("<III", 1, n - 16, 0)
                raw = bytearray(with_crc(raw))
            kind, msg = host_verdict(bytes(raw))
            assert kind == "ModelFileError", (n, kind, msg)


# ------------------------------------------------------------------------------ every tool: one line, exit 2

# file name -> (how it is broken, the field its error line must name): one of each reported kind
# (the other reported fields are covered above, without a tool around them)
BROKEN = {
    "tall.tlm": (lambda b: set_word(set_word(b, layer_word(0, "in_h"), 65536), 20, 65536), "layer 0: in_h=65536"),
    "no_lr.tlm": (lambda b: with_json(b, lambda d: d["layers"][0].pop("lr")), "host JSON layers[0]: field 'lr' missing"),
    # before: OverflowError (int16_t) out of host.core.CModel, which filled the C structs itself
    "zp.tlm": (lambda b: set_word(b, layer_word(0, "in_zp"), 67_108_864), "layer 0: in_zp=67108864"),
}
# the model-file part of each tool's command line; the board/data options make them reach the model
TOOLS = {
    "host.simulate": lambda f, tmp: ["--model", f, "--data", "synthetic", "--epochs", "1", "--quiet"],
    "host.stream": lambda f, tmp: ["--model", f, "--data", "synthetic", "--port", "loop://", "--epochs", "1"],
    "host.evaluate": lambda f, tmp: ["--model", f, "--data", "synthetic", "--quiet"],
    "host.quantize": lambda f, tmp: ["export-c", f, "-o", str(tmp / "c")],
    "host.plan": lambda f, tmp: ["--model", f],
    "host.fleet": lambda f, tmp: ["--model", f, "--data", "synthetic"],
}
HOST_AREA_ONLY = {"no_lr.tlm"}     # export-c compiles the device part, which is valid


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_reading_a_model_prints_one_line_naming_file_and_field_and_exits_2(tool, blob, tmp_path, capsys):
    import importlib

    from host import cli_common
    main = importlib.import_module(tool).main
    for name, (breaking, field) in BROKEN.items():
        path = tmp_path / name
        path.write_bytes(breaking(blob))
        rc = cli_common.run_main(tool, main, TOOLS[tool](str(path), tmp_path))
        err = capsys.readouterr().err.strip().splitlines()
        if tool == "host.quantize" and name in HOST_AREA_ONLY:
            assert rc == 0, err                       # a board never reads the host-only area
            continue
        assert rc == 2 and len(err) == 1, (tool, name, rc, err)
        assert err[0].startswith(f"{tool}: error: {path}: {field}"), (tool, err[0])


def test_python_m_simulate_on_a_broken_model_file_exits_2(blob, tmp_path):
    """End to end, as the issue ran it: no traceback, one line, status 2."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    path = tmp_path / "no_lr.tlm"
    path.write_bytes(BROKEN["no_lr.tlm"][0](blob))
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "host.simulate", "--model", str(path), "--data", "synthetic"],
                       cwd=root, env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and r.stderr == f"host.simulate: error: {path}: host JSON layers[0]: field 'lr' missing\n", \
        (r.returncode, r.stderr[-2000:])


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_given_a_fifo_as_model_file_answers_at_once(tool, tmp_path, capsys):
    """host.evaluate read a model file's first 4 bytes before checking it was a regular file: a
    FIFO blocked it for ever."""
    import importlib
    import os
    import threading

    from host import cli_common
    fifo = tmp_path / "model.tlm"
    os.mkfifo(fifo)
    main = importlib.import_module(tool).main
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("rc", cli_common.run_main(tool, main, TOOLS[tool](str(fifo), tmp_path))),
                         daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():                                  # unblock the reader, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail(f"{tool} blocked reading the FIFO {fifo}")
    err = capsys.readouterr().err.strip().splitlines()
    assert box["rc"] == 2 and len(err) == 1 and err[0].startswith(f"{tool}: error: ") and str(fifo) in err[0], err
