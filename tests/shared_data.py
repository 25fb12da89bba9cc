"""Where the reference data lives: $TINYLLS_SHARED, else <repo>/../shared. It is read in place,
never copied into the repository; a test that needs a missing file skips naming it, and fails
naming it under CI=true (tools.missing)."""
from __future__ import annotations

import os
from pathlib import Path

from tools import missing

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    return Path(os.environ.get("TINYLLS_SHARED") or REPO.parent / "shared")


def shared_path(rel: str | os.PathLike) -> Path:
    """A path under the shared folder, or skip (fail under CI) naming the missing path."""
    p = shared_root() / rel
    if not p.exists():
        missing(f"reference data {p} is missing (set TINYLLS_SHARED to the shared folder)")
    return p
