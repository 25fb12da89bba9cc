"""Builds host._tinylls, the cffi extension holding the whole C core: the one build recipe.

Every ccore/src/*.c file and the host-only host/csrc/*.c are compiled in; the declarations come
verbatim from the ccore/include/*_api.h files and host/csrc/tl_host_api.h (plain C, no
#include/#if), so Python and C can never disagree.

Three callers, one recipe (make_ffi):
- `pip install .` (setup.py's cffi_modules): the module-level `ffi`, relative source paths;
- `python host/_build_ffi.py`: builds host/_tinylls*.so in place, in a scratch directory outside
  the repository, so the interpreter's own setuptools never reads pyproject.toml (a new machine's
  setuptools 65.5 rejects the PEP 639 licence string that the isolated pip build accepts);
  TINYLLS_CFLAGS adds flags (.ci/run's sanitizer build);
- host.csrc.runner.build_private: the same sources under another name with extra flags (the
  speed-path tests' -DTL_FORCE_GENERIC and -DTL_NO_AVX512 builds).
"""
import glob
import os
import shutil
import tempfile
from importlib.machinery import EXTENSION_SUFFIXES

from cffi import FFI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = os.path.join(ROOT, "ccore", "include")
CSRC = os.path.join(ROOT, "host", "csrc")  # host-only C (threads): never part of ccore
BASE_CFLAGS = ["-std=c99", "-O3", "-Wall", "-Wextra", "-pthread"]


def sources():
    """(C sources, every header they may include, the API headers cffi reads), absolute paths."""
    srcs = (sorted(glob.glob(os.path.join(ROOT, "ccore", "src", "**", "*.c"), recursive=True))
            + sorted(glob.glob(os.path.join(CSRC, "*.c"))))
    hdrs = sorted(glob.glob(os.path.join(INCLUDE, "*.h")) + glob.glob(os.path.join(ROOT, "ccore", "src", "**", "*.h"),
                                                                       recursive=True)
                  + glob.glob(os.path.join(CSRC, "*.h")))
    api = sorted(glob.glob(os.path.join(INCLUDE, "*_api.h"))) + [os.path.join(CSRC, "tl_host_api.h")]
    return srcs, hdrs, api


def make_ffi(module_name="host._tinylls", cflags=(), relative=True):
    """The FFI builder of the C core as `module_name`; relative=True gives paths relative to the
    repository root (what setuptools wants), False absolute paths (builds run from elsewhere)."""
    srcs, _, api = sources()

    def path(p):
        return os.path.relpath(p, ROOT) if relative else p

    ffi = FFI()
    ffi.cdef("\n".join(open(h, encoding="utf-8").read() for h in api))
    ffi.set_source(
        module_name,
        '#include "tinylls.h"\n' + "".join(
            f'#include "{os.path.basename(h)}"\n' for h in api if not h.endswith("tinylls_api.h")),
        sources=[path(s) for s in srcs],
        # ccore/src is not on the path: host C sees only the public headers (ccore's own files
        # find their private headers next to themselves)
        include_dirs=[path(INCLUDE), path(CSRC)],
        extra_compile_args=BASE_CFLAGS + list(cflags),
        extra_link_args=["-pthread"] + [f for f in cflags if f.startswith("-fsanitize")],
    )
    return ffi


def build_in_place(cflags=()):
    """Compile host/_tinylls*.so next to this file; returns its path."""
    ffi = make_ffi(cflags=cflags, relative=False)
    scratch = tempfile.mkdtemp(prefix="tinylls-build-")
    try:
        return ffi.compile(tmpdir=scratch, target=os.path.join(ROOT, "host", "_tinylls" + EXTENSION_SUFFIXES[0]), verbose=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


ffi = make_ffi(cflags=os.environ.get("TINYLLS_CFLAGS", "").split())

if __name__ == "__main__":
    print(build_in_place(os.environ.get("TINYLLS_CFLAGS", "").split()))
