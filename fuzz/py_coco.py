"""atheris target: the COCO reader of host.datasets.coco (instances JSON -> person/no-person
rows, minival id lists) on a folder made from the input (fuzz/fuzz_files.py): the annotation
file is annotations/instances_val2014.json, the image folder val2014/, the id list ids.txt.
Only DataError may escape."""
import os
import sys
from pathlib import Path

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_files  # noqa: E402

with atheris.instrument_imports(include=["host"]):
    from host.datasets import DataError, coco

ROOT = fuzz_files.scratch("coco")


def test_one_input(data: bytes) -> None:
    fuzz_files.materialize(ROOT, data)
    root = Path(ROOT)
    fuzz_files.each_may_refuse([lambda: coco.label_images(root / "annotations" / "instances_val2014.json",
                                                          root / "val2014"),
                                lambda: coco.read_id_list(root / "ids.txt")], DataError)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
