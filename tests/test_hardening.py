"""Issue 18: every file tinylls reads is read bounded and confined, and every malformed input
becomes the project's own error naming the file and the field.

Defect 3: a label row of an EEMBC set naming an absolute path, a `..` path, a FIFO or /dev/zero.
Defect 6: malformed flatbuffers escaping `import-tflite` as struct.error, ZeroDivisionError,
          TypeError, AttributeError or plain ValueError.
Defect 7: a non-UTF-8 byte in y_labels.csv raising a bare UnicodeDecodeError.
The data-set cases run the reader in a child process under a time and memory limit, so the
unfixed behaviour (hang, unbounded growth) is reported as a failure instead of taking the
machine down."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tiny_tflite

from host import datasets
from host.datasets import DataError
from host.tflite_import import TfliteImportError, import_tflite, import_tflite_bytes

REPO = Path(__file__).resolve().parents[1]
BIN = 96 * 96 * 3


# ------------------------------------------------------------------------------ helpers


def _eembc(folder: Path, rows: list[str], bins=("a.bin",)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in bins:
        (folder / name).write_bytes(bytes(BIN))
    (folder / "y_labels.csv").write_text("".join(r + "\n" for r in rows))
    return folder


def _open_in_child(path: Path, timeout: float = 20.0) -> tuple[str, str]:
    """datasets.open(path) in a child limited to `timeout` s and 2 GiB of address space.
    Returns ("ok" | "DataError" | "other" | "hang", message)."""
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from host import datasets
        try:
            ds = datasets.open({str(path)!r})
        except datasets.DataError as e:
            print("DataError", e, sep="\\t"); sys.exit(0)
        except BaseException as e:
            print("other", type(e).__name__ + ": " + str(e)[:300], sep="\\t"); sys.exit(0)
        print("ok", len(ds), sep="\\t")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    try:
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang", f"datasets.open({path}) did not return within {timeout} s"
    line = (r.stdout.strip().splitlines() or [f"other\tno output, rc {r.returncode}: {r.stderr[-300:]}"])[-1]
    kind, _, msg = line.partition("\t")
    return kind, msg


def _guarded(fn, fifos=(), timeout: float = 15.0):
    """fn() in a thread; if it is still blocked after `timeout` s (reading a FIFO), open the
    FIFOs' write ends so the reader sees end of file, then fail the test."""
    box: dict = {}

    def run():
        try:
            box["ret"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            box["exc"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        for f in fifos:
            try:
                os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        t.join(5)
        pytest.fail(f"blocked for {timeout} s reading {', '.join(map(str, fifos))}")
    if "exc" in box:
        raise box["exc"]
    return box.get("ret")


def _child(code: str, timeout: float = 30.0) -> str:
    """Run `code` in a child limited to `timeout` s and 2 GiB of address space; its last
    printed line, or 'hang' / 'crashed ...'."""
    code = "import resource\nresource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n" + code
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    try:
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang"
    lines = r.stdout.strip().splitlines()
    return lines[-1] if lines else f"crashed rc {r.returncode}: {r.stderr[-300:]}"


# ------------------------------------------------------------------------------ safeio


def test_safeio_read_bytes_checks_kind_and_size_before_reading(tmp_path):
    from host import safeio
    f = tmp_path / "f.bin"
    f.write_bytes(b"x" * 10)
    assert safeio.read_bytes(f, 10, "test file", error=DataError) == b"x" * 10
    with pytest.raises(DataError, match=r"f\.bin: 10 bytes, more than the 9 allowed \(test file\)"):
        safeio.read_bytes(f, 9, "test file", error=DataError)
    with pytest.raises(DataError, match=r"f\.bin: 10 bytes, expected 11 \(test file\)"):
        safeio.read_bytes(f, 100, "test file", error=DataError, exact=11)
    with pytest.raises(DataError, match="missing"):
        safeio.read_bytes(tmp_path / "nope", 10, "test file", error=DataError)
    with pytest.raises(DataError, match="not a regular file"):
        safeio.read_bytes(tmp_path, 10, "test file", error=DataError)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(DataError, match="not a regular file"):
        safeio.read_bytes(fifo, 10, "test file", error=DataError)
    with pytest.raises(DataError, match="not a regular file"):
        safeio.read_bytes("/dev/zero", 10, "test file", error=DataError)
    assert time.monotonic() - t0 < 30      # a hang guard (a FIFO read would block forever), not a speed goal


def test_safeio_confined_refuses_escapes(tmp_path):
    from host import safeio
    root = tmp_path / "set"
    root.mkdir()
    (root / "sub").mkdir()
    (tmp_path / "outside.bin").write_bytes(b"x")
    (root / "link.bin").symlink_to(tmp_path / "outside.bin")
    (root / "inner.bin").write_bytes(b"y")
    (root / "ok-link.bin").symlink_to(root / "inner.bin")
    assert safeio.confined(root, "sub/x.bin", "label row", error=DataError) == root / "sub" / "x.bin"
    assert safeio.confined(root, "ok-link.bin", "label row", error=DataError) == root / "ok-link.bin"
    for bad, why in ((str(tmp_path / "outside.bin"), "absolute"), ("../outside.bin", r"'\.\.'"),
                     ("sub/../../outside.bin", r"'\.\.'"), ("link.bin", "outside"),
                     ("", "empty"), ("a\0b", "NUL")):
        with pytest.raises(DataError, match=why):
            safeio.confined(root, bad, "label row", error=DataError)


def test_safeio_decode_names_file_line_and_byte(tmp_path):
    from host import safeio
    with pytest.raises(DataError, match=r"t\.csv line 2: not UTF-8 text \(byte 0xb0 at column 4\)"):
        safeio.decode_utf8(b"ok\nabc\xb0\n", tmp_path / "t.csv", error=DataError)
    f = tmp_path / "j.json"
    f.write_text('{"a": 1,\n "b": }\n')
    with pytest.raises(DataError, match=r"j\.json line 2 column 7: not valid JSON"):
        safeio.read_json(f, 1000, "manifest", error=DataError)


# ------------------------------------------------------------------------------ defect 3


def test_eembc_label_row_with_an_absolute_path_is_refused(tmp_path):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(bytes(BIN))
    root = _eembc(tmp_path / "set", ["a.bin,2,1", f"{outside},2,0"])
    kind, msg = _open_in_child(root)
    assert kind == "DataError", (kind, msg)
    assert "y_labels.csv line 2" in msg and "absolute" in msg


def test_eembc_label_row_with_dotdot_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(bytes(BIN))
    root = _eembc(tmp_path / "set", ["a.bin,2,1", "../secret.bin,2,0"])
    kind, msg = _open_in_child(root)
    assert kind == "DataError", (kind, msg)
    assert "y_labels.csv line 2" in msg and "'..'" in msg


def test_eembc_label_row_via_symlink_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(bytes(BIN))
    root = _eembc(tmp_path / "set", ["a.bin,2,1", "b.bin,2,0"])
    (root / "b.bin").symlink_to(tmp_path / "secret.bin")
    kind, msg = _open_in_child(root)
    assert kind == "DataError", (kind, msg)
    assert "outside" in msg


def test_eembc_label_row_naming_a_fifo_does_not_hang(tmp_path):
    root = _eembc(tmp_path / "set", ["a.bin,2,1", "b.bin,2,0"])
    os.mkfifo(root / "b.bin")
    kind, msg = _open_in_child(root)
    assert kind == "DataError", (kind, msg)
    assert "b.bin" in msg and "not a regular file" in msg


def test_eembc_label_row_naming_dev_zero_is_refused_without_reading(tmp_path):
    root = _eembc(tmp_path / "set", ["a.bin,2,1", "/dev/zero,2,0"])
    kind, msg = _open_in_child(root)
    assert kind == "DataError", (kind, msg)
    root2 = _eembc(tmp_path / "set2", ["a.bin,2,1", "z.bin,2,0"])
    (root2 / "z.bin").symlink_to("/dev/zero")
    kind, msg = _open_in_child(root2)
    assert kind == "DataError", (kind, msg)


def test_eembc_oversized_bin_is_refused_by_its_size(tmp_path):
    root = _eembc(tmp_path / "set", ["a.bin,2,1", "b.bin,2,0"])
    (root / "b.bin").write_bytes(bytes(BIN + 1))
    with pytest.raises(DataError, match=rf"b\.bin: .*{BIN + 1} bytes, expected {BIN}"):
        datasets.open(root)
    ds = datasets.open(root, skip_bad=True)
    assert len(ds) == 1 and "b.bin" in ds.skipped[0].path


# ------------------------------------------------------------------------------ defect 7


def test_eembc_labels_with_a_non_utf8_byte_name_file_and_line(tmp_path):
    root = _eembc(tmp_path / "set", ["a.bin,2,1"])
    (root / "y_labels.csv").write_bytes(b"a.bin,2,1\nimage_\xb0.bin,2,0\n")
    with pytest.raises(DataError, match=r"y_labels\.csv line 2: not UTF-8 text \(byte 0xb0"):
        datasets.open(root)


# ------------------------------------------------------------------------------ other readers


def _shards(tmp_path) -> Path:
    ds = datasets.synthetic.make(8, size=16, seed=1)
    out = tmp_path / "sh"
    datasets.shards.write(ds, out, shard_size=4)
    return out


def test_shard_manifest_cannot_name_a_file_outside_its_folder(tmp_path):
    out = _shards(tmp_path)
    man = json.loads((out / "manifest.json").read_text())
    os.replace(out / "shard-00001.tlls", tmp_path / "moved.tlls")
    man["shards"][1]["file"] = "../moved.tlls"
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(DataError, match=r"manifest\.json: shards\[1\]\.file.*'\.\.'"):
        datasets.open(out)
    with pytest.raises(DataError, match=r"'\.\.'"):
        list(datasets.shards.stream(out))


def test_shard_that_is_a_fifo_or_malformed_manifest_fields_are_data_errors(tmp_path):
    out = _shards(tmp_path)
    os.remove(out / "shard-00001.tlls")
    fifo = out / "shard-00001.tlls"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        _guarded(lambda: datasets.open(out), [fifo])
    with pytest.raises(DataError, match="not a regular file"):
        _guarded(lambda: list(datasets.shards.stream(out)), [fifo])
    out2 = _shards(tmp_path / "b")
    good = json.loads((out2 / "manifest.json").read_text())
    for field, value in (("shape", "96x96"), ("classes", -1), ("shards", {"a": 1}),
                         ("shards.0.bytes", "big"), ("shards.0.ids", None), ("shards.0", 7),
                         ("shards.0.file", 12)):
        man = json.loads(json.dumps(good))
        keys = field.split(".")
        tgt = man
        for k in keys[:-1]:
            tgt = tgt[int(k)] if isinstance(tgt, list) else tgt[k]
        last = keys[-1]
        if isinstance(tgt, list):
            tgt[int(last)] = value
        else:
            tgt[last] = value
        (out2 / "manifest.json").write_text(json.dumps(man))
        with pytest.raises(DataError, match=r"manifest\.json: "):
            datasets.open(out2)
    (out2 / "manifest.json").write_bytes(b'{"format": "tinylls-shards", "name": "\xff"}')
    with pytest.raises(DataError, match=r"manifest\.json line 1: not UTF-8"):
        datasets.shards.read_manifest(out2)


def test_folder_layout_skips_fifos_and_refuses_oversized_images(tmp_path, monkeypatch):
    from PIL import Image
    root = tmp_path / "vw"
    for d in ("person", "non_person"):
        (root / d).mkdir(parents=True)
        Image.new("RGB", (10, 10), (1, 2, 3)).save(root / d / f"{d}.png")
    os.mkfifo(root / "person" / "pipe.png")
    ds = datasets.open(root)
    assert len(ds) == 2
    from host.datasets import imaging
    monkeypatch.setattr(imaging, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(DataError, match=r"person\.png: \d+ bytes, more than the 10 allowed"):
        imaging.decode(root / "person" / "person.png")


def test_coco_annotations_and_id_list_errors_name_the_file(tmp_path):
    from host.datasets import coco
    ann = tmp_path / "instances.json"
    ann.write_bytes(b'{"images": [], "annotations": [], "categories": [{"name": "\xb0"}]}')
    with pytest.raises(DataError, match=r"instances\.json line 1: not UTF-8"):
        coco.read_instances(ann)
    ann.write_text(json.dumps({"images": [{"id": 1, "width": 4, "height": 4, "file_name": "../x.jpg"}],
                               "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
    with pytest.raises(DataError, match=r"images\[0\].*file_name.*'\.\.'"):
        coco.label_images(ann, tmp_path / "img")
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"1\n2\xb0\n")
    with pytest.raises(DataError, match=r"ids\.txt line 2: not UTF-8"):
        coco.read_id_list(ids)
    os.remove(ids)
    os.mkfifo(ids)
    with pytest.raises(DataError, match="not a regular file"):
        _guarded(lambda: coco.read_id_list(ids), [ids])


# ------------------------------------------------------------------------------ defect 6


def _mutants(buf: bytes, n: int, seed: int):
    """n mutated copies: byte overwrites (1-8 bytes), truncations, inserted and deleted runs."""
    rng = np.random.default_rng(seed)
    src = np.frombuffer(buf, np.uint8)
    for k in range(n):
        kind = k % 4
        b = src.copy()
        if kind == 0:
            idx = rng.integers(0, len(b), rng.integers(1, 9))
            b[idx] = rng.integers(0, 256, len(idx))
        elif kind == 1:
            b = b[:rng.integers(0, len(b))]
        elif kind == 2:
            at = int(rng.integers(0, len(b) + 1))
            b = np.concatenate([b[:at], rng.integers(0, 256, rng.integers(1, 17)).astype(np.uint8), b[at:]])
        else:
            at = int(rng.integers(0, len(b)))
            b = np.concatenate([b[:at], b[at + int(rng.integers(1, 17)):]])
        yield k, b.tobytes()


def test_tiny_tflite_built_from_scratch_imports():
    m = import_tflite_bytes(tiny_tflite.build(), path="tiny.tflite")
    assert [layer.kind for layer in m.layers] == ["conv", "dwconv", "conv", "avgpool", "fc"]
    assert "softmax" in m.meta


def test_mutated_tflite_files_raise_only_tflite_import_error():
    """3,000 mutated copies of a valid model: each imports, or raises TfliteImportError naming
    the file; nothing else escapes."""
    buf = tiny_tflite.build()
    escapes: dict[str, list[int]] = {}
    n = errors = 0
    for k, mut in _mutants(buf, 3000, seed=18):
        n += 1
        try:
            import_tflite_bytes(mut, path="m.tflite")
        except TfliteImportError as e:
            errors += 1
            if type(e) is not TfliteImportError or not str(e).startswith("m.tflite: "):
                escapes.setdefault(f"badmsg {str(e)[:80]}", []).append(k)
        except Exception as e:       # noqa: BLE001 - the point of the test
            escapes.setdefault(f"{type(e).__name__}: {str(e)[:80]}", []).append(k)
    summary = {k: (len(v), v[:3]) for k, v in escapes.items()}
    assert not escapes, f"{sum(len(v) for v in escapes.values())} of {n} escaped: {summary}"
    assert errors > n // 2, errors


def test_malformed_tflite_errors_name_the_field():
    buf = tiny_tflite.build()
    with pytest.raises(TfliteImportError, match=r"^t\.tflite: .*(offset|truncated|bytes)"):
        import_tflite_bytes(buf[:len(buf) // 2], path="t.tflite")
    with pytest.raises(TfliteImportError, match=r"^t\.tflite: .*too short"):
        import_tflite_bytes(b"\x10\0", path="t.tflite")


def test_tflite_input_file_is_read_bounded(tmp_path):
    fifo = tmp_path / "m.tflite"
    os.mkfifo(fifo)
    with pytest.raises(TfliteImportError, match="not a regular file"):
        _guarded(lambda: import_tflite(str(fifo)), [fifo])
    out = _child("from host.tflite_import import import_tflite, TfliteImportError\n"
                 "try:\n    import_tflite('/dev/zero')\n"
                 "except TfliteImportError as e:\n    print('TfliteImportError', e)\n"
                 "except BaseException as e:\n    print('other', type(e).__name__, e)\n")
    assert out.startswith("TfliteImportError /dev/zero: ") and "not a regular file" in out, out


def _quantize_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "host.quantize", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_tflite_cli_prints_one_error_line_and_exits_2(tmp_path):
    buf = tiny_tflite.build()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(buf[:len(buf) // 2])
    r = _quantize_cli("import-tflite", str(bad), "-o", str(tmp_path / "x.tlm"))
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"host.quantize: error: {bad}: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.tlm").exists()


def test_keras_input_file_is_read_bounded(tmp_path):
    pytest.importorskip("h5py")
    from host.keras_import import KerasImportError, read_h5
    fifo = tmp_path / "m.h5"
    os.mkfifo(fifo)
    # in a child: h5py blocks on a FIFO inside C code, holding the interpreter
    out = _child("from host.keras_import import read_h5, KerasImportError\n"
                 f"try:\n    read_h5({str(fifo)!r})\n"
                 "except KerasImportError as e:\n    print('KerasImportError', e)\n"
                 "except BaseException as e:\n    print('other', type(e).__name__, e)\n",
                 timeout=20)
    assert out.startswith(f"KerasImportError {fifo}: ") and "not a regular file" in out, out
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5" * 10)
    with pytest.raises(KerasImportError, match=r"junk\.h5: not an HDF5"):
        read_h5(str(junk))


def test_export_c_reads_the_model_file_bounded(tmp_path, capsys):
    from host import quantize
    fifo = tmp_path / "m.tlm"
    os.mkfifo(fifo)
    rc = _guarded(lambda: quantize.main(["export-c", str(fifo), "-o", str(tmp_path / "c")]), [fifo])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"host.quantize: error: {fifo}: ") and "not a regular file" in err[0], err


# ------------------------------------------------------------------------------ run logs and journals


def _run_log(tmp_path: Path) -> Path:
    """The JSONL log of a real (tiny) host.simulate run."""
    from host import cli_common, simulate
    log = tmp_path / "run.jsonl"
    rc = cli_common.run_main("host.simulate", simulate.main, ["--limit", "12", "--val-limit", "6", "--epochs", "1",
                                                               "--quiet", "--log", str(log)])
    assert rc == 0 and log.is_file()
    return log


def test_runlog_read_checks_every_record_and_names_file_line_and_field(tmp_path, monkeypatch):
    from host import runlog
    from host.runlog import RunLogError
    log = _run_log(tmp_path)
    records = runlog.read(log)
    lines = log.read_text().splitlines()
    assert len(records) == len(lines) and {r["kind"] for r in records} >= {"start", "train", "eval", "end"}
    runlog.plot(records, str(tmp_path / "run.png"))          # what read() returns plots
    assert (tmp_path / "run.png").stat().st_size > 1000

    def broken(i: int, text: str) -> Path:
        p = tmp_path / f"broken{len(list(tmp_path.glob('broken*')))}.jsonl"
        p.write_text("\n".join(lines[:i] + [text] + lines[i + 1:]) + "\n")
        return p
    first_train = next(i for i, r in enumerate(records) if r["kind"] == "train")
    first_eval = next(i for i, r in enumerate(records) if r["kind"] == "eval")
    last_eval = max(i for i, r in enumerate(records) if r["kind"] == "eval")
    train, ev = records[first_train], records[last_eval]
    cases = [
        (broken(2, '{"kind": "tra'), r"line 3: not a JSON record"),
        (broken(2, "[1, 2]"), r"line 3: not a record"),
        (broken(2, '{"step": 1}'), r"line 3: not a record"),
        (broken(first_train, json.dumps({**train, "running_accuracy": "high"})),
         rf"line {first_train + 1}: train record: running_accuracy='high' is not a number"),
        (broken(first_train, json.dumps({k: v for k, v in train.items() if k != "step"})),
         rf"line {first_train + 1}: train record: step=None is not an integer"),
        (broken(last_eval, json.dumps({**ev, "local_accuracy": ev["local_accuracy"][:-1]})),
         rf"line {last_eval + 1}: eval record: local_accuracy has"),
        (broken(first_eval, json.dumps({**ev, "accuracy": None})), rf"line {first_eval + 1}: eval record: accuracy"),
    ]
    for path, message in cases:
        with pytest.raises(RunLogError, match=message) as info:
            runlog.read(path)
        assert str(info.value).startswith(f"{path} line "), str(info.value)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(log.read_bytes()[:40] + b"\xb0" + log.read_bytes()[40:])
    with pytest.raises(RunLogError, match=r"latin1\.jsonl line 1: not UTF-8 text \(byte 0xb0"):
        runlog.read(bad)
    monkeypatch.setattr(runlog, "MAX_RUNLOG_BYTES", 100)
    with pytest.raises(RunLogError, match=r"run\.jsonl: \d+ bytes, more than the 100 allowed \(run log\)"):
        runlog.read(log)


def test_runlog_journal_cut_by_a_crash_keeps_its_whole_records(tmp_path):
    """A checkpointed run's journal is written as the run goes: a crash can cut its last record."""
    from host import runlog
    log = _run_log(tmp_path)
    whole = runlog.read(log)
    data = log.read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 25])    # 24 bytes of the last record
    assert runlog.read(cut) == whole[:-1]
    # a resumed run appends to the journal in place: its first record shares the cut record's line
    data_lines = data.splitlines(keepends=True)
    resumed = tmp_path / "resumed.jsonl"
    resumed.write_bytes(cut.read_bytes() + b"".join(data_lines[-3:]))
    assert runlog.read(resumed) == whole[:-1] + whole[-3:]
    # ... but a broken record with records after it is an error, not something to skip silently
    torn_inside = tmp_path / "torn.jsonl"
    torn_inside.write_bytes(cut.read_bytes() + b"\n" + data.splitlines()[-1] + b"\n")
    with pytest.raises(runlog.RunLogError, match=rf"line {len(whole)}: not a JSON record"):
        runlog.read(torn_inside)


def test_runlog_read_of_a_fifo_or_a_device_does_not_block(tmp_path):
    from host import runlog
    fifo = tmp_path / "log.jsonl"
    os.mkfifo(fifo)
    box = {}
    _guarded(lambda: box.setdefault("e", pytest.raises(runlog.RunLogError, runlog.read, fifo)), [fifo])
    assert "not a regular file (a FIFO)" in str(box["e"].value)
    with pytest.raises(runlog.RunLogError, match="not a regular file"):
        runlog.read("/dev/zero")


def test_output_targets_that_are_fifos_are_refused_before_the_run(tmp_path):
    """A journal is appended to in place: a FIFO named by --log would block the run at its end."""
    from host.outputs import OutputError, Outputs
    fifo = tmp_path / "journal.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match=r"--log .*journal\.jsonl: exists and is not a regular file \(a FIFO\)"):
        Outputs({"--log": str(fifo)})
    assert Outputs({"--log": str(tmp_path / "new.jsonl")}).paths


def test_resume_tag_from_a_board_that_is_not_a_tag_is_a_difference():
    """differences() compared word by word with zip(): a short tag from a board matched any run."""
    from host.resume import TAG_FIELDS, differences
    ours = [1, 0xDEADBEEF, 0x12345678, 3, 4, 0xCAFE, 600, 16]
    assert differences(ours, list(ours)) == []
    assert differences(ours, ours[:3]) == [f"run tag: 3 words in the checkpoint, {len(TAG_FIELDS)} expected"]
    assert differences(ours, []) and differences(ours, None)
    assert differences(ours, [2] + ours[1:]) == [("tag format: 1 here, 2 in the checkpoint (its other words mean "
                                                   "other things)")]
    assert differences(ours, ours[:3] + [-1] + ours[4:]) == ["run tag: seed: -1 in the checkpoint is not a u32 word"]
    assert differences(ours, ours[:3] + [2 ** 32] + ours[4:])
    assert differences(ours, ours[:3] + [5] + ours[4:]) == ["seed: 3 here, 5 in the checkpoint"]
