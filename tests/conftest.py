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
