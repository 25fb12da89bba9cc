"""EEMBC / MLPerf Tiny `vww01` evaluation set: raw `.bin` images + `y_labels.csv`.

Each `.bin` is 96*96*3 = 27,648 bytes of uint8 RGB, HWC, row-major from the top-left pixel,
no header. `y_labels.csv` has one row per image and no header: `filename,classes,class`
(classes = 2; class 1 = person, 0 = no person). Rows are read in file-name order.

`open` accepts the folder holding `y_labels.csv` (`.../datasets/vww01`) or any parent that
holds exactly one such folder below it (e.g. `vww01-eembc/`). `.bin` files without a label row
are never guessed: they are left out and listed in `ds.meta["unlabelled"]`.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional

import numpy as np

from .base import DataError, Dataset, Skipped

LABELS = "y_labels.csv"
SIDE = 96
CHANNELS = 3
BIN_BYTES = SIDE * SIDE * CHANNELS


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
    try:
        fh = open(csv_path, newline="")
    except OSError as e:
        raise DataError(f"{csv_path}: cannot read label file ({e.strerror or e})") from None
    with fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
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
            except DataError as e:
                if not skip_bad:
                    raise
                skipped.append(Skipped(f"{csv_path}:{lineno}", str(e)))
                continue
            out[fname] = int(cls)
    if not out:
        raise DataError(f"{csv_path}: no label rows")
    return out


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
            try:
                data = f.read_bytes()
            except FileNotFoundError:
                raise DataError(f"{f}: listed in {LABELS} but the file is missing") from None
            except OSError as e:
                raise DataError(f"{f}: cannot read ({e.strerror or e})") from None
            if len(data) != BIN_BYTES:
                raise DataError(
                    f"{f}: {len(data)} bytes, expected {BIN_BYTES} "
                    f"({SIDE}x{SIDE}x{CHANNELS} uint8, no header)")
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
