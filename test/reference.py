"""Shared helpers of the numerics tests.

* Building: `jit(arg_specs, body)` makes a module with one public ``func.func @f`` whose body is
  written in Python with the generated builders (``kiln.dialects.transformer``), lowers it with
  `kiln.jit.jit_compile` and returns the `JitModule`. Argument specs are `T(shape, dtype)` (``None``
  in `shape` is a dynamic dim) or `INDEX`. Results with dynamic dims are cast to the static shape
  given in `static=` with ``tensor.cast``, because the JIT allocates results itself.
* References: the float64 semantics of every op live in `kiln.reference` (tests use it as `ref`).
* Comparison: `check(actual, expected, dtype)` with tolerances per element type.

Compiles take ~0.2-1 s, so tests share a compiled module across parametrizations through
`functools.lru_cache` on the (hashable) configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from mlir import ir
from mlir.dialects import func, tensor

import kiln  # noqa: F401  (registers the transformer dialect)
from kiln.jit import JitModule, jit_compile

# ----------------------------------------------------------------------------------------------
# Building one-function modules
# ----------------------------------------------------------------------------------------------

NP_DTYPES = {"f16": np.float16, "f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64}


@dataclass(frozen=True)
class T:
    """A tensor argument: `shape` (None for a dynamic dim) and element type name."""

    shape: tuple
    dtype: str = "f32"


INDEX = "index"


def element_type(name: str) -> ir.Type:
    return {
        "f16": ir.F16Type.get,
        "f32": ir.F32Type.get,
        "f64": ir.F64Type.get,
        "i32": lambda: ir.IntegerType.get_signless(32),
        "i64": lambda: ir.IntegerType.get_signless(64),
    }[name]()


def tensor_type(shape: Sequence[Optional[int]], dtype: str) -> ir.RankedTensorType:
    dyn = ir.ShapedType.get_dynamic_size()
    return ir.RankedTensorType.get([dyn if d is None else d for d in shape], element_type(dtype))


def mlir_type(spec) -> ir.Type:
    if spec == INDEX:
        return ir.IndexType.get()
    return tensor_type(spec.shape, spec.dtype)


def build_module(arg_specs: Sequence, body: Callable, static: Optional[Sequence] = None,
                 name: str = "f") -> ir.Module:
    """A module with one function @`name`(args) built by `body(*block_args)`.

    `body` returns one value or a tuple of values. `static`, if given, has one entry per result:
    a static shape to `tensor.cast` a dynamically shaped result to, or None to leave it.
    The module owns a fresh context (kept alive by the Module object).
    """
    ctx = ir.Context()
    with ctx, ir.Location.unknown():
        module = ir.Module.create()
        types = [mlir_type(s) for s in arg_specs]
        with ir.InsertionPoint(module.body):

            def wrapper(*args):
                outs = body(*args)
                outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
                if static is not None:
                    assert len(static) == len(outs), "one `static` entry per result"
                    for i, shape in enumerate(static):
                        if shape is not None:
                            elt = ir.RankedTensorType(outs[i].type).element_type
                            outs[i] = tensor.cast(ir.RankedTensorType.get(list(shape), elt), outs[i])
                return tuple(outs)

            wrapper.__name__ = name
            func.FuncOp.from_py_func(*types, name=name)(wrapper)
    return module


def jit(arg_specs: Sequence, body: Callable, static: Optional[Sequence] = None) -> JitModule:
    """build_module + jit_compile: a JitModule whose function is @f."""
    return jit_compile(build_module(arg_specs, body, static))


def run(jm: JitModule, *args):
    """Invokes @f and returns its only result (or the tuple when there are several)."""
    out = jm.invoke("f", *args)
    return out[0] if len(out) == 1 else out


# ----------------------------------------------------------------------------------------------
# Random inputs and comparison
# ----------------------------------------------------------------------------------------------


def randn(rng: np.random.Generator, shape, dtype="f32", scale=1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(NP_DTYPES[dtype])


# (rtol, atol) per element type. f32 kernels accumulate in f32 (eps 1.2e-7); f16 kernels compute in
# f32 and round inputs/outputs to f16 (eps 9.8e-4).
TOLERANCES = {"f32": (2e-5, 2e-5), "f16": (4e-3, 4e-3), "f64": (1e-12, 1e-12)}


def check(actual: np.ndarray, expected: np.ndarray, dtype="f32", scale: float = 1.0, err_msg=""):
    """assert_allclose with the dtype's tolerances; `scale` widens atol for large sums/values."""
    assert actual.dtype == np.dtype(NP_DTYPES[dtype]), f"result dtype {actual.dtype}, want {dtype}"
    assert actual.shape == expected.shape, f"result shape {actual.shape}, want {expected.shape}"
    rtol, atol = TOLERANCES[dtype]
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=atol * scale,
                               err_msg=err_msg)


# Two entry points (a linear + silu, an argmax) shared by the compiler and artifact tests.
MLP_AND_ARGMAX = """
func.func @mlp(%x: tensor<4x32xf32>, %w: tensor<48x32xf32>, %b: tensor<48xf32>) -> tensor<4x48xf32> {
  %h = transformer.linear %x, %w, %b : (tensor<4x32xf32>, tensor<48x32xf32>, tensor<48xf32>) -> tensor<4x48xf32>
  %y = transformer.silu %h : tensor<4x48xf32>
  return %y : tensor<4x48xf32>
}
func.func @argmax(%x: tensor<4x48xf32>) -> tensor<4xi64> {
  %t = transformer.argmax %x : tensor<4x48xf32> -> tensor<4xi64>
  return %t : tensor<4xi64>
}
"""
