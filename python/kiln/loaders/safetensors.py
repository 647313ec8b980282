"""Reading `.safetensors` files without copying the weights: the file is memory-mapped once and every
tensor is a numpy view into that map.

The format is an 8-byte little-endian header length, a JSON header mapping tensor names to
`{dtype, shape, data_offsets}` (offsets relative to the end of the header), then the raw bytes. We parse
it ourselves (rather than through the `safetensors` package) so the arrays stay views of the mapped file:
compiled programs read the weights straight from the page cache. The header is validated in full when
the file is opened, so a corrupt or truncated file fails at load time, naming the file and tensor.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from kiln.errors import KilnError

# safetensors dtype -> numpy dtype (little-endian). BF16 has no numpy dtype: it is read as uint16 bits.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}

# A header larger than this is certainly corrupt (the format's own reference implementation caps it at 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly (bf16 is the top half of an fp32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


class SafetensorsFile:
    """One `.safetensors` file: its validated header and a read-only memory map of its data."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        try:
            size = os.path.getsize(self.path)
        except OSError as e:
            raise KilnError(f"{self.path}: cannot open safetensors file: {e}") from e
        if size < 8:
            raise KilnError(f"{self.path}: not a safetensors file: {size} bytes, shorter than the 8-byte header length")
        with open(self.path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise KilnError(
                    f"{self.path}: corrupt safetensors header: it claims {header_len} header bytes but the file has "
                    f"{size - 8} after the length field")
            raw = f.read(header_len)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise KilnError(f"{self.path}: corrupt safetensors header: not valid JSON ({e})") from e
        if not isinstance(header, dict):
            raise KilnError(f"{self.path}: corrupt safetensors header: expected a JSON object, "
                            f"got {type(header).__name__}")
        self.metadata: dict = header.pop("__metadata__", None) or {}
        self.data_start = 8 + header_len
        data_len = size - self.data_start
        self.entries: dict[str, tuple[np.dtype, str, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            self.entries[name] = self._check_entry(name, info, data_len)
        # One map for the whole file; np.memmap cannot map an empty range, so a file holding only empty
        # tensors gets no map at all.
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if size > self.data_start else None

    def _check_entry(self, name, info, data_len):
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise KilnError(f"{where}: corrupt header entry {info!r} (needs dtype, shape, data_offsets)")
        dtype_name = info["dtype"]
        if dtype_name not in DTYPES:
            raise KilnError(f"{where}: unsupported dtype {dtype_name!r}; Kiln reads {', '.join(DTYPES)}")
        dtype = DTYPES[dtype_name]
        shape = info["shape"]
        offsets = info["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
            raise KilnError(f"{where}: corrupt header entry: shape {shape!r}, data_offsets {offsets!r}")
        begin, end = offsets
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - begin != nbytes:
            raise KilnError(
                f"{where}: header says {dtype_name}{shape} ({nbytes} bytes) "
                f"but its data_offsets span {end - begin} bytes")
        if end > data_len:
            raise KilnError(
                f"{where}: truncated file: the tensor's data ends at byte {end} of the data section, "
                f"which has only {data_len} bytes")
        return dtype, dtype_name, tuple(shape), begin, end

    def names(self) -> list[str]:
        return list(self.entries)

    def dtype_name(self, name: str) -> str:
        return self.entries[name][1]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][2]

    def tensor(self, name: str) -> np.ndarray:
        """The tensor as a read-only view of the mapped file (BF16: a float32 copy, as numpy has no bf16)."""
        dtype, dtype_name, shape, begin, end = self.entries[name]
        if begin == end:
            out = np.empty(shape, dtype)
        else:
            out = self._map[self.data_start + begin:self.data_start + end].view(dtype).reshape(shape)
        if dtype_name == "BF16":
            return bf16_to_float32(out)
        return out
