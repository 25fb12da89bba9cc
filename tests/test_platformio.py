"""PlatformIO is the firmware build, offline (issue 14).

- the hand-made tool-scons package (firmware/platform/setup_scons.py) is accepted by PlatformIO;
- `pio run -e ENV -t size` builds every env of the local platform with the network cut off
  (`unshare -n` where it works) and reports RAM/flash against the board's capacities;
- `make -C firmware` is an alias that still honours BOARD, BUILD, ARENA_BYTES, BLOB_BYTES,
  MAX_LAYERS, STACK_BYTES, INPUT_BYTES, EXTRA_CFLAGS;
- `pio test -e mps2-an386 | rv32-virt` runs ccore's on-target unit tests in QEMU;
- rv32-virt (RV32IMC under qemu-system-riscv32 -M virt) trains to the weights host.simulate prints:
  the synthetic from-scratch run, and 12 real VWW images with the fine-tuning recipe;
- the STM32F746G-DISCO register-level port builds offline with the VWW model in flash and fits its
  320 KB of SRAM and 1 MB of flash.

Missing tools skip with the install line (fail under CI=true); missing reference data skips naming
the path (fails under CI=true)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tools import need, need_module

ROOT = Path(__file__).resolve().parents[1]
PIO_ENV = dict(os.environ, PLATFORMIO_DISABLE_UPGRADE_CHECK="true", PLATFORMIO_SETTING_ENABLE_TELEMETRY="No")
TOOLCHAIN = {"mps2-an386": ("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi"),
             "disco_f746ng": ("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi"),
             "rv32-virt": ("riscv64-unknown-elf-gcc", "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf")}
QEMU = {"mps2-an386": ("qemu-system-arm", "qemu-system-arm"), "rv32-virt": ("qemu-system-riscv32", "qemu-system-misc")}
# the default field recipe (host/recipes.py: LLS on every layer + the classifier at its own rate,
# stochastic rounding), one epoch of 12 real images
FINETUNE = ["--limit", "12", "--val-limit", "4", "--epochs", "1", "--seed", "3"]

pytestmark = [pytest.mark.firmware]


def offline() -> list[str]:
    """`unshare -n` (no network at all) when this machine allows it, else nothing."""
    exe = shutil.which("unshare")
    if exe and subprocess.run([exe, "-n", "true"], capture_output=True).returncode == 0:
        return [exe, "-n"]
    return []


@pytest.fixture(scope="module")
def pio():
    need_module("platformio", "PlatformIO drives the firmware build (pip install platformio)")
    need("make", "make")
    r = subprocess.run([sys.executable, str(ROOT / "firmware" / "platform" / "setup_scons.py")],
                       capture_output=True, text=True, env=PIO_ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    return [sys.executable, "-m", "platformio"]


def make_firmware(board: str, build: Path, **settings) -> subprocess.CompletedProcess:
    args = ["make", "-s", "-C", str(ROOT / "firmware"), f"BOARD={board}", f"BUILD={build}",
            f"PYTHON={sys.executable}"] + [f"{k.upper()}={v}" for k, v in settings.items()]
    return subprocess.run(args, capture_output=True, text=True, env=PIO_ENV)


def built(board: str, build: Path, **settings) -> Path:
    r = make_firmware(board, build, **settings)
    assert r.returncode == 0, f"make BOARD={board} failed:\n{r.stdout}\n{r.stderr}"
    return build / "tinylls.elf"


def symbols(elf: Path, cross: str) -> dict:
    out = subprocess.run([cross + "nm", "-S", str(elf)], capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4:
            syms[p[3]] = (int(p[0], 16), int(p[1], 16))
        elif len(p) == 3:
            syms[p[2]] = (int(p[0], 16), None)
    return syms


def sections(elf: Path, cross: str) -> dict:
    out = subprocess.run([cross + "size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    return {p[0]: int(p[1]) for p in (line.split() for line in out.splitlines()) if len(p) >= 2 and p[1].isdigit()}


# ---------------------------------------------------------------- the build itself
def test_platformio_accepts_the_scons_package_made_from_pypi(pio):
    from platformio.package.manager.core import get_core_package_dir
    path = get_core_package_dir("tool-scons", auto_install=False)
    assert path and (Path(path) / "scons.py").is_file() and (Path(path) / ".piopm").is_file()


@pytest.mark.parametrize("env", ["mps2-an386", "rv32-virt", "disco_f746ng"])
def test_platformio_run_builds_offline_and_reports_size(pio, env, tmp_path):
    need(*TOOLCHAIN[env])
    r = subprocess.run(offline() + pio + ["run", "-d", str(ROOT), "-e", env, "-t", "size"], capture_output=True,
                       text=True, env=dict(PIO_ENV, PLATFORMIO_BUILD_DIR=str(tmp_path),
                                           TINYLLS_ARENA_BYTES="4096", TINYLLS_BLOB_BYTES="8192"))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    ram = re.search(r"RAM:.*\(used (\d+) bytes from (\d+) bytes\)", out)
    flash = re.search(r"Flash:.*\(used (\d+) bytes from (\d+) bytes\)", out)
    assert ram and flash, out[-2000:]
    elf = tmp_path / env / "firmware.elf"
    cross = TOOLCHAIN[env][0][: -len("gcc")]
    sec = sections(elf, cross)
    assert int(ram.group(1)) == sec.get(".data", 0) + sec.get(".bss", 0)
    assert int(flash.group(1)) >= sec[".text"]
    capacity = {"disco_f746ng": (320 * 1024, 1024 * 1024)}.get(env, (4 << 20, 4 << 20))
    assert (int(ram.group(2)), int(flash.group(2))) == capacity
    assert ".bss" in out and "Total" in out                        # size -A listing
    assert (tmp_path / env / "src" / "ccore" / "src" / "tl_lls.su").is_file()   # stack usage per object


def test_platformio_make_alias_keeps_the_sizing_variables(pio, tmp_path):
    need(*TOOLCHAIN["mps2-an386"])
    elf = built("mps2-an386", tmp_path / "a", arena_bytes=4096, blob_bytes=8192, max_layers=4,
                stack_bytes=16384, input_bytes=27648, extra_cflags="-DTL_UNUSED_MARK=1")
    syms = symbols(elf, "arm-none-eabi-")
    assert syms["g_arena"][1] == 4096 and syms["g_blob"][1] == 8192
    assert syms["g_layers"][1] % 4 == 0 and syms["g_layers"][1] // 4 in range(64, 256)   # 4 tl_layer entries
    assert syms["__stack_top"][0] - syms["__stack_limit"][0] == 16384
    # EXTRA_CFLAGS reaches the compiler: a bad flag fails the build
    r = make_firmware("mps2-an386", tmp_path / "b", extra_cflags="-Wthis-flag-does-not-exist")
    assert r.returncode != 0 and "this-flag-does-not-exist" in r.stdout + r.stderr
    r = make_firmware("no-such-board", tmp_path / "c")
    assert r.returncode != 0 and "rv32-virt" in r.stderr and "mps2-an386" in r.stderr


@pytest.mark.parametrize("env", ["mps2-an386", "rv32-virt"])
def test_platformio_test_runs_the_core_unit_tests_in_qemu(pio, env, tmp_path):
    need(*TOOLCHAIN[env])
    need(*QEMU[env])
    r = subprocess.run(offline() + pio + ["test", "-d", str(ROOT), "-e", env], capture_output=True, text=True,
                       env=dict(PIO_ENV, PLATFORMIO_BUILD_DIR=str(tmp_path)), timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert f"TLTEST-BEGIN {env}" in out and "TLTEST-END 0" in out
    m = re.search(r"(\d+) test cases: (\d+) succeeded", out)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) >= 7, out[-1500:]


# ---------------------------------------------------------------- rv32-virt trains like host.simulate
def rv32_elf(runs, out: Path) -> Path:
    """rv32-virt firmware with buffers the host planner sized for the largest of `runs`."""
    from test_firmware import planned
    plans = [planned(argv) for argv in runs]
    arena, blob = max(a for a, _ in plans), max(b for _, b in plans)
    return built("rv32-virt", out, arena_bytes=arena, blob_bytes=(blob + 4095) // 4096 * 4096)


@pytest.fixture(scope="module")
def vww_model(tmp_path_factory) -> Path:
    """The MLPerf Tiny VWW int8 network imported from ../shared (as tests/test_firmware.py does)."""
    from test_firmware import TFLITE, VWW, need_shared
    need_shared(VWW)
    need_shared(TFLITE)
    from host import modelfile
    from host.tflite_import import import_tflite
    path = tmp_path_factory.mktemp("model") / "vww96.tlm"
    modelfile.save(import_tflite(str(TFLITE)), str(path))
    return path


@pytest.fixture(scope="module")
def rv32_tools(pio):
    need(*TOOLCHAIN["rv32-virt"])
    need(*QEMU["rv32-virt"])


def test_platformio_rv32_virt_from_scratch_matches_host_simulate(rv32_tools, tmp_path):
    from test_firmware import SCRATCH, assert_same_run, simulate_run, stream_run
    elf = rv32_elf([SCRATCH], tmp_path / "fw")
    board = stream_run(elf, SCRATCH, tmp_path, "rv32-scratch")
    assert board["device"]["board"] == "rv32-virt" and board["device"]["counter_kind"] == "instructions"
    assert_same_run(board, simulate_run(SCRATCH, tmp_path, "rv32-scratch"), 6, 4, 2)
    assert 0 < board["device"]["stack_used"] < 32768
    assert board["mcu_train_insn_median"] > board["mcu_infer_insn_median"] > 0


def test_platformio_rv32_virt_finetunes_12_vww_images_like_host_simulate(rv32_tools, vww_model, tmp_path):
    from test_firmware import assert_same_run, simulate_run, stream_run, vww_args
    argv = vww_args(vww_model, FINETUNE)
    elf = rv32_elf([argv], tmp_path / "fw")
    board = stream_run(elf, argv, tmp_path, "rv32-finetune")
    assert board["device"]["board"] == "rv32-virt"
    assert_same_run(board, simulate_run(argv, tmp_path, "rv32-finetune"), 12, 4, 1)


# ---------------------------------------------------------------- STM32F746G-DISCO, VWW in flash
def test_platformio_disco_f746ng_vww_in_flash_fits_320k_sram_and_1m_flash(pio, vww_model, tmp_path):
    need(*TOOLCHAIN["disco_f746ng"])
    elf = built("disco_f746ng", tmp_path / "fw", model=vww_model)
    sec = sections(elf, "arm-none-eabi-")
    syms = symbols(elf, "arm-none-eabi-")
    stack = syms["__stack_top"][0] - syms["__stack_limit"][0]
    ram = sec.get(".data", 0) + sec[".bss"] + stack
    flash = sec[".text"] + sec.get(".ARM.exidx", 0) + sec.get(".data", 0)
    print(f"disco_f746ng, VWW in flash: static RAM {sec['.bss'] + sec.get('.data', 0)} B + stack reserve "
          f"{stack} B = {ram} B of 327,680; flash {flash} B of 1,048,576")
    assert ram <= 320 * 1024 and flash <= 1024 * 1024
    assert syms["vectors"][0] == 0x08000000 and syms["__stack_top"][0] == 0x20000000 + 320 * 1024
    assert syms["fw_model"][1] > 200_000                                 # the model is in flash
    # a model that does not fit the SRAM fails the link, naming it
    r = make_firmware("disco_f746ng", tmp_path / "big", arena_bytes=200_000, blob_bytes=200_000)
    assert r.returncode != 0 and "320 KB of SRAM" in r.stdout + r.stderr


def test_platformio_rv32_virt_bench_trains_every_layer_bit_identically(rv32_tools, tmp_path):
    """bench/mcu.py --board rv32-virt: MobileNetV1-0.25 96x96, every layer trained, model in flash."""
    import json
    sys.path.insert(0, str(ROOT / "bench"))
    import mcu
    out = tmp_path / "mcu.json"
    assert mcu.main(["--board", "rv32-virt", "--steps", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["board"] == "rv32-virt" and r["counter"] == "instructions" and r["model_resident_in_flash"]
    assert r["weights_bit_identical"]
    assert r["mcu_train_ram_bytes"] == r["data"] + r["bss"] + r["stack_used_bytes"] <= 300_000
    assert 0 < r["stack_used_bytes"] <= r["stack_callchain_bytes"]
    assert r["stack_callchain"][:3] == ["reset_c", "main", "tinylls_app_main"]
    assert 0 < r["mcu_infer_insn_per_mac"] < 20
