"""Visual Wake Words data tool.

  python -m host.vww build --coco-root DIR --split train|val|minival [--size 96] [--grey] --out DIR
  python -m host.vww info DIR [--json OUT]
  python -m host.vww convert SRC --out DIR        (any readable layout -> tinylls shards)

Errors in the data are reported on one line naming the file / field / value (exit code 2);
`--skip-bad` leaves bad images out instead and says how many.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from host import cli_common
from host.datasets import DataError, detect
from host.datasets import open as open_dataset
from host.datasets import shards
from host.datasets.imaging import RESIZE_MODES
from host.datasets.parallel import default_workers

TOOL = "host.vww"


def _bar(desc: str, quiet: bool):
    """A (done, total) progress callback backed by tqdm, plus a closer."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm
    bar = tqdm(desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)

    def cb(done: int, total: int) -> None:
        if total > 0 and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return cb, bar.close


def _parser() -> argparse.ArgumentParser:
    p = cli_common.ArgumentParser(tool=TOOL, description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="build VWW shards from COCO 2014",
                       description="Label COCO 2014 images person / no person (VWW definition: a "
                       "person annotation whose COCO 'area' is > threshold of the image area), "
                       "resize them and write tinylls shards. Re-running resumes / does nothing "
                       "when complete.")
    b.add_argument("--coco-root", required=True, type=Path,
                   help="folder with annotations/instances_{train,val}2014.json, train2014/, val2014/")
    b.add_argument("--split", required=True, choices=("train", "val", "minival"),
                   help="train = train2014 (+ val2014 minus minival when --minival-list is given); "
                   "val = all val2014; minival = val2014 ids in --minival-list")
    b.add_argument("--out", required=True, type=Path, help="output shard folder")
    b.add_argument("--size", type=int, default=96, help="output side in pixels (default 96)")
    b.add_argument("--grey", action="store_true", help="store ITU-R 601 luma (1 channel)")
    b.add_argument("--resize", choices=RESIZE_MODES, default="squash",
                   help="aspect handling: squash = stretch whole picture (default, as MLPerf "
                   "Tiny); center-crop = central square")
    b.add_argument("--threshold", type=float, default=0.005,
                   help="min person area / image area, exclusive (default 0.005 = 0.5%%)")
    b.add_argument("--foreground-class", default="person",
                   help="COCO category name that makes label 1 (default person)")
    b.add_argument("--minival-list", type=Path,
                   help="official mscoco_minival_ids.txt (one COCO image id per line; default: none)")
    b.add_argument("--workers", type=int, default=None,
                   help=f"decoding processes (default: all cores = {default_workers()})")
    b.add_argument("--shard-size", type=int, default=shards.DEFAULT_SHARD_SIZE,
                   help=f"images per shard file (default {shards.DEFAULT_SHARD_SIZE})")
    b.add_argument("--limit", type=int, default=None, help="only the first N images by id (trials; default: all)")
    b.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable / missing images (counted and listed in the "
                   "manifest) instead of stopping")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    i = sub.add_parser("info", help="describe a dataset folder (any supported layout)",
                       description="Detect the layout at DIR and report image count per class, "
                       "shape and checksum status. DIR may also be a COCO 2014 root.")
    i.add_argument("dir", type=Path, metavar="DIR")
    i.add_argument("--json", type=Path, metavar="OUT",
                   help="also write a JSON report listing every image id with its label "
                   "('-' = stdout)")
    i.add_argument("--no-verify", action="store_true", help="skip shard sha256 verification")
    i.add_argument("--skip-bad", action="store_true", help="report bad items instead of stopping")

    c = sub.add_parser("convert", help="write any readable dataset as tinylls shards",
                       description="Read SRC (eembc, mlperf-folders, tfrecord, shards or "
                       "'synthetic') and write it as tinylls shards.")
    c.add_argument("src", metavar="SRC", help="dataset to read (anything host.datasets.open reads)")
    c.add_argument("--out", required=True, type=Path, help="output shard folder")
    c.add_argument("--grey", action="store_true", help="convert to ITU-R 601 luma")
    c.add_argument("--shard-size", type=int, default=shards.DEFAULT_SHARD_SIZE, help="images per shard file")
    c.add_argument("--skip-bad", action="store_true", help="leave out unreadable items instead of stopping")
    return p


def _build(a: argparse.Namespace) -> int:
    from host.datasets.coco import build
    if a.workers is not None and a.workers < 1:
        raise DataError(f"--workers must be >= 1, got {a.workers}")
    cb, close = _bar(f"vww {a.split}", a.quiet)
    t = time.time()
    try:
        res = build(a.coco_root, a.split, a.out, size=a.size, grey=a.grey, resize=a.resize,
                    threshold=a.threshold, foreground=a.foreground_class,
                    minival_list=a.minival_list, shard_size=a.shard_size, workers=a.workers,
                    skip_bad=a.skip_bad, limit=a.limit, progress=cb)
    finally:
        close()
    state = "already complete" if res.up_to_date else (
        f"built in {time.time() - t:.1f} s" + (f", {res.reused_shards} shard(s) reused"
                                               if res.reused_shards else ""))
    print(f"{res.out}: {res.count} images (person {res.counts['1']}, non-person "
          f"{res.counts['0']}) in {res.shards} shard(s), {state}")
    if res.skipped:
        print(f"skipped {len(res.skipped)} bad image(s) (--skip-bad); listed in "
              f"{res.out / shards.MANIFEST} field 'skipped', first: {res.skipped[0].reason}")
    return 0


def _info(a: argparse.Namespace) -> int:
    path = a.dir
    report: dict[str, Any]
    if path.is_dir() and (path / "annotations").is_dir() and not shards.is_shards(path):
        from host.datasets.coco import summarize_root
        found = summarize_root(path)
        if not found:
            raise DataError(f"{path / 'annotations'}: no instances_train2014.json or "
                            "instances_val2014.json")
        report = {"layout": "coco-2014-root", "source": str(path),
                  "checksums": "none in this layout", "splits": found}
        for name, s in found.items():
            print(f"{path}: COCO {name}: {s['images']} images ({s['files_present']} present "
                  f"on disk), VWW labels person {s['counts']['1']}, non-person {s['counts']['0']}")
    else:
        layout = detect(path)
        kw = {"verify": not a.no_verify} if layout == "shards" else {}
        ds = open_dataset(path, skip_bad=a.skip_bad, **kw)
        counts = ds.counts()
        status = ds.meta.get("checksums", "n/a")
        report = {"layout": ds.layout, "name": ds.name, "source": ds.source, "count": len(ds),
                  "counts": {str(k): v for k, v in counts.items()},
                  "shape": list(ds.shape), "classes": ds.classes, "checksums": status,
                  "skipped": [{"path": s.path, "reason": s.reason} for s in ds.skipped],
                  "unlabelled": ds.meta.get("unlabelled", []),
                  "images": [{"id": i, "label": int(l)} for i, l in zip(ds.ids, ds.labels)]}
        h, w, c = ds.shape
        print(f"{ds.source}: layout {ds.layout}, {len(ds)} images "
              f"(person {counts.get(1, 0)}, non-person {counts.get(0, 0)}), "
              f"{h}x{w}x{c} uint8, checksums: {status}")
        if ds.skipped:
            print(f"skipped {len(ds.skipped)} bad item(s), first: {ds.skipped[0].reason}")
        if report["unlabelled"]:
            print(f"{len(report['unlabelled'])} file(s) without a label were left out")
    if a.json:
        text = json.dumps(report, indent=1) + "\n"
        if str(a.json) == "-":
            sys.stdout.write(text)
        else:
            a.json.write_text(text)
    return 0


def _convert(a: argparse.Namespace) -> int:
    ds = open_dataset(a.src, skip_bad=a.skip_bad)
    if a.grey:
        ds = ds.to_grey()
    if a.out.exists() and any(a.out.iterdir()) and not shards.is_shards(a.out):
        raise DataError(f"{a.out}: not empty and not a tinylls shard folder")
    m = shards.write(ds, a.out, shard_size=a.shard_size, settings={"grey": a.grey})
    print(f"{m}: {len(ds)} images from {ds.layout} {ds.source}"
          + (f", skipped {len(ds.skipped)} bad item(s)" if ds.skipped else ""))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"build": _build, "info": _info, "convert": _convert}[args.cmd](args)
    except DataError as e:
        return cli_common.fail(TOOL, e)
    except KeyboardInterrupt:
        return cli_common.interrupted(TOOL, "a re-run resumes from the finished shards")


if __name__ == "__main__":
    sys.exit(cli_common.run_main(TOOL, main))
