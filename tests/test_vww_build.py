"""`python -m host.vww build` on a tiny COCO-format dataset made on the fly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import host.datasets as hd
from host import vww
from host.datasets import coco

PERSON, DOG = 1, 18

# (id, width, height, colour); colour encodes the id so mix-ups show in the pixels.
TRAIN = [(1, 100, 80), (2, 100, 80), (3, 64, 48), (4, 120, 90), (5, 50, 50), (6, 80, 60)]
VAL = [(7, 100, 80), (8, 60, 90), (9, 100, 100)]


def colour(i: int) -> tuple[int, int, int]:
    return (20 * i % 256, 255 - 25 * i, 40 + 15 * i)


def annotations() -> dict[str, list]:
    a = [
        # 1: person area exactly 0.5 % of 100*80 = 40.0 -> NOT person (strictly greater needed);
        #    a big dog does not count.
        (1, PERSON, 40.0, [0, 0, 10, 10], 0), (1, DOG, 4000.0, [0, 0, 80, 50], 0),
        # 2: person 40.5 > 40 -> person
        (2, PERSON, 40.5, [5, 5, 9, 9], 0),
        # 3: big box but small segment area (10 / 3072 = 0.33 %) -> NOT person: area field, not box
        (3, PERSON, 10.0, [0, 0, 50, 40], 0),
        # 4: one tiny person and one big enough (500 / 10800 = 4.6 %) -> person
        (4, PERSON, 3.0, [0, 0, 2, 2], 0), (4, PERSON, 500.0, [10, 10, 30, 30], 0),
        # 5: no annotations at all -> not person
        # 6: crowd annotation counts like any other (as in the original VWW script) -> person
        (6, PERSON, 1000.0, [0, 0, 40, 40], 1),
        # val: 7 person (12 %), 8 only a dog, 9 person at 0.6 %
        (7, PERSON, 1000.0, [0, 0, 40, 40], 0), (8, DOG, 3000.0, [0, 0, 50, 60], 0),
        (9, PERSON, 60.0, [0, 0, 10, 10], 0),
    ]
    out: dict[str, list] = {"train2014": [], "val2014": []}
    train_ids = {t[0] for t in TRAIN}
    for k, (iid, cat, area, bbox, crowd) in enumerate(a):
        out["train2014" if iid in train_ids else "val2014"].append(
            {"id": 100 + k, "image_id": iid, "category_id": cat, "area": area, "bbox": bbox,
             "iscrowd": crowd, "segmentation": []})
    return out


EXPECTED = {1: 0, 2: 1, 3: 0, 4: 1, 5: 0, 6: 1, 7: 1, 8: 0, 9: 1}


def make_coco(root: Path) -> Path:
    anns = annotations()
    (root / "annotations").mkdir(parents=True)
    cats = [{"id": PERSON, "name": "person", "supercategory": "person"},
            {"id": DOG, "name": "dog", "supercategory": "animal"}]
    for split, imgs in (("train2014", TRAIN), ("val2014", VAL)):
        (root / split).mkdir()
        entries = []
        for iid, w, h in imgs:
            fn = f"COCO_{split}_{iid:012d}.jpg"
            Image.new("RGB", (w, h), colour(iid)).save(root / split / fn, quality=95)
            entries.append({"id": iid, "file_name": fn, "width": w, "height": h})
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": entries, "annotations": anns[split], "categories": cats}))
    (root / "minival.txt").write_text("7\n9\n")
    return root


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return make_coco(tmp_path / "coco")


def check_pixels(ds: hd.Dataset) -> None:
    for i, img in zip(ds.ids, ds.images):
        want = np.array(colour(int(i)), dtype=np.int16)
        if img.shape[-1] == 1:
            want = hd.to_grey(want.astype(np.uint8)[None, None])[0, 0].astype(np.int16)
        assert np.abs(img.astype(np.int16) - want).max() <= 3, f"image {i} has wrong pixels"


def test_labels_and_edge_of_threshold(coco_root: Path) -> None:
    rows = coco.plan(coco_root, "train")
    assert [(r.id, r.label) for r in rows] == [(i, EXPECTED[i]) for i, *_ in TRAIN]
    # threshold is configurable: at 0.3 % image 3 (0.33 %) becomes a person
    rows = coco.plan(coco_root, "train", threshold=0.003)
    assert {r.id: r.label for r in rows}[3] == 1
    # foreground class is configurable
    rows = coco.plan(coco_root, "val", foreground="dog")
    assert {r.id: r.label for r in rows} == {7: 0, 8: 1, 9: 0}


@pytest.mark.parametrize("split, minival, ids", [
    ("train", False, [1, 2, 3, 4, 5, 6]),
    ("train", True, [1, 2, 3, 4, 5, 6, 8]),  # official VWW train: + val2014 minus minival
    ("val", False, [7, 8, 9]),
    ("minival", True, [7, 9]),
])
def test_splits(coco_root: Path, split: str, minival: bool, ids: list[int]) -> None:
    rows = coco.plan(coco_root, split, minival_list=coco_root / "minival.txt" if minival else None)
    assert [r.id for r in rows] == ids


def test_build_cli_rgb_and_grey(coco_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = vww.main(["build", "--coco-root", str(coco_root), "--split", "train", "--size", "32",
                   "--out", str(out), "--minival-list", str(coco_root / "minival.txt"),
                   "--workers", "2", "--shard-size", "3", "-q"])
    assert rc == 0
    assert "7 images (person 3, non-person 4)" in capsys.readouterr().out
    ds = hd.open(out)
    assert ds.layout == "shards" and ds.images.shape == (7, 32, 32, 3)
    assert ds.ids == [f"{i:012d}" for i in (1, 2, 3, 4, 5, 6, 8)]
    assert ds.labels.tolist() == [EXPECTED[i] for i in (1, 2, 3, 4, 5, 6, 8)]
    check_pixels(ds)
    man = json.loads((out / "manifest.json").read_text())
    assert man["count"] == 7 and man["counts"] == {"0": 4, "1": 3}
    assert man["shape"] == [32, 32, 3] and len(man["shards"]) == 3
    assert not (out / ".partial").exists()

    grey = tmp_path / "grey"
    assert vww.main(["build", "--coco-root", str(coco_root), "--split", "val", "--size", "16",
                     "--grey", "--out", str(grey), "--workers", "1", "-q"]) == 0
    g = hd.open(grey)
    assert g.images.shape == (3, 16, 16, 1) and g.labels.tolist() == [1, 0, 1]
    check_pixels(g)


def test_center_crop_keeps_middle(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "c")
    # make image 1 left half red, right half blue; a centre crop of a 100x80 keeps both halves
    im = np.zeros((80, 100, 3), np.uint8)
    im[:, :50] = (255, 0, 0)
    im[:, 50:] = (0, 0, 255)
    Image.fromarray(im).save(root / "train2014" / "COCO_train2014_000000000001.jpg", quality=95)
    a = coco.build(root, "train", tmp_path / "sq", size=20, resize="squash", workers=1, limit=1)
    b = coco.build(root, "train", tmp_path / "cc", size=20, resize="center-crop", workers=1, limit=1)
    assert a.count == b.count == 1
    sq, cc = hd.open(a.out).images[0], hd.open(b.out).images[0]
    assert sq[10, 2, 0] > 200 and sq[10, 17, 2] > 200
    assert cc[10, 2, 0] > 200 and cc[10, 17, 2] > 200


def test_rerun_is_idempotent_and_resumes(coco_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = coco.build(coco_root, "train", out, size=24, shard_size=2, workers=1)
    assert not first.up_to_date and first.shards == 3
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = coco.build(coco_root, "train", out, size=24, shard_size=2, workers=1)
    assert again.up_to_date and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
    reference = hd.open(out)

    # interrupted build: image 5 (third shard) is corrupt -> error after two shards are written
    out2 = tmp_path / "out2"
    bad = coco_root / "train2014" / "COCO_train2014_000000000005.jpg"
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 3])
    with pytest.raises(hd.DataError, match="COCO_train2014_000000000005.jpg"):
        coco.build(coco_root, "train", out2, size=24, shard_size=2, workers=1)
    assert not (out2 / "manifest.json").exists()
    bad.write_bytes(good)
    done = coco.build(coco_root, "train", out2, size=24, shard_size=2, workers=1)
    assert done.reused_shards == 2 and done.count == 6
    resumed = hd.open(out2)
    assert np.array_equal(resumed.images, reference.images)
    assert resumed.labels.tolist() == reference.labels.tolist() and resumed.ids == reference.ids

    # different settings into the same folder: rebuilt, not mixed
    small = coco.build(coco_root, "train", out, size=12, shard_size=4, workers=1)
    assert not small.up_to_date and hd.open(out).images.shape == (6, 12, 12, 3)
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.tlls", "shard-00001.tlls"]


def one_line_error(capsys, argv: list[str]) -> str:
    rc = vww.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("host.vww: error: ") and "\n" not in err, err
    return err


def test_corrupt_jpeg(coco_root: Path, tmp_path: Path, capsys) -> None:
    (coco_root / "train2014" / "COCO_train2014_000000000004.jpg").write_bytes(b"not a jpeg at all")
    argv = ["build", "--coco-root", str(coco_root), "--split", "train", "--size", "16", "-q"]
    err = one_line_error(capsys, argv + ["--out", str(tmp_path / "a")])
    assert "COCO_train2014_000000000004.jpg" in err
    assert vww.main(argv + ["--out", str(tmp_path / "b"), "--skip-bad"]) == 0
    assert "skipped 1 bad image" in capsys.readouterr().out
    ds = hd.open(tmp_path / "b")
    assert ds.ids == [f"{i:012d}" for i in (1, 2, 3, 5, 6)]
    assert ds.labels.tolist() == [EXPECTED[i] for i in (1, 2, 3, 5, 6)]
    check_pixels(ds)
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert len(man["skipped"]) == 1 and "000000000004" in man["skipped"][0]["path"]


def test_missing_image_file(coco_root: Path, tmp_path: Path, capsys) -> None:
    (coco_root / "val2014" / "COCO_val2014_000000000008.jpg").unlink()
    argv = ["build", "--coco-root", str(coco_root), "--split", "val", "--size", "16", "-q",
            "--workers", "2"]
    err = one_line_error(capsys, argv + ["--out", str(tmp_path / "a")])
    assert "COCO_val2014_000000000008.jpg" in err and "missing" in err
    res = coco.build(coco_root, "val", tmp_path / "b", size=16, skip_bad=True, workers=2)
    assert res.count == 2 and len(res.skipped) == 1 and res.counts == {"0": 0, "1": 2}


def test_wrong_picture_for_annotation(coco_root: Path, tmp_path: Path) -> None:
    Image.new("RGB", (10, 10)).save(coco_root / "val2014" / "COCO_val2014_000000000009.jpg")
    with pytest.raises(hd.DataError, match=r"000000000009\.jpg: picture is 10x10 but the "
                                           r"annotations say 100x100"):
        coco.build(coco_root, "val", tmp_path / "o", size=16, workers=1)


def test_missing_annotation_file(coco_root: Path, tmp_path: Path, capsys) -> None:
    (coco_root / "annotations" / "instances_train2014.json").unlink()
    err = one_line_error(capsys, ["build", "--coco-root", str(coco_root), "--split", "train",
                                  "--out", str(tmp_path / "o"), "--skip-bad", "-q"])
    assert "instances_train2014.json" in err and "missing" in err


def test_bad_annotations_are_named(coco_root: Path, tmp_path: Path) -> None:
    p = coco_root / "annotations" / "instances_val2014.json"
    data = json.loads(p.read_text())
    del data["annotations"][0]["area"]
    p.write_text(json.dumps(data))
    with pytest.raises(hd.DataError, match=r"instances_val2014.json: annotations\[0\].*'area'"):
        coco.plan(coco_root, "val")
    with pytest.raises(hd.DataError, match="no category named 'cat'"):
        coco.plan(coco_root, "train", foreground="cat")
    with pytest.raises(hd.DataError, match="minival"):
        coco.plan(coco_root, "minival")
    (coco_root / "bad.txt").write_text("7\nseven\n")
    with pytest.raises(hd.DataError, match=r"bad.txt line 2: 'seven'"):
        coco.plan(coco_root, "minival", minival_list=coco_root / "bad.txt")


def test_refuses_foreign_out_folder(coco_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(hd.DataError, match="not empty"):
        coco.build(coco_root, "val", out, size=16, workers=1)
    assert (out / "notes.txt").read_text() == "mine"


def test_info_json(coco_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    coco.build(coco_root, "val", out, size=16, workers=1)
    capsys.readouterr()
    assert vww.main(["info", str(out), "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "layout shards, 3 images (person 2, non-person 1)" in text and "verified" in text
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["layout"] == "shards" and rep["shape"] == [16, 16, 3]
    assert rep["images"] == [{"id": "000000000007", "label": 1}, {"id": "000000000008", "label": 0},
                             {"id": "000000000009", "label": 1}]
    # the COCO root itself: labels counted without decoding
    assert vww.main(["info", str(coco_root), "--json", str(tmp_path / "c.json")]) == 0
    rep = json.loads((tmp_path / "c.json").read_text())
    assert rep["splits"]["train2014"]["counts"] == {"0": 3, "1": 3}
    # a tampered shard is caught
    shard = out / "shard-00000.tlls"
    b = bytearray(shard.read_bytes())
    b[100] ^= 0xFF
    shard.write_bytes(bytes(b))
    err = one_line_error(capsys, ["info", str(out)])
    assert "shard-00000.tlls" in err and "sha256" in err


def test_help() -> None:
    for argv in (["--help"], ["build", "--help"], ["info", "--help"], ["convert", "--help"]):
        with pytest.raises(SystemExit) as e:
            vww.main(argv)
        assert e.value.code == 0
