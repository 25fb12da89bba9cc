"""Decode one image file (JPEG/PNG via Pillow) to a size x size uint8 array.

Aspect handling (`resize=`):
  "squash"       (default) stretch the whole picture to size x size, ignoring the aspect ratio.
                 This is what the MLPerf Tiny VWW training script does (Keras
                 `flow_from_directory(target_size=(96, 96))`), so models trained on
                 `vw_coco2014_96` see the same geometry. Nothing in the picture is cut off,
                 so a person annotation counted for the label is always still in the image.
  "center-crop"  crop the central square (side = the shorter side) then resize. Keeps the
                 aspect ratio but can cut off people near the left/right (or top/bottom) edge:
                 the label is still that of the whole picture.
Resampling: JPEG DCT-domain downscale (Pillow `draft`) to no less than 2x the target, then
Pillow BILINEAR with antialiasing. EXIF orientation is NOT applied (COCO annotations refer to
the stored pixel grid). Grey/CMYK/palette pictures are converted to RGB first; grey output is
the ITU-R 601 luma of the resized RGB (same as `Dataset.to_grey`).
"""
from __future__ import annotations

import io
import os
import struct
from typing import Optional, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import safeio
from .base import DataError, to_grey

RESIZE_MODES = ("squash", "center-crop")
MAX_IMAGE_BYTES = 64 * safeio.MiB     # an encoded picture; checked before the file is read


def decode(src: Union[str, os.PathLike, bytes], *, size: Optional[int] = 96,
           resize: str = "squash", grey: bool = False, name: Optional[str] = None,
           expect_wh: Optional[tuple[int, int]] = None, report: bool = False):
    """Read `src` (a path or the encoded bytes) -> uint8 (size, size, 3 or 1).

    size=None keeps the original size. `name` is used in error messages (defaults to the
    path). `expect_wh` = (width, height) the annotations claim: a mismatch is an error, since
    it means the file is not the picture the labels describe. `report`: return (array,
    (resized, original mode or None if it was RGB)) instead."""
    if resize not in RESIZE_MODES:
        raise DataError(f"resize mode {resize!r} unknown; use one of {', '.join(RESIZE_MODES)}")
    label = name or (str(src) if not isinstance(src, bytes) else "<bytes>")
    if not isinstance(src, bytes):
        src = safeio.read_bytes(src, MAX_IMAGE_BYTES, "image file", error=DataError)
    fp = io.BytesIO(src)
    try:
        with fp, Image.open(fp) as im:
            if expect_wh is not None and tuple(im.size) != tuple(expect_wh):
                raise DataError(
                    f"{label}: picture is {im.size[0]}x{im.size[1]} but the annotations say "
                    f"{expect_wh[0]}x{expect_wh[1]} (wrong file?)")
            w, h = im.size
            mode0 = im.mode
            resized = size is not None and (w, h) != (size, size)
            if resize == "center-crop" and size is not None:
                s = min(w, h)
                box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
            else:
                box = (0, 0, w, h)
            if size is not None and im.format == "JPEG":
                # DCT-domain downscale; keeps >= 2x target on both axes of the used box.
                fx = max(1, (box[2] - box[0]) // (2 * size))
                fy = max(1, (box[3] - box[1]) // (2 * size))
                f = min(fx, fy)
                if f > 1:
                    im.draft("RGB", (max(1, w // f), max(1, h // f)))
                    sx, sy = im.size[0] / w, im.size[1] / h
                    box = (round(box[0] * sx), round(box[1] * sy),
                           round(box[2] * sx), round(box[3] * sy))
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGB")
            if size is not None:
                im = im.resize((size, size), Image.BILINEAR, box=box)
            arr = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{label}: not a readable image (corrupt or wrong format)") from None
    except Image.DecompressionBombError as e:
        # the header claims more pixels than Pillow agrees to decode (a corrupt or hostile file)
        raise DataError(f"{label}: picture too large to decode ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        # what Pillow's decoders raise on a truncated or inconsistent file
        raise DataError(f"{label}: corrupt image ({e})") from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(f"{label}: decoded to unexpected shape {arr.shape}")
    out = to_grey(arr) if grey else np.ascontiguousarray(arr)
    return (out, (resized, None if mode0 == "RGB" else mode0)) if report else out
