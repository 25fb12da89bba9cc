"""What a test needs from outside the repository: external tools, optional packages, the reference
data. Each is found, or the test skips naming what is missing and how to get it. Under CI
(CI=true) a missing piece fails instead, so nothing can be skipped silently there (.ci/run
installs every tool and package, and CI has the reference data beside the clone)."""
from __future__ import annotations

import importlib
import os
import shutil

import pytest


def under_ci() -> bool:
    return os.environ.get("CI") == "true"


def missing(msg: str):
    """Skip with `msg`, or fail with it under CI=true."""
    if under_ci():
        pytest.fail(msg + " (CI=true: this check must run)", pytrace=False)
    pytest.skip(msg)


def need(tool: str, package: str) -> str:
    """The path of `tool`, else skip (fail under CI) with the apt-get line that installs it."""
    path = shutil.which(tool)
    if path is None:
        missing(f"{tool} not found on PATH; install: apt-get install --no-install-recommends {package}")
    return path


def need_module(name: str, why: str):
    """Import `name`, else skip (fail under CI) saying what needs it and how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"{why}: {exc}")
