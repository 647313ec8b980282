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


def make_linalg(module: ir.Module, to_linalg: str = "transformer-to-linalg") -> None:
    """transformer ops (and elementwise arith on tensors) -> linalg on tensors; elementwise producers
    fused into consumers where that adds no work (kiln-fuse-elementwise). `to_linalg`: the
    transformer-to-linalg pass with a target's options."""
    run_passes(
        module,
        f"func.func({to_linalg},convert-elementwise-to-linalg),canonicalize,cse,"
        "func.func(kiln-fuse-elementwise),canonicalize,cse",
        "linalg",
    )


def make_dispatch(module: ir.Module) -> None:
    """Partition each function into kernels: every linalg op (with the fills that initialize it) is
    outlined into a `kiln.dispatch` function that the host calls, tagged with its kernel class.
    Identical kernels (every layer of a model has the same ones) are merged into one, so each is
    scheduled and compiled once."""
    run_passes(module, "kiln-form-dispatches,duplicate-function-elimination,symbol-dce", "dispatch")
    _check_no_boolean_buffers(module)


def _check_no_boolean_buffers(module: ir.Module) -> None:
    """i1 tensors that cross a kernel boundary become i1 buffers, which MLIR 22's memref-to-LLVM
    lowering cannot store (it asserts, aborting the process): refuse them with a message. Booleans
    inside a kernel (a comparison feeding a select) are scalars and fine."""
    for op in module.body.operations:
        if op.operation.name != "func.func":
            continue
        ftype = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value)
        for t in list(ftype.inputs) + list(ftype.results):
            if isinstance(t, ir.ShapedType) and str(t.element_type) == "i1":
                name = ir.StringAttr(op.attributes["sym_name"]).value
                raise KilnError(f"stage 'dispatch': @{name} passes a boolean tensor ({t}) between kernels, which "
                                "Kiln's backends cannot store yet: use i8 (0/1) instead")


def find_ops(module: ir.Module, predicate) -> list:
    """The ops of `module` for which `predicate(op)` holds, collected before any is rewritten."""
    found = []

    def collect(op):
        if predicate(op):
            found.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(collect)
    return found


def micro_kernel_loops(module: ir.Module) -> list:
    """The packed GEMM micro-kernels' K loops (`kiln.gemm_k_loop`, see schedules._packed_gemm_lines)."""
    return find_ops(module, lambda op: op.name == "scf.for" and "kiln.gemm_k_loop" in op.attributes)


def public_funcs(module: ir.Module):
    """The module's entry points: public func.func definitions."""
    for op in module.body.operations:
        if op.operation.name != "func.func" or len(op.regions[0].blocks) == 0:
            continue
        vis = op.attributes["sym_visibility"] if "sym_visibility" in op.attributes else None
        if vis is None or ir.StringAttr(vis).value == "public":
            yield op
