"""tinylls data: one interface over every VWW layout users arrive with.

    ds = host.datasets.open(PATH)          # layout auto-detected
    ds.images  uint8 (N, H, W, C)   ds.labels int64 (N,)   ds.ids   ds.layout   len(ds)

Layouts (`detect(PATH)` names them):
  "shards"          a folder written by `host.datasets.shards.write` / `python -m host.vww build`
  "eembc"           EEMBC / MLPerf Tiny `vww01` `.bin` files + `y_labels.csv`
  "mlperf-folders"  MLPerf Tiny `vw_coco2014_96`: `person/` + `non_person/` image folders
  "tfrecord"        TFRecords of the original VWW script (needs TensorFlow: pip install '.[tf]')
  "synthetic"       the name "synthetic" (optionally "synthetic:val" / "synthetic:train")

Errors are `DataError` whose message names the file / field / value at fault. With
`skip_bad=True` bad items are left out and listed in `ds.skipped` instead (never mislabelled).
Every file is read through `host.safeio`: it must be a regular file (no FIFO or device) within
a size bound checked before reading, a name listed inside a file (label row, manifest entry,
COCO file_name) must stay inside the data set's folder (no absolute path, no `..`, no symlink
leading out), and bad UTF-8 / JSON is reported with the file, line and column.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from . import shards, synthetic
from .augment import augment, augment_params, shuffle
from .base import DataError, Dataset, Skipped, os_errors_as_data_errors, to_grey

__all__ = ["open", "detect", "vww_split", "split_counts", "parse_val_split", "DEFAULT_VAL_SPLIT",
           "augment", "augment_params", "shuffle", "to_grey",
           "Dataset", "DataError", "Skipped", "LAYOUTS", "shards", "synthetic"]

LAYOUTS = ("shards", "eembc", "mlperf-folders", "tfrecord", "synthetic")


@os_errors_as_data_errors
def detect(path_or_name: Union[str, os.PathLike]) -> str:
    """Name the layout at `path_or_name` (see module doc) or raise DataError."""
    s = str(path_or_name)
    if s == "synthetic" or s.startswith("synthetic:"):
        return "synthetic"
    p = Path(s)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    from . import eembc, folders, tfrecord
    if p.is_dir():
        if shards.is_shards(p):
            return "shards"
        if (p / shards.MANIFEST).is_file():
            raise DataError(f"{p / shards.MANIFEST}: present but not a tinylls shard manifest")
        if folders.find_root(p) is not None:
            return "mlperf-folders"
        if tfrecord.find_files(p):
            return "tfrecord"
        if eembc.find_root(p) is not None:
            return "eembc"
        raise DataError(
            f"{p}: layout not recognised (expected {shards.MANIFEST}, person/ + non_person/ "
            f"folders, {eembc.LABELS} with .bin files, or *.tfrecord / *.record-* files)")
    if p.name == eembc.LABELS:
        return "eembc"
    if p.name == shards.MANIFEST:
        return "shards"
    if tfrecord.looks_like(p):
        return "tfrecord"
    raise DataError(f"{p}: layout not recognised for a single file")


@os_errors_as_data_errors
def open(path_or_name: Union[str, os.PathLike], *, skip_bad: bool = False, **kw) -> Dataset:
    """Load a dataset, layout auto-detected. Extra keywords go to the layout's reader:

    synthetic: n, size, channels, seed, difficulty ("synthetic" = the default 1000-image train
               set, "synthetic:val" = the 300-image val set of `synthetic.default_split`)
    shards: verify (default True: sha256 of every shard checked)
    mlperf-folders / tfrecord: size (default 96; None keeps the stored size), resize
               ("squash" | "center-crop"), grey, workers, progress
    """
    layout = detect(path_or_name)
    s = str(path_or_name)
    if layout == "synthetic":
        part = s.split(":", 1)[1] if ":" in s else "train"
        if part not in ("train", "val"):
            raise DataError(f"{s}: unknown synthetic part {part!r}; use synthetic:train or synthetic:val")
        if kw:
            kw.setdefault("n", 1000 if part == "train" else 300)
            kw.setdefault("stream", 0 if part == "train" else 1)
            n = kw.pop("n")
            return synthetic.make(n, **kw)
        return synthetic.default_split(0)[0 if part == "train" else 1]
    p = Path(s)
    if p.is_file() and p.name in ("y_labels.csv", shards.MANIFEST):
        p = p.parent
    if layout == "shards":
        return shards.open_shards(p, skip_bad=skip_bad, **kw)
    if layout == "eembc":
        from .eembc import open_eembc
        if kw:
            raise DataError(f"{p}: the eembc reader takes no options, got {sorted(kw)}")
        return open_eembc(p, skip_bad=skip_bad)
    if layout == "mlperf-folders":
        from .folders import open_folders
        return open_folders(p, skip_bad=skip_bad, **kw)
    from .tfrecord import open_tfrecord
    return open_tfrecord(p, skip_bad=skip_bad, **kw)


def vww_split(ds: Dataset, seed: int = 0, n_train: int = 600) -> tuple[Dataset, Dataset]:
    """The split of the project's fine-tuning notes: rows sorted by id (file name), then
    `numpy.random.default_rng(seed).permutation(len)`; the first n_train are train, the rest test."""
    if not 0 <= n_train <= len(ds):
        raise DataError(f"{ds.name}: n_train={n_train} must be within 0..{len(ds)}")
    srt = ds.sorted_by_id()
    perm = np.random.default_rng(seed).permutation(len(srt))
    return srt.subset(perm[:n_train]), srt.subset(perm[n_train:])



DEFAULT_VAL_SPLIT = 0.25     # 800 images (vww01-eembc) -> 600 train / 200 validation, the published split


def parse_val_split(text: str) -> float | int:
    """--val-split: a fraction in (0, 1) ("0.25"), a percentage ("25%") or a count of images ("200")."""
    t = str(text).strip()
    bad = f"--val-split must be a fraction in (0, 1), a percentage or a count >= 1, got {text!r}"
    try:
        if t.endswith("%"):
            v = float(t[:-1]) / 100.0
        elif t.isdigit():
            n = int(t)
            if n < 1:
                raise ValueError
            return n
        else:
            v = float(t)
    except ValueError:
        raise ValueError(bad) from None
    if not 0.0 < v < 1.0:
        raise ValueError(bad)
    return v


def split_counts(n: int, val_split: float | int = DEFAULT_VAL_SPLIT, name: str = "data") -> tuple[int, int]:
    """(n_train, n_val) of `n` images: a count is taken as is, a fraction f gives
    n_val = max(1, round(f n)) (half up); both parts must keep at least one image."""
    if isinstance(val_split, int):
        n_val = val_split
    else:
        n_val = max(1, int(np.floor(val_split * n + 0.5)))
    if n - n_val < 1 or n_val < 1:
        raise DataError(f"{name}: {n} image(s) are too few to split off {n_val} for validation and keep "
                        f"at least one for training; give a separate validation folder with --val-data, "
                        f"or more images")
    return n - n_val, n_val
