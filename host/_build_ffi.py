"""Builds host._tinylls, the cffi extension holding the whole C core.

Every ccore/src/*.c file is compiled in; the declarations come verbatim from the
ccore/include/*_api.h files (plain C, no #include/#if), so Python and C can never disagree.
"""
import glob
import os

from cffi import FFI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = os.path.join(ROOT, "ccore", "include")
CSRC = os.path.join(ROOT, "host", "csrc")  # host-only C (threads): never part of ccore
SOURCES = (sorted(glob.glob(os.path.join(ROOT, "ccore", "src", "**", "*.c"), recursive=True))
           + sorted(glob.glob(os.path.join(CSRC, "*.c"))))
API_HEADERS = sorted(glob.glob(os.path.join(INCLUDE, "*_api.h"))) + [os.path.join(CSRC, "tl_host_api.h")]

ffi = FFI()
ffi.cdef("\n".join(open(h, encoding="utf-8").read() for h in API_HEADERS))
extra = os.environ.get("TINYLLS_CFLAGS", "").split()
ffi.set_source(
    "host._tinylls",
    '#include "tinylls.h"\n' + "".join(
        f'#include "{os.path.basename(h)}"\n' for h in API_HEADERS if not h.endswith("tinylls_api.h")),
    sources=[os.path.relpath(s, ROOT) for s in SOURCES],
    include_dirs=[os.path.relpath(INCLUDE, ROOT), "host/csrc", "ccore/src"],
    extra_compile_args=["-std=c99", "-O3", "-Wall", "-Wextra", "-pthread"] + extra,
    extra_link_args=["-pthread"] + [f for f in extra if f.startswith("-fsanitize")],
)

if __name__ == "__main__":
    os.chdir(ROOT)
    ffi.compile(verbose=True)
