"""atheris target: host.modelfile's loader (from_bytes, what load() runs on a file's bytes).
Only ModelFileError may escape. The custom mutator recomputes the file's CRC on 7 mutations in 8
(as fuzz/fix_crc.h does for the C targets), so mutated files reach the parser behind the check."""
import struct
import sys
import zlib

import atheris

with atheris.instrument_imports(include=["host"]):
    from host import modelfile


def test_one_input(data: bytes) -> None:
    try:
        modelfile.from_bytes(data, where="fuzz.tlm")
    except modelfile.ModelFileError:
        pass


def keep_crc(data: bytes, max_size: int, seed: int) -> bytes:
    data = bytearray(atheris.Mutate(data, max_size))
    if seed % 8 and len(data) >= 16 and data[:4] == b"TLLS":
        body = min(struct.unpack_from("<I", data, 8)[0], len(data) - 16)
        struct.pack_into("<II", data, 8, body, zlib.crc32(data[16:16 + body]))
    return bytes(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input, custom_mutator=keep_crc)
    atheris.Fuzz()
