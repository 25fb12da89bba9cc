"""Ordered parallel map over image files, with a progress callback (no printing here)."""
from __future__ import annotations

import multiprocessing as mp
import os
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from .base import DataError
from .imaging import decode

Progress = Optional[Callable[[int, int], None]]  # (done, total)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _safe(fn: Callable[[Any], Any], item: Any) -> tuple[bool, Any]:
    try:
        return True, fn(item)
    except DataError as e:
        return False, str(e)


def imap(fn: Callable[[Any], Any], items: Sequence[Any], *, workers: int = 1,
         progress: Progress = None) -> Iterator[tuple[bool, Any]]:
    """Yield (ok, result_or_error_message) per item, in input order.

    DataError raised by `fn` is returned as (False, message) so the caller decides whether to
    stop or skip; any other exception propagates. workers <= 1 runs in this process."""
    total = len(items)
    safe = partial(_safe, fn)
    if workers <= 1 or total < 2:
        for k, item in enumerate(items, 1):
            yield safe(item)
            if progress:
                progress(k, total)
        return
    chunk = max(1, min(64, total // (workers * 8) or 1))
    with mp.get_context().Pool(workers) as pool:
        for k, res in enumerate(pool.imap(safe, items, chunksize=chunk), 1):
            yield res
            if progress:
                progress(k, total)


def _decode_item(kw: dict, item: tuple) -> Any:
    path, expect = item
    return decode(path, expect_wh=expect, **kw)


def decode_many(items: Iterable[tuple[str, Optional[tuple[int, int]]]], *, size: Optional[int],
                resize: str = "squash", grey: bool = False, workers: int = 1,
                progress: Progress = None, report: bool = False) -> Iterator[tuple[bool, Any]]:
    """Decode (path, expected (w, h) or None) pairs -> (ok, array or error message), in order
    (`report`: (array, (resized, original mode)) as imaging.decode reports it)."""
    fn = partial(_decode_item, {"size": size, "resize": resize, "grey": grey, "report": report})
    return imap(fn, list(items), workers=workers, progress=progress)
