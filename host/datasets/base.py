"""The one in-memory shape every tinylls data reader returns: `Dataset`.

Images are uint8 (N, H, W, C) arrays (RGB or grey, HWC, row-major from the top-left pixel,
exactly the byte order the C core and the serial protocol use), labels are int64 (N,).
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np


class DataError(Exception):
    """Bad or unreadable data. The message names the file / field / value at fault."""


def _os_error_message(e: OSError) -> str:
    where = e.filename if e.filename is not None else "data set"
    return f"{where}: cannot read ({e.strerror or e})"


def os_errors_as_data_errors(fn):
    """Decorates a reader's entry point: an OSError raised while listing or opening what a data
    set holds (a symbolic-link loop, a name too long for the file system, a folder without read
    permission; found by fuzz/py_eembc.py in pathlib's glob) becomes a DataError naming the path.
    File contents are read through host.safeio, which names its own errors."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kw):
            try:
                yield from fn(*args, **kw)
            except OSError as e:
                raise DataError(_os_error_message(e)) from None
        return gen

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        try:
            return fn(*args, **kw)
        except OSError as e:
            raise DataError(_os_error_message(e)) from None
    return wrapper


@dataclass
class Skipped:
    """One item left out because the caller asked for `skip_bad=True`."""

    path: str
    reason: str


@dataclass
class Dataset:
    """A labelled image set held in memory.

    images  uint8 (N, H, W, C)
    labels  int64 (N,), values in range(classes)
    ids     one string per row (file name without extension, COCO image id, ...)
    layout  where it came from: "eembc", "mlperf-folders", "shards", "tfrecord", "synthetic", "coco"
    name    short human name
    classes number of classes (2 for person / no person; 1 = person)
    source  path (or name) it was opened from
    skipped items left out by `skip_bad=True` (empty otherwise)
    meta    layout-specific extras (checksum status, unlabelled files, build settings...)
    """

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    layout: str
    name: str = ""
    classes: int = 2
    source: str = ""
    skipped: list[Skipped] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.ids = [str(i) for i in self.ids]
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"{self.name or self.source}: images must be uint8 (N, H, W, C), "
                f"got {self.images.dtype} {self.images.shape}")
        n = self.images.shape[0]
        if self.labels.shape != (n,) or len(self.ids) != n:
            raise DataError(
                f"{self.name or self.source}: {n} images but labels {self.labels.shape} "
                f"and {len(self.ids)} ids")
        if n and (self.labels.min() < 0 or self.labels.max() >= self.classes):
            bad = int(self.labels[(self.labels < 0) | (self.labels >= self.classes)][0])
            raise DataError(
                f"{self.name or self.source}: label {bad} outside 0..{self.classes - 1}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def counts(self) -> dict[int, int]:
        """Images per class, every class listed (zeros included)."""
        c = np.bincount(self.labels, minlength=self.classes)
        return {k: int(c[k]) for k in range(self.classes)}

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Dataset":
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(
            images=self.images[idx], labels=self.labels[idx],
            ids=[self.ids[i] for i in idx.tolist()], layout=self.layout, name=self.name,
            classes=self.classes, source=self.source, meta=dict(self.meta))

    def to_grey(self) -> "Dataset":
        """A copy with C=1 ITU-R 601 luma (bit-identical to Pillow's convert("L"))."""
        return Dataset(
            images=to_grey(self.images), labels=self.labels.copy(), ids=list(self.ids),
            layout=self.layout, name=self.name, classes=self.classes, source=self.source,
            meta=dict(self.meta))

    def sorted_by_id(self) -> "Dataset":
        order = sorted(range(len(self)), key=lambda i: self.ids[i])
        return self.subset(order)

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, layout={self.layout!r}, n={len(self)}, "
                f"shape={self.shape}, counts={self.counts()})")


def to_grey(images: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) -> luma uint8 (..., 1), ITU-R 601-2 weights 299/587/114.

    Integer formula identical to Pillow's RGB->L conversion:
    L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16. Grey input (C=1) is returned as is."""
    images = np.asarray(images)
    if images.shape[-1] == 1:
        return images.astype(np.uint8, copy=True)
    if images.shape[-1] != 3:
        raise DataError(f"to_grey: needs 3 channels (RGB), got shape {images.shape}")
    x = images.astype(np.uint32)
    y = (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16
    return y.astype(np.uint8)[..., None]


def concat(parts: Sequence[Dataset], *, layout: str, name: str, source: str) -> Dataset:
    """Join datasets of the same shape/classes into one."""
    if not parts:
        raise DataError(f"{source}: no data")
    shapes = {p.shape for p in parts}
    if len(shapes) != 1:
        raise DataError(f"{source}: parts have different image shapes {sorted(shapes)}")
    return Dataset(
        images=np.concatenate([p.images for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        ids=[i for p in parts for i in p.ids], layout=layout, name=name,
        classes=max(p.classes for p in parts), source=source,
        skipped=[s for p in parts for s in p.skipped])
