"""host.datasets readers, shards, augmentation and the synthetic generator."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from shared_data import shared_path
from tools import need_module
from PIL import Image

import host.datasets as hd
from host import vww
from host.datasets import shards, synthetic


# ---------------------------------------------------------------- EEMBC (reference data)

@pytest.fixture(scope="module")
def eembc_dir(shared_dir: Path) -> Path:
    shared_path(Path("datasets") / "vww01-eembc" / "datasets" / "vww01" / "y_labels.csv")
    return shared_dir / "datasets" / "vww01-eembc"


@pytest.mark.shared
def test_eembc_reads_800_pixel_identical(eembc_dir: Path) -> None:
    inner = eembc_dir / "datasets" / "vww01"
    ds = hd.open(eembc_dir)
    assert ds.layout == "eembc" and len(ds) == 800 and ds.images.shape == (800, 96, 96, 3)
    assert ds.counts() == {0: 400, 1: 400} and ds.classes == 2
    assert ds.ids == sorted(ds.ids) and ds.meta["unlabelled"] == []
    with open(inner / "y_labels.csv", newline="") as f:
        rows = {r[0]: int(r[2]) for r in csv.reader(f)}
    assert len(rows) == 800
    for i, (iid, lab) in enumerate(zip(ds.ids, ds.labels)):
        assert rows[iid + ".bin"] == lab  # label 1 = person, straight from the csv
        assert ds.images[i].tobytes() == (inner / f"{iid}.bin").read_bytes()
    same = hd.open(inner)
    assert same.ids == ds.ids and np.array_equal(same.images, ds.images)


@pytest.mark.shared
def test_eembc_vww_split_and_grey(eembc_dir: Path) -> None:
    ds = hd.open(eembc_dir)
    tr, te = hd.vww_split(ds, seed=0, n_train=600)
    assert len(tr) == 600 and len(te) == 200 and not set(tr.ids) & set(te.ids)
    perm = np.random.default_rng(0).permutation(800)
    assert tr.ids == [sorted(ds.ids)[k] for k in perm[:600]]
    tr2, _ = hd.vww_split(ds.subset(np.arange(799, -1, -1)), seed=0)  # row order irrelevant
    assert tr2.ids == tr.ids
    g = ds.subset([0, 1]).to_grey()
    ref = np.asarray(Image.fromarray(ds.images[1]).convert("L"))
    assert g.images.shape == (2, 96, 96, 1) and np.array_equal(g.images[1, ..., 0], ref)


@pytest.mark.shared
def test_eembc_info_cli(eembc_dir: Path, tmp_path: Path, capsys) -> None:
    assert vww.main(["info", str(eembc_dir), "--json", str(tmp_path / "r.json")]) == 0
    assert "layout eembc, 800 images (person 400, non-person 400), 96x96x3" in capsys.readouterr().out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert len(rep["images"]) == 800 and sum(r["label"] for r in rep["images"]) == 400


# ---------------------------------------------------------------- EEMBC bad data (generated)

def make_eembc(root: Path, n: int = 4) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        name = f"{i:012d}.bin"
        (root / name).write_bytes(rng.integers(0, 256, 27648, dtype=np.uint8).tobytes())
        rows.append(f"{name},2,{i % 2}")
    (root / "y_labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_eembc_bad_bin_size(tmp_path: Path) -> None:
    root = make_eembc(tmp_path / "e")
    (root / "000000000002.bin").write_bytes(b"\0" * 27000)
    with pytest.raises(hd.DataError, match=r"000000000002\.bin: 27000 bytes, expected 27648"):
        hd.open(root)
    ds = hd.open(root, skip_bad=True)
    assert ds.ids == ["000000000000", "000000000001", "000000000003"]
    assert ds.labels.tolist() == [0, 1, 1] and len(ds.skipped) == 1


def test_eembc_bad_labels(tmp_path: Path) -> None:
    root = make_eembc(tmp_path / "e")
    lines = (root / "y_labels.csv").read_text().splitlines()
    lines[1] = "000000000001.bin,2,2"
    (root / "y_labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(hd.DataError, match=r"y_labels.csv line 2: label '2' for 000000000001.bin "
                                           r"is outside \{0,1\}"):
        hd.open(root)
    ds = hd.open(root, skip_bad=True)
    assert "000000000001" not in ds.ids and len(ds.skipped) == 1 and len(ds) == 3
    lines[1] = "000000000000.bin,2,1"  # duplicate with a contradicting label
    (root / "y_labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(hd.DataError, match="000000000000.bin listed twice"):
        hd.open(root)


def test_eembc_missing_file_and_unlabelled(tmp_path: Path, capsys) -> None:
    root = make_eembc(tmp_path / "e")
    (root / "000000000003.bin").unlink()
    (root / "999999999999.bin").write_bytes(b"\0" * 27648)  # no label row: never guessed
    rc = vww.main(["info", str(root)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "000000000003.bin: listed in y_labels.csv but the file is missing" in err
    ds = hd.open(root, skip_bad=True)
    assert len(ds) == 3 and ds.meta["unlabelled"] == ["999999999999.bin"]
    assert "999999999999" not in ds.ids


# ---------------------------------------------------------------- MLPerf Tiny folders

def make_folders(root: Path) -> Path:
    for cls, n, col in (("person", 3, (200, 30, 30)), ("non_person", 2, (30, 30, 200))):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (96, 96), col).save(root / cls / f"{cls[0]}{i}.png")
    (root / "person" / "README.txt").write_text("not an image")
    return root


def test_mlperf_folders(tmp_path: Path) -> None:
    root = make_folders(tmp_path / "vw_coco2014_96")
    for path in (root, tmp_path):  # the folder itself or its parent
        ds = hd.open(path)
        assert ds.layout == "mlperf-folders" and ds.images.shape == (5, 96, 96, 3)
        assert ds.ids == ["n0", "n1", "p0", "p1", "p2"] and ds.labels.tolist() == [0, 0, 1, 1, 1]
        assert (ds.images[ds.labels == 1][..., 0] == 200).all()
        assert (ds.images[ds.labels == 0][..., 2] == 200).all()
    assert hd.open(root, size=32).images.shape == (5, 32, 32, 3)
    (root / "person" / "p1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(hd.DataError, match=r"person/p1\.png: not a readable image"):
        hd.open(root)
    ds = hd.open(root, skip_bad=True)
    assert ds.ids == ["n0", "n1", "p0", "p2"] and len(ds.skipped) == 1
    Image.new("RGB", (96, 96)).save(root / "non_person" / "p0.png")
    with pytest.raises(hd.DataError, match="p0.*also present"):
        hd.open(root)


def test_detect_errors(tmp_path: Path) -> None:
    with pytest.raises(hd.DataError, match="no such file"):
        hd.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(hd.DataError, match="layout not recognised"):
        hd.open(tmp_path / "empty")


# ---------------------------------------------------------------- shards

def small_set(n: int = 10, size: int = 8) -> hd.Dataset:
    rng = np.random.default_rng(3)
    return hd.Dataset(images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                      labels=np.arange(n) % 2, ids=[f"im{i:03d}" for i in range(n)],
                      layout="synthetic", name="small")


def test_shards_round_trip_and_format(tmp_path: Path) -> None:
    ds = small_set()
    m = shards.write(ds, tmp_path / "s", shard_size=4)
    man = json.loads(m.read_text())
    assert man["count"] == 10 and man["counts"] == {"0": 5, "1": 5} and man["shape"] == [8, 8, 3]
    assert [e["count"] for e in man["shards"]] == [4, 4, 2] and man["record_bytes"] == 1 + 192
    back = hd.open(tmp_path / "s")
    assert back.layout == "shards" and back.ids == ds.ids
    assert np.array_equal(back.images, ds.images) and np.array_equal(back.labels, ds.labels)
    assert back.meta["checksums"] == "verified"
    # byte layout: 16-byte header then (label, pixels) records
    raw = (tmp_path / "s" / "shard-00001.tlls").read_bytes()
    assert raw[:4] == b"TLLS" and len(raw) == 16 + 4 * 193
    assert raw[16] == ds.labels[4] and raw[17:17 + 192] == ds.images[4].tobytes()
    assert hd.open(tmp_path / "s" / "manifest.json").ids == ds.ids


def test_shards_corruption_is_named(tmp_path: Path) -> None:
    shards.write(small_set(), tmp_path / "s", shard_size=4)
    f = tmp_path / "s" / "shard-00002.tlls"
    raw = bytearray(f.read_bytes())
    raw[16] = 7  # label byte out of range
    f.write_bytes(bytes(raw))
    with pytest.raises(hd.DataError, match=r"shard-00002.tlls: sha256 does not match"):
        hd.open(tmp_path / "s")
    with pytest.raises(hd.DataError, match=r"shard-00002.tlls: record 0 \(im008\) has label 7"):
        hd.open(tmp_path / "s", verify=False)
    ds = hd.open(tmp_path / "s", skip_bad=True)
    assert len(ds) == 8 and len(ds.skipped) == 1
    assert shards.verify(tmp_path / "s")[0].startswith(str(f))
    f.unlink()
    with pytest.raises(hd.DataError, match="shard-00002.tlls: shard listed in manifest.json is missing"):
        hd.open(tmp_path / "s")


def test_shards_stream_shuffle_augment(tmp_path: Path) -> None:
    ds = small_set(12)
    shards.write(ds, tmp_path / "s", shard_size=5)
    plain = list(shards.stream(tmp_path / "s"))
    assert [r[2] for r in plain] == ds.ids and all(np.array_equal(a[0], b) for a, b in
                                                 zip(plain, ds.images))
    a = [r[2] for r in shards.stream(tmp_path / "s", seed=5, epoch=1)]
    b = [r[2] for r in shards.stream(tmp_path / "s", seed=5, epoch=1)]
    c = [r[2] for r in shards.stream(tmp_path / "s", seed=5, epoch=2)]
    assert a == b and a != c and sorted(a) == ds.ids
    assert a == [ds.ids[k] for k in hd.shuffle(12, 5, 1)]
    aug = [r[0] for r in shards.stream(tmp_path / "s", seed=5, augment=True)]
    assert all(x.shape == (8, 8, 3) for x in aug)
    assert any(not np.array_equal(x, ds.images[hd.shuffle(12, 5, 0)[k]]) for k, x in enumerate(aug))


def test_augment_deterministic_crop_and_flip() -> None:
    img = np.arange(6 * 6 * 1, dtype=np.uint8).reshape(1, 6, 6, 1).repeat(16, 0)
    a = hd.augment(img, seed=1, step=3, pad=2)
    assert np.array_equal(a, hd.augment(img, seed=1, step=3, pad=2))
    assert not np.array_equal(a, hd.augment(img, seed=1, step=4, pad=2))
    assert np.array_equal(hd.augment(img, 1, 3, pad=0, flip=False), img)
    dy, dx, fl = hd.augment_params(16, 1, 3, pad=2)
    padded = np.pad(img[0], ((2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(16):
        want = padded[dy[i]:dy[i] + 6, dx[i]:dx[i] + 6]
        assert np.array_equal(a[i], want[:, ::-1] if fl[i] else want)
    assert fl.any() and (~fl).any() and len(set(zip(dy.tolist(), dx.tolist()))) > 3
    flipped = hd.augment(img[0], 0, 0, pad=0)  # a single HWC image works too
    assert flipped.shape == (6, 6, 1)
    with pytest.raises(hd.DataError, match="pad=6"):
        hd.augment(img, 0, 0, pad=6)


def test_convert_cli(tmp_path: Path, capsys) -> None:
    root = make_folders(tmp_path / "f")
    assert vww.main(["convert", str(root), "--out", str(tmp_path / "s"), "--grey"]) == 0
    ds = hd.open(tmp_path / "s")
    assert ds.images.shape == (5, 96, 96, 1) and ds.labels.tolist() == [0, 0, 1, 1, 1]


# ---------------------------------------------------------------- synthetic

def test_synthetic_default_split_deterministic() -> None:
    # (its speed is not a test's business: timed asserts fail on a loaded machine)
    tr, va = synthetic.default_split()
    assert tr.images.shape == (1000, 96, 96, 3) and va.images.shape == (300, 96, 96, 3)
    assert tr.counts() == {0: 500, 1: 500} and va.counts() == {0: 150, 1: 150}
    assert tr.layout == "synthetic" and not set(tr.ids) & set(va.ids)
    assert not any(np.array_equal(tr.images[i], va.images[i]) for i in range(20))
    a, b = synthetic.make(30, seed=4), synthetic.make(30, seed=4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, synthetic.make(30, seed=5).images)
    d = hd.open("synthetic")
    assert np.array_equal(d.images[:50], tr.images[:50]) and len(hd.open("synthetic:val")) == 300


def test_synthetic_options() -> None:
    g = synthetic.make(8, size=64, channels=1, seed=2, difficulty=0.3)
    assert g.images.shape == (8, 64, 64, 1) and g.images.dtype == np.uint8
    rgb = synthetic.make(8, size=64, seed=2, difficulty=0.3)
    assert np.array_equal(g.images, rgb.to_grey().images)
    for bad in ({"difficulty": 1.5}, {"channels": 2}):
        with pytest.raises(hd.DataError):
            synthetic.make(4, **bad)


def test_synthetic_not_linearly_trivial_but_figure_matters() -> None:
    """Pixel statistics alone do not give the label away; the figure does."""
    sk = need_module("sklearn.linear_model", "needs scikit-learn (pip install '.[test]')")
    tr, va = synthetic.make(400, seed=11), synthetic.make(200, seed=11, stream=1)

    def pool(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), 12, 8, 12, 8, 3).mean((2, 4)).reshape(len(x), -1) / 255.0

    clf = sk.LogisticRegression(max_iter=2000).fit(pool(tr.images), tr.labels)
    acc = clf.score(pool(va.images), va.labels)
    assert acc < 0.95, f"difficulty 1 is linearly separable on pooled pixels ({acc:.2f})"
    # brightness / colour histograms are about the same for both classes
    m1 = tr.images[tr.labels == 1].mean(axis=(0, 1, 2))
    m0 = tr.images[tr.labels == 0].mean(axis=(0, 1, 2))
    assert np.abs(m1 - m0).max() < 12, (m0, m1)
    # edge energy: trivially separates difficulty 0 (figure on a plain gradient), not difficulty 1
    def edge_threshold_acc(ds: hd.Dataset) -> float:
        x = ds.images.astype(np.float32)
        e = np.abs(np.diff(x, axis=1)).mean((1, 2, 3)) + np.abs(np.diff(x, axis=2)).mean((1, 2, 3))
        return max(float(((e > t) == ds.labels).mean()) for t in np.unique(e))

    assert edge_threshold_acc(synthetic.make(200, seed=11, difficulty=0.0)) > 0.98
    assert edge_threshold_acc(tr) < 0.8
