"""Python side of the host runner (tl_host_api.h): whole epochs in one C call, pipelined or not.

host/_build_ffi.py compiles host/csrc into host._tinylls, so `host._tinylls.lib` has
tl_host_train_epoch. build_private() builds the same recipe (_build_ffi.make_ffi) with other flags
(the tests' -DTL_FORCE_GENERIC and -DTL_NO_AVX512 builds) into a private cffi extension cached
under ~/.cache/tinylls-runner, keyed by the sources' hash; it works on the very same tl_model structs as
host.core.CModel (identical C sources, so identical struct layouts), reached through their
addresses.
"""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_private(cflags=(), tag="runner"):
    """Compile the C core with extra flags into a private extension (cached); returns (ffi, lib)."""
    sys.path.insert(0, os.path.join(ROOT, "host"))
    try:
        import _build_ffi
    finally:
        sys.path.pop(0)
    srcs, hdrs, _ = _build_ffi.sources()
    h = hashlib.sha256(" ".join(cflags).encode())
    for f in srcs + hdrs:
        h.update(f.encode())
        h.update(open(f, "rb").read())
    name = f"_tl_{tag}_{h.hexdigest()[:12]}"
    cache = os.path.join(os.path.expanduser("~"), ".cache", "tinylls-runner")
    os.makedirs(cache, exist_ok=True)
    found = glob.glob(os.path.join(cache, name + "*.so"))
    if not found:
        ffi = _build_ffi.make_ffi(name, cflags=cflags, relative=False)
        found = [ffi.compile(tmpdir=os.path.join(cache, "build_" + name), target=os.path.join(cache, name + ".*"))]
    spec = importlib.util.spec_from_file_location(name, found[0])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod.ffi, mod.lib


def runner():
    """(ffi, lib) of host._tinylls, which holds tl_host_train_epoch."""
    from host._tinylls import ffi, lib
    return ffi, lib


def _model_ptr(ffi, cm):
    from host._tinylls import ffi as core_ffi
    return ffi.cast("tl_model *", int(core_ffi.cast("uintptr_t", cm._m)))


def train_epoch(cm, images: np.ndarray, labels: np.ndarray, threads: int = 1, split=None, lib_pair=None) -> np.ndarray:
    """Train `cm` (host.core.CModel) on int8 `images` (n, H, W, C) in order; returns predictions."""
    ffi, lib = lib_pair or runner()
    x = np.ascontiguousarray(images, np.int8)
    y = np.ascontiguousarray(labels, np.int32)
    preds = np.full(len(y), -1, np.int32)
    sp = ffi.NULL if split is None else ffi.new("int32_t[]", list(split))
    st = lib.tl_host_train_epoch(_model_ptr(ffi, cm), ffi.cast("int8_t *", x.ctypes.data),
                                 ffi.cast("int32_t *", y.ctypes.data), len(y), int(threads), sp,
                                 ffi.cast("int32_t *", preds.ctypes.data))
    if st != 0:
        from host.core import TinyllsError
        raise TinyllsError(st, "tl_host_train_epoch")
    return preds
