"""atheris target: the MLPerf Tiny image-folder reader (host.datasets.folders: person/ and
non_person/ image folders, images decoded with Pillow) on a folder made from the input
(fuzz/fuzz_files.py), with and without skip_bad. Only DataError may escape."""
import os
import sys
import tempfile

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_files  # noqa: E402

with atheris.instrument_imports(include=["host"]):
    from host.datasets import DataError, folders

# bench/fuzz.py gives a scratch folder (FUZZ_SCRATCH) that it removes afterwards: libFuzzer exits
# without running Python clean-up
ROOT = tempfile.mkdtemp(prefix="fuzz-folders-", dir=os.environ.get("FUZZ_SCRATCH"))


def test_one_input(data: bytes) -> None:
    fuzz_files.materialize(ROOT, data)
    for skip_bad in (False, True):
        try:
            folders.open_folders(ROOT, skip_bad=skip_bad, size=16, workers=1)
        except DataError:
            pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
