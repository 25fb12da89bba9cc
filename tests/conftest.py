"""Shared pytest fixtures for tinylls."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference data folder: $TINYLLS_SHARED, else <repo>/../shared. Skips when absent."""
    env = os.environ.get("TINYLLS_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    if not path.is_dir():
        pytest.skip(f"reference data folder {path} is missing "
                    f"({'from $TINYLLS_SHARED' if env else 'set TINYLLS_SHARED to override'})")
    return path
