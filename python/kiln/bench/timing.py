"""Timing: warm up, then time repeated calls; report every sample so medians can be taken."""

from __future__ import annotations

import time


# Idle worker threads of the library timed just before (OpenMP, OpenBLAS, MKL) spin for up to ~200 ms
# before they sleep; on a 2-core machine they would steal the cores from whatever is timed next.
SETTLE_S = 0.3


def time_calls(fn, reps: int, warmup: int = 2, settle: float = 0.0) -> list:
    """Milliseconds of `reps` calls of `fn` after `settle` seconds of quiet and `warmup` untimed calls."""
    if settle:
        time.sleep(settle)
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def median(xs: list) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
