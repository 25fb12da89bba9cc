"""One rule for every file tinylls reads: bounded, regular, confined, and named in every error.

    data = read_bytes(path, max_bytes, "shard", error=DataError)        # bytes
    text = read_text(path, max_bytes, "label file", error=DataError)     # str (UTF-8)
    obj  = read_json(path, max_bytes, "manifest", error=DataError)       # parsed JSON
    size = check_file(path, max_bytes, "image file", error=DataError)    # for readers that open by path
    p    = confined(root, name, "row 'filename'", error=DataError)      # root / name, never outside root

* The file is stat-ed before it is opened: it must exist and be a regular file (after following
  symlinks; no FIFO, device or folder) of at most `max_bytes` (or exactly `exact`) bytes. It is
  then opened non-blocking, checked again on the open descriptor (fstat), and at most
  `max_bytes + 1` bytes are read, so a file that grows or is swapped meanwhile cannot make the
  read unbounded.
* A name taken from inside a file (a label row, a manifest entry, a COCO `file_name`) is
  `confined` to the folder it belongs to: no absolute path, no `..` component, no NUL, and the
  path with every symlink resolved must still lie under the resolved folder.
* Text is strict UTF-8 (a leading BOM is dropped); a bad byte is reported with the file, line
  and column. Bad JSON is reported with the file, line and column.

Every failure is raised as `error(message)` (the caller's own class: DataError,
TfliteImportError, KerasImportError...), the message starting with the file name.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["check_file", "read_bytes", "read_text", "read_json", "decode_utf8", "confined",
           "MiB", "GiB"]

MiB = 1 << 20
GiB = 1 << 30


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check_stat(st: os.stat_result, path: PathLike, max_bytes: int, what: str, error,
                exact: Optional[int]) -> int:
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: {what} is not a regular file ({_kind(st.st_mode)})")
    if exact is not None and st.st_size != exact:
        raise error(f"{path}: {st.st_size} bytes, expected {exact} ({what})")
    if st.st_size > max_bytes:
        raise error(f"{path}: {st.st_size} bytes, more than the {max_bytes} allowed ({what})")
    return int(st.st_size)


def check_file(path: PathLike, max_bytes: int, what: str, *, error,
               exact: Optional[int] = None) -> int:
    """Size of `path` after checking that it is a regular file within the bound (symlinks
    followed). For readers that must hand a path to a library (h5py, TensorFlow, memmap)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} missing") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror or e})") from None
    return _check_stat(st, path, max_bytes, what, error, exact)


def read_bytes(path: PathLike, max_bytes: int, what: str, *, error,
               exact: Optional[int] = None) -> bytes:
    """The bytes of `path`: a regular file of at most `max_bytes` (or exactly `exact`) bytes,
    checked before opening and again on the open descriptor; never reads more than
    max_bytes + 1 bytes."""
    check_file(path, max_bytes, what, error=error, exact=exact)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror or e})") from None
    try:
        _check_stat(os.fstat(fd), path, max_bytes, what, error, exact)
        chunks, got = [], 0
        while got <= max_bytes:
            b = os.read(fd, min(max_bytes + 1 - got, 1 << 24))
            if not b:
                break
            chunks.append(b)
            got += len(b)
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror or e})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise error(f"{path}: {what} grew past {max_bytes} bytes while being read")
    if exact is not None and len(data) != exact:
        raise error(f"{path}: {len(data)} bytes, expected {exact} ({what})")
    return data


def decode_utf8(data: bytes, path: PathLike, *, error) -> str:
    """`data` as UTF-8 text (a leading BOM dropped); a bad byte is named with line and column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise error(f"{path} line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column "
                    f"{col})") from None


def read_text(path: PathLike, max_bytes: int, what: str, *, error) -> str:
    return decode_utf8(read_bytes(path, max_bytes, what, error=error), path, error=error)


def read_json(path: PathLike, max_bytes: int, what: str, *, error) -> Any:
    text = read_text(path, max_bytes, what, error=error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path} line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except (ValueError, RecursionError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None


def confined(root: PathLike, name: Any, what: str, *, error) -> Path:
    """`root / name`, refusing any name that reaches outside `root`: not a non-empty string,
    absolute, with a '..' component or a NUL, or (symlinks resolved) outside resolved `root`.
    `what` says where the name came from (e.g. "y_labels.csv line 3")."""
    if not isinstance(name, str) or not name:
        raise error(f"{what}: file name {name!r} is empty or not a string")
    if "\0" in name:
        raise error(f"{what}: file name {name!r} contains a NUL byte")
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        raise error(f"{what}: file name {name!r} is an absolute path; names must be relative "
                    "to the data set's folder")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise error(f"{what}: file name {name!r} has a '..' component; names must stay inside "
                    "the data set's folder")
    root = Path(root)
    p = root / name
    try:
        real_root = root.resolve()
        real = p.resolve()
    except (OSError, RuntimeError) as e:   # symlink loop
        raise error(f"{what}: file name {name!r} cannot be resolved ({e})") from None
    if real != real_root and real_root not in real.parents:
        raise error(f"{what}: file name {name!r} leads outside the data set's folder "
                    f"{real_root} (to {real}, through a symlink)")
    return p
