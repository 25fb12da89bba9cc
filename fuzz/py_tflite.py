"""atheris target: host.tflite_import.import_tflite_bytes on arbitrary bytes (what
`python -m host.quantize import-tflite` reads). Only TfliteImportError may escape."""
import sys

import atheris

with atheris.instrument_imports(include=["host"]):
    from host import tflite_import


def test_one_input(data: bytes) -> None:
    try:
        tflite_import.import_tflite_bytes(data, path="fuzz.tflite")
    except tflite_import.TfliteImportError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
