"""A folder of files packed into one fuzz input, for the data-set reader targets (py_eembc,
py_shards, py_folders, py_coco) and fuzz/make_corpus.py.

Input layout, repeated: u8 name length, name (UTF-8, '/' separated, relative), u32 LE data length,
data. A name starting with '@' makes a symbolic link instead, its data the link's target (a name
in the folder, or one of LINK_TARGETS outside it: what a hostile label file or manifest may try
to make a reader open). Names are cleaned so the files always land inside the folder: the
readers see hostile *contents*, the harness itself never writes outside its folder.
"""
from __future__ import annotations

import os
import re
import shutil
import struct

LINK_TARGETS = ("/dev/zero", "/dev/null", "/etc/hostname", "..", "../..")
_SAFE = re.compile(r"[^A-Za-z0-9._/-]")


def pack(files: list[tuple[str, bytes]]) -> bytes:
    out = bytearray()
    for name, data in files:
        raw = name.encode()
        out += bytes([len(raw)]) + raw + struct.pack("<I", len(data)) + data
    return bytes(out)


def unpack(data: bytes) -> list[tuple[str, bytes]]:
    files, pos = [], 0
    while pos < len(data):
        k = data[pos]
        name = data[pos + 1:pos + 1 + k].decode("utf-8", "replace")
        pos += 1 + k
        if pos + 4 > len(data):
            break
        (n,) = struct.unpack_from("<I", data, pos)
        pos += 4
        files.append((name, data[pos:pos + n]))
        pos += n
    return files


def _clean(name: str) -> str:
    parts = [p for p in _SAFE.sub("_", name).split("/") if p not in ("", ".", "..")]
    return "/".join(parts[:4])


def materialize(root: str, data: bytes) -> None:
    """Empties `root` and writes the files of `data` into it."""
    for entry in os.listdir(root):
        p = os.path.join(root, entry)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    for name, body in unpack(data)[:64]:
        link = name.startswith("@")
        rel = _clean(name[1:] if link else name)
        if not rel:
            continue
        path = os.path.join(root, rel)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if link:
                target = body.decode("utf-8", "replace")
                if target not in LINK_TARGETS:
                    target = _clean(target) or "."
                os.symlink(target, path)
            else:
                with open(path, "wb") as f:
                    f.write(body)
        except OSError:
            continue      # a name that is already a folder or file: the first one wins


def scratch(name: str) -> str:
    """The target's folder for the data set it builds: inside the scratch folder bench/fuzz.py
    gives (FUZZ_SCRATCH) and removes afterwards, since libFuzzer exits without Python clean-up."""
    import tempfile
    return tempfile.mkdtemp(prefix=f"fuzz-{name}-", dir=os.environ.get("FUZZ_SCRATCH"))


def each_may_refuse(calls, error) -> None:
    """Runs every call; each may refuse the data with `error` (the project's own class) and with
    nothing else: any other exception escapes to atheris as a finding."""
    for call in calls:
        try:
            call()
        except error:
            pass
