"""atheris target: the shard reader (host.datasets.shards: manifest.json + shard-NNNNN.tlls) on a
folder made from the input (fuzz/fuzz_files.py): open_shards with the sha256 check (what users
run) and without it (so mutated shard bodies reach the header and record parsing), verify, and
the memory-mapped stream. Only DataError may escape."""
import itertools
import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_files  # noqa: E402

with atheris.instrument_imports(include=["host"]):
    from host.datasets import DataError, shards

ROOT = fuzz_files.scratch("shards")


def test_one_input(data: bytes) -> None:
    fuzz_files.materialize(ROOT, data)
    calls = [lambda: shards.open_shards(ROOT),
             lambda: shards.open_shards(ROOT, skip_bad=True, verify=False),
             lambda: shards.verify(ROOT),
             lambda: list(itertools.islice(shards.stream(ROOT, seed=1, augment=True), 8))]
    fuzz_files.each_may_refuse(calls, DataError)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
