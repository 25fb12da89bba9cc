"""Measure `host.vww build` throughput (images/s) on generated COCO-style JPEGs.

    python bench/vww_build.py [--n 400] [--width 640] [--height 480] [--size 96]

Writes a throwaway COCO 2014-shaped folder (textured JPEGs + instances JSON) in a temp dir,
builds the train split with 1 worker and with all cores, and prints one JSON object:
{"images": N, "source_wh": [W, H], "size": S, "cores": C,
 "runs": [{"workers": 1, "seconds": ..., "images_per_s": ...}, ...], "speedup": ...}
load_avg_1min is reported because other work on the machine skews the multi-core figure.
"""
from __future__ import annotations

import argparse
import io
import os
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host.datasets import DataError  # noqa: E402
from host.datasets.coco import build  # noqa: E402
from host.datasets.parallel import default_workers  # noqa: E402


def make_coco(root: Path, n: int, w: int, h: int, seed: int = 0) -> None:
    """n photo-sized JPEGs (smooth colour field + noise, so they compress like photos)."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True)
    (root / "train2014").mkdir()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pictures = []  # 16 distinct pictures, each written under several ids (decode cost is the same)
    for _ in range(min(n, 16)):
        a, b, c = rng.uniform(0, 2 * np.pi, 3)
        base = np.stack([np.sin(xx / (20 + 40 * rng.random()) + a),
                         np.cos(yy / (20 + 40 * rng.random()) + b),
                         np.sin((xx + yy) / 50 + c)], -1)
        img = (base * 80 + 128 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        pictures.append(buf.getvalue())
    images, anns = [], []
    for i in range(1, n + 1):
        fn = f"COCO_train2014_{i:012d}.jpg"
        (root / "train2014" / fn).write_bytes(pictures[i % len(pictures)])
        images.append({"id": i, "file_name": fn, "width": w, "height": h})
        anns.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                     "area": float(rng.uniform(0, 0.02) * w * h), "bbox": [0, 0, 10, 10]})
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=400, help="JPEGs to generate (default 400)")
    p.add_argument("--width", type=int, default=640, help="JPEG width (default 640, COCO-like)")
    p.add_argument("--height", type=int, default=480, help="JPEG height (default 480)")
    p.add_argument("--size", type=int, default=96, help="output side (default 96)")
    p.add_argument("--workers", type=int, nargs="*", default=None,
                   help="worker counts to time (default: 1 and all cores)")
    a = p.parse_args(argv)
    try:
        if a.n < 1:
            raise DataError(f"--n must be >= 1, got {a.n}")
        cores = default_workers()
        counts = a.workers or sorted({1, cores})
        runs = []
        with tempfile.TemporaryDirectory(prefix="tinylls-bench-") as tmp:
            root = Path(tmp) / "coco"
            t = time.perf_counter()
            make_coco(root, a.n, a.width, a.height)
            gen = time.perf_counter() - t
            for w in counts:
                out = Path(tmp) / f"out-{w}"
                t = time.perf_counter()
                res = build(root, "train", out, size=a.size, workers=w)
                dt = time.perf_counter() - t
                runs.append({"workers": w, "seconds": round(dt, 3),
                             "images_per_s": round(res.count / dt, 1)})
        by = {r["workers"]: r["images_per_s"] for r in runs}
        result = {"images": a.n, "source_wh": [a.width, a.height], "size": a.size,
                  "cores": cores, "load_avg_1min": round(os.getloadavg()[0], 2),
                  "generate_seconds": round(gen, 2), "runs": runs,
                  "speedup": round(by[max(by)] / by[min(by)], 2) if len(by) > 1 else 1.0}
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
