"""Run transformer-dialect IR on the CPU in-process with MLIR's ExecutionEngine.

The in-process path for tests and quick experiments; Kiln's product path is `kiln.compile` (the
ahead-of-time artifact and runtime). ``jit_compile(module)`` lowers a module through the same stages
as `kiln.compile` up to `llvm` and returns a `JitModule` whose public functions take and return numpy
arrays:

    jm = jit_compile(text)
    (y,) = jm.invoke("forward", x, w)
"""

from __future__ import annotations

import ctypes
from typing import Union

import numpy as np
from mlir import ir
from mlir.execution_engine import ExecutionEngine

from . import pipelines
from .compiler import parse_and_verify
from .errors import KilnError
from .pipelines.common import public_funcs
from .runtime import cpu
from .runtime.memref import descriptor
from .signature import Signature, TensorSpec


class JitModule:
    """A lowered module loaded into an ExecutionEngine; call its public functions with numpy arrays."""

    def __init__(self, module: ir.Module, signatures: dict, opt_level: int = 2):
        self._module = module  # keeps the context alive as long as the engine
        self.signatures = signatures
        # Kernels run their workgroups on the OpenMP thread pool; memref.copy calls MLIR's C runner utils.
        self._engine = ExecutionEngine(module, opt_level=opt_level, shared_libs=cpu.load_support_libraries())

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
            array = spec.check(value, f"argument {i} of @{name}")
            d = descriptor(array)
            keep_alive += [array, d]
            packed.append(ctypes.pointer(ctypes.c_void_p(ctypes.addressof(d))))
        results = []
        for j, spec in enumerate(sig.results):
            if spec.shape is None or any(d is None for d in spec.shape):
                raise KilnError(f"result {j} of @{name} ({spec.describe()}) must have a static shape")
            out = np.empty(spec.shape, dtype=spec.dtype)
            d = descriptor(out)
            results.append(out)
            keep_alive.append(d)
            packed.append(ctypes.pointer(ctypes.c_void_p(ctypes.addressof(d))))
        self._engine.invoke(name, *packed)
        return tuple(results)


def jit_compile(module: Union[str, ir.Module], opt_level: int = 2, on_stage=None) -> JitModule:
    """Parses (if text), lowers to LLVM and JIT-compiles `module`.

    Text is parsed in a fresh context; a Module is lowered in place (pass a clone to keep it).
    `on_stage(name, module)` is called after each pipeline stage (see `kiln.pipelines.lower`).
    """
    module = parse_and_verify(module, "invalid IR")
    with module.context:
        signatures = {sig.name: sig for sig in map(Signature.of_func, public_funcs(module))}
        pipelines.lower(module, to="llvm", on_stage=on_stage)
        return JitModule(module, signatures, opt_level)


def _check_scalar(func: str, index: int, value, spec: TensorSpec):
    try:
        return np.ctypeslib.as_ctypes_type(spec.dtype)(value)
    except (TypeError, ValueError) as e:
        where = f"argument {index} of @{func} (expects {spec.describe()})"
        raise KilnError(f"{where}: got {type(value).__name__} ({e})") from e
