"""MLIR memref descriptors for numpy arrays: how buffers cross into compiled code.

A ranked memref is passed to a C-interface function as a pointer to
{allocated ptr, aligned ptr, offset, sizes[rank], strides[rank]} (strides in elements).
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=None)
def descriptor_type(rank: int):
    fields = [("allocated", ctypes.c_void_p), ("aligned", ctypes.c_void_p), ("offset", ctypes.c_int64)]
    if rank:
        fields += [("sizes", ctypes.c_int64 * rank), ("strides", ctypes.c_int64 * rank)]
    return type(f"MemRefDescriptor{rank}", (ctypes.Structure,), {"_fields_": fields})


def descriptor(array: np.ndarray):
    """A descriptor viewing `array` (which must stay alive as long as the descriptor is used)."""
    ptr = array.__array_interface__["data"][0]
    rank = array.ndim
    if not rank:
        return descriptor_type(0)(ptr, ptr, 0)
    dims = ctypes.c_int64 * rank
    item = array.itemsize
    return descriptor_type(rank)(ptr, ptr, 0, dims(*array.shape), dims(*[s // item for s in array.strides]))


class DescriptorCache:
    """Descriptors of the arrays an entry point has seen, by (address, shape, strides, itemsize): a
    descriptor is a function of those alone, so an array passed again (a caller's reused inputs and
    out buffers, or a result at an address malloc hands out again) costs a dict lookup instead of a
    new ctypes struct. Bounded: when full it starts over."""

    def __init__(self, limit: int = 64):
        self._limit = limit
        self._cache = {}

    def get(self, array: np.ndarray):
        key = (array.__array_interface__["data"][0], array.shape, array.strides, array.itemsize)
        d = self._cache.get(key)
        if d is None:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            d = self._cache[key] = descriptor(array)
        return d


def byte_range(array: np.ndarray) -> tuple:
    """[start, end) of a C-contiguous array's memory, to detect overlapping buffers cheaply."""
    start = array.__array_interface__["data"][0]
    return start, start + array.nbytes
