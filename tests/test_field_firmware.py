"""Issue 11 on the emulated board (qemu-system-arm -M mps2-an386): the field workflow from a fresh
clone with the user's own model and data.

import-tflite -> `make -C firmware MODEL=<path relative to the caller>` -> host.stream with the
default fine-tuning recipe on that model-in-flash firmware -> --save-model -> host.evaluate of the
saved file equals the board's final evaluation sample for sample, and the weights equal
host.simulate's. A 12-image folder of the user's own JPEGs (other sizes than 96x96) trains on the
board and in simulate with identical weights; a 1000-image folder trains in simulate and, with
--limit 16 and --val-data, on the board with identical weights. A from-scratch run against that
firmware is refused naming the model in flash, with nothing written.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_field import TFLITE_REL, VWW_REL, write_folder
from test_firmware import stream_run, tools  # noqa: F401,F811  (the fixture, used by name)

from shared_data import shared_path

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.firmware]


def cli(module, *args, cwd):
    r = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return r


@pytest.fixture(scope="module")
def fresh(tools, tmp_path_factory):  # noqa: F811
    """The user's folder: the .tflite imported there, the firmware built from there with a
    relative MODEL= path (bash `cd`, as a user's shell sets PWD)."""
    work = tmp_path_factory.mktemp("user")
    tfl = shared_path(TFLITE_REL)
    r = subprocess.run(["bash", "-c", f"cd {work} && {sys.executable} -m host.quantize import-tflite {tfl} "
                                      f"-o vww96.tlm"], capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["bash", "-c", f"cd {work} && make -s -C {ROOT / 'firmware'} BOARD=mps2-an386 "
                                      f"BUILD={work / 'build'} PYTHON={sys.executable} MODEL=vww96.tlm"],
                       capture_output=True, text=True, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    elf = work / "build" / "tinylls.elf"
    assert elf.is_file()
    return work, elf, work / "vww96.tlm"


def simulate_weights(argv, out: Path) -> dict:
    from host import simulate
    js = out / "sim.json"
    assert simulate.main(argv + ["--json", str(js), "--save-model", str(out / "sim.tlm"), "--quiet"]) == 0
    return json.loads(js.read_text())


def test_fresh_clone_recipe_on_the_model_in_flash_save_and_evaluate(fresh, tmp_path):
    from host import evaluate, modelfile
    from host.model import weights_sha256
    work, elf, model = fresh
    data = shared_path(VWW_REL)
    # the default fine-tuning recipe (rates, all layers, constant schedule), kept short for CI
    run = ["--model", str(model), "--data", str(data), "--limit", "8", "--val-limit", "8", "--epochs", "2",
           "--keep", "last"]
    board = stream_run(elf, run + ["--save-model", str(tmp_path / "board.tlm")], tmp_path, "fresh")
    assert board["device"]["model_in_flash"]                    # recognised: nothing was sent
    assert board["evals"][0]["step"] == 0 and board["eval_accuracy_before"] == board["evals"][0]["accuracy"]
    base = [r for r in board["_log"] if r["kind"] == "eval"][0]             # the JSONL's baseline
    assert base["step"] == 0 and base["epoch"] == 0 and base["baseline"]
    assert [r["epoch"] for r in board["_log"] if r["kind"] == "eval"] == [0, 1, 2]
    saved = modelfile.load(str(tmp_path / "board.tlm"))
    assert weights_sha256(saved) == board["weights_sha256"]
    sim = simulate_weights(run, tmp_path)
    assert sim["weights_sha256"] == board["weights_sha256"]
    assert weights_sha256(modelfile.load(str(tmp_path / "sim.tlm"))) == board["weights_sha256"]
    # host.evaluate of the saved file = the board's final evaluation, sample for sample
    logits = tmp_path / "logits.npy"
    assert evaluate.main(["--model", str(tmp_path / "board.tlm"), "--data", str(data), "--part", "val",
                          "--limit", "8", "--dump-logits", str(logits), "--quiet"]) == 0
    final = [r for r in board["_log"] if r["kind"] == "eval_sample" and r["step"] == board["samples"]]
    assert [r["logits"] for r in final] == np.load(logits).tolist()
    assert [r["pred"] for r in final] == board["eval_preds"]


def test_from_scratch_on_that_firmware_is_refused_naming_its_model(fresh, tmp_path):
    work, elf, model = fresh
    out = tmp_path / "out"
    r = cli("host.stream", "--qemu", elf, "--limit", "2", "--val-limit", "2", "--epochs", "1", "--quiet",
            "--log", out / "a.jsonl", "--json", out / "a.json", cwd=ROOT)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("host.stream: error: the firmware holds vww96.tlm (")
    assert "in flash, not mobilenet_v1_0.25_96" in line and "MODEL=start.tlm" in line
    assert not out.exists() or not any(out.iterdir())            # no empty .jsonl left behind


def test_own_twelve_jpegs_train_on_the_board_like_simulate(fresh, tmp_path):
    work, elf, model = fresh
    photos = write_folder(tmp_path / "photos", 6)
    run = ["--model", str(model), "--data", str(photos), "--epochs", "2", "--keep", "last"]
    board = stream_run(elf, run, tmp_path, "own12")
    assert (board["train_samples"], board["eval_samples"]) == (9, 3)
    sim = simulate_weights(run, tmp_path)
    assert board["weights_sha256"] == sim["weights_sha256"] != board["initial_weights_sha256"]
    assert board["eval_preds"] == sim["val_predictions"]
    assert [e["accuracy"] for e in board["evals"]] == [e["accuracy"] for e in sim["evals"]]
    assert (tmp_path / "own12.png").read_bytes()[:4] == b"\x89PNG"


def test_thousand_images_simulate_and_board_with_val_data(fresh, tmp_path):
    work, elf, model = fresh
    big = write_folder(tmp_path / "big", 500, seed=1, sizes=((48, 40), (96, 96), (130, 100)))
    other = write_folder(tmp_path / "val", 3, seed=2)
    sim = simulate_weights(["--model", str(model), "--data", str(big), "--epochs", "1", "--keep", "last"], tmp_path)
    assert (sim["train_samples"], sim["val_samples"]) == (750, 250)
    assert sim["evals"][0]["step"] == 0 and sim["evals"][-1]["step"] == 750
    run = ["--model", str(model), "--data", str(big), "--val-data", str(other), "--limit", "16", "--epochs", "1",
           "--keep", "last"]
    board = stream_run(elf, run, tmp_path, "big")
    assert (board["train_samples"], board["eval_samples"]) == (16, 6)
    sim16 = simulate_weights(run, tmp_path)
    assert board["weights_sha256"] == sim16["weights_sha256"]
    assert board["eval_preds"] == sim16["val_predictions"]
