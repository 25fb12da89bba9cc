"""Bounded reading of a tinylls model file (issue 18): a regular file of at most
MAX_MODEL_BYTES, checked before it is read, errors as ModelFileError naming the file.

Used by `python -m host.quantize export-c`; host.modelfile.load should read through it too:
    return from_bytes(read_model_file(path), where=path)
"""
from __future__ import annotations

import os

from host import safeio

MAX_MODEL_BYTES = 256 * safeio.MiB    # a board's model is at most a few MB; the host JSON adds little


def read_model_file(path: str | os.PathLike) -> bytes:
    from host.modelfile import ModelFileError    # here: host.modelfile imports this module
    return safeio.read_bytes(path, MAX_MODEL_BYTES, "model file", error=ModelFileError)
