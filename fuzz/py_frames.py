"""atheris target: the host's frame decoder as host.stream uses it (host.protocol.Decoder.feed,
then check() on every frame) on arbitrary device output. Byte 0 gives the size of the pieces
the stream arrives in (1..256). Only ProtocolError may escape, and every frame check() accepts
must re-encode to the same bytes."""
import sys

import atheris

with atheris.instrument_imports(include=["host"]):
    from host import protocol


def test_one_input(data: bytes) -> None:
    if not data:
        return
    chunk = data[0] + 1
    dec = protocol.Decoder()
    for at in range(1, len(data), chunk):
        for item in dec.feed(data[at:at + chunk]):
            if isinstance(item, int):
                continue                  # a dropped frame: its TL_PROTO_ERR_* code
            try:
                frame = protocol.check(item)
            except protocol.ProtocolError:
                continue
            again = protocol.encode(frame.op, frame.seq, frame.payload, flags=frame.flags)
            if protocol.Decoder().feed(again) != [item]:
                raise AssertionError(f"frame {item.hex()} does not survive encode/decode")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
