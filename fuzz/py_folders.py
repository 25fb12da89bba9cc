"""atheris target: the MLPerf Tiny image-folder reader (host.datasets.folders: person/ and
non_person/ image folders, images decoded with Pillow) on a folder made from the input
(fuzz/fuzz_files.py), with and without skip_bad. Only DataError may escape."""
import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_files  # noqa: E402

with atheris.instrument_imports(include=["host"]):
    from host.datasets import DataError, folders

ROOT = fuzz_files.scratch("folders")


def test_one_input(data: bytes) -> None:
    fuzz_files.materialize(ROOT, data)
    fuzz_files.each_may_refuse([lambda: folders.open_folders(ROOT, skip_bad=False, size=16, workers=1),
                                lambda: folders.open_folders(ROOT, skip_bad=True, size=16, workers=1)], DataError)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
