"""The placeholder custom ops that stand for raised patterns in an FX graph.

A matched subgraph (an SDPA call, an RMSNorm written out, a SwiGLU MLP, ...) is replaced by one
`kiln::raised<N>(Tensor a0, ..., Tensor a<N-1>, int id)` node: its tensor operands are the pattern's
inputs and `id` keys the parent's record of what the pattern was (op name, attributes). torch-mlir
imports it as `torch.operator`, which the child turns into a call of a private function; the parent
turns that call into the `transformer` op. The ops are generic by arity, so their output shape
comes from a per-process table filled by whoever builds or retraces the graph (`set_output`).

This file imports only torch: the child process loads it as a plain module (no `kiln` package,
whose import would load Kiln's MLIR next to torch-mlir's).
"""

from __future__ import annotations

import torch

MAX_ARITY = 4
_OUTPUTS: dict = {}  # id -> (shape, torch.dtype) of the op's result

_lib = torch.library.Library("kiln", "DEF")


def _define(arity: int):
    params = ", ".join(f"Tensor a{i}" for i in range(arity))
    _lib.define(f"raised{arity}({params}, int id) -> Tensor")

    def fake(*args):
        *tensors, ident = args
        if ident not in _OUTPUTS:
            raise RuntimeError(f"kiln::raised{arity}: no output recorded for pattern id {ident}")
        shape, dtype = _OUTPUTS[ident]
        return tensors[0].new_empty(shape, dtype=dtype)

    def eager(*args):
        raise RuntimeError("kiln::raised ops mark patterns for the compiler; they have no eager kernel")

    torch.library.register_fake(f"kiln::raised{arity}", fake, lib=_lib)
    _lib.impl(f"raised{arity}", eager, "CompositeExplicitAutograd")


for _n in range(1, MAX_ARITY + 1):
    _define(_n)


def op(arity: int):
    """The OpOverload `kiln::raised<arity>.default`."""
    return getattr(torch.ops.kiln, f"raised{arity}").default


def set_output(ident: int, shape, dtype) -> None:
    """Records the result shape and dtype of pattern `ident` (needed whenever the graph is retraced)."""
    _OUTPUTS[ident] = (tuple(int(d) for d in shape), dtype)
