"""The peer worker: times numpy, PyTorch, onnxruntime and IREE on a workload in a separate process.

A separate process lets the peers run with their own thread settings and with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset (they force numpy's OpenBLAS onto an older, ~2x slower kernel), without touching
Kiln's process. Protocol: one JSON request per stdin line, one JSON reply per stdout line.
PyTorch, onnxruntime and IREE are optional: a peer is listed only when its libraries are installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from ..errors import KilnError
from .iree_peer import REQUIRED as _IREE_NEEDS
from .onnx_peer import REQUIRED as _ONNXRUNTIME_NEEDS
from .timing import SETTLE_S, time_calls

_SLOW_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def available_peers() -> list:
    def installed(*modules):
        try:
            return all(importlib.util.find_spec(m) is not None for m in modules)
        except ModuleNotFoundError:  # find_spec("iree.compiler") raises when there is no `iree` at all
            return False

    return ["numpy"] + [p for p, needs in (("torch", ("torch",)), ("onnxruntime", _ONNXRUNTIME_NEEDS),
                                           ("iree", _IREE_NEEDS)) if installed(*needs)]


class PeerWorker:
    """A worker process pinned to `threads` threads for every peer library."""

    def __init__(self, threads: int):
        env = {k: v for k, v in os.environ.items() if k not in _SLOW_BLAS_VARS}
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        self.threads = threads
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"from kiln.bench.peers import serve; serve({threads})"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )

    def time(self, suite: str, workload: str, seed: int, reps: int, peers: list) -> dict:
        request = {"suite": suite, "workload": workload, "seed": seed, "reps": reps, "peers": peers}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise KilnError(f"the benchmark peer worker ({self.threads} threads) died")
        reply = json.loads(line)
        if "error" in reply:
            raise KilnError(f"peer worker: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def serve(threads: int) -> None:
    """The worker loop (runs in the child process)."""
    import numpy as np

    from .workloads import suite

    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    cache = {}  # every workload's peers are built once: exporting (and compiling) a model takes seconds
    for line in sys.stdin:
        req = json.loads(line)
        try:
            key = (req["suite"], req["workload"], req["seed"])
            if key not in cache:
                workload = {w.name: w for w in suite(req["suite"])}[req["workload"]]
                inputs = workload.make_inputs(np.random.default_rng(req["seed"]))
                # A peer that cannot run a workload (IREE fails to compile some) is reported, and
                # the others are still timed.
                runs, failed = {}, {}
                for p in req["peers"]:
                    if p in workload.peers:
                        try:
                            runs[p] = workload.peers[p](inputs)
                        except Exception as e:
                            failed[p] = f"{type(e).__name__}: {e}"
                cache[key] = (runs, failed)
            runs, failed = cache[key]
            reply = {p: time_calls(fn, req["reps"], settle=SETTLE_S) for p, fn in runs.items()}
            reply["outputs"] = {p: fingerprint(np.asarray(fn())) for p, fn in runs.items()}
            reply["failed"] = failed
        except Exception as e:  # reported to the parent, which raises a KilnError
            reply = {"error": f"{req['workload']}: {type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


def fingerprint(a) -> list:
    """A cheap fingerprint of a result (to cross-check Kiln's output without shipping arrays)."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64).ravel()
    return [float(a.sum()), float(np.abs(a).sum()), float(a[:: max(1, a.size // 7)].sum())]

