"""Reproducible runs of code that draws from Python's global ``random`` (DEAP's operators,
pandapower's Kerber networks) without disturbing anyone else's random state."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator


@contextlib.contextmanager
def seeded_python_random(seed: int) -> Iterator[None]:
    """Seed Python's global ``random`` for the block, then restore its previous state."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)
