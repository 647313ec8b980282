"""Devices and buffers (IREE's HAL as the model).

A `Device` is one driver instance; a `Buffer` is memory on it that compiled entry points read and write
in place, so data (weights, KV caches) can stay on the device between calls. On the `cpu` driver device
memory is host memory, 64-byte aligned.
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys

import numpy as np

from ..errors import KilnError
from . import cpu
from .memref import descriptor

DRIVERS = ("cpu", "cuda", "hip")
GPU_DRIVERS = ("cuda", "hip")


class Buffer:
    """A typed, shaped allocation on a device."""

    def __init__(self, device: "Device", array: np.ndarray):
        self.device = device
        self._array = array
        self._descriptor = None

    def descriptor(self):
        """The memref descriptor compiled code receives for this buffer (built once: it never moves)."""
        if self._descriptor is None:
            self._descriptor = descriptor(self._array)
        return self._descriptor

    @property
    def shape(self) -> tuple:
        return self._array.shape

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    def to_numpy(self) -> np.ndarray:
        """A host copy of the contents."""
        return self._array.copy()

    def write(self, array) -> None:
        """Overwrites the contents from a host array of the same shape and dtype."""
        array = np.asarray(array)
        if array.shape != self.shape or array.dtype != self.dtype:
            raise KilnError(
                f"cannot write a {array.dtype} array of shape {array.shape} into a buffer of "
                f"{self.dtype} {self.shape}"
            )
        self._array[...] = array

    def host_view(self) -> np.ndarray:
        """The memory itself (cpu driver only); compiled code reads and writes it."""
        return self._array

    def __repr__(self) -> str:
        return f"Buffer({self.device.driver}, {self.dtype}, {self.shape})"


class Device:
    """A driver instance. `num_threads` (default: KILN_NUM_THREADS, else all usable cores) sizes the
    pool that runs a kernel's workgroups in parallel."""

    def __init__(self, driver: str = "cpu", num_threads: int | None = None):
        if driver not in DRIVERS:
            raise KilnError(f"unknown or unavailable driver '{driver}'; available: {', '.join(DRIVERS)}")
        self.driver = driver
        if driver in GPU_DRIVERS:  # the driver library is opened here, never at import (runtime/gpu.py)
            from .gpu import open_driver

            self.gpu = open_driver(driver)
            self._num_threads = None
            return
        cpu.load_support_libraries()
        self.num_threads = num_threads if num_threads is not None else cpu.default_num_threads()

    _default = None

    @classmethod
    def default(cls) -> "Device":
        """The process's shared cpu device, which programs loaded without a device run on: setting its
        `num_threads` applies to all of them."""
        if cls._default is None:
            cls._default = cls("cpu")
        return cls._default

    @property
    def num_threads(self) -> int:
        return self._num_threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        cpu.set_num_threads(n)
        self._num_threads = n

    def activate(self) -> None:
        """Sizes the pool for this device's next calls from the calling thread. OpenMP's thread count is
        process-wide (and per calling thread), so every call sets it: another Device, or a call from another
        thread, must not change how many threads this one uses."""
        if self.driver in GPU_DRIVERS:
            self.gpu.activate()
            return
        cpu.set_num_threads(self._num_threads)

    def allocate(self, shape, dtype) -> Buffer:
        if self.driver in GPU_DRIVERS:
            from .gpu import GpuBuffer

            return GpuBuffer(self, shape, dtype)
        return Buffer(self, aligned_empty(tuple(shape), dtype))

    def wrap(self, array: np.ndarray) -> Buffer:
        """A Buffer over an existing C-contiguous host array, without a copy (cpu driver: e.g. weights
        mmapped from a checkpoint). The array must outlive the buffer's use and must not move."""
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
            raise KilnError("Device.wrap takes a C-contiguous numpy array")
        return Buffer(self, array)

    def upload(self, array) -> Buffer:
        array = np.asarray(array)
        buf = self.allocate(array.shape, array.dtype)
        if self.driver in GPU_DRIVERS:
            buf.write(array)
            return buf
        buf.host_view()[...] = array
        return buf

    def __repr__(self) -> str:
        if self.driver in GPU_DRIVERS:
            return f"Device({self.driver!r}, {self.gpu.device_name})"
        return f"Device({self.driver!r}, num_threads={self.num_threads})"


def aligned_empty(shape: tuple, dtype, alignment: int = 64, huge_pages: bool = False) -> np.ndarray:
    """An uninitialized array whose data starts on a cache line. numpy's own large arrays start 16
    bytes into one, and a 64-byte vector load from them touches two lines (about 15% slower GEMM
    micro-kernels on AVX-512). With `huge_pages` (long-lived weights), an array of 2 MiB or more
    starts on a huge page and asks for transparent huge pages: GEMMs stream hundreds of MB of
    weights, and with 4 KiB pages every 4 KiB costs a TLB miss."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    huge = huge_pages and nbytes >= _HUGE_PAGE
    if huge:
        alignment = _HUGE_PAGE
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = (-raw.ctypes.data) % alignment
    if huge:
        _advise_huge_pages(raw.ctypes.data + start, nbytes - nbytes % _HUGE_PAGE)
    return raw[start : start + nbytes].view(dtype).reshape(shape)


_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14


@functools.lru_cache(maxsize=None)
def _madvise():
    try:
        f = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return f


def _advise_huge_pages(address: int, length: int) -> None:
    """madvise(MADV_HUGEPAGE) where the OS has it (Linux); a hint, so failure changes nothing."""
    madvise = _madvise()
    if madvise is not None and sys.platform.startswith("linux") and length > 0:
        madvise(address, length, _MADV_HUGEPAGE)
