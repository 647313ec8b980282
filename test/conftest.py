"""pytest configuration of the numerics suite: a deterministic random generator per test.

Shared builders and float64 references live in reference.py (imported by the test modules).
"""

import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's id, so every parametrization draws fresh, reproducible data."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
