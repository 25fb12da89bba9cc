"""Writes the seed corpora of the fuzz targets, fuzz/corpus/NAME/, with the project's own code:
small model files (host.modelfile.to_bytes of two tiny nets built here), the wire traffic of a
session with the in-process board (host.protocol.SimulatedPort), checkpoints written by the C
core into an emulated NOR flash, a tiny .tflite (tests/tiny_tflite.py's builder) and tiny data
sets in every layout (the writers of host.datasets). Nothing comes from the reference data.

    python fuzz/make_corpus.py [--out fuzz/corpus]

Deterministic: running it again gives the same files (names are the content's sha1, as
libFuzzer names its own corpus files).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "fuzz"))

import fuzz_files  # noqa: E402
from host import modelfile  # noqa: E402
from host import protocol as P  # noqa: E402
from host._tinylls import ffi, lib  # noqa: E402
from host.flashsim import NorFlash  # noqa: E402
from host.model import Layer, Model  # noqa: E402

# record kinds of fuzz/fuzz_proto_dev.c's script
LOAD_FILE, RUN, RAW, REPEAT = 0xF0, 0xF1, 0xF2, 0xF3


def tiny_models() -> list[Model]:
    """Two nets of a few hundred bytes that still use every layer kind and file feature:
    conv (ReLU6) -> dwconv (leaky) -> avgpool -> fc with LLS-M arrays; and conv -> fc with single
    rounding, no LLS-M."""
    rng = np.random.default_rng(7)

    def layer(kind, ins, outs, k, s, pad, act, wshape, s_in, zp_in, s_out, zp_out, name):
        oc = outs[2]
        return Layer(kind, ins, outs, kernel=k, stride=s, pad=pad, act=act, in_scale=s_in, in_zp=zp_in,
                     out_scale=s_out, out_zp=zp_out, w_scale=rng.uniform(0.005, 0.03, oc),
                     weights=rng.integers(-127, 128, wshape).astype(np.int8),
                     bias=rng.integers(-500, 500, oc).astype(np.int32), lr=0.02, name=name)

    a = [layer("conv", (6, 6, 1), (3, 3, 4), (3, 3), (2, 2), (0, 0), "relu6", (4, 3, 3, 1),
               1 / 255, -128, 6 / 255, -128, "c1"),
         layer("dwconv", (3, 3, 4), (3, 3, 4), (3, 3), (1, 1), (1, 1), "leaky", (3, 3, 4),
               6 / 255, -128, 0.04, -10, "dw"),
         Layer("avgpool", (3, 3, 4), (1, 1, 4), kernel=(3, 3), stride=(3, 3), in_scale=0.04, in_zp=-10,
               out_scale=0.04, out_zp=-10, trainable=False, name="pool"),
         layer("fc", (1, 1, 4), (1, 1, 2), (1, 1), (1, 1), (0, 0), "none", (2, 4), 0.04, -10, 0.1, 0, "fc")]
    a[1].leaky_alpha = 0.2
    for L in a[:2]:
        L.lls_m = rng.integers(1 << 15, 1 << 17, 2).astype(np.int32)
        L.lls_m_lr = 0.001
    b = [layer("conv", (4, 4, 3), (2, 2, 2), (2, 2), (2, 2), (0, 0), "relu", (2, 2, 2, 3),
               1 / 255, -128, 0.05, -128, "c1"),
         layer("fc", (2, 2, 2), (1, 1, 3), (1, 1), (1, 1), (0, 0), "none", (3, 8), 0.05, -128, 0.1, 2, "fc")]
    b[1].single_rounding = True
    return [Model(a, classes=2, name="fuzz-a", meta={"note": "fuzz seed"}), Model(b, classes=3, name="fuzz-b")]


def model_files() -> list[bytes]:
    out = []
    for m in tiny_models():
        blob = modelfile.to_bytes(m)
        out += [blob, modelfile.strip_host(blob)]
    # format version 2: model a with adaptation reference statistics on its conv and dwconv layers
    # (appended, so the seeds above keep their indices)
    a = tiny_models()[0]
    rng = np.random.default_rng(11)
    for L in a.layers[:2]:
        L.adapt_ref = (rng.integers(-3000, 3000, L.out_c).astype(np.int32),
                       rng.integers(0, 5000 * 256, L.out_c).astype(np.int32))
    blob = modelfile.to_bytes(a)
    out += [blob, modelfile.strip_host(blob)]
    return out


def c_load(blob: bytes):
    """tl_modelfile_load on a copy (kept alive with the model)."""
    buf = ffi.new("uint32_t[]", (len(blob) + 3) // 4)
    ffi.memmove(buf, blob, len(blob))
    layers = ffi.new("tl_layer[]", 64)
    m = ffi.new("tl_model *")
    st = lib.tl_modelfile_load(ffi.cast("uint8_t *", buf), len(blob), layers, 64, m)
    assert st == 0, f"seed model does not load: {st}"
    return m, (buf, layers)


def session_traffic(blob: bytes, shape, classes: int) -> tuple[bytes, bytes]:
    """(host -> device bytes, device -> host bytes) of a short session with the in-process board."""
    port = P.SimulatedPort(blob_cap=1 << 16, arena_cap=1 << 17, input_cap=1 << 14)
    to_dev, to_host = bytearray(), bytearray()

    def tx(b):
        to_dev.extend(b)
        return b

    def rx(b):
        to_host.extend(b)
        return b
    port.tx_filter, port.rx_filter = tx, rx
    link = P.Link(port)
    link.sync()
    link.load_model(blob)
    x = np.arange(int(np.prod(shape)), dtype=np.int64).astype(np.int8).reshape(shape)
    link.train(x, classes - 1)
    link.evaluate(x)
    link.device_stats()
    link.read_weights()
    return bytes(to_dev), bytes(to_host)


def proto_dev_scripts(files: list[bytes]) -> list[bytes]:
    def rec(kind: int, payload: bytes = b"") -> bytes:
        return struct.pack("<BH", kind, len(payload)) + payload

    dev_blob = files[1]                         # model a, as the device receives it
    n_in = 6 * 6 * 1
    x = bytes(range(n_in))
    cfg = struct.pack("<3i2Ii", 0, 0, 1, 5, 0, 512)
    lr = struct.pack("<I", 4) + b"".join(struct.pack("<4i", 1 << 30, -10, 0, 0) for _ in range(4))
    ckpt_cfg = struct.pack("<III8I", 2, 0, 0, *range(8))
    session = (rec(P.lib.TL_PROTO_OP_INFO) + rec(LOAD_FILE, dev_blob) + rec(RUN, bytes([1, 1]) + x)
               + rec(RUN, bytes([0, 0]) + x) + rec(RUN, bytes([2, 0]) + x) + rec(RUN, bytes([2 | 62 << 2, 1]) + x)
               + rec(P.lib.TL_PROTO_OP_STATS)
               + rec(P.lib.TL_PROTO_OP_READ_WEIGHTS, struct.pack("<II", 0, 1024)) + rec(REPEAT)
               + rec(P.lib.TL_PROTO_OP_SET_CONFIG, cfg) + rec(P.lib.TL_PROTO_OP_SET_LR, lr)
               + rec(P.lib.TL_PROTO_OP_CKPT_CONFIG, ckpt_cfg) + rec(RUN, bytes([1, 0]) + x)
               + rec(RUN, bytes([1, 1]) + x)
               + rec(P.lib.TL_PROTO_OP_CHECKPOINT, struct.pack("<I", P.lib.TL_PROTO_CKPT_SAVE))
               + rec(P.lib.TL_PROTO_OP_CHECKPOINT, struct.pack("<I", P.lib.TL_PROTO_CKPT_RESTORE))
               + rec(P.lib.TL_PROTO_OP_RESET) + rec(RAW, b"\xc0\xdb\x01\xc0" + P.encode(1, 77))
               + rec(P.lib.TL_PROTO_OP_CHECKPOINT, struct.pack("<I", P.lib.TL_PROTO_CKPT_ERASE)))
    rom = (rec(LOAD_FILE, dev_blob) + rec(RUN, bytes([1, 1]) + x)
           + rec(P.lib.TL_PROTO_OP_CHECKPOINT, struct.pack("<I", P.lib.TL_PROTO_CKPT_SAVE))
           + rec(P.lib.TL_PROTO_OP_INFO) + rec(LOAD_FILE, dev_blob)
           + rec(P.lib.TL_PROTO_OP_CHECKPOINT, struct.pack("<I", P.lib.TL_PROTO_CKPT_RESTORE)))
    b_in = bytes(4 * 4 * 3)
    other = rec(LOAD_FILE, files[3]) + rec(RUN, bytes([1, 2]) + b_in) + rec(RUN, bytes([0, 0]) + b_in)
    host_bytes, _ = session_traffic(files[0], (6, 6, 1), 2)
    return [bytes([0]) + session, bytes([2]) + session, bytes([1]) + session, bytes([6]) + rom,
            bytes([0]) + other, bytes([0]) + rec(RAW, host_bytes[:60000])]


def checkpoint_seeds(files: list[bytes]) -> list[bytes]:
    """geometry byte, fault byte, model file, then a flash image holding two generations."""
    out = []
    for geometry, blob in ((0, files[1]), (3, files[1]), (5, files[3]), (7, files[0])):
        page = 128 << (geometry & 1)
        sector = page << ((geometry >> 1) & 3)
        flash = NorFlash(16 * sector, sector_bytes=sector, page_bytes=page)
        c_flash = flash.tl_flash()
        m, keep = c_load(blob)
        slots = ffi.new("tl_ckpt_slot[2]")
        assert lib.tl_ckpt_scan(c_flash, slots) == 0
        st = ffi.new("tl_ckpt_state *")
        st.model_size, st.model_crc = len(blob), zlib.crc32(blob)
        st.cfg = m.cfg
        st.lls_variant = m.cfg.variant
        st.every = 4
        for step in (3, 8):
            st.step = step
            s = lib.tl_ckpt_save(c_flash, m, st, slots)
            assert s == 0, f"checkpoint seed: save failed {s}"
        image = bytes(flash.mem).rstrip(b"\xff")          # the harness pads with erased bytes
        out.append(bytes([geometry, 0]) + struct.pack("<H", len(blob)) + blob + image)
    return out


def frame_streams(traffic_to_host: bytes) -> list[bytes]:
    """Byte 0: piece size - 1; then device output (a real session, and hand-made edge cases)."""
    edge = (P.encode(1, 1, b"", flags=1) + b"\xc0\xdb\xdc\xdb\xdd\xc0" + P.encode(9, 2, bytes(range(256)) * 4, flags=1)
            + b"\xc0" * 3 + P.encode(6, 3, b"\xc0\xdb" * 20, flags=3))
    return [bytes([255]) + traffic_to_host[:40000], bytes([0]) + traffic_to_host[:3000], bytes([6]) + edge]


def dataset_seeds(tmp: Path) -> dict[str, list[bytes]]:
    from host.datasets import Dataset, shards
    rng = np.random.default_rng(3)
    out: dict[str, list[bytes]] = {}

    # eembc: y_labels.csv + 96x96x3 .bin files (two images, one unlabelled, one row naming out)
    bins = [rng.integers(0, 256, 96 * 96 * 3, dtype=np.uint8).tobytes() for _ in range(2)]
    out["py_eembc"] = [
        fuzz_files.pack([("y_labels.csv", b"a.bin,2,1\nb.bin,2,0\n"), ("a.bin", bins[0]), ("b.bin", bins[1]),
                         ("c.bin", bins[0][:100])]),
        fuzz_files.pack([("vww01/y_labels.csv", b"a.bin,2,1\r\n../x.bin,2,0\n"), ("vww01/a.bin", bins[1]),
                         ("@vww01/z.bin", b"/dev/zero")]),
    ]

    # shards: written by host.datasets.shards.write
    for n, shape in ((3, (4, 4, 3)), (2, (2, 3, 1))):
        d = tmp / f"shards{n}"
        ds = Dataset(images=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                     labels=np.arange(n) % 2, ids=[f"img{i}" for i in range(n)], layout="synthetic",
                     name="fuzz", classes=2, source="fuzz")
        shards.write(ds, d, shard_size=2)
        out.setdefault("py_shards", []).append(
            fuzz_files.pack([(p.name, p.read_bytes()) for p in sorted(d.iterdir())]))

    # folders: person/ + non_person/ with tiny PNG, JPEG, BMP and GIF images written by Pillow
    from PIL import Image

    def img(fmt: str, mode: str = "RGB") -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).convert(mode).save(buf, fmt)
        return buf.getvalue()
    out["py_folders"] = [
        fuzz_files.pack([("person/a.png", img("PNG")), ("non_person/b.jpg", img("JPEG")),
                         ("person/c.bmp", img("BMP", "L")), ("non_person/d.gif", img("GIF", "P")),
                         ("person/notes.txt", b"x")]),
        fuzz_files.pack([("set/person/a.png", img("PNG", "RGBA")), ("set/non_person/a.jpg", img("JPEG"))]),
    ]

    # coco: an instances JSON with a person and a non-person image, and a minival id list
    inst = {"images": [{"id": 1, "width": 64, "height": 48, "file_name": "a.jpg"},
                       {"id": 2, "width": 32, "height": 32, "file_name": "b.jpg"}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "area": 400.0},
                            {"id": 11, "image_id": 2, "category_id": 3, "area": 9.5}],
            "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]}
    out["py_coco"] = [fuzz_files.pack([("annotations/instances_val2014.json", json.dumps(inst).encode()),
                                       ("ids.txt", b"# minival\n1\n2\n")])]
    return out


def write(out_dir: Path, name: str, seeds: list[bytes]) -> None:
    d = out_dir / name
    d.mkdir(parents=True, exist_ok=True)
    for old in d.iterdir():
        old.unlink()
    for s in seeds:
        (d / hashlib.sha1(s).hexdigest()).write_bytes(s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "fuzz" / "corpus"),
                    help="folder of the corpora (default: %(default)s)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    files = model_files()
    write(out, "modelfile", files)
    write(out, "modelfile_rom", files)
    write(out, "py_modelfile", files)
    write(out, "proto_dev", proto_dev_scripts(files))
    write(out, "checkpoint", checkpoint_seeds(files))
    _, to_host = session_traffic(files[0], (6, 6, 1), 2)
    streams = frame_streams(to_host)
    write(out, "proto_host", streams)
    write(out, "py_frames", streams)
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_tflite
    write(out, "py_tflite", [tiny_tflite.build(0), tiny_tflite.build(1)])
    with tempfile.TemporaryDirectory() as tmp:
        for name, seeds in dataset_seeds(Path(tmp)).items():
            write(out, name, seeds)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {sum(1 for p in out.rglob('*') if p.is_file())} seed files, {total} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
