"""Build Visual Wake Words from COCO 2014 into tinylls shards.

The VWW definition (Chowdhery et al. 2019, tensorflow/models `build_visualwakewords_data_lib`):
an image is labelled 1 ("person") when it holds at least one annotation of the foreground
category whose COCO `area` field (the segment's area, not the box's) divided by
width * height of the image is strictly greater than the threshold (0.005 = 0.5 %); otherwise 0.
Crowd annotations count like any other (as in the original script).
The instances JSON is read with the standard json module, not pycocotools: the rule needs only
images (id, size, file name), categories (name -> id) and annotations (image_id, category_id,
area), the same fields the reference script reads through the COCO API, and reading them here
names the file, entry and field of any malformed record (tests/test_vww_build.py).

Splits (COCO_ROOT holds `annotations/instances_{train,val}2014.json`, `train2014/`, `val2014/`):
  train    all of train2014; with a minival list also every val2014 image NOT in the list
           (that is the official 115k-image VWW training set)
  val      all of val2014 (40,504 images), ignoring any minival list
  minival  the val2014 images in the minival list (official VWW evaluation set, 8,059 ids;
           `mscoco_minival_ids.txt` of tensorflow/models, one integer id per line); needs the list
Rows are ordered by COCO image id; ids are the 12-digit zero-padded COCO id (as in EEMBC file names).

Building is idempotent and resumable: each finished shard is recorded under `OUT/.partial/`;
a re-run with the same settings reuses finished shards and only decodes the rest, and a run
over a complete build does nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import safeio
from . import shards
from .base import DataError, Skipped, os_errors_as_data_errors
from .imaging import RESIZE_MODES
from .parallel import Progress, decode_many, default_workers

SPLITS = ("train", "val", "minival")
BUILD_FORMAT = 1
PARTIAL = ".partial"
MAX_ANNOTATION_BYTES = 4 * safeio.GiB    # instances_train2014.json is ~0.5 GB
MAX_ID_LIST_BYTES = 64 * safeio.MiB
MAX_SIDECAR_BYTES = 256 * safeio.MiB


@dataclass(frozen=True)
class Row:
    id: int
    path: str
    width: int
    height: int
    label: int

    @property
    def key(self) -> str:
        return f"{self.id:012d}"


@dataclass
class BuildResult:
    out: Path
    count: int
    counts: dict[str, int]
    shards: int
    reused_shards: int
    skipped: list[Skipped] = field(default_factory=list)
    up_to_date: bool = False


@os_errors_as_data_errors
def read_instances(path: Path) -> dict[str, Any]:
    data = safeio.read_json(path, MAX_ANNOTATION_BYTES, "annotation file", error=DataError)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: field {key!r} missing or not a list")
    return data


@os_errors_as_data_errors
def label_images(ann_path: Path, image_dir: Path, *, threshold: float = 0.005,
                 foreground: str = "person") -> list[Row]:
    """Every image of an instances JSON with its VWW label, sorted by id."""
    data = read_instances(ann_path)
    fg = [c.get("id") for c in data["categories"] if c.get("name") == foreground]
    if not fg:
        names = sorted(str(c.get("name")) for c in data["categories"])
        raise DataError(f"{ann_path}: no category named {foreground!r} in field 'categories' "
                        f"(has: {', '.join(names[:10])}{'...' if len(names) > 10 else ''})")
    fg_id = fg[0]
    images: dict[int, dict] = {}
    for k, im in enumerate(data["images"]):
        try:
            iid, w, h, fn = int(im["id"]), int(im["width"]), int(im["height"]), str(im["file_name"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{ann_path}: images[{k}] lacks a valid {e} field") from None
        if w <= 0 or h <= 0:
            raise DataError(f"{ann_path}: images[{k}] (id {iid}) has size {w}x{h}")
        if iid in images:
            raise DataError(f"{ann_path}: image id {iid} listed twice in field 'images'")
        safeio.confined(image_dir, fn, f"{ann_path}: images[{k}] (id {iid}) field 'file_name'",
                        error=DataError)
        images[iid] = {"w": w, "h": h, "fn": fn, "person": False}
    for k, a in enumerate(data["annotations"]):
        if a.get("category_id") != fg_id:
            continue
        try:
            iid, area = int(a["image_id"]), float(a["area"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{ann_path}: annotations[{k}] (id {a.get('id')}) lacks a valid "
                            f"{e} field") from None
        im = images.get(iid)
        if im is None:
            raise DataError(f"{ann_path}: annotations[{k}] (id {a.get('id')}) refers to image "
                            f"id {iid}, which is not in field 'images'")
        if area / (im["w"] * im["h"]) > threshold:
            im["person"] = True
    return [Row(iid, str(image_dir / im["fn"]), im["w"], im["h"], int(im["person"]))
            for iid, im in sorted(images.items())]


@os_errors_as_data_errors
def read_id_list(path: Path) -> set[int]:
    lines = safeio.read_text(path, MAX_ID_LIST_BYTES, "minival id list",
                             error=DataError).splitlines()
    out: set[int] = set()
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if not s.isdigit():
            raise DataError(f"{path} line {n}: {s!r} is not an integer COCO image id")
        out.add(int(s))
    if not out:
        raise DataError(f"{path}: no ids")
    return out


def plan(coco_root: Path, split: str, *, threshold: float = 0.005, foreground: str = "person",
         minival_list: Optional[Path] = None) -> list[Row]:
    """The rows of a split (see module doc), sorted by COCO id."""
    if split not in SPLITS:
        raise DataError(f"split {split!r} unknown; use one of {', '.join(SPLITS)}")
    if not 0.0 <= threshold < 1.0:
        raise DataError(f"threshold {threshold} must be in [0, 1)")
    root = Path(coco_root)
    if not root.is_dir():
        raise DataError(f"{root}: COCO root folder missing")
    ann = root / "annotations"

    def load(name: str) -> list[Row]:
        return label_images(ann / f"instances_{name}.json", root / name, threshold=threshold,
                            foreground=foreground)

    minival = read_id_list(minival_list) if minival_list else None
    if split == "minival" and minival is None:
        raise DataError("split 'minival' needs --minival-list FILE (mscoco_minival_ids.txt)")
    if split == "train":
        rows = load("train2014")
        if minival is not None:
            rows += [r for r in load("val2014") if r.id not in minival]
    elif split == "val":
        rows = load("val2014")
    else:
        val = load("val2014")
        rows = [r for r in val if r.id in minival]
        missing = len(minival) - len(rows)
        if missing:
            raise DataError(f"{minival_list}: {missing} listed ids are not in "
                            f"{ann / 'instances_val2014.json'}")
    rows.sort(key=lambda r: r.id)
    for a, b in zip(rows, rows[1:]):
        if a.id == b.id:
            raise DataError(f"COCO image id {a.id} appears in both train2014 and val2014")
    return rows


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def build(coco_root: os.PathLike | str, split: str, out: os.PathLike | str, *, size: int = 96,
          grey: bool = False, resize: str = "squash", threshold: float = 0.005,
          foreground: str = "person", minival_list: Optional[os.PathLike | str] = None,
          shard_size: int = shards.DEFAULT_SHARD_SIZE, workers: Optional[int] = None,
          skip_bad: bool = False, limit: Optional[int] = None,
          progress: Progress = None) -> BuildResult:
    """Build (or finish building) the VWW split into shard folder `out`."""
    if resize not in RESIZE_MODES:
        raise DataError(f"resize mode {resize!r} unknown; use one of {', '.join(RESIZE_MODES)}")
    if not 8 <= size <= 1024:
        raise DataError(f"size {size} must be within 8..1024")
    if shard_size < 1:
        raise DataError(f"shard_size must be >= 1, got {shard_size}")
    coco_root = Path(coco_root).resolve()
    rows = plan(coco_root, split, threshold=threshold, foreground=foreground,
                minival_list=Path(minival_list) if minival_list else None)
    if limit is not None:
        rows = rows[:max(0, limit)]
    if not rows:
        raise DataError(f"{coco_root}: split {split!r} has no images")
    out = Path(out)
    settings = {
        "builder": "host.vww build", "build_format": BUILD_FORMAT, "coco_root": str(coco_root),
        "split": split, "size": size, "grey": grey, "resize": resize, "threshold": threshold,
        "foreground": foreground, "limit": limit, "shard_size": shard_size,
        "minival_list_sha256": hashlib.sha256(safeio.read_bytes(
            minival_list, MAX_ID_LIST_BYTES, "minival id list", error=DataError)).hexdigest()
        if minival_list else None,
        "plan_sha256": _digest([[r.id, r.label] for r in rows]),
    }
    key = _digest(settings)
    settings["key"] = key
    _prepare_out(out, key)
    man_path = out / shards.MANIFEST
    if man_path.is_file():
        man = shards.read_manifest(out)
        if man.get("settings", {}).get("key") == key and all(
                (out / e["file"]).is_file() and (out / e["file"]).stat().st_size == e["bytes"]
                for e in man["shards"]):
            return BuildResult(out, man["count"], man["counts"], len(man["shards"]),
                               len(man["shards"]), [Skipped(**s) for s in man["skipped"]],
                               up_to_date=True)
    partial = out / PARTIAL
    partial.mkdir(parents=True, exist_ok=True)
    chunks = [rows[s:s + shard_size] for s in range(0, len(rows), shard_size)]
    entries: list[Optional[dict]] = [None] * len(chunks)
    skipped_by: list[list[dict]] = [[] for _ in chunks]
    for k, chunk in enumerate(chunks):
        side = partial / f"shard-{k:05d}.json"
        f = out / shards.shard_name(k)
        if not side.is_file() or not f.is_file():
            continue
        try:
            rec = safeio.read_json(side, MAX_SIDECAR_BYTES, "build record", error=DataError)
            if (rec.get("key") == key and rec.get("plan") == _digest([r.id for r in chunk])
                    and f.stat().st_size == rec["entry"]["bytes"]):
                entries[k] = rec["entry"]
                skipped_by[k] = list(rec["skipped"])
        except (DataError, OSError, AttributeError, KeyError, TypeError):
            continue     # unreadable record of a finished shard: that shard is built again
    reused = sum(e is not None for e in entries)
    todo = [k for k, e in enumerate(entries) if e is None]
    work = [(r.path, (r.width, r.height)) for k in todo for r in chunks[k]]
    nw = workers if workers is not None else default_workers()
    results = decode_many(work, size=size, resize=resize, grey=grey, workers=nw,
                          progress=progress)
    shape = (size, size, 1 if grey else 3)
    try:
        for k in todo:
            imgs, labs, ids, skipped = [], [], [], []
            for r in chunks[k]:
                ok, res = next(results)
                if not ok:
                    if not skip_bad:
                        raise DataError(res)
                    skipped.append({"path": r.path, "reason": res})
                    continue
                imgs.append(res)
                labs.append(r.label)
                ids.append(r.key)
            arr = np.stack(imgs) if imgs else np.zeros((0,) + shape, np.uint8)
            entry = shards.write_shard(out, k, arr, np.array(labs, np.int64), ids, classes=2)
            shards._atomic_write_json(partial / f"shard-{k:05d}.json", {
                "key": key, "plan": _digest([r.id for r in chunks[k]]), "entry": entry,
                "skipped": skipped})
            entries[k] = entry
            skipped_by[k] = skipped
    finally:
        results.close()
    for old in out.glob("shard-*.tlls"):
        if int(old.stem.split("-")[1]) >= len(chunks):
            old.unlink()
    skipped_all = [Skipped(**s) for sk in skipped_by for s in sk]
    final = [e for e in entries if e is not None]
    shards.write_manifest(out, final, shape=shape, classes=2,
                          name=f"vww-coco2014-{split}-{size}{'-grey' if grey else ''}",
                          settings=settings, skipped=skipped_all)
    shutil.rmtree(partial, ignore_errors=True)
    counts = {str(c): sum(e["counts"][str(c)] for e in final) for c in (0, 1)}
    return BuildResult(out, sum(e["count"] for e in final), counts, len(final), reused,
                       skipped_all)


def _prepare_out(out: Path, key: str) -> None:
    """Refuse to write into a folder that holds something other than our shards."""
    if not out.exists():
        out.mkdir(parents=True)
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    ours = {shards.MANIFEST, PARTIAL}
    foreign = [p.name for p in out.iterdir()
               if p.name not in ours and not (p.name.startswith("shard-") and
                                              p.name.endswith((".tlls", ".tlls.tmp")))
               and not p.name.endswith(".tmp")]
    if foreign:
        raise DataError(f"{out}: not empty and not a tinylls shard folder (has {foreign[0]}); "
                        "choose an empty or new --out folder")
    man = out / shards.MANIFEST
    if man.is_file():
        try:
            old = safeio.read_json(man, shards.MAX_MANIFEST_BYTES, "shard manifest",
                                   error=DataError).get("settings", {}).get("key")
        except (DataError, AttributeError):
            old = None
        if old != key:  # a different build: its shards will be replaced
            man.unlink()


def summarize_root(coco_root: Path, *, threshold: float = 0.005,
                   foreground: str = "person") -> dict[str, Any]:
    """Per COCO split found under coco_root: image counts and VWW label counts (no decoding)."""
    out: dict[str, Any] = {}
    for name in ("train2014", "val2014"):
        ann = coco_root / "annotations" / f"instances_{name}.json"
        if not ann.is_file():
            continue
        rows = label_images(ann, coco_root / name, threshold=threshold, foreground=foreground)
        present = sum(os.path.isfile(r.path) for r in rows)
        out[name] = {"annotations": str(ann), "images": len(rows),
                     "counts": {"0": sum(r.label == 0 for r in rows),
                                "1": sum(r.label == 1 for r in rows)},
                     "files_present": present,
                     "ids": [[r.key, r.label] for r in rows]}
    return out


__all__ = ["SPLITS", "Row", "BuildResult", "plan", "build", "label_images", "read_id_list",
           "summarize_root"]
