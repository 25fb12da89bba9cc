"""TFRecords written by the original VWW script (tensorflow/models `build_visualwakewords_data`).

Each record is a tf.train.Example with (among others) `image/encoded` (JPEG bytes),
`image/class/label` (int64, 1 = person), `image/source_id` (COCO image id as text) and
`image/filename`. Files are named `train.record-00000-of-00100` / `val.record-...`; any
`*.tfrecord`, `*.tfrecords`, `*.record` or `*.record-*` file is accepted.

TensorFlow is only needed here and is an optional extra: `pip install '.[tf]'`. Pictures are
decoded with Pillow and resized exactly as the other layouts (see `host.datasets.imaging`).
ids are the source ids, zero-padded to 12 digits when numeric (like EEMBC / COCO file names).
"""
from __future__ import annotations

import fnmatch
import os
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np

from .. import safeio
from .base import DataError, Dataset, Skipped, os_errors_as_data_errors
from .imaging import decode
from .parallel import Progress, default_workers, imap

PATTERNS = ("*.tfrecord", "*.tfrecords", "*.tfrecord-*", "*.record", "*.record-*")
CHUNK = 2048
MAX_FILE_BYTES = 64 * safeio.GiB    # one TFRecord file (the VWW script writes ~100 MB ones)


def looks_like(p: Path) -> bool:
    return p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in PATTERNS)


def find_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if looks_like(p)) if folder.is_dir() else []


def _prefix(p: Path) -> str:
    name = p.name
    for sep in (".tfrecord", ".record"):
        if sep in name:
            return name.split(sep)[0]
    return name


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf  # noqa: PLC0415
    except ImportError:
        raise DataError("reading TFRecords needs TensorFlow, which is not installed: "
                        "pip install 'tinylls[tf]' (or pip install '.[tf]' in the repo)") from None
    return tf


def _decode_bytes(kw: dict, item: tuple[bytes, str]) -> np.ndarray:
    data, name = item
    return decode(data, name=name, **kw)


def _norm_id(source_id: bytes, filename: bytes, fallback: str) -> str:
    sid = source_id.decode("utf8", "replace").strip()
    if sid.isdigit():
        return sid.zfill(12)
    if sid:
        return sid
    fn = filename.decode("utf8", "replace").strip()
    return os.path.splitext(os.path.basename(fn))[0] if fn else fallback


@os_errors_as_data_errors
def open_tfrecord(path: os.PathLike | str, *, skip_bad: bool = False, split: Optional[str] = None,
                  size: Optional[int] = 96, resize: str = "squash", grey: bool = False,
                  workers: Optional[int] = None, progress: Progress = None) -> Dataset:
    """Read TFRecord file(s): a file, or a folder (pick `split="train"` / `"val"` when the
    folder holds several prefixes)."""
    p = Path(path)
    files = [p] if p.is_file() else find_files(p)
    if not files:
        raise DataError(f"{p}: no TFRecord files ({', '.join(PATTERNS)})")
    prefixes = sorted({_prefix(f) for f in files})
    if split is not None:
        files = [f for f in files if _prefix(f) == split]
        if not files:
            raise DataError(f"{p}: no TFRecord files for split {split!r} (found {', '.join(prefixes)})")
    elif len(prefixes) > 1:
        raise DataError(f"{p}: TFRecords of several splits ({', '.join(prefixes)}); "
                        "pass split=... (CLI: --split)")
    tf = _tf()
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value=b""),
        "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    }
    if workers is None:
        workers = 1
    kw = {"size": size, "resize": resize, "grey": grey}
    images: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[str] = []
    skipped: list[Skipped] = []
    done = 0

    def flush(batch: list[tuple[bytes, str, int, str]]) -> None:
        nonlocal done
        res = imap(partial(_decode_bytes, kw), [(b[0], b[1]) for b in batch], workers=workers)
        for (ok, arr), (_, where, lab, iid) in zip(res, batch):
            if not ok:
                if not skip_bad:
                    raise DataError(arr)
                skipped.append(Skipped(where, arr))
                continue
            if images and arr.shape != images[0].shape:
                raise DataError(f"{where}: image shape {arr.shape} differs from {images[0].shape} "
                                "(pass size=...)")
            images.append(arr)
            labels.append(lab)
            ids.append(iid)
        done += len(batch)
        if progress:
            progress(done, -1)

    for f in files:
        safeio.check_file(f, MAX_FILE_BYTES, "TFRecord file", error=DataError)
        batch: list[tuple[bytes, str, int, str]] = []
        k = -1
        try:
            for k, raw in enumerate(tf.data.TFRecordDataset(str(f)).as_numpy_iterator()):
                where = f"{f} record {k}"
                try:
                    try:
                        ex = tf.io.parse_single_example(raw, spec)
                    except (tf.errors.InvalidArgumentError, ValueError) as e:
                        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                        raise DataError(f"{where}: not a VWW tf.train.Example ({msg})") from None
                    lab = int(ex["image/class/label"].numpy())
                    if lab not in (0, 1):
                        raise DataError(f"{where}: field image/class/label is {lab}, outside {{0,1}}")
                except DataError as e:
                    if not skip_bad:
                        raise
                    skipped.append(Skipped(where, str(e)))
                    continue
                iid = _norm_id(ex["image/source_id"].numpy(), ex["image/filename"].numpy(),
                               f"{f.name}:{k}")
                batch.append((ex["image/encoded"].numpy(), where, lab, iid))
                if len(batch) >= CHUNK:
                    flush(batch)
                    batch = []
        except tf.errors.OpError as e:  # truncated file / bad CRC
            msg = f"{f}: unreadable TFRecord after record {k} ({e.message.splitlines()[0]})"
            if not skip_bad:
                raise DataError(msg) from None
            skipped.append(Skipped(str(f), msg))
        if batch:
            flush(batch)
    if not images:
        raise DataError(f"{p}: no readable records ({len(skipped)} skipped as bad)")
    dup = len(ids) - len(set(ids))
    if dup:
        raise DataError(f"{p}: {dup} duplicate image ids across the TFRecords")
    return Dataset(images=np.stack(images), labels=np.array(labels, dtype=np.int64), ids=ids,
                   layout="tfrecord", name=prefixes[0] if len(prefixes) == 1 else str(split),
                   classes=2, source=str(p), skipped=skipped,
                   meta={"files": [str(f) for f in files], "resize": resize,
                         "checksums": "CRC per record (checked by TensorFlow)"})


__all__ = ["open_tfrecord", "find_files", "looks_like", "default_workers"]
