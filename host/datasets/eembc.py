"""EEMBC / MLPerf Tiny `vww01` evaluation set: raw `.bin` images + `y_labels.csv`.

Each `.bin` is 96*96*3 = 27,648 bytes of uint8 RGB, HWC, row-major from the top-left pixel,
no header. `y_labels.csv` has one row per image and no header: `filename,classes,class`
(classes = 2; class 1 = person, 0 = no person). Rows are read in file-name order.
A row's file name must stay inside the folder (no absolute path, no `..`, no symlink leading
out); `y_labels.csv` is UTF-8 of at most 64 MiB and every `.bin` is checked to be a regular file
of exactly 27,648 bytes before it is read (`host.safeio`).

`open` accepts the folder holding `y_labels.csv` (`.../datasets/vww01`) or any parent that
holds exactly one such folder below it (e.g. `vww01-eembc/`). `.bin` files without a label row
are never guessed: they are left out and listed in `ds.meta["unlabelled"]`.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Optional

import numpy as np

from .. import safeio
from .base import DataError, Dataset, Skipped, os_errors_as_data_errors

LABELS = "y_labels.csv"
SIDE = 96
CHANNELS = 3
BIN_BYTES = SIDE * SIDE * CHANNELS
MAX_LABELS_BYTES = 64 * safeio.MiB


def find_root(path: Path) -> Optional[Path]:
    """The folder holding y_labels.csv: `path` itself or a single match up to 3 levels down."""
    if (path / LABELS).is_file():
        return path
    hits = sorted(p.parent for p in path.glob(f"*/{LABELS}")) \
        or sorted(p.parent for p in path.glob(f"*/*/{LABELS}")) \
        or sorted(p.parent for p in path.glob(f"*/*/*/{LABELS}"))
    if len(hits) > 1:
        raise DataError(
            f"{path}: holds several EEMBC label files ({', '.join(str(h / LABELS) for h in hits)}); "
            "open one of those folders")
    return hits[0] if hits else None


def read_labels(csv_path: Path, *, skip_bad: bool, skipped: list[Skipped]) -> dict[str, int]:
    """file name -> class, validated (classes column == 2, class in {0,1}, no duplicates)."""
    out: dict[str, int] = {}
    text = safeio.read_text(csv_path, MAX_LABELS_BYTES, "label file", error=DataError)
    for lineno, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{csv_path} line {lineno}"
        try:
            if len(row) != 3:
                raise DataError(f"{where}: expected 3 fields 'filename,2,class', got {row!r}")
            fname, ncls, cls = (c.strip() for c in row)
            if ncls != "2":
                raise DataError(f"{where}: classes field is {ncls!r}, expected '2'")
            if cls not in ("0", "1"):
                raise DataError(f"{where}: label {cls!r} for {fname} is outside {{0,1}}")
            if fname in out:
                raise DataError(f"{where}: {fname} listed twice")
            safeio.confined(csv_path.parent, fname, where, error=DataError)
        except DataError as e:
            if not skip_bad:
                raise
            skipped.append(Skipped(f"{csv_path}:{lineno}", str(e)))
            continue
        out[fname] = int(cls)
    if not out:
        raise DataError(f"{csv_path}: no label rows")
    return out


@os_errors_as_data_errors
def open_eembc(path: os.PathLike | str, *, skip_bad: bool = False) -> Dataset:
    """Read the whole set: (N, 96, 96, 3) uint8, rows sorted by file name."""
    path = Path(path)
    root = find_root(path)
    if root is None:
        raise DataError(f"{path}: no {LABELS} found (not an EEMBC vww01 folder)")
    skipped: list[Skipped] = []
    labels = read_labels(root / LABELS, skip_bad=skip_bad, skipped=skipped)
    names = sorted(labels)
    images = np.empty((len(names), SIDE, SIDE, CHANNELS), dtype=np.uint8)
    keep: list[int] = []
    for i, fname in enumerate(names):
        f = root / fname
        try:
            if not f.exists():
                raise DataError(f"{f}: listed in {LABELS} but the file is missing")
            data = safeio.read_bytes(f, BIN_BYTES, f"{SIDE}x{SIDE}x{CHANNELS} uint8, no header",
                                     error=DataError, exact=BIN_BYTES)
        except DataError as e:
            if not skip_bad:
                raise
            skipped.append(Skipped(str(f), str(e)))
            continue
        images[i] = np.frombuffer(data, dtype=np.uint8).reshape(SIDE, SIDE, CHANNELS)
        keep.append(i)
    listed = set(labels)
    unlabelled = sorted(p.name for p in root.glob("*.bin") if p.name not in listed)
    return Dataset(
        images=images[keep] if len(keep) != len(names) else images,
        labels=np.array([labels[names[i]] for i in keep], dtype=np.int64),
        ids=[os.path.splitext(names[i])[0] for i in keep],
        layout="eembc", name=root.name, classes=2, source=str(root), skipped=skipped,
        meta={"unlabelled": unlabelled, "labels_file": str(root / LABELS),
              "checksums": "none in this layout"})
