"""atheris target: the EEMBC vww01 reader (host.datasets.eembc: y_labels.csv + .bin files) on a
folder made from the input (fuzz/fuzz_files.py), with and without skip_bad, and through
host.datasets.open (layout detection). Only DataError may escape."""
import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_files  # noqa: E402

with atheris.instrument_imports(include=["host"]):
    import host.datasets
    from host.datasets import DataError, eembc

ROOT = fuzz_files.scratch("eembc")


def test_one_input(data: bytes) -> None:
    fuzz_files.materialize(ROOT, data)
    fuzz_files.each_may_refuse([lambda: eembc.open_eembc(ROOT, skip_bad=False),
                                lambda: eembc.open_eembc(ROOT, skip_bad=True),
                                lambda: host.datasets.open(ROOT)], DataError)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
