"""The firmware on an emulated Cortex-M4 (qemu-system-arm -M mps2-an386), end to end.

Builds firmware/ with arm-none-eabi-gcc (arena sized by the host planner), then streams real VWW
images (../shared/datasets/vww01-eembc) with `python -m host.stream --qemu` and checks that the
board ends with the weights `python -m host.simulate` prints for the same training options
(data, model, limits, epochs, seed, rule, lr schedule), with the same predictions and accuracies;
then again through a proxy that flips ~1/1000 bytes and drops frames, and once from scratch
(LLS-M, two epochs of the cosine schedule).

Missing arm-none-eabi-gcc / qemu-system-arm skip with the install line, except under CI (CI=true)
where they fail. Missing shared data skips naming the path (env TINYLLS_SHARED overrides it).
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shared_data import shared_path, shared_root
from tools import need, need_module

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_root()
VWW = SHARED / "datasets" / "vww01-eembc"
TFLITE = (SHARED / "datasets" / "mlperf-tiny-vww-models" / "benchmark" / "training" / "visual_wake_words"
          / "trained_models" / "vww_96_int8.tflite")
N_TRAIN, N_EVAL = 32, 32
# The imported network trains on all its layers (the core's default --train-layers all): 3x3 maps
# have an LLS pooling grid and dead-channel update factors are 0.
CLEAN = ["--limit", str(N_TRAIN), "--val-limit", str(N_EVAL), "--epochs", "1", "--seed", "3"]
LOSSY = ["--limit", "16", "--val-limit", "8", "--epochs", "1", "--seed", "4"]      # kept short: CI time
# From scratch on the synthetic scenes: LLS-M, two epochs (the cosine schedule halves the rates).
SCRATCH = ["--limit", "6", "--val-limit", "4", "--epochs", "2", "--seed", "5", "--rule", "lls-m"]

pytestmark = [pytest.mark.firmware]


def need_shared(path: Path) -> Path:
    return shared_path(path.relative_to(SHARED))


@pytest.fixture(scope="module")
def tools():
    need("make", "make")
    need("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi")
    need("qemu-system-arm", "qemu-system-arm")
    need_module("platformio", "make -C firmware builds with PlatformIO (pip install platformio)")


def build_firmware(out_dir: Path, **sizes) -> Path:
    args = ["make", "-s", "-C", str(ROOT / "firmware"), "BOARD=mps2-an386", f"BUILD={out_dir}",
            f"PYTHON={sys.executable}", f"-j{os.cpu_count() or 2}"] + [f"{k.upper()}={v}" for k, v in sizes.items()]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, f"firmware build failed:\n{r.stdout}\n{r.stderr}"
    elf = out_dir / "tinylls.elf"
    assert elf.is_file()
    return elf


# ---------------------------------------------------------------- protocol robustness on the board
@pytest.fixture(scope="module")
def small_elf(tools, tmp_path_factory):
    return build_firmware(tmp_path_factory.mktemp("fw-small"), arena_bytes=4096, blob_bytes=8192)


def test_firmware_naks_garbage_and_keeps_running(small_elf):
    from host import protocol as P
    from host.stream import QemuBoard
    from host._tinylls import lib
    with QemuBoard(str(small_elf)) as board:
        port = board.connect()
        link = P.Link(port)
        info = link.sync()
        assert (info.board, info.counter_kind, info.arena_cap, info.blob_cap) == \
               ("mps2-an386", "instructions", 4096, 8192)
        port.write(b"\xc0" + b"\x01" * 5000 + b"\xc0")              # oversize
        port.write(b"\xc0\x01\x00\xdb\x07\xc0")                     # bad escape
        bad = bytearray(P.encode(lib.TL_PROTO_OP_INFO, 9))
        bad[5] ^= 0x40                                               # CRC mismatch
        port.write(bytes(bad))
        for op, payload, code in [(0x66, b"", lib.TL_PROTO_ERR_UNKNOWN_OP),
                                  (lib.TL_PROTO_OP_TRAIN, b"\0" * 12, lib.TL_PROTO_ERR_NO_MODEL),
                                  (lib.TL_PROTO_OP_LOAD_BEGIN, struct.pack("<II", 8193, 0),
                                   lib.TL_PROTO_ERR_TOO_BIG),
                                  (lib.TL_PROTO_OP_SET_CONFIG, b"\0" * 24, lib.TL_PROTO_ERR_NO_MODEL),
                                  (lib.TL_PROTO_OP_SET_LR, b"\0" * 4, lib.TL_PROTO_ERR_NO_MODEL)]:
            with pytest.raises(P.DeviceError) as e:
                link.command(op, payload)
            assert e.value.code == code
        st = link.device_stats()
        assert st["frames_oversize"] == 1 and st["frames_malformed"] == 1 and st["frames_crc"] == 1
        assert st["unknown_ops"] == 1
        assert link.info().board == "mps2-an386"                     # still alive and answering
        assert board.proc.poll() is None


# ---------------------------------------------------------------- end to end with VWW
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    need_shared(VWW)
    need_shared(TFLITE)
    from host import modelfile
    from host.tflite_import import import_tflite
    path = tmp_path_factory.mktemp("model") / "vww96.tlm"
    modelfile.save(import_tflite(str(TFLITE)), str(path))
    return path


def vww_args(model_file, run):
    # --keep last: these runs check the training itself (a few validation images never make it
    # significant, so --keep auto would return to the start: tests/test_adapt.py and test_field.py)
    return ["--data", str(VWW), "--model", str(model_file), "--keep", "last"] + run


def planned(argv):
    """host.stream's own plan of a run (host.simulate.prepare + CModel): arena and model file size."""
    from host import modelfile, simulate, stream
    p = argparse.ArgumentParser()
    simulate.add_training_args(p)
    setup, cm = stream.prepare_run(p.parse_args(argv))
    return cm.arena_bytes, len(modelfile.to_bytes(setup.model))


@pytest.fixture(scope="module")
def vww_elf(tools, model_file, tmp_path_factory):
    """One firmware for every run below, buffers sized by the host planner for the largest."""
    return sized_firmware([vww_args(model_file, CLEAN)], tmp_path_factory.mktemp("fw-vww"))


@pytest.fixture(scope="module")
def scratch_elf(tools, tmp_path_factory):
    """The from-scratch run needs no reference data, so its firmware does not wait for any."""
    return sized_firmware([SCRATCH], tmp_path_factory.mktemp("fw-scratch"))


def sized_firmware(runs, out: Path) -> Path:
    """A firmware whose buffers the host planner sized for the largest of `runs`."""
    plans = [planned(argv) for argv in runs]
    arena = max(a for a, _ in plans)
    blob = max(b for _, b in plans)
    return build_firmware(out, arena_bytes=arena, blob_bytes=(blob + 4095) // 4096 * 4096)


def stream_run(elf, argv, out: Path, name: str, port: str | None = None) -> dict:
    from host import stream
    target = ["--port", port] if port else ["--qemu", str(elf)]
    t = time.monotonic()
    rc = stream.main(target + argv + ["--log", str(out / f"{name}.jsonl"), "--plot", str(out / f"{name}.png"),
                                      "--json", str(out / f"{name}.json"), "--quiet"])
    assert rc == 0
    summary = json.loads((out / f"{name}.json").read_text())
    summary["_seconds"] = time.monotonic() - t
    summary["_dir"] = str(out)
    summary["_log"] = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
    return summary


def simulate_run(argv, out: Path, name: str) -> dict:
    """`python -m host.simulate` itself, then the per-sample validation predictions of the model it
    saved (its summary has accuracies only), with the run's own configuration and data."""
    from host import modelfile, simulate
    from host.core import CModel
    from host.model import weights_sha256
    js, saved = out / f"{name}-sim.json", out / f"{name}-sim.tlm"
    assert simulate.main(argv + ["--json", str(js), "--save-model", str(saved), "--quiet"]) == 0
    sim = json.loads(js.read_text())
    setup = simulate.prepare(simulate.parse_args(argv))
    trained = modelfile.load(str(saved))
    assert weights_sha256(trained) == sim["weights_sha256"]
    cm = CModel(trained, **setup.config)
    results = [cm.infer(trained.quantize_input(x), with_local=True) for x in setup.val_x]
    sim["val_preds"] = [r.pred for r in results]
    sim["val_labels"] = [int(y) for y in setup.val_y]
    sim["val_local_preds"] = [r.local_pred.tolist() for r in results]
    return sim


def assert_same_run(board: dict, sim: dict, n_train: int, n_val: int, epochs: int):
    assert board["train_samples"] == sim["train_samples"] == n_train
    assert board["eval_samples"] == sim["val_samples"] == n_val
    assert board["samples"] == n_train * epochs and board["device"]["steps"] == n_train * epochs
    assert board["weights_sha256"] == sim["weights_sha256"]
    assert board["weights_sha256"] != board["initial_weights_sha256"]      # it did train
    assert board["eval_preds"] == sim["val_preds"]
    assert board["eval_accuracy"] == sim["val_accuracy"]
    assert board["train_accuracy"] == sim["train_accuracy"]
    weighted = [i for i, a in enumerate(sim["per_layer_accuracy"]) if a is not None]
    assert [board["local_accuracy"][i] for i in weighted] == [sim["per_layer_accuracy"][i] for i in weighted]
    # the per-sample log of the final evaluation
    samples = [r for r in board["_log"] if r["kind"] == "eval_sample" and r["step"] == n_train * epochs]
    assert [r["pred"] for r in samples] == sim["val_preds"]
    assert [r["label"] for r in samples] == sim["val_labels"]
    assert [r["local_pred"] for r in samples] == sim["val_local_preds"]


@pytest.fixture(scope="module")
def clean_run(vww_elf, model_file, tmp_path_factory):
    return stream_run(vww_elf, vww_args(model_file, CLEAN), tmp_path_factory.mktemp("clean"), "clean")


def test_qemu_training_is_bit_identical_to_host_simulate(clean_run, model_file, tmp_path):
    sim = simulate_run(vww_args(model_file, CLEAN), tmp_path, "clean")
    assert_same_run(clean_run, sim, N_TRAIN, N_EVAL, 1)
    assert clean_run["device_config"] == {"basis": 0, "variant": 0, "rounding": 0, "seed": 3, "basis_seed": 0,
                                          "inv_tau_q8": 512}
    assert clean_run["mcu_train_insn_median"] > clean_run["mcu_infer_insn_median"] > 0
    kinds = [r["kind"] for r in clean_run["_log"]]
    # the baseline before training and the evaluation after the epoch
    assert kinds.count("train") == N_TRAIN and kinds.count("eval_sample") == 2 * N_EVAL
    assert (Path(clean_run["_dir"]) / "clean.png").stat().st_size > 1000
    print(f"clean run: {clean_run['_seconds']:.0f} s")


def test_lossy_link_gives_the_simulated_weights(vww_elf, model_file, tmp_path):
    from host import stream
    from host.lossyproxy import LossyProxy
    argv = vww_args(model_file, LOSSY)
    with stream.QemuBoard(str(vww_elf)) as board, \
            LossyProxy(("127.0.0.1", board.port), flip=1e-3, drop=0.01, seed=1) as proxy:
        lossy = stream_run(None, argv, tmp_path, "lossy", port=f"socket://127.0.0.1:{proxy.port}")
        damage = proxy.summary()
    assert damage["up"]["flipped"] > 0 and damage["down"]["flipped"] > 0, damage
    assert damage["up"]["dropped"] + damage["down"]["dropped"] > 0, damage
    assert lossy["link"]["retransmits"] > 0
    assert lossy["device_stats"]["frames_crc"] + lossy["device_stats"]["frames_malformed"] > 0
    # no TRAIN applied twice (steps), the same weights and predictions as the simulation
    assert_same_run(lossy, simulate_run(argv, tmp_path, "lossy"), 16, 8, 1)
    print(f"lossy run: {lossy['_seconds']:.0f} s")


def test_from_scratch_lls_m_with_lr_schedule_matches_host_simulate(scratch_elf, tmp_path):
    board = stream_run(scratch_elf, SCRATCH, tmp_path, "scratch")
    sim = simulate_run(SCRATCH, tmp_path, "scratch")
    assert_same_run(board, sim, 6, 4, 2)
    assert board["device_config"]["variant"] == 1 and board["device_config"]["seed"] == 5
    assert [h["lr_factor"] for h in board["history"]] == [1.0, 0.5]
    assert [h["train_accuracy"] for h in board["history"]] == [h["train_accuracy"] for h in sim["history"]]
    print(f"scratch run: {board['_seconds']:.0f} s")


@pytest.fixture(scope="module")
def flash_elf(tools, tmp_path_factory):
    """The from-scratch model of SCRATCH compiled into flash (make MODEL=...): every buffer sized
    exactly by the build (trainable tensors, arena with the input inside, layer table)."""
    from host import modelfile, simulate, stream
    p = argparse.ArgumentParser()
    simulate.add_training_args(p)
    setup, _ = stream.prepare_run(p.parse_args(SCRATCH))
    out = tmp_path_factory.mktemp("fw-flash")
    path = out / "scratch.tlm"
    modelfile.save(setup.model, str(path))
    return build_firmware(out / "build", model=path), path


def test_model_in_flash_trains_like_host_simulate_in_exact_ram(flash_elf, tmp_path):
    from host import modelfile
    elf, path = flash_elf
    board = stream_run(elf, SCRATCH, tmp_path, "flash")
    assert_same_run(board, simulate_run(SCRATCH, tmp_path, "flash"), 6, 4, 2)
    dev = board["device"]
    blob = path.read_bytes()
    assert dev["model_in_flash"] and dev["input_in_arena"] and dev["input_cap"] == 0
    assert (dev["rom_size"], dev["model_size"]) == (len(modelfile.strip_host(blob)),) * 2
    assert dev["blob_cap"] == modelfile.train_ram_bytes(blob) == dev["weights_bytes"]
    assert dev["arena_cap"] == dev["arena_needed"]
    assert 0 < dev["stack_used"] < 16384
    # the painted high-water mark stays within the static call-chain bound bench/mcu.py reports
    sys.path.insert(0, str(ROOT / "bench"))
    import mcu
    chain = mcu.stack_callchain(elf.parent)
    assert chain["stack_callchain"][:3] == ["Reset_Handler", "main", "tinylls_app_main"]
    assert dev["stack_used"] <= chain["stack_callchain_bytes"], chain
    r = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True)
    sec = {p[0]: int(p[1]) for p in (line.split() for line in r.stdout.splitlines()) if len(p) >= 2 and p[1].isdigit()}
    # static RAM: the trainable tensors, the arena and at most 16 KB of protocol state and tables
    assert 0 <= sec[".data"] + sec[".bss"] - dev["blob_cap"] - dev["arena_cap"] < 16384


def test_stream_reports_missing_port_and_silent_firmware(tmp_path, capsys):
    from host import stream
    small = ["--limit", "2", "--val-limit", "2", "--epochs", "1"]       # a valid run: the data is read first
    assert stream.main(["--port", str(tmp_path / "ttyNOPE"), *small]) == 2
    assert "no such device" in capsys.readouterr().err
    # a socket that accepts but never answers: "does not answer"
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        rc = stream.main(["--port", f"socket://127.0.0.1:{srv.getsockname()[1]}", *small, "--quiet"])
    finally:
        srv.close()
    assert rc == 2
    assert "does not answer" in capsys.readouterr().err
