"""Which sample is trained when: the one definition that host.simulate and host.stream share,
so a run on the host and a run on a board see the same samples in the same order."""
from __future__ import annotations

import numpy as np


def epoch_order(n: int, epoch: int, seed: int) -> np.ndarray:
    """The permutation of range(n) used in `epoch` (0-based) of a run seeded with `seed`."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))
