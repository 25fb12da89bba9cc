"""The Cortex-M4 fast paths (TL_HAVE_DSP) on shapes MobileNet never has, against the host build.

tests/test_firmware.py runs MobileNet shapes only (channel counts multiples of 8, 3x3 kernels), so
the tails of the DSP kernels would go untested there: odd channel counts (pointwise output channel
pairs, depthwise groups of four), input channels not a multiple of four, more input channels than
the pointwise kernel widens (TL_PW_WIDE), a 5x5 depthwise kernel, 3x3 convolutions with padding on
odd maps, stride 2, a depthwise and a pointwise layer with single rounding, and both classifier heads. The firmware trains such a network for a few steps
in QEMU and must report the host's predictions and logits and end with the host's weights.

Missing arm-none-eabi-gcc / qemu-system-arm skip with the install line, except under CI (CI=true)
where they fail.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tools import need, need_module

ROOT = Path(__file__).resolve().parents[1]
# the host's training configuration, sent to the board with SET_CONFIG
TRAIN_CFG = dict(basis="square", rounding="stochastic", seed=7, basis_seed=0, tau=0.5)

pytestmark = [pytest.mark.firmware]


def awkward_model(head: str, hidden_lr: float):
    from host import nets
    from host.model import Layer
    from host.nets import _conv, init_float, quantize_fresh

    h, w = 13, 11
    layers = [_conv("conv0", "conv", (h, w, 3), 5, 3, 2)]

    def add(kind, out_c, k, stride):
        layers.append(_conv(f"l{len(layers)}", kind, layers[-1].out_shape, out_c, k, stride))

    add("dwconv", 0, 3, 1)      # 5 channels: one group of four and a tail
    add("conv", 7, 1, 1)        # pointwise 5 -> 7: input tail, odd output channel
    add("dwconv", 0, 3, 2)      # stride 2 on an odd map
    add("conv", 8, 1, 1)
    add("conv", 6, 1, 1)        # 8 -> 6: the assembly channel-pair loop, here with single rounding
    add("conv", 9, 3, 1)        # 3x3 convolution, 54 taps per output
    add("dwconv", 0, 5, 1)      # 5x5 depthwise
    add("conv", 261, 1, 1)
    add("conv", 5, 1, 1)        # 261 input channels: wider than the widened pixel pair
    add("dwconv", 0, 3, 1)
    add("conv", 3, 1, 1)
    oh, ow, oc = layers[-1].out_shape
    if head == "gap":
        layers.append(Layer(kind="avgpool", in_shape=(oh, ow, oc), out_shape=(1, 1, oc), kernel=(oh, ow),
                            stride=(oh, ow), act="none", name="pool", trainable=False))
        layers.append(Layer(kind="fc", in_shape=(1, 1, oc), out_shape=(1, 1, 3), name="fc"))
    else:
        layers.append(Layer(kind="fc", in_shape=(oh, ow, oc), out_shape=(1, 1, 3), name="fc"))
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, size=(8, h, w, 3), dtype=np.uint8)
    m = quantize_fresh(layers, init_float(layers, 0), calib, 3, name=f"awkward-{head}")
    # LiteRT's FULLY_CONNECTED rounding, on a depthwise and a pointwise layer (the assembly loops
    # have a copy for each rounding)
    m.layers[1].single_rounding = True
    m.layers[5].single_rounding = True
    nets.set_learning_rates(m, hidden_lr, 1e-2)
    return m


# hidden rates spanning the update's rounding shifts: large ones (tiny rates) take other code paths
@pytest.mark.parametrize("head,hidden_lr", [("grid", 1e-3), ("gap", 3e-1), ("grid", 3e-7)])
def test_dsp_kernels_on_awkward_shapes_match_the_host(head, hidden_lr, tmp_path):
    need("make", "make")
    need("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi")
    need("qemu-system-arm", "qemu-system-arm")
    need_module("platformio", "make -C firmware builds with PlatformIO (pip install platformio)")
    from host import modelfile, protocol
    from host.core import CModel
    from host.model import weights_sha256
    from host.stream import QemuBoard, core_config

    path = tmp_path / "awkward.tlm"
    modelfile.save(awkward_model(head, hidden_lr), str(path))
    blob = path.read_bytes()
    host = CModel(modelfile.load(str(path)), **TRAIN_CFG)
    in_bytes = int(np.prod(host.model.input_shape))
    build = tmp_path / "fw"
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "firmware"), "BOARD=mps2-an386", f"BUILD={build}",
                        f"ARENA_BYTES={host.arena_bytes}", f"BLOB_BYTES={(len(blob) + 3) // 4 * 4}",
                        f"INPUT_BYTES={in_bytes}", f"-j{os.cpu_count() or 2}"], capture_output=True, text=True)
    assert r.returncode == 0, f"firmware build failed:\n{r.stdout}\n{r.stderr}"

    rng = np.random.default_rng(1)
    xs = [rng.integers(-128, 128, in_bytes, dtype=np.int8) for _ in range(4)]
    with QemuBoard(str(build / "tinylls.elf")) as board:
        link = protocol.Link(board.connect())
        link.sync()
        link.load_model(blob)
        link.set_config(**core_config(host))
        n = len(host.model.layers)
        for k, x in enumerate(xs):
            ev, want = link.evaluate(x, with_local=True), host.infer(x, with_local=True)
            assert (ev.pred, [int(v) for v in ev.logits][:3], [int(v) for v in ev.local_pred][:n]) == \
                (want.pred, [int(v) for v in want.logits], [int(v) for v in want.local_pred]), f"eval {k}"
            tr, want = link.train(x, k % 3), host.train_step(x, k % 3)
            assert (tr.pred, [int(v) for v in tr.logits][:3]) == \
                (want.pred, [int(v) for v in want.logits]), f"train step {k}"
        board_weights = link.read_weights()
    assert hashlib.sha256(board_weights).hexdigest() == weights_sha256(host.model)
