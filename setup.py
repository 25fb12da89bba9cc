from setuptools import setup

# The C core is compiled into host._tinylls by cffi (API, out-of-line mode).
setup(cffi_modules=["host/_build_ffi.py:ffi"])
