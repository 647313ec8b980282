"""The CPU lowering pipeline, one short function per stage (read it like Triton's make_ttir/make_ttgir).

    transformer ──► linalg ──► bufferized ──► llvm

Each stage function takes a module in the previous stage's form and rewrites it in place. `lower()` runs
them in order, can stop after any stage and reports each stage's IR to a callback, so every stage can
be printed and tested on its own.
"""

from __future__ import annotations

from typing import Callable, Optional

from mlir import ir
from mlir.passmanager import PassManager

from .errors import KilnError

STAGES = ("transformer", "linalg", "bufferized", "llvm")


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
    """transformer ops (and elementwise arith on tensors) -> linalg on tensors, elementwise ops fused."""
    run_passes(
        module,
        "func.func(transformer-to-linalg,convert-elementwise-to-linalg),canonicalize,cse,"
        "func.func(linalg-fuse-elementwise-ops),canonicalize,cse",
        "linalg",
    )


def make_bufferized(module: ir.Module) -> None:
    """Tensors -> memrefs. Arguments are read-only; results become caller-provided out-params."""
    for func in _public_funcs(module):
        arg_attrs = []
        for i in range(len(func.arguments)):
            attrs = dict(_arg_attrs(func, i))
            attrs["bufferization.writable"] = ir.BoolAttr.get(False)
            arg_attrs.append(ir.DictAttr.get(attrs))
        func.attributes["arg_attrs"] = ir.ArrayAttr.get(arg_attrs)
    run_passes(
        module,
        "one-shot-bufferize{bufferize-function-boundaries "
        "function-boundary-type-conversion=identity-layout-map},"
        "canonicalize,cse,"
        "buffer-results-to-out-params{hoist-static-allocs modify-public-functions},"
        "buffer-deallocation-pipeline,canonicalize",
        "bufferized",
    )


def make_llvm(module: ir.Module) -> None:
    """memrefs + linalg -> loops -> the LLVM dialect, with C-interface wrappers for the JIT."""
    for func in _public_funcs(module):
        func.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    run_passes(
        module,
        "func.func(convert-linalg-to-loops),"
        "expand-strided-metadata,lower-affine,convert-scf-to-cf,"
        "convert-math-to-llvm,convert-math-to-libm,"
        "convert-bufferization-to-memref,finalize-memref-to-llvm,"
        "convert-to-llvm,reconcile-unrealized-casts",
        "llvm",
    )


_STAGE_FUNCTIONS: dict[str, Callable[[ir.Module], None]] = {
    "transformer": make_transformer,
    "linalg": make_linalg,
    "bufferized": make_bufferized,
    "llvm": make_llvm,
}


def lower(
    module: ir.Module,
    to: str = "llvm",
    on_stage: Optional[Callable[[str, ir.Module], None]] = None,
) -> ir.Module:
    """Runs the stages up to and including `to`; calls `on_stage(name, module)` after each."""
    if to not in STAGES:
        raise KilnError(f"unknown stage '{to}'; stages are: {', '.join(STAGES)}")
    for name in STAGES[: STAGES.index(to) + 1]:
        _STAGE_FUNCTIONS[name](module)
        if on_stage is not None:
            on_stage(name, module)
    return module


def _public_funcs(module: ir.Module):
    for op in module.body.operations:
        if op.operation.name == "func.func" and not _is_declaration(op) and _is_public(op):
            yield op


def _is_declaration(func) -> bool:
    return len(func.regions[0].blocks) == 0


def _is_public(func) -> bool:
    vis = func.attributes["sym_visibility"] if "sym_visibility" in func.attributes else None
    return vis is None or ir.StringAttr(vis).value == "public"


def _arg_attrs(func, i: int):
    if "arg_attrs" not in func.attributes:
        return {}
    d = ir.DictAttr(ir.ArrayAttr(func.attributes["arg_attrs"])[i])
    return {d[j].name: d[j].attr for j in range(len(d))}
