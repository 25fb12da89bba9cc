"""atheris target: the EEMBC vww01 reader (host.datasets.eembc: y_labels.csv + .bin files) on a
folder made from the input (fuzz/fuzz_files.py), with and without skip_bad, and through
host.datasets.open (layout detection). Only DataError may escape."""
import os
import sys
import tempfile

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_files  # noqa: E402

with atheris.instrument_imports(include=["host"]):
    import host.datasets
    from host.datasets import DataError, eembc

# bench/fuzz.py gives a scratch folder (FUZZ_SCRATCH) that it removes afterwards: libFuzzer exits
# without running Python clean-up
ROOT = tempfile.mkdtemp(prefix="fuzz-eembc-", dir=os.environ.get("FUZZ_SCRATCH"))


def test_one_input(data: bytes) -> None:
    fuzz_files.materialize(ROOT, data)
    for skip_bad in (False, True):
        try:
            eembc.open_eembc(ROOT, skip_bad=skip_bad)
        except DataError:
            pass
    try:
        host.datasets.open(ROOT)
    except DataError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
