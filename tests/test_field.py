"""Issue 11: the field workflow with the user's own model and data, on the host (no board).

Splits for any data set (--val-split, --val-data; the published 600 / 200 split unchanged), the
model in flash recognised whatever rates the host sends (device identity), the epoch-0 baseline in
every log, plot and JSON, and every "say no" case: one error line, exit 2, before any training,
no partial file left. The emulated-board half is tests/test_field_firmware.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from shared_data import shared_path

from host import datasets, modelfile, protocol, recipes, simulate

ROOT = Path(__file__).resolve().parents[1]
VWW_REL = Path("datasets") / "vww01-eembc"
TFLITE_REL = (Path("datasets") / "mlperf-tiny-vww-models" / "benchmark" / "training" / "visual_wake_words"
              / "trained_models" / "vww_96_int8.tflite")


def write_folder(root: Path, per_class: int, seed: int = 0, sizes=((120, 90), (64, 64), (200, 150))) -> Path:
    """person/ + non_person/ JPEGs of other sizes than 96x96 (one in grey), as a user's camera gives."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for label, c in enumerate(("non_person", "person")):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            a[..., 0] = np.clip(a[..., 0].astype(int) + 60 * label, 0, 255)     # something to learn
            Image.fromarray(a).convert("L" if i == 1 else "RGB").save(root / c / f"{c}_{i:05d}.jpg", quality=85)
    return root


@pytest.fixture(scope="module")
def vww_model(tmp_path_factory) -> Path:
    from host.tflite_import import import_tflite
    path = tmp_path_factory.mktemp("model") / "vww96.tlm"
    modelfile.save(import_tflite(str(shared_path(TFLITE_REL))), str(path))
    return path


@pytest.fixture(scope="module")
def folder12(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("own12") / "photos", 6)


# ---------------------------------------------------------------- splits
def test_default_split_is_the_published_600_200_with_the_same_indices():
    ds = datasets.open(shared_path(VWW_REL))
    assert len(ds) == 800
    old_tr, old_va = datasets.vww_split(ds, seed=0, n_train=600)         # the split as it was
    tr, va = simulate.load_data(str(shared_path(VWW_REL)), None)          # the default now (25%)
    assert (len(tr), len(va)) == (600, 200)
    assert tr.ids == old_tr.ids and va.ids == old_va.ids
    assert np.array_equal(tr.labels, old_tr.labels) and np.array_equal(va.images, old_va.images)
    for spec in ("0.25", "25%", "200"):
        tr2, va2 = simulate.load_data(str(shared_path(VWW_REL)), None, spec)
        assert tr2.ids == old_tr.ids and va2.ids == old_va.ids


@pytest.mark.parametrize("n, spec, want", [
    (800, 0.25, (600, 200)), (1000, 0.25, (750, 250)), (12, 0.25, (9, 3)), (2, 0.25, (1, 1)),
    (300000, 0.25, (225000, 75000)), (12, 4, (8, 4)), (10, 0.1, (9, 1)),
])
def test_split_counts(n, spec, want):
    assert datasets.split_counts(n, spec) == want


def test_too_small_to_split_says_so():
    with pytest.raises(datasets.DataError, match="too few to split.*--val-data"):
        datasets.split_counts(1, 0.25)
    with pytest.raises(datasets.DataError, match="too few"):
        datasets.split_counts(12, 12)
    for bad in ("0", "1.5", "-3", "abc", "100%", "0%"):
        with pytest.raises(ValueError, match="--val-split"):
            datasets.parse_val_split(bad)


def test_twelve_image_folder_splits_and_val_data(folder12, tmp_path):
    tr, va = simulate.load_data(str(folder12), None)
    assert (len(tr), len(va)) == (9, 3) and tr.images.shape[1:] == (96, 96, 3)
    one = write_folder(tmp_path / "one", 1, seed=7)                      # 1 image per class
    tr, va = simulate.load_data(str(one), None, None, str(folder12))
    assert (len(tr), len(va)) == (2, 12)


# ---------------------------------------------------------------- the model in flash
def test_board_recognises_its_model_whatever_rates_the_host_sends(vww_model):
    """The flash holds export-c's copy (device identity: no host area, no rates); the host sends
    the fine-tuning recipe's file: LOAD_BEGIN names the flashed one, nothing is sent, the rates
    follow by SET_LR, and the board trains like the host core."""
    blob = vww_model.read_bytes()
    rom = modelfile.device_identity(blob)
    assert len(rom) == len(modelfile.strip_host(blob))
    model = modelfile.load(str(vww_model))
    recipes.finetune_recipe(model)
    sent = modelfile.to_bytes(model)
    assert modelfile.strip_host(sent) != rom                          # the rates differ ...
    assert modelfile.device_identity(sent) == rom                     # ... the identity does not
    port = protocol.SimulatedPort(blob_cap=modelfile.train_ram_bytes(rom), rom=rom, input_cap=0)
    link = protocol.Link(port)
    info = link.sync()
    assert (info.rom_size, info.rom_crc) == (len(rom), zlib.crc32(rom))
    loaded = link.load_model(sent)                                     # then SET_LR: the file's own rates
    assert loaded["resident"] and link.info().model_in_flash
    # the board holds exactly the file asked for: one step trains as the host core with the recipe
    import hashlib
    from host.core import CModel
    from host.model import weights_sha256
    from host.stream import core_config
    cm = CModel(model, rounding="stochastic", seed=0)
    link.set_config(**core_config(cm))
    x = np.random.default_rng(1).integers(-128, 128, model.input_shape, dtype=np.int8)
    link.train(x, 1)
    cm.train_step(x, 1)
    assert hashlib.sha256(link.read_weights()).hexdigest() == weights_sha256(model)
    assert weights_sha256(model) != weights_sha256(modelfile.load(str(vww_model)))   # it did train


def test_export_c_compiles_the_device_identity(vww_model, tmp_path):
    from host import quantize
    assert quantize.main(["export-c", str(vww_model), "-o", str(tmp_path), "--name", "fw"]) == 0
    text = (tmp_path / "fw_model.c").read_text()
    words = [int(w, 16) for w in __import__("re").findall(r"0x([0-9a-f]{8})u", text)]
    rom = np.array(words, "<u4").tobytes()
    ident = modelfile.device_identity(vww_model.read_bytes())
    assert rom[: len(ident)] == ident


def test_another_model_is_refused_naming_the_flashed_one(vww_model, tmp_path):
    from host import stream
    rom = modelfile.device_identity(vww_model.read_bytes())
    port = protocol.SimulatedPort(blob_cap=modelfile.train_ram_bytes(rom), rom=rom, input_cap=0)
    info = protocol.Link(port).sync()
    # from scratch: another model, larger than the RAM beside the flashed one
    args = simulate.parse_args(["--limit", "4", "--val-limit", "2", "--epochs", "1"])
    setup = simulate.prepare(args)
    blob = modelfile.to_bytes(setup.model)
    with pytest.raises(stream.StreamError) as e:
        stream.check_board_takes(args, info, blob, "mobilenet_v1_0.25_96")
    msg = str(e.value)
    assert "holds another model" in msg and f"{len(rom)} bytes" in msg and "make -C firmware" in msg
    assert "--save-model start.tlm" in msg and "MODEL=start.tlm" in msg


def test_flash_model_name_from_the_build(tmp_path):
    from host import stream
    h = tmp_path / "pio" / "mps2-an386" / "model" / "fw_model.h"
    h.parent.mkdir(parents=True)
    h.write_text("/* Generated by `python -m host.quantize export-c vww.tlm`; do not edit. */\n")
    assert stream.flash_model_name(str(tmp_path / "tinylls.elf")) == "vww.tlm"
    assert stream.flash_model_name(str(tmp_path / "nothing" / "x.elf")) is None


def test_weight_stream_round_trip(vww_model):
    from host.model import load_weight_stream, weights_sha256
    import hashlib
    import copy
    m = modelfile.load(str(vww_model))
    m2 = copy.deepcopy(m)
    for L in m2.layers:
        if L.weights is not None:
            L.weights = np.zeros_like(L.weights)
    stream_bytes = b"".join(
        np.ascontiguousarray(a, dt).tobytes() for L in m.layers
        for a, dt in ((L.weights, np.int8), (L.bias, "<i4"), (getattr(L, "lls_m", None), "<i4")) if a is not None)
    assert hashlib.sha256(stream_bytes).hexdigest() == weights_sha256(m)
    load_weight_stream(m2, stream_bytes)
    assert weights_sha256(m2) == weights_sha256(m)
    with pytest.raises(ValueError):
        load_weight_stream(m2, stream_bytes[:-1])


# ---------------------------------------------------------------- before and after, outputs
def run_cli(module: str, *args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_simulate_writes_baseline_log_plot_json_and_says_so(folder12, vww_model, tmp_path):
    out = tmp_path / "new" / "folder"                                    # folders made before the run
    r = run_cli("host.simulate", "--data", folder12, "--model", vww_model, "--epochs", "2", "--quiet",
                "--json", out / "s.json", "--log", out / "s.jsonl", "--plot", out / "s.png",
                "--save-model", out / "s.tlm")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("warning:") == 1 and "12 of 12 images resized to 96x96" in r.stderr
    for name in ("s.json", "s.jsonl", "s.png", "s.tlm"):
        assert f"wrote {out / name}" in r.stdout
    assert "before" in r.stdout and "after 2 epoch(s)" in r.stdout
    s = json.loads((out / "s.json").read_text())
    assert s["evals"][0]["step"] == 0 and s["evals"][0]["epoch"] == 0
    assert [e["epoch"] for e in s["evals"]] == [0, 1, 2]
    assert s["val_accuracy_before"] == s["evals"][0]["accuracy"]
    recs = [json.loads(line) for line in (out / "s.jsonl").read_text().splitlines()]
    ev = [x for x in recs if x["kind"] == "eval"]
    assert ev[0]["step"] == 0 and ev[0]["baseline"] and len(ev) == 3
    assert recs[0]["kind"] == "start" and recs[-1]["kind"] == "end"
    assert (out / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["s.json", "s.jsonl", "s.png", "s.tlm"]   # no temporaries


def test_evaluate_scores_the_validation_part_with_shift(tmp_path, vww_model):
    from host import evaluate
    data = shared_path(VWW_REL)
    js = tmp_path / "e.json"
    assert evaluate.main(["--model", str(vww_model), "--data", str(data), "--part", "val", "--shift",
                          "--json", str(js), "--quiet"]) == 0
    rep = json.loads(js.read_text())
    assert rep["n"] == 200 and rep["shift"] and rep["part"] == "val"
    # the same images the training tools evaluate on: simulate --epochs 0 gives the same accuracy
    args = simulate.parse_args(["--data", str(data), "--model", str(vww_model), "--epochs", "0", "--shift",
                                "--quiet"])
    assert simulate.run(args, threads=1)["val_accuracy"] == rep["accuracy"]


# ---------------------------------------------------------------- say no
SAY_NO = [
    (["--model", "{model}", "--alpha", "0.5"], "--alpha builds a model from scratch"),
    (["--model", "{model}", "--head", "gap"], "--head builds a model from scratch"),
    (["--data", "{data}", "--difficulty", "0.5"], "--difficulty shapes the synthetic scenes"),
    (["--alpha", "0"], "--alpha must be in (0, 4]"),
    (["--limit", "-1"], "--limit: must be >= 0"),
    (["--val-limit", "-3"], "--val-limit: must be >= 0"),
    (["--epochs", "-1"], "--epochs: must be >= 0"),
    (["--lr-hidden", "5"], "--lr-hidden 5.0: a learning rate must be within"),
    (["--lr-classifier", "0"], "--lr-classifier 0.0: a learning rate must be within"),
    (["--lr-classifier", "-0.1"], "--lr-classifier -0.1"),
    (["--data", "{data}", "--val-split", "1.5"], "--val-split must be a fraction"),
    (["--data", "{data}", "--val-split", "0.2", "--val-data", "{data}"], "not both"),
    (["--val-split", "0.2"], "apply to a --data path"),
    (["--data", "{tiny}", "--model", "{model}"], "too few to split"),
    (["--model", "{nomodel}"], "no such file"),
    (["--data", "{nodata}"], "no such file or folder"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from PIL import Image
    root = tmp_path_factory.mktemp("tiny") / "one"
    (root / "person").mkdir(parents=True)
    (root / "non_person").mkdir()
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(root / "person" / "a.png")
    return root


@pytest.mark.parametrize("tool", ["host.simulate", "host.stream"])
@pytest.mark.parametrize("argv, needle", SAY_NO)
def test_say_no(tool, argv, needle, folder12, vww_model, tiny, tmp_path):
    sub = {"{model}": str(vww_model), "{data}": str(folder12), "{tiny}": str(tiny),
           "{nomodel}": str(tmp_path / "nope.tlm"), "{nodata}": str(tmp_path / "nodata")}
    argv = [sub.get(a, a) for a in argv]
    out = tmp_path / "out"
    extra = ["--json", str(out / "r.json"), "--log", str(out / "r.jsonl"), "--save-model", str(out / "r.tlm")]
    if tool == "host.stream":
        extra += ["--port", "loop://"]
    r = run_cli(tool, *argv, *extra, "--quiet")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert lines[-1].startswith(f"{tool}: error: ") and needle in lines[-1], lines
    assert all(x.startswith("warning:") for x in lines[:-1])
    assert not any(out.glob("*")) if out.exists() else True               # nothing written


def test_outputs_checked_before_training(tmp_path, folder12, vww_model):
    afile = tmp_path / "plain-file"
    afile.write_text("x")
    for flag in ("--json", "--log", "--plot", "--save-model"):
        for tool in ("host.simulate", "host.stream"):
            extra = ["--port", "loop://"] if tool == "host.stream" else []
            r = run_cli(tool, "--data", folder12, "--model", vww_model, flag, afile / "sub" / "x", *extra, "--quiet")
            assert r.returncode == 2, (tool, flag, r.stderr)
            assert r.stderr.strip().splitlines()[-1].startswith(f"{tool}: error: {flag} "), r.stderr
            assert "epoch" not in r.stderr
    r = run_cli("host.simulate", "--json", tmp_path / "a.json", "--log", tmp_path / "a.json", "--quiet")
    assert r.returncode == 2 and "same file" in r.stderr


def test_keep_auto_returns_to_the_model_before_training_unless_validation_says_otherwise(folder12, vww_model,
                                                                                        tmp_path):
    """Fine-tuning a --model, --keep auto (the default) keeps training only when it fixes
    significantly more validation images than it breaks; 3 validation images never can, so the
    saved model is the one the run started from, and --keep last keeps the trained one."""
    from host.model import weights_sha256
    start = weights_sha256(modelfile.load(str(vww_model)))
    out = {}
    for keep in ("auto", "last"):
        js, saved = tmp_path / f"{keep}.json", tmp_path / f"{keep}.tlm"
        r = run_cli("host.simulate", "--data", folder12, "--model", vww_model, "--epochs", "2", "--quiet",
                    "--keep", keep, "--json", js, "--save-model", saved)
        assert r.returncode == 0, r.stderr
        out[keep] = json.loads(js.read_text())
        out[keep]["stdout"] = r.stdout
        assert out[keep]["weights_sha256"] == weights_sha256(modelfile.load(str(saved)))
    assert out["auto"]["kept"]["keep"] == "start" and out["auto"]["kept"]["n"] == 3
    assert "kept the model before training: on 3 validation images" in out["auto"]["stdout"]
    assert "kept the model" not in out["last"]["stdout"]
    assert out["auto"]["weights_sha256"] == start != out["last"]["weights_sha256"]
    assert out["last"]["kept"] == {"keep": "trained", "reason": "--keep last"}
    # the same training either way: the decision comes after it
    assert out["auto"]["val_accuracy"] == out["last"]["val_accuracy"]


def test_errors_and_ctrl_c_leave_no_partial_outputs(tmp_path, folder12, vww_model, monkeypatch, capsys):
    from host import train
    out = tmp_path / "o"
    argv = ["--data", str(folder12), "--model", str(vww_model), "--epochs", "1", "--quiet",
            "--json", str(out / "r.json"), "--log", str(out / "r.jsonl"), "--plot", str(out / "r.png"),
            "--save-model", str(out / "r.tlm")]
    (out).mkdir()
    (out / "r.json").write_text("previous\n")                              # an older result stays whole
    real = train.run

    def interrupted(*a, **k):
        k["record"]({"kind": "train", "step": 1, "epoch": 0, "running_accuracy": 0.0})
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "run", interrupted)
    assert simulate.main(argv) == 130
    assert sorted(p.name for p in out.iterdir()) == ["r.json"] and (out / "r.json").read_text() == "previous\n"

    def fails_after_training(*a, **k):
        real(*a, **k)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(train, "run", fails_after_training)
    assert simulate.main(argv) == 2
    assert "No space left" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["r.json"] and (out / "r.json").read_text() == "previous\n"


def test_make_model_path_is_relative_to_the_caller(tmp_path):
    """`make -C firmware MODEL=rel.tlm` run from another folder: the path is the caller's."""
    import shutil
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    (tmp_path / "m.tlm").write_bytes(b"TLLS")
    r = subprocess.run(["bash", "-c", f"cd {tmp_path} && make -pn -C {ROOT / 'firmware'} MODEL=m.tlm"],
                       capture_output=True, text=True)
    assert f"TINYLLS_MODEL := {tmp_path / 'm.tlm'}" in r.stdout, r.stderr[-2000:]
    r = subprocess.run(["bash", "-c", f"cd {tmp_path} && make -n -C {ROOT / 'firmware'} MODEL=missing.tlm"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and f"MODEL=missing.tlm: no such file ({tmp_path / 'missing.tlm'})" in r.stderr


def test_stream_ctrl_c_and_errors_leave_no_partial_outputs(tmp_path, monkeypatch, capsys):
    from host import stream
    out = tmp_path / "o"
    argv = ["--port", "loop://", "--limit", "2", "--val-limit", "2", "--epochs", "1", "--quiet",
            "--json", str(out / "r.json"), "--log", str(out / "r.jsonl"), "--plot", str(out / "r.png"),
            "--save-model", str(out / "r.tlm")]

    def half_run(exc):
        def run(args, log=None, progress=True, outputs=None):
            log.write('{"kind": "start"}\n')
            outputs.temp("--save-model").write_bytes(b"TLLS")
            raise exc
        return run
    for exc, code in ((KeyboardInterrupt(), 130), (stream.StreamError("link lost"), 2), (OSError(5, "I/O"), 2)):
        monkeypatch.setattr(stream, "run", half_run(exc))
        assert stream.main(argv) == code
        assert sorted(p.name for p in out.iterdir()) == [], list(out.iterdir())
    err = capsys.readouterr().err
    assert "host.stream: interrupted" in err and "host.stream: error: link lost" in err
