"""Output files of a run: checked before any work, written whole or not at all.

    outs = Outputs({"--json": args.json, "--log": args.log, "--plot": args.plot})   # checks, makes folders
    with outs.open_text("--log") as f: ...     # a temporary name beside the target
    outs.write_text("--json", text)
    outs.commit()                              # renames every temporary to its target
    outs.discard()                             # (on error / Ctrl-C) removes every temporary

Every path is checked (and its folder made) when the run starts, so a bad path is a one-line error
before any training, not a traceback after it. Files go to `.NAME.tmp-PID` beside their target and
are renamed (atomic on one file system) only when the run succeeded: an error or Ctrl-C leaves no
partial output and no previous file overwritten half-way.
"""
from __future__ import annotations

import os
from pathlib import Path


class OutputError(Exception):
    """An output path that cannot be written; reported as one line, exit 2."""


def check_path(flag: str, path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{flag} {path}: is a folder, give a file name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot make its folder ({e.strerror or e})") from None
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: folder {p.parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"{flag} {path}: exists and is not writable")
    # Outputs are renamed onto their target, and a checkpointed run's journal is appended to in
    # place and read back (host.runlog.read): a FIFO or a device there would block or never end.
    if p.exists() and not p.is_file():
        from host.safeio import _kind
        raise OutputError(f"{flag} {path}: exists and is not a regular file ({_kind(p.stat().st_mode)})")
    return p


class Outputs:
    def __init__(self, paths: dict):
        self.paths = {flag: check_path(flag, p) for flag, p in paths.items() if p}
        names = [str(p.resolve()) for p in self.paths.values()]
        if len(set(names)) != len(names):
            raise OutputError("two output options name the same file: " +
                              ", ".join(f"{k} {v}" for k, v in self.paths.items()))
        self.tmp: dict[str, Path] = {}

    def __contains__(self, flag: str) -> bool:
        return flag in self.paths

    def temp(self, flag: str) -> Path:
        """The temporary name the output of `flag` is written to (created on first use)."""
        if flag not in self.tmp:
            p = self.paths[flag]
            self.tmp[flag] = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        return self.tmp[flag]

    def open_text(self, flag: str):
        return open(self.temp(flag), "w", encoding="utf-8")

    def write_text(self, flag: str, text: str) -> None:
        self.temp(flag).write_text(text, encoding="utf-8")

    def commit(self) -> list[str]:
        """Renames the temporaries onto their targets; returns the paths written."""
        done = []
        for flag, t in self.tmp.items():
            if t.exists():
                os.replace(t, self.paths[flag])
                done.append(str(self.paths[flag]))
        self.tmp = {}
        return done

    def discard(self) -> None:
        for t in self.tmp.values():
            try:
                t.unlink()
            except FileNotFoundError:
                pass
        self.tmp = {}
