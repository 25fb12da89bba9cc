"""TFRecords of the original VWW script, read through TensorFlow (the optional `[tf]` extra)."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from tools import need_module
from PIL import Image

import host.datasets as hd
from host.datasets import tfrecord
from host.datasets.imaging import decode

NEEDS_TF = "needs TensorFlow: install the optional extra with pip install '.[tf]' (CI does)"


def jpeg(colour: tuple[int, int, int], w: int = 120, h: int = 80) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_records(tf, path: Path, items: list[tuple[int, int, bytes]]) -> None:
    """Records shaped like tensorflow/models build_visualwakewords_data_lib's."""
    def b(v: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    with tf.io.TFRecordWriter(str(path)) as w:
        for image_id, label, data in items:
            try:
                wh = Image.open(io.BytesIO(data)).size
            except OSError:  # the deliberately broken picture
                wh = (0, 0)
            feats = {
                "image/height": i(wh[1]), "image/width": i(wh[0]),
                "image/filename": b(f"COCO_val2014_{image_id:012d}.jpg".encode()),
                "image/source_id": b(str(image_id).encode()),
                "image/key/sha256": b(b"0" * 64), "image/encoded": b(data),
                "image/format": b(b"jpeg"), "image/class/label": i(label),
                "image/object/bbox/xmin": tf.train.Feature(float_list=tf.train.FloatList(value=[0.1])),
                "image/object/area": tf.train.Feature(float_list=tf.train.FloatList(value=[50.0])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


ITEMS = [(42, 1, jpeg((200, 20, 20))), (7, 0, jpeg((20, 200, 20), 64, 64)),
         (123456, 1, jpeg((20, 20, 200), 90, 160))]


def test_tfrecord_round_trip(tmp_path: Path) -> None:
    tf = need_module("tensorflow", NEEDS_TF)
    write_records(tf, tmp_path / "val.record-00000-of-00002", ITEMS[:2])
    write_records(tf, tmp_path / "val.record-00001-of-00002", ITEMS[2:])
    ds = hd.open(tmp_path)
    assert ds.layout == "tfrecord" and ds.images.shape == (3, 96, 96, 3)
    assert ds.ids == ["000000000042", "000000000007", "000000123456"]
    assert ds.labels.tolist() == [1, 0, 1]
    for img, (_, _, data) in zip(ds.images, ITEMS):
        assert np.array_equal(img, decode(data, size=96))  # same pixels as every other layout
    assert hd.open(tmp_path / "val.record-00001-of-00002", size=None).images.shape == (1, 160, 90, 3)
    grey = hd.open(tmp_path, size=32, grey=True)
    assert grey.images.shape == (3, 32, 32, 1)


def test_tfrecord_splits_and_bad_records(tmp_path: Path) -> None:
    tf = need_module("tensorflow", NEEDS_TF)
    write_records(tf, tmp_path / "train.record-00000-of-00001", ITEMS[:1])
    write_records(tf, tmp_path / "val.record-00000-of-00001",
                  [ITEMS[1], (99, 3, ITEMS[0][2]), (100, 1, b"\xff\xd8 broken jpeg")])
    with pytest.raises(hd.DataError, match="several splits.*train, val"):
        hd.open(tmp_path)
    assert hd.open(tmp_path, split="train").ids == ["000000000042"]
    with pytest.raises(hd.DataError, match=r"val.record-00000-of-00001 record 1: field "
                                           r"image/class/label is 3"):
        hd.open(tmp_path, split="val")
    ds = hd.open(tmp_path, split="val", skip_bad=True)
    assert ds.ids == ["000000000007"] and len(ds.skipped) == 2
    assert "record 2" in ds.skipped[1].path
    trunc = tmp_path / "cut" / "x.tfrecord"
    trunc.parent.mkdir()
    whole = (tmp_path / "train.record-00000-of-00001").read_bytes()
    trunc.write_bytes(whole[: len(whole) - 10])
    with pytest.raises(hd.DataError, match=r"x\.tfrecord"):
        hd.open(trunc)


def test_clear_message_without_tensorflow(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "val.record-00000-of-00001").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import fails like when not installed
    with pytest.raises(hd.DataError, match=r"needs TensorFlow.*\[tf\]"):
        tfrecord.open_tfrecord(tmp_path)
