"""Signatures of compiled functions: the shape and dtype of every argument and result.

Shared by the JIT, the compiler (which records them in the artifact manifest) and the runtime (which
checks every call against them, so a wrong array gives an error naming the argument, not a crash).
MLIR is imported only to read signatures off IR: the runtime reads them from manifests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from .errors import KilnError

# MLIR element type -> numpy dtype. numpy has no bfloat16: ml_dtypes' (as used by JAX) is the host's.
_NUMPY_DTYPES = {
    "bf16": ml_dtypes.bfloat16,
    "f16": np.float16,
    "f32": np.float32,
    "f64": np.float64,
    "i1": np.bool_,
    "i8": np.int8,
    "i16": np.int16,
    "i32": np.int32,
    "i64": np.int64,
    "index": np.int64,
}


@dataclass(frozen=True)
class TensorSpec:
    """Shape (None for a dynamic dim; shape None for a scalar) and numpy dtype of a value."""

    shape: tuple | None
    dtype: type

    @staticmethod
    def of(t) -> "TensorSpec":
        from mlir import ir

        if isinstance(t, ir.RankedTensorType):
            shape = tuple(None if t.is_dynamic_dim(i) else t.shape[i] for i in range(t.rank))
            return TensorSpec(shape, numpy_dtype(t.element_type))
        if isinstance(t, (ir.IndexType, ir.IntegerType, ir.FloatType)):
            return TensorSpec(None, numpy_dtype(t))
        raise KilnError(f"values of type {t} cannot cross the host boundary")

    @property
    def is_scalar(self) -> bool:
        return self.shape is None

    def describe(self) -> str:
        if self.shape is None:
            return np.dtype(self.dtype).name
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{dims} {np.dtype(self.dtype).name}"

    def to_json(self) -> dict:
        return {"shape": None if self.shape is None else list(self.shape), "dtype": np.dtype(self.dtype).name}

    @staticmethod
    def from_json(d: dict) -> "TensorSpec":
        shape = None if d["shape"] is None else tuple(d["shape"])
        return TensorSpec(shape, np.dtype(d["dtype"]).type)

    def check(self, value, where: str) -> np.ndarray:
        """Returns `value` as a C-contiguous array of this spec, or raises naming `where`."""
        if (type(value) is np.ndarray and value.dtype == self.dtype and value.flags.c_contiguous
                and len(value.shape) == len(self.shape)
                and all(d is None or d == s for d, s in zip(self.shape, value.shape))):
            return value  # the common case, checked without conversions
        array = np.asarray(value)
        if array.dtype != np.dtype(self.dtype):
            raise KilnError(f"{where} (expects {self.describe()}): got dtype {array.dtype}")
        if array.ndim != len(self.shape) or any(
            d is not None and d != s for d, s in zip(self.shape, array.shape)
        ):
            got = "x".join(map(str, array.shape)) or "scalar"
            raise KilnError(f"{where} (expects {self.describe()}): got shape {got}")
        return np.ascontiguousarray(array)


UPDATES_ARG_ATTR = "kiln.updates_arg"


@dataclass(frozen=True)
class Signature:
    """`updates` maps a result index to the argument it updates in place (result attribute
    `kiln.updates_arg`, e.g. a KV cache): the compiler writes that result into the argument's buffer
    and the runtime returns the argument."""

    name: str
    args: tuple
    results: tuple
    updates: dict = field(default_factory=dict)

    @staticmethod
    def of_func(func) -> "Signature":
        from mlir import ir

        ftype = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
        name = ir.StringAttr(func.attributes["sym_name"]).value
        sig = Signature(
            name,
            tuple(TensorSpec.of(t) for t in ftype.inputs),
            tuple(TensorSpec.of(t) for t in ftype.results),
            updated_args(func),
        )
        for j, i in sig.updates.items():
            if not 0 <= i < len(sig.args) or sig.args[i] != sig.results[j] or sig.args[i].is_scalar:
                raise KilnError(f"result {j} of @{name} is marked {UPDATES_ARG_ATTR} = {i}, which is not an "
                                f"argument of the same tensor type")
        if len(set(sig.updates.values())) != len(sig.updates):
            raise KilnError(f"two results of @{name} update the same argument in place")
        return sig

    @property
    def returned_results(self) -> list:
        """Indices of the results the caller receives in new (or out=) buffers."""
        return [j for j in range(len(self.results)) if j not in self.updates]

    def to_json(self) -> dict:
        d = {"args": [a.to_json() for a in self.args], "results": [r.to_json() for r in self.results]}
        if self.updates:
            d["updates"] = {str(j): i for j, i in sorted(self.updates.items())}
        return d

    @staticmethod
    def from_json(name: str, d: dict) -> "Signature":
        return Signature(
            name,
            tuple(TensorSpec.from_json(a) for a in d["args"]),
            tuple(TensorSpec.from_json(r) for r in d["results"]),
            {int(j): int(i) for j, i in d.get("updates", {}).items()},
        )


def updated_args(func) -> dict:
    """result index -> argument index, from the results' `kiln.updates_arg` attributes."""
    from mlir import ir

    if "res_attrs" not in func.attributes:
        return {}
    updates = {}
    for j, attrs in enumerate(ir.ArrayAttr(func.attributes["res_attrs"])):
        attrs = ir.DictAttr(attrs)
        if UPDATES_ARG_ATTR in attrs:
            updates[j] = ir.IntegerAttr(attrs[UPDATES_ARG_ATTR]).value
    return updates


def numpy_dtype(t):
    """The numpy dtype of an MLIR element type (or its name, e.g. "bf16")."""
    key = str(t)
    if key not in _NUMPY_DTYPES:
        raise KilnError(f"no numpy dtype for element type {t}")
    return _NUMPY_DTYPES[key]
