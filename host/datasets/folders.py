"""MLPerf Tiny `vw_coco2014_96` layout: a folder with `person/` and `non_person/` image folders.

Label 1 = every image under `person/`, 0 = every image under `non_person/` (the convention of
MLPerf Tiny's `generate_y_labels.py`). Images of any size are resized to size x size (default
96, aspect handling as in `host.datasets.imaging`); ids are file names without extension and
must be unique across the two folders (an id in both would be a contradictory label).
`open` accepts the folder holding the two class folders or a parent holding exactly one such.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from .base import DataError, Dataset, Skipped, os_errors_as_data_errors
from .parallel import Progress, decode_many, default_workers

CLASS_DIRS = {"non_person": 0, "person": 1}
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def is_root(path: Path) -> bool:
    return all((path / d).is_dir() for d in CLASS_DIRS)


def find_root(path: Path) -> Optional[Path]:
    if is_root(path):
        return path
    hits = sorted(p for p in path.iterdir() if p.is_dir() and is_root(p)) if path.is_dir() else []
    if len(hits) > 1:
        raise DataError(f"{path}: holds several person/non_person folder sets "
                        f"({', '.join(str(h) for h in hits)}); open one of them")
    return hits[0] if hits else None


def list_files(root: Path) -> tuple[list[tuple[str, Path, int]], list[str]]:
    """[(id, path, label)] sorted by id, plus names of ignored non-image files."""
    rows: list[tuple[str, Path, int]] = []
    ignored: list[str] = []
    seen: dict[str, Path] = {}
    for d, label in CLASS_DIRS.items():
        for p in sorted((root / d).iterdir()):
            if not p.is_file() or p.name.startswith("."):
                continue
            if p.suffix.lower() not in IMAGE_EXTS:
                ignored.append(str(p))
                continue
            i = p.stem
            if i in seen:
                raise DataError(f"{p}: image id {i!r} also present as {seen[i]} "
                                "(same image in two classes?)")
            seen[i] = p
            rows.append((i, p, label))
    rows.sort(key=lambda r: r[0])
    return rows, ignored


@os_errors_as_data_errors
def open_folders(path: os.PathLike | str, *, skip_bad: bool = False, size: Optional[int] = 96,
                 resize: str = "squash", grey: bool = False, workers: Optional[int] = None,
                 progress: Progress = None) -> Dataset:
    path = Path(path)
    root = find_root(path)
    if root is None:
        raise DataError(f"{path}: no person/ and non_person/ folders found")
    rows, ignored = list_files(root)
    if not rows:
        raise DataError(f"{root}: person/ and non_person/ hold no images")
    if workers is None:
        workers = default_workers() if len(rows) >= 2000 else 1
    images: list[np.ndarray] = []
    keep: list[int] = []
    skipped: list[Skipped] = []
    results = decode_many(((str(p), None) for _, p, _ in rows), size=size, resize=resize,
                          grey=grey, workers=workers, progress=progress, report=True)
    n_resized, modes = 0, {}
    for k, (ok, res) in enumerate(results):
        if not ok:
            if not skip_bad:
                raise DataError(res)
            skipped.append(Skipped(str(rows[k][1]), res))
            continue
        res, (was_resized, mode0) = res
        n_resized += bool(was_resized)
        if mode0 is not None:
            modes[mode0] = modes.get(mode0, 0) + 1
        if images and res.shape != images[0].shape:
            raise DataError(f"{rows[k][1]}: image shape {res.shape} differs from "
                            f"{images[0].shape} of {rows[keep[0]][1]} (pass size=...)")
        images.append(res)
        keep.append(k)
    if not images:
        raise DataError(f"{root}: no readable images ({len(skipped)} skipped as bad)")
    return Dataset(
        images=np.stack(images), labels=np.array([rows[k][2] for k in keep], dtype=np.int64),
        ids=[rows[k][0] for k in keep], layout="mlperf-folders", name=root.name, classes=2,
        source=str(root), skipped=skipped,
        meta={"ignored_files": ignored, "resize": resize, "checksums": "none in this layout",
              "resized": n_resized, "converted_modes": modes, "converted": _conversion_note(
                  n_resized, modes, len(keep), size, resize, grey)})


def _conversion_note(n_resized: int, modes: dict, n: int, size, resize: str, grey: bool) -> str | None:
    """One line saying what was done to the pictures to make them model inputs (None: nothing)."""
    parts = []
    if n_resized:
        parts.append(f"{n_resized} of {n} images resized to {size}x{size} ({resize})")
    if modes:
        parts.append(", ".join(f"{c} converted from {m} to RGB" for m, c in sorted(modes.items())))
    if grey:
        parts.append(f"{n} converted to grey")
    return "; ".join(parts) or None
