"""The machine's memory bandwidth, measured once per (CPU, thread count) and cached.

`kiln run` reports decode speed as a share of this limit: a decode step of a small LLM reads every
weight once, so tokens/s can never exceed bandwidth / weight bytes. Measured like STREAM's triad
(a = b + s*c over arrays far larger than the caches, 3 arrays of traffic per element) with a kernel
Kiln compiles, so it runs on the same thread pool as the model.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

_ELEMENTS = 1 << 25  # 128 MiB per f32 array: far beyond any L3


def measured_bandwidth(device=None, refresh: bool = False) -> float:
    """Bytes per second of the triad on `device`'s threads (cached in $KILN_CACHE_DIR/bandwidth.json)."""
    from . import runtime
    from .pipelines.cpu import host_cpu

    device = device or runtime.Device.default()
    root = os.environ.get("KILN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kiln")
    path = os.path.join(root, "bandwidth.json")
    key = f"{host_cpu()}/{device.num_threads}"
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    if not refresh and isinstance(cache.get(key), (int, float)):
        return float(cache[key])
    value = _triad(device)
    cache[key] = value
    os.makedirs(root, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(cache, f, indent=1)
    os.replace(tmp, path)
    return value


def _triad(device, reps: int = 7) -> float:
    from . import compile as kiln_compile

    n = _ELEMENTS
    program = kiln_compile(f"""
func.func @triad(%b: tensor<{n}xf32>, %c: tensor<{n}xf32>) -> tensor<{n}xf32> {{
  %s = arith.constant dense<3.0> : tensor<{n}xf32>
  %sc = arith.mulf %c, %s : tensor<{n}xf32>
  %a = arith.addf %b, %sc : tensor<{n}xf32>
  return %a : tensor<{n}xf32>
}}""", device=device)
    b = device.upload(np.random.default_rng(0).random(n, dtype=np.float32))
    c = device.upload(np.random.default_rng(1).random(n, dtype=np.float32))
    a = device.allocate((n,), np.float32)
    a.host_view()[...] = 0  # touch every page before timing
    call = program.triad.bind(b, c, out=[a])
    call()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    # The fastest call: a limit is what the machine reached at best (on a shared machine a median
    # measured while others load it would put decode above 100% of it).
    return 3 * n * 4 / float(np.min(times))
