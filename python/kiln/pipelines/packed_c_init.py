"""The packed GEMM's C tiles start from the fill value in registers, not from a filled buffer (CPU,
tiled stage).

A packed GEMM with an initial fill (C = 0, then C += A·B per K block) fills its workgroup's packed C
tile in memory, and the first K block then reads those zeros back into the micro-kernel's
accumulators. Instead, the accumulators of the first K block start as the fill value (a vector
splat selected on the K block's induction variable) and the fill is dropped: the first K block
writes every element of the tile before anything reads it (the packed GEMM computes whole register
tiles, padding included). That saves a memset of every workgroup's tile per call (2.5% of a
SmolLM2 prefill at two threads).
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import arith, vector

from .common import micro_kernel_loops


def start_from_fill_value(module: ir.Module) -> None:
    """Rewrite every annotated packed GEMM of `module` (see module docstring). GEMMs whose loops do
    not have the expected form (no fill feeding the workgroup's loops, C read not a vector
    transfer) are left as they are."""
    fills = {}
    for k_loop in micro_kernel_loops(module):
        found = _fill_and_outer_loop(k_loop)
        if found is None:
            continue
        fill, outer = found
        k_blocks = "kiln.gemm_k_block_loop" in outer.attributes
        if not (k_blocks or "kiln.gemm_panel_loop" in outer.attributes or "kiln.gemm_row_loop" in outer.attributes):
            continue  # (an untagged loop: it may run over K blocks, and its first step is not the only one)
        c_read = k_loop.operands[3]
        with ir.InsertionPoint(k_loop), k_loop.location:
            start = vector.broadcast(c_read.type, fill.operands[0])
            if k_blocks:
                first = arith.cmpi(arith.CmpIPredicate.eq, outer.regions[0].blocks[0].arguments[0],
                                   outer.operands[0])
                start = arith.select(first, start, c_read)
            # (else K is one block, whose loop was folded away: the panel or row loop carries the
            # fill, and every K step starts from it)
            k_loop.operands[3] = start
        fills[fill] = outer
    for fill, outer in fills.items():
        outer.operands[3] = fill.operands[1]
        if not list(fill.results[0].uses):
            fill.erase()


def _fill_and_outer_loop(k_loop):
    """(linalg.fill, scf.for) when `k_loop` starts from a vector.transfer_read (the C tile) and the
    workgroup's outermost loop around it (over K blocks, `kiln.gemm_k_block_loop`, or where K is
    one block the panel or row loop) carries one tensor, initialized by a linalg.fill; else None."""
    if len(k_loop.operands) != 4 or _owner_name(k_loop.operands[3]) != "vector.transfer_read":
        return None
    loop = k_loop.parent
    while loop is not None and loop.name == "scf.for":
        if len(loop.operands) == 4 and _owner_name(loop.operands[3]) == "linalg.fill":
            fill = loop.operands[3].owner
            return getattr(fill, "operation", fill), loop
        loop = loop.parent
    return None


def _owner_name(value) -> str:
    owner = value.owner
    return getattr(getattr(owner, "operation", owner), "name", "")
