"""Shared pytest fixtures for tinylls."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared_data import shared_path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference data folder: $TINYLLS_SHARED, else <repo>/../shared. Skips when absent."""
    return shared_path("")
