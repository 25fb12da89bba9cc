"""host.plan: the RAM it plans per board and trainable set is the RAM of the firmware built that way.

Three configurations of MobileNetV1-0.25 96x96 (host.nets, no reference data needed) are compiled
into flash for the emulated Cortex-M4 (`make MODEL=`): inference only, the last 4 weighted layers,
all layers. For each, host.plan's static RAM must equal the ELF's .data + .bss exactly, and its RAM
(static + the board's stack allowance) must exceed the measured total (static + the painted stack's
high-water mark after LOAD, training, inference with every head and READ_WEIGHTS) by less than
host.plan.STACK_MARGIN. The CLI refuses a model that does not fit, naming the bytes short (exit 2)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tools import need, need_module

ROOT = Path(__file__).resolve().parents[1]


def mobilenet(path: Path, n_train: int | None, **kw) -> Path:
    from host import modelfile, nets
    calib = np.random.default_rng(0).integers(0, 256, size=(4, 96, 96, 3), dtype=np.uint8)
    model = nets.build("mobilenet", seed=0, calib=calib, classes=2, head="grid", **kw)
    nets.set_learning_rates(model, 1e-3, 1e-2)
    weighted = [i for i, L in enumerate(model.layers) if L.kind in ("conv", "dwconv", "fc")]
    keep = set(weighted if n_train is None else weighted[len(weighted) - n_train:] if n_train else [])
    for i, L in enumerate(model.layers):
        L.trainable = i in keep
    modelfile.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan-models")
    return {spec: mobilenet(d / f"m-{spec}.tlm", n) for spec, n in (("none", 0), ("4", 4), ("all", None))}


def measured(model: Path, build: Path) -> dict:
    """Build mps2-an386 with `model` in flash, run it in QEMU, return .data + .bss and the stack used."""
    from host import modelfile, protocol
    from host.stream import QemuBoard
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "firmware"), "BOARD=mps2-an386", f"BUILD={build}",
                        f"MODEL={model}", f"PYTHON={sys.executable}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    elf = build / "tinylls.elf"
    out = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sec = {p[0]: int(p[1]) for p in (line.split() for line in out.splitlines()) if len(p) >= 2 and p[1].isdigit()}
    m = modelfile.load(str(model))
    trainable = any(L.trainable for L in m.layers)
    x = np.random.default_rng(1).integers(-128, 128, int(np.prod(m.input_shape)), dtype=np.int8)
    with QemuBoard(str(elf)) as board:
        link = protocol.Link(board.connect())
        link.sync()
        link.load_model(model.read_bytes())
        if trainable:
            link.train(x, 1)
        link.evaluate(x, with_local=True)
        link.read_weights()
        info = link.info()
    return {"static": sec.get(".data", 0) + sec[".bss"], "stack": info.stack_used,
            "flash": sec[".text"] + sec.get(".ARM.exidx", 0) + sec.get(".data", 0)}


def test_plan_matches_three_built_configurations(models, tmp_path):
    need("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi")
    need("qemu-system-arm", "qemu-system-arm")
    need_module("platformio", "the firmware is built by PlatformIO (pip install platformio)")
    from host import modelfile, plan
    boards = plan.load_boards()
    rows = []
    for spec, path in models.items():
        p = plan.plan(modelfile.load(str(path)), {"mps2-an386": boards["mps2-an386"]}, [spec])
        row = p["boards"]["mps2-an386"]["configs"][0]
        got = measured(path, tmp_path / spec)
        rows.append((spec, row["static_ram_bytes"], got["static"], row["ram_bytes"], got["static"] + got["stack"],
                     got["stack"], row["flash_bytes"], got["flash"]))
    print("\ntrain  planned static  measured static  planned RAM  measured RAM  stack used  planned flash  flash")
    for r in rows:
        print("%5s  %14d  %15d  %11d  %12d  %10d  %13d  %5d" % r)
    for spec, p_static, m_static, p_ram, m_ram, stack, p_flash, m_flash in rows:
        assert p_static == m_static, (spec, p_static, m_static)
        assert 0 < stack and 0 <= p_ram - m_ram < plan.STACK_MARGIN, (spec, p_ram, m_ram)
        assert abs(p_flash - m_flash) <= 1024, (spec, p_flash, m_flash)      # the port's code, +-1 KB


def test_plan_cli_reports_every_board_and_the_largest_trainable_set(models, tmp_path):
    out = tmp_path / "plan.json"
    r = subprocess.run([sys.executable, "-m", "host.plan", "--model", str(models["all"]), "--json", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    p = json.loads(out.read_text())
    assert {"mps2-an386", "rv32-virt", "disco_f746ng"} <= set(p["boards"])
    disco = p["boards"]["disco_f746ng"]
    specs = [c["train_layers"] for c in disco["configs"]]
    assert specs[0] == "none" and specs[-1] == "all" and len(specs) == p["weighted_layers"] + 1
    assert disco["configs"][0]["ram_capacity"] == 320 * 1024 and disco["configs"][0]["flash_capacity"] == 1 << 20
    rams = [c["ram_bytes"] for c in disco["configs"]]
    assert rams == sorted(rams)                                     # more trainable layers, more RAM
    assert disco["largest_trainable_spec"] == "all"                 # MobileNetV1-0.25 96x96 fits the F746
    assert "largest trainable set that fits: all layers" in r.stdout


def test_plan_refuses_a_model_that_does_not_fit(tmp_path):
    big = mobilenet(tmp_path / "big.tlm", None, alpha=1.0)
    r = subprocess.run([sys.executable, "-m", "host.plan", "--model", str(big), "--board", "disco_f746ng",
                        "--train-layers", "all"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "does not fit disco_f746ng" in r.stderr and "bytes of RAM short" in r.stderr
    from host import modelfile, plan
    row = plan.plan(modelfile.load(str(big)), {"disco_f746ng": plan.load_boards()["disco_f746ng"]},
                    ["all"])["boards"]["disco_f746ng"]["configs"][0]
    assert f"{row['ram_short_bytes']:,} bytes of RAM short" in r.stderr
    assert row["ram_short_bytes"] == row["ram_bytes"] - 320 * 1024 > 0
