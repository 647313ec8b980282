"""Timing: warm up, then time repeated calls; report every sample so medians can be taken."""

from __future__ import annotations

import time


def time_calls(fn, reps: int, warmup: int = 2) -> list:
    """Milliseconds of `reps` calls of `fn` after `warmup` untimed ones."""
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
