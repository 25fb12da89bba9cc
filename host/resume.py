"""The run tag a host stores in the board's checkpoints (CKPT_CONFIG, 8 u32 words) so that a
resume can tell whether the checkpoint on the board belongs to the run it is asked to continue,
and say what differs when it does not.

    tag = run_tag(model_blob, train_x, train_y, seed=..., epochs=..., options={...}, every=K)
    problems = differences(tag, info.checkpoint["tag"])      # [] when it is the same run
"""
from __future__ import annotations

import json
import zlib

import numpy as np

TAG_VERSION = 1
# word index -> what it identifies (the message names the field)
TAG_FIELDS = ("tag format", "training data", "model file", "seed", "epochs",
              "training options (rule, learning rates and schedule, rounding, core configuration)",
              "training samples", "checkpoint interval")


def _crc(*parts) -> int:
    c = 0
    for p in parts:
        c = zlib.crc32(p, c)
    return c & 0xFFFFFFFF


def run_tag(model_blob: bytes, train_x, train_y, *, seed: int, epochs: int, options: dict,
            every: int) -> list[int]:
    """8 words: format, CRC32 of the training data (images then labels), CRC32 of the model file,
    seed, epochs, CRC32 of the training options (canonical JSON), training samples, interval."""
    x = np.ascontiguousarray(train_x)
    y = np.ascontiguousarray(np.asarray(train_y, np.int64))
    opts = json.dumps(options, sort_keys=True, default=str).encode()
    return [TAG_VERSION, _crc(memoryview(x).cast("B"), memoryview(y).cast("B")), _crc(model_blob),
            int(seed) & 0xFFFFFFFF, int(epochs) & 0xFFFFFFFF, _crc(opts), len(y) & 0xFFFFFFFF,
            int(every) & 0xFFFFFFFF]


def tag_problem(theirs) -> str | None:
    """Why `theirs` (a tag read from a board's checkpoint) is not a tag of this format, or None."""
    if not isinstance(theirs, (list, tuple)) or len(theirs) != len(TAG_FIELDS):
        n = len(theirs) if isinstance(theirs, (list, tuple)) else type(theirs).__name__
        return f"run tag: {n} words in the checkpoint, {len(TAG_FIELDS)} expected"
    for name, word in zip(TAG_FIELDS, theirs):
        if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFFFFFF:
            return f"run tag: {name}: {word!r} in the checkpoint is not a u32 word"
    if theirs[0] != TAG_VERSION:
        return f"tag format: {TAG_VERSION} here, {theirs[0]} in the checkpoint (its other words mean other things)"
    return None


def differences(ours: list[int], theirs: list[int], skip=("checkpoint interval",)) -> list[str]:
    """What differs between two run tags, as phrases ("seed: 1 here, 0 in the checkpoint"). A tag
    from the board that is not a well-formed tag of this format is one difference, saying why: a
    short or malformed tag can never pass for the same run."""
    problem = tag_problem(theirs)
    if problem:
        return [problem]
    out = []
    for name, a, b in zip(TAG_FIELDS, ours, theirs):
        if name in skip or a == b:
            continue
        if name in ("seed", "epochs", "training samples", "tag format"):
            out.append(f"{name}: {a} here, {b} in the checkpoint")
        else:
            out.append(f"{name} (CRC32 {a:08x} here, {b:08x} in the checkpoint)")
    return out
