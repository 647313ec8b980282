"""What the GPU kernels written as MLIR text share (gpu_matvec, gpu_flash, gpu_reduction): a schedule
marks a kernel function at `tiled`; at `loops` (on buffers) its body is replaced by the written
kernel, block and thread foralls around warp-level code with `gpu.shuffle xor`."""

from __future__ import annotations

import math
import struct

from mlir import ir

from ..errors import KilnError

WARP = 32  # lanes of a shuffle (a CUDA warp; half an AMD gfx9 wavefront)


def marked_functions(module: ir.Module, attr: str) -> list:
    """The func.func ops of `module` carrying `attr`."""
    return [op for op in module.body.operations if op.operation.name == "func.func" and attr in op.attributes]


def replace_function(func, text: str, prepare=None):
    """Replaces `func` by the function of the same name in `text` (MLIR, which may declare helpers
    too), keeping `func`'s attributes (kernel class, block size, ...); `prepare(new, func)` may
    complete the new function from the old one first. Returns the new function."""
    name = ir.StringAttr(func.attributes["sym_name"]).value
    parsed = ir.Module.parse(text, context=func.context)
    new = next(op for op in parsed.body.operations if op.operation.name == "func.func"
               and ir.StringAttr(op.attributes["sym_name"]).value == name)
    new.operation.move_before(func)
    if prepare is not None:
        prepare(new, func)
    for attr in [func.attributes[i] for i in range(len(func.attributes))]:
        if attr.name not in ("function_type", "sym_name", "sym_visibility"):
            new.attributes[attr.name] = attr.attr
    func.operation.erase()
    return new


def kernel_argument(value, block, what: str) -> int:
    """The number of the kernel argument `value` is; `what` names the operand for the error."""
    if not isinstance(value.owner, ir.Block) or ir.BlockArgument(value).owner != block:
        raise KilnError(f"stage 'loops': {what} is not a kernel argument after bufferization")
    return ir.BlockArgument(value).arg_number


def f32_literal(value: float) -> str:
    """An f32 constant as MLIR parses it (the bit pattern for inf and NaN)."""
    if math.isfinite(value):
        return repr(value)
    return "0x%08X" % struct.unpack("<I", struct.pack("<f", value))[0]


def constant_lines(indices, shuffle_offsets=()) -> list:
    """Lines defining %c<v> (index) for `indices`, %o<v> (i32) for the shuffle offsets and %width."""
    lines = [f"%c{v} = arith.constant {v} : index" for v in sorted(set(indices))]
    lines += [f"%o{o} = arith.constant {o} : i32" for o in sorted(set(shuffle_offsets))]
    if shuffle_offsets:
        lines.append(f"%width = arith.constant {WARP} : i32")
    return lines
