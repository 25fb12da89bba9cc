"""Shared pytest fixtures for tinylls."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared_data import shared_path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference data folder: $TINYLLS_SHARED, else <repo>/../shared. Skips when absent."""
    return shared_path("")


@pytest.fixture(scope="module")
def tiny():
    """A small digits model (8x8x1, 10 classes, rates 0.05), its model file bytes and the 8
    calibration images it was quantized with: the protocol, checkpoint and power-cut tests' model.
    Module scope: a module's tests may train it in turn, as they did with their own copies."""
    import numpy as np

    from host import modelfile, nets
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (8, 8, 8, 1), dtype=np.uint8)
    model = nets.build("digits", seed=0, calib=calib, classes=10)
    nets.set_learning_rates(model, hidden=0.05, classifier=0.05)
    return model, modelfile.to_bytes(model), calib


# The longest test files first, so that `-n auto --dist loadfile` (README's test command) does not
# leave one worker alone with a 10-minute file at the end while the other idles. Seconds per file of
# .ci/run on 2026-12-07 (2-core machine, other jobs running; junit times): firmware 963, platformio
# 465, checkpoint_qemu 389, field_firmware 378, learning 357, memory_figures 263, fuzz 231, plan 183,
# lossy_link 166, tflite_import 162, fleet 155, early_exit ~100 (added after); the rest < 100.
# Only the order changes: every test still runs.
LONGEST_FIRST = ["test_firmware", "test_platformio", "test_checkpoint_qemu", "test_field_firmware",
                 "test_learning", "test_memory_figures", "test_fuzz", "test_plan", "test_lossy_link",
                 "test_tflite_import", "test_fleet", "test_adapt", "test_early_exit", "test_finetune",
                 "test_firmware_shapes", "test_cross_compile"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda it: rank.get(it.path.stem, len(rank)))   # stable: file order kept otherwise
