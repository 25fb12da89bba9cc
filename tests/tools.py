"""External tools the firmware and cross-compile tests run: found on PATH, or the test skips naming
the Debian package to install. Under CI (CI=true) a missing tool fails instead, so these tests can
never be skipped silently there (.ci/run installs them)."""
from __future__ import annotations

import os
import shutil

import pytest


def need(tool: str, package: str) -> str:
    """The path of `tool`, else skip (fail under CI) with the apt-get line that installs it."""
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} not found on PATH; install: apt-get install --no-install-recommends {package}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (CI=true: this check must run)")
        pytest.skip(msg)
    return path
