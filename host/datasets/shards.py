"""tinylls shards: the project's compact on-disk image set.

A shard folder holds `manifest.json` and `shard-NNNNN.tlls` files.

Shard file (little-endian, 16-byte header, then fixed-size records, no padding)::

    offset size
    0      4    magic  b"TLLS"
    4      1    version (1)
    5      1    channels C (1 or 3)
    6      2    height H
    8      2    width W
    10     1    classes
    11     1    reserved (0)
    12     4    record count n
    16     n * (1 + H*W*C) records: label (uint8) then H*W*C pixels (uint8, HWC, row-major)

A record is exactly what the C core and the serial protocol take (label byte + pixel bytes),
so a shard can be memory-mapped and streamed without any decoding.

manifest.json: format/version, name, shape [H, W, C], classes, count, counts per class, record
and header sizes, and per shard its file, count, counts, size in bytes, sha256 and the ids
of its records (in order). Optional "settings" record how the set was built and "skipped"
lists what `--skip-bad` left out.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .. import safeio
from .augment import augment as _augment
from .augment import shuffle as _shuffle
from .base import DataError, Dataset, Skipped, os_errors_as_data_errors

MAGIC = b"TLLS"
VERSION = 1
HEADER = struct.Struct("<4sBBHHBBI")
HEADER_BYTES = HEADER.size  # 16
MANIFEST = "manifest.json"
FORMAT = "tinylls-shards"
DEFAULT_SHARD_SIZE = 4096
MAX_MANIFEST_BYTES = 1 * safeio.GiB      # ids of every record; ~20 bytes each
MAX_SHARD_BYTES = 16 * safeio.GiB


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.tlls"


def record_dtype(shape: Sequence[int]) -> np.dtype:
    return np.dtype([("label", np.uint8), ("pixels", np.uint8, tuple(int(s) for s in shape))])


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def _atomic_write_bytes(path: Path, parts: Sequence[bytes | memoryview]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for p in parts:
            f.write(p)
    os.replace(tmp, path)


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def write_shard(out_dir: Path, index: int, images: np.ndarray, labels: np.ndarray,
                ids: Sequence[str], classes: int = 2) -> dict[str, Any]:
    """Write one shard file atomically; returns its manifest entry."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    n, h, w, c = images.shape
    labels = np.asarray(labels)
    if labels.shape != (n,) or len(ids) != n:
        raise DataError(f"{out_dir / shard_name(index)}: {n} images, {labels.shape} labels, "
                        f"{len(ids)} ids")
    if n and (labels.min() < 0 or labels.max() >= min(classes, 256)):
        raise DataError(f"{out_dir / shard_name(index)}: label outside 0..{classes - 1}")
    rec = np.empty(n, dtype=record_dtype((h, w, c)))
    rec["label"] = labels.astype(np.uint8)
    rec["pixels"] = images
    header = HEADER.pack(MAGIC, VERSION, c, h, w, classes, 0, n)
    body = rec.tobytes()
    path = out_dir / shard_name(index)
    _atomic_write_bytes(path, [header, body])
    digest = hashlib.sha256(header)
    digest.update(body)
    counts = np.bincount(labels.astype(np.int64), minlength=classes) if n else np.zeros(classes)
    return {"file": path.name, "count": int(n), "bytes": HEADER_BYTES + len(body),
            "sha256": digest.hexdigest(),
            "counts": {str(k): int(counts[k]) for k in range(classes)},
            "ids": [str(i) for i in ids]}


def write_manifest(out_dir: Path, entries: list[dict[str, Any]], *, shape: Sequence[int],
                   classes: int, name: str, settings: Optional[dict] = None,
                   skipped: Sequence[Skipped] = ()) -> Path:
    counts = {str(k): sum(e["counts"][str(k)] for e in entries) for k in range(classes)}
    h, w, c = (int(s) for s in shape)
    manifest = {
        "format": FORMAT, "version": VERSION, "name": name, "shape": [h, w, c],
        "classes": classes, "count": sum(e["count"] for e in entries), "counts": counts,
        "header_bytes": HEADER_BYTES, "record_bytes": 1 + h * w * c,
        "settings": settings or {},
        "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
        "shards": entries,
    }
    path = out_dir / MANIFEST
    _atomic_write_json(path, manifest)
    return path


def write(ds: Dataset, out_dir: os.PathLike | str, *, shard_size: int = DEFAULT_SHARD_SIZE,
          settings: Optional[dict] = None, progress=None) -> Path:
    """Write `ds` as shards of at most `shard_size` records into `out_dir` (created if needed;
    shard files and the manifest there are replaced). Returns the manifest path."""
    if shard_size < 1:
        raise DataError(f"shard_size must be >= 1, got {shard_size}")
    if ds.classes > 256:
        raise DataError(f"{ds.name}: {ds.classes} classes do not fit the uint8 label byte")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.tlls"):
        old.unlink()
    entries = []
    n = len(ds)
    starts = list(range(0, n, shard_size)) or [0]
    for k, s in enumerate(starts):
        e = min(n, s + shard_size)
        entries.append(write_shard(out, k, ds.images[s:e], ds.labels[s:e], ds.ids[s:e],
                                   ds.classes))
        if progress:
            progress(e, n)
    st = {"source": ds.source, "source_layout": ds.layout}
    st.update(settings or {})
    return write_manifest(out, entries, shape=ds.shape, classes=ds.classes,
                          name=ds.name or out.name, settings=st, skipped=ds.skipped)


def is_shards(path: Path) -> bool:
    m = path / MANIFEST
    if not m.is_file():
        return False
    try:
        man = safeio.read_json(m, MAX_MANIFEST_BYTES, "shard manifest", error=DataError)
    except DataError:
        return False
    return isinstance(man, dict) and man.get("format") == FORMAT


def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _check_manifest(m: Path, man: dict) -> None:
    """Types and ranges of every field the readers use; names confined to the folder."""
    shape = man["shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(_int(v, 1, 65535) for v in shape)
            and shape[2] <= 255):
        raise DataError(f"{m}: field 'shape' is {shape!r}, expected [H, W, C] of positive integers")
    if not _int(man["classes"], 1, 256):
        raise DataError(f"{m}: field 'classes' is {man['classes']!r}, expected an integer 1..256")
    if not _int(man["count"], 0, 1 << 40):
        raise DataError(f"{m}: field 'count' is {man['count']!r}, expected a count")
    if not isinstance(man["shards"], list):
        raise DataError(f"{m}: field 'shards' is {type(man['shards']).__name__}, expected a list")
    rec_bytes = 1 + shape[0] * shape[1] * shape[2]
    total = 0
    for k, e in enumerate(man["shards"]):
        where = f"{m}: shards[{k}]"
        if not isinstance(e, dict):
            raise DataError(f"{where} is {type(e).__name__}, expected an object")
        for key in ("file", "count", "bytes", "sha256", "ids"):
            if key not in e:
                raise DataError(f"{where}.{key} missing")
        safeio.confined(m.parent, e["file"], f"{where}.file", error=DataError)
        if not _int(e["count"], 0, 1 << 40):
            raise DataError(f"{where}.count is {e['count']!r}, expected a count")
        if not _int(e["bytes"], 0, MAX_SHARD_BYTES) or e["bytes"] != HEADER_BYTES + e["count"] * rec_bytes:
            raise DataError(f"{where}.bytes is {e['bytes']!r}, expected {HEADER_BYTES} + "
                            f"{e['count']} x {rec_bytes} = {HEADER_BYTES + e['count'] * rec_bytes}")
        if not isinstance(e["sha256"], str):
            raise DataError(f"{where}.sha256 is {e['sha256']!r}, expected a hex string")
        if not (isinstance(e["ids"], list) and len(e["ids"]) == e["count"]
                and all(isinstance(i, str) for i in e["ids"])):
            raise DataError(f"{where}.ids is not a list of {e['count']} strings")
        total += e["count"]
    if total != man["count"]:
        raise DataError(f"{m}: field 'count' is {man['count']}, the shards hold {total}")


@os_errors_as_data_errors
def read_manifest(path: os.PathLike | str) -> dict[str, Any]:
    path = Path(path)
    m = path / MANIFEST if path.is_dir() else path
    if not m.exists():
        raise DataError(f"{m}: manifest missing (not a tinylls shard folder)")
    man = safeio.read_json(m, MAX_MANIFEST_BYTES, "shard manifest", error=DataError)
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise DataError(f"{m}: field 'format' is {man.get('format') if isinstance(man, dict) else None!r}, "
                        f"expected {FORMAT!r}")
    if man.get("version") != VERSION:
        raise DataError(f"{m}: field 'version' is {man.get('version')!r}, this reader knows {VERSION}")
    for key in ("shape", "classes", "count", "shards"):
        if key not in man:
            raise DataError(f"{m}: field {key!r} missing")
    _check_manifest(m, man)
    return man


def _load_shard(folder: Path, entry: dict, man: dict, verify: bool) -> np.ndarray:
    """Structured record array of one shard, checked against the manifest."""
    f = folder / entry["file"]
    shape = tuple(man["shape"])
    if not f.exists():
        raise DataError(f"{f}: shard listed in {MANIFEST} is missing")
    data = safeio.read_bytes(f, entry["bytes"], "shard (size from the manifest)", error=DataError,
                             exact=entry["bytes"])
    if verify and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DataError(f"{f}: sha256 does not match {MANIFEST} (corrupted or modified)")
    magic, ver, c, h, w, classes, _, n = HEADER.unpack_from(data)
    if magic != MAGIC or ver != VERSION:
        raise DataError(f"{f}: bad header magic {magic!r} / version {ver}")
    if (h, w, c) != shape or n != entry["count"] or classes != man["classes"]:
        raise DataError(f"{f}: header says {n} x {h}x{w}x{c}, {classes} classes; manifest says "
                        f"{entry['count']} x {'x'.join(map(str, shape))}, {man['classes']} classes")
    rec = np.frombuffer(data, dtype=record_dtype(shape), count=n, offset=HEADER_BYTES)
    if n and int(rec["label"].max()) >= man["classes"]:
        i = int(np.argmax(rec["label"] >= man["classes"]))
        raise DataError(f"{f}: record {i} ({entry['ids'][i]}) has label {int(rec['label'][i])}, "
                        f"outside 0..{man['classes'] - 1}")
    return rec


@os_errors_as_data_errors
def open_shards(path: os.PathLike | str, *, skip_bad: bool = False,
                verify: bool = True) -> Dataset:
    """Load every record into memory (checksums verified unless verify=False)."""
    folder = Path(path)
    man = read_manifest(folder)
    shape = tuple(man["shape"])
    recs, ids, skipped = [], [], []
    for entry in man["shards"]:
        try:
            rec = _load_shard(folder, entry, man, verify)
        except DataError as e:
            if not skip_bad:
                raise
            skipped.append(Skipped(str(folder / entry["file"]), str(e)))
            continue
        recs.append(rec)
        ids.extend(entry["ids"])
    rec = np.concatenate(recs) if recs else np.empty(0, dtype=record_dtype(shape))
    return Dataset(
        images=np.ascontiguousarray(rec["pixels"]), labels=rec["label"].astype(np.int64),
        ids=ids, layout="shards", name=man.get("name", folder.name), classes=int(man["classes"]),
        source=str(folder), skipped=skipped,
        meta={"manifest": str(folder / MANIFEST), "settings": man.get("settings", {}),
              "checksums": ("verified" if verify else "not checked") if not skipped
              else f"{len(skipped)} shard(s) failed", "build_skipped": man.get("skipped", [])})


@os_errors_as_data_errors
def verify(path: os.PathLike | str) -> list[str]:
    """Check every shard's size, sha256 and header; returns the problems (empty = all good)."""
    folder = Path(path)
    man = read_manifest(folder)
    problems = []
    for entry in man["shards"]:
        try:
            _load_shard(folder, entry, man, True)
        except DataError as e:
            problems.append(str(e))
    return problems


@os_errors_as_data_errors
def stream(path: os.PathLike | str, *, seed: Optional[int] = None, epoch: int = 0,
           augment: bool = False, pad: int = 4, flip: bool = True
           ) -> Iterator[tuple[np.ndarray, int, str]]:
    """Yield (image HWC uint8, label, id) without loading the whole set: shards are
    memory-mapped. seed=None keeps file order; otherwise the order is
    `host.datasets.shuffle(count, seed, epoch)` over the whole set. augment=True applies
    `host.datasets.augment(image, seed, step=epoch * count + position)`."""
    folder = Path(path)
    man = read_manifest(folder)
    shape = tuple(man["shape"])
    maps, owner = [], []
    for k, entry in enumerate(man["shards"]):
        f = folder / entry["file"]
        if not f.exists():
            raise DataError(f"{f}: shard listed in {MANIFEST} is missing")
        safeio.check_file(f, entry["bytes"], "shard (size from the manifest)", error=DataError,
                          exact=entry["bytes"])
        mm = np.memmap(f, dtype=record_dtype(shape), mode="r", offset=HEADER_BYTES,
                       shape=(entry["count"],)) if entry["count"] else None
        maps.append(mm)
        owner.extend((k, i) for i in range(entry["count"]))
    n = len(owner)
    order = _shuffle(n, seed, epoch) if seed is not None else np.arange(n)
    for pos, g in enumerate(order.tolist()):
        k, i = owner[g]
        r = maps[k][i]
        img = np.array(r["pixels"])
        if augment:
            img = _augment(img, seed or 0, epoch * n + pos, pad=pad, flip=flip)
        lab = int(r["label"])
        if lab >= man["classes"]:
            raise DataError(f"{folder / man['shards'][k]['file']}: record {i} has label {lab}, "
                            f"outside 0..{man['classes'] - 1}")
        yield img, lab, man["shards"][k]["ids"][i]
