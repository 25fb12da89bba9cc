"""The host.quantize and host.evaluate CLIs: from-keras accuracy, export-c builds and runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tools import need

from host import evaluate, int8_ref, modelfile, quantize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_modelfile import shared_path, small_model  # noqa: E402  (shared test helpers)

REPO = Path(__file__).resolve().parents[1]
TRAINED = "datasets/mlperf-tiny-vww-models/benchmark/training/visual_wake_words/trained_models"
VWW_DATA = "datasets/vww01-eembc/datasets/vww01"


@pytest.mark.parametrize("argv", [["--help"], ["import-tflite", "--help"], ["from-keras", "--help"],
                                  ["export-c", "--help"]])
def test_quantize_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        quantize.main(argv)
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


def test_evaluate_help(capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--help"])
    assert e.value.code == 0 and "--dump-logits" in capsys.readouterr().out


def test_known_errors_are_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "garbage.tlm"
    bad.write_bytes(b"TLLS" + b"\1" * 40)
    notkeras = tmp_path / "plain.h5"
    import h5py
    with h5py.File(notkeras, "w") as f:
        f["x"] = np.zeros(3)
    cases = [
        (quantize.main, ["import-tflite", str(tmp_path / "missing.tflite"), "-o", str(tmp_path / "o.tlm")], "missing.tflite"),
        (quantize.main, ["export-c", str(bad), "-o", str(tmp_path / "c")], "version"),
        (quantize.main, ["from-keras", str(notkeras), "-o", str(tmp_path / "k.tlm"), "--calib", "synthetic"],
         "model_config"),
        (evaluate.main, ["--model", str(bad), "--data", "synthetic"], "version"),
    ]
    for fn, argv, needle in cases:
        assert fn(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        tool = "host.quantize" if fn is quantize.main else "host.evaluate"
        assert len(err) == 1 and err[0].startswith(f"{tool}: error:") and needle in err[0], (argv, err)


def test_export_c_compiles_and_runs_on_the_core(tmp_path, capsys):
    """The exported const array, copied to RAM, loads with tl_modelfile_load and infers the same
    logits as the numpy oracle; built with the project's strict C flags."""
    cc = need("gcc", "gcc")
    model = small_model(seed=4)
    path = tmp_path / "tiny.tlm"
    modelfile.save(model, str(path))
    out = tmp_path / "gen"
    assert quantize.main(["export-c", str(path), "-o", str(out)]) == 0
    report = capsys.readouterr().out
    device = modelfile.strip_host(path.read_bytes())
    assert f"flash {len(device)} bytes" in report
    size = json.loads((out / "tiny_size.json").read_text())
    assert size["flash_bytes"] == len(device) and size["n_layers"] == 5
    x = np.random.default_rng(5).integers(-128, 128, (8, 8, 3)).astype(np.int8)
    want = int8_ref.run_model(model, x)
    main_c = tmp_path / "main.c"
    main_c.write_text(
        '#include <stdio.h>\n#include <string.h>\n#include "tinylls.h"\n#include "tiny_model.h"\n'
        "static uint32_t ram[sizeof tiny_model / 4];\n"
        "static int8_t arena_buf[1 << 16];\n"
        "static const int8_t input[192] = {" + ", ".join(str(int(v)) for v in x.reshape(-1)) + "};\n"
        "int main(void) {\n"
        "    tl_layer layers[TINY_MODEL_LAYERS]; tl_model m; tl_result r;\n"
        "    memcpy(ram, tiny_model, sizeof ram);\n"
        "    tl_status s = tl_modelfile_load((uint8_t *)ram, (int32_t)TINY_MODEL_BYTES, layers, TINY_MODEL_LAYERS, &m);\n"
        "    if (s != TL_OK) { printf(\"load %d\\n\", (int)s); return 1; }\n"
        "    int32_t need = tl_model_arena_bytes(&m);\n"
        "    if (need < 0 || need > (int32_t)sizeof arena_buf || need != TINY_ARENA_BYTES) return 2;\n"
        "    tl_ctx ctx = {arena_buf, need};\n"
        "    s = tl_model_infer(&m, &ctx, input, 0, &r);\n"
        "    if (s != TL_OK) { printf(\"infer %d\\n\", (int)s); return 3; }\n"
        "    for (int c = 0; c < m.classes; c++) printf(\"%d \", (int)r.logits[c]);\n"
        "    printf(\"\\n\"); return 0;\n}\n")
    srcs = [str(p) for p in sorted((REPO / "ccore" / "src").rglob("*.c"))]
    exe = tmp_path / "run"
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", f"-I{REPO / 'ccore' / 'include'}", f"-I{out}",
           str(main_c), str(out / "tiny_model.c"), *srcs, "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [int(v) for v in r.stdout.split()] == want.tolist()


def test_evaluate_cli_reports_the_reference_accuracy(tmp_path, capsys):
    data = shared_path(VWW_DATA)
    tfl = shared_path(f"{TRAINED}/vww_96_int8.tflite")
    js, npy = tmp_path / "r.json", tmp_path / "l.npy"
    engine = "c"
    try:
        import host.core  # noqa: F401
    except ImportError:
        engine = "ref"
    assert evaluate.main(["--model", str(tfl), "--data", str(data), "--limit", "64", "--json", str(js),
                          "--dump-logits", str(npy), "--engine", engine, "--quiet"]) == 0
    rep = json.loads(js.read_text())
    from host import datasets
    from host.tflite_import import import_tflite
    ds = datasets.open(str(data))
    m = import_tflite(str(tfl))
    want = int8_ref.run_model(m, (ds.images[:64].astype(np.int16) - 128).astype(np.int8))
    assert np.array_equal(np.load(npy), want)
    assert rep["n"] == 64 and rep["correct"] == int((want.argmax(1) == ds.labels[:64]).sum())
    assert f"accuracy {100 * rep['accuracy']:.2f}%" in capsys.readouterr().out


def test_from_keras_int8_within_one_point_of_float(tmp_path, capsys):
    """vww_96.h5 -> int8 (BatchNorm folded, per-channel weights, ranges from 100 training
    images of the split) scores within 1 point of the float network on the 800 shared images."""
    from host import datasets, keras_import
    h5 = shared_path(f"{TRAINED}/vww_96.h5")
    data = shared_path(VWW_DATA)
    out = tmp_path / "vww_keras.tlm"
    assert quantize.main(["from-keras", str(h5), "-o", str(out), "--calib", str(data), "--calib-count", "100"]) == 0
    capsys.readouterr()
    ds = datasets.open(str(data))
    net = keras_import.read_h5(str(h5))
    float_acc = float((net.forward(ds.images).argmax(1) == ds.labels).mean())
    # the float forward agrees with LiteRT's float model: 85.8% in shared/.../SOURCES.md
    assert abs(100 * float_acc - 85.8) < 0.06
    model = modelfile.load(str(out))
    assert model.meta["calibration"]["count"] == 100 and len(model.layers) == 29
    engine = "c"
    try:
        import host.core  # noqa: F401
    except ImportError:
        engine = "ref"
    rep = evaluate.evaluate(model, ds.images, ds.labels, engine=engine, progress=False)
    print(f"from-keras: float {100 * float_acc:.2f}%, int8 {100 * rep['accuracy']:.2f}% ({engine})")
    assert abs(rep["accuracy"] - float_acc) <= 0.01, (float_acc, rep["accuracy"])
    if engine == "c":      # the C core and the oracle agree on this model too
        x = evaluate.model_input(model, ds.images[:32])
        assert np.array_equal(rep["logits"][:32], int8_ref.run_model(model, x))


def test_from_keras_names_unsupported_layers(tmp_path):
    import h5py

    from host.keras_import import KerasImportError, read_h5
    cfg = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 8, 8, 3]}},
        {"class_name": "MaxPooling2D", "config": {"name": "mp", "pool_size": [2, 2]}}]}}
    p = tmp_path / "m.h5"
    with h5py.File(p, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        f.create_group("model_weights")
    with pytest.raises(KerasImportError, match=r"layer 1 \(mp, MaxPooling2D\)"):
        read_h5(str(p))


def test_quantize_import_tflite_cli_writes_a_loadable_file(tmp_path, capsys):
    tfl = shared_path(f"{TRAINED}/vww_96_int8.tflite")
    out = tmp_path / "v.tlm"
    assert quantize.main(["import-tflite", str(tfl), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "29 layers" in text and f"wrote {out}" in text
    m = modelfile.load(str(out))
    assert m.meta["softmax"]["out_zp"] == -128 and m.layers[-1].single_rounding
    assert os.path.getsize(out) == modelfile.describe(out.read_bytes())["file_bytes"]
