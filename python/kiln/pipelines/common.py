"""Stages every target shares: transformer -> linalg -> dispatch."""

from __future__ import annotations

from mlir import ir
from mlir.passmanager import PassManager

from ..errors import KilnError


def run_passes(module: ir.Module, pipeline: str, stage: str) -> None:
    """Runs a textual pass pipeline on `module`; a failure becomes a KilnError naming the stage."""
    pm = PassManager.parse(f"builtin.module({pipeline})", context=module.context)
    try:
        pm.run(module.operation)
    except ir.MLIRError as e:
        raise KilnError(f"stage '{stage}' failed: {e}") from e


def make_transformer(module: ir.Module) -> None:
    """Graph-level cleanup on transformer ops: folders and canonicalizations (drop zero biases, ...)."""
    run_passes(module, "canonicalize,cse", "transformer")


def make_linalg(module: ir.Module) -> None:
    """transformer ops (and elementwise arith on tensors) -> linalg on tensors; elementwise producers
    fused into consumers where that adds no work (kiln-fuse-elementwise)."""
    run_passes(
        module,
        "func.func(transformer-to-linalg,convert-elementwise-to-linalg),canonicalize,cse,"
        "func.func(kiln-fuse-elementwise),canonicalize,cse",
        "linalg",
    )


def make_dispatch(module: ir.Module) -> None:
    """Partition each function into kernels: every linalg op (with the fills that initialize it) is
    outlined into a `kiln.dispatch` function that the host calls, tagged with its kernel class.
    Identical kernels (every layer of a model has the same ones) are merged into one, so each is
    scheduled and compiled once."""
    run_passes(module, "kiln-form-dispatches,duplicate-function-elimination,symbol-dce", "dispatch")


def public_funcs(module: ir.Module):
    """The module's entry points: public func.func definitions."""
    for op in module.body.operations:
        if op.operation.name != "func.func" or len(op.regions[0].blocks) == 0:
            continue
        vis = op.attributes["sym_visibility"] if "sym_visibility" in op.attributes else None
        if vis is None or ir.StringAttr(vis).value == "public":
            yield op
