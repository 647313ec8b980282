"""Row reductions on GPUs: a warp per output element, lanes striding the reduced row, a shuffle butterfly.

The generic schedule gives each thread one output and walks the reduced dimension alone: a decode
step's RMSNorm (one row of 576) runs on one thread of one block, and its loads are one element at a
time. Here the 32 lanes of a warp share one output instead:

    lane    walks k = lane, lane + 32, ... of the reduced (innermost) loop, applying the reduction's
            body (e.g. x·x for a sum of squares, exp(x - max) for softmax's sum) into its own
            partial result, started from the combiner's identity; neighbouring lanes read neighbouring
            elements (coalesced)
    reduce  a butterfly of `gpu.shuffle xor` 16, 8, 4, 2, 1 combines the lanes' partials with the
            body's combiner (addf or maximumf); lane 0 combines that with the initial value (the
            kernel's fill, or what the output holds) and stores
    block   WARPS warps (outputs) per block; a grid over the outputs

Which kernels: one f32 result, one reduction loop (the innermost) of at least MIN_EXTENT, no
`linalg.index`, and a body whose last op is `combiner(out, value)` with `out` used nowhere else. The
kernel is marked at `tiled` and written on buffers at `loops` (`build_kernels`): a skeleton with
placeholder calls, into which the linalg body is cloned.
"""

from __future__ import annotations

import math

from mlir import ir

from ..errors import KilnError
from . import schedules
from .common import find_ops
from .written_kernels import (WARP, constant_lines, f32_literal, kernel_argument, marked_functions,
                              replace_function)

REDUCTION_ATTR = "kiln.gpu_row_reduction"  # warps (outputs) per block
WARPS = 4
MIN_EXTENT = 64  # shorter rows keep the thread-per-output schedule
_IDENTITY = {"arith.addf": 0.0, "arith.maximumf": -math.inf}
_FUNC_OPS = {"arith.constant", "func.return", "linalg.fill", "linalg.generic"}


def _root(func):
    return next((o for o in func.regions[0].blocks[0].operations if "kiln.root" in o.attributes), None)


def _combiner(root):
    """The body's last op before the yield, when it is `combiner(out, value)` (either operand order)
    with `out` (the output's block argument) used by it alone; else None."""
    body = root.regions[0].blocks[0]
    ops = list(body.operations)
    out = body.arguments[len(body.arguments) - 1]
    if len(ops) < 2 or ops[-2].name not in _IDENTITY or ops[-1].operands[0] != ops[-2].result:
        return None
    combine = ops[-2]
    if out not in list(combine.operands) or list(combine.operands).count(out) != 1:
        return None
    if any(o.operands[i] == out for o in ops[:-2] for i in range(len(o.operands))):
        return None
    return combine


def warps_per_block(kernel: schedules.Kernel, func) -> int:
    """Outputs per block when `kernel` gets this schedule, else 0 (see the module docstring)."""
    kinds, ranges = kernel.iterator_types, kernel.loop_ranges
    if (kernel.kernel_class != "reduction" or kernel.results != 1 or kinds.count("r") != 1
            or not kinds.endswith("r") or any(r < 0 for r in ranges) or ranges[-1] < MIN_EXTENT):
        return 0
    root = _root(func)
    if root is None or root.operation.name != "linalg.generic":
        return 0
    body_ops = list(root.regions[0].blocks[0].operations)
    if any(o.name == "linalg.index" or o.name.startswith(("scf.", "tensor.", "memref.")) for o in body_ops):
        return 0
    out_type = ir.ShapedType(root.operands[len(root.operands) - 1].type)
    if not isinstance(out_type.element_type, ir.F32Type) or _combiner(root) is None:
        return 0
    ops = [o.operation.name for o in func.regions[0].blocks[0].operations]
    if set(ops) - _FUNC_OPS or ops.count("linalg.generic") != 1:
        return 0
    outputs = math.prod(ranges[:-1])
    return WARPS if outputs >= WARPS else 1


def mark(kernel: schedules.Kernel, func) -> bool:
    """Gives `kernel` this schedule when it qualifies; True if it did."""
    from .gpu import BLOCK_DIM_ATTR

    warps = warps_per_block(kernel, func)
    if warps:
        func.attributes[REDUCTION_ATTR] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), warps)
        func.attributes[BLOCK_DIM_ATTR] = ir.DenseI64ArrayAttr.get([WARP * warps, 1, 1])
    return bool(warps)


def build_kernels(module: ir.Module) -> list:
    """Rewrites every kernel marked `kiln.gpu_row_reduction` (on buffers); returns their names."""
    done = []
    for op in marked_functions(module, REDUCTION_ATTR):
        name = ir.StringAttr(op.attributes["sym_name"]).value
        replace_function(op, _skeleton(op, name), lambda new, old: _inline_body(new, _root(old)))
        done.append(name)
    return done


def _map_results(amap_attr) -> list:
    """The loop of each result of an indexing map (None for a constant 0 result, e.g. broadcasting)."""
    found = []
    for e in ir.AffineMapAttr(amap_attr).value.results:
        e = e.maybe_downcast()
        if isinstance(e, ir.AffineDimExpr):
            found.append(e.position)
        elif isinstance(e, ir.AffineConstantExpr) and e.value == 0:
            found.append(None)
        else:
            raise KilnError(f"stage 'loops': a row reduction indexes an operand by {e}")
    return found


def _skeleton(func, name: str) -> str:
    """The kernel with calls to @__kiln_body (the linalg body on one element: inputs, then the
    accumulator) and @__kiln_combine (the combiner on two partials) standing for the cloned body."""
    block = func.regions[0].blocks[0]
    ops = list(block.operations)
    root = _root(func)
    fill = next((o for o in ops if o.operation.name == "linalg.fill"), None)
    warps = ir.IntegerAttr(func.attributes[REDUCTION_ATTR]).value
    ranges = list(ir.DenseI64ArrayAttr(func.attributes["kiln.loop_ranges"]))
    maps = [_map_results(m) for m in ir.ArrayAttr(root.attributes["indexing_maps"])]
    n_in = len(maps) - 1
    what = f"kernel {name} has the row-reduction schedule but an operand"
    args = [kernel_argument(v, block, what) for v in root.operands]
    out_arg = args[-1]
    if fill is not None and kernel_argument(fill.operands[1], block, what) != out_arg:
        raise KilnError(f"stage 'loops': kernel {name}: the fill does not initialize the reduction's output")
    types = [str(a.type) for a in block.arguments]
    combine = _combiner(root)
    identity = f32_literal(_IDENTITY[combine.name])
    outputs = math.prod(ranges[:-1])
    k = ranges[-1]
    blocks = -(-outputs // warps)
    constants = {0, 1, WARP, k, outputs}
    loops = len(ranges)

    def c(v):
        constants.add(v)
        return f"%c{v}"

    # the parallel loops' indices from the output number (row-major)
    lines = [
        f"scf.forall (%g) in ({blocks}) {{",
        f"  scf.forall (%t) in ({WARP * warps}) {{",
        f"    %row = affine.apply affine_map<(d0, d1) -> (d0 * {warps} + d1 floordiv {WARP})>(%g, %t)",
        f"    %lane = affine.apply affine_map<(d0) -> (d0 mod {WARP})>(%t)",
        f"    %active = arith.cmpi ult, %row, {c(outputs)} : index",
        "    scf.if %active {",
    ]
    stride = 1
    for d in reversed(range(loops - 1)):
        lines.append(f"      %i{d} = affine.apply affine_map<(d0) -> ((d0 floordiv {stride}) mod {ranges[d]})>(%row)")
        stride *= ranges[d]
    index = {d: f"%i{d}" for d in range(loops - 1)}
    index[loops - 1] = "%k"

    def at(m):
        return ", ".join(c(0) if d is None else index[d] for d in m)

    lines.append(f"      %part = scf.for %k = %lane to {c(k)} step {c(WARP)} iter_args(%acc = %identity) -> (f32) {{")
    values = []
    for i in range(n_in):
        elt = ir.MemRefType(block.arguments[args[i]].type).element_type
        lines.append(f"        %x{i} = memref.load %arg{args[i]}[{at(maps[i])}] : {types[args[i]]}")
        values.append((f"%x{i}", str(elt)))
    sig = ", ".join(t for _, t in values)
    lines += [
        f"        %y = func.call @__kiln_body({', '.join(v for v, _ in values)}, %acc) "
        f": ({sig}{', ' if sig else ''}f32) -> f32",
        "        scf.yield %y : f32",
        "      }",
    ]
    total = "%part"
    for step, offset in enumerate((16, 8, 4, 2, 1), start=1):
        lines += [
            f"      %sh{step}, %ok{step} = gpu.shuffle xor {total}, %o{offset}, %width : f32",
            f"      %r{step} = func.call @__kiln_combine({total}, %sh{step}) : (f32, f32) -> f32",
        ]
        total = f"%r{step}"
    out = f"%arg{out_arg}[{at(maps[-1])}] : {types[out_arg]}"
    init = "%init"
    lines += [f"      %first = arith.cmpi eq, %lane, {c(0)} : index", "      scf.if %first {"]
    if fill is None:
        init = "%start"
        lines.append(f"        %start = memref.load {out}")
    lines += [
        f"        %y = func.call @__kiln_combine({init}, {total}) : (f32, f32) -> f32",
        f"        memref.store %y, {out}",
        "      }",
        "    }",
        "  } {mapping = [#gpu.thread<x>]}",
        "} {mapping = [#gpu.block<x>]}",
        "return",
    ]
    header = constant_lines(constants, (16, 8, 4, 2, 1))
    header.append(f"%identity = arith.constant {identity} : f32")
    if fill is not None:
        value = ir.FloatAttr(fill.operands[0].owner.attributes["value"]).value
        header.append(f"%init = arith.constant {f32_literal(value)} : f32")
    arg_list = ", ".join(f"%arg{i}: {t}" for i, t in enumerate(types))
    return "\n".join([
        f"func.func private @__kiln_body({sig}{', ' if sig else ''}f32) -> f32",
        "func.func private @__kiln_combine(f32, f32) -> f32",
        f"func.func private @{name}({arg_list}) {{", *header, *lines, "}",
    ])


def _inline_body(func, root) -> None:
    """Replaces the skeleton's placeholder calls with clones of the linalg body (and its combiner);
    constants the body uses from outside are cloned in front of each use."""
    calls = find_ops(func, lambda o: o.name == "func.call")
    body = root.regions[0].blocks[0]
    ops = list(body.operations)
    combine = _combiner(root)
    for call in calls:
        callee = ir.FlatSymbolRefAttr(call.attributes["callee"]).value
        with ir.InsertionPoint(call):
            if callee == "__kiln_body":
                mapping = {body.arguments[i]: call.operands[i] for i in range(len(body.arguments))}
                for op in ops[:-1]:
                    _clone_into(op, mapping)
                result = mapping[ops[-1].operands[0]]
            else:
                out = body.arguments[len(body.arguments) - 1]
                other = next(v for v in combine.operands if v != out)
                mapping = {out: call.operands[0], other: call.operands[1]}
                result = _clone_into(combine, mapping)
        call.result.replace_all_uses_with(result)
        call.operation.erase()


def _clone_into(op, mapping: dict):
    """Clones `op` at the current insertion point with its operands remapped; an operand defined
    outside the body (a constant of the kernel) is cloned first. Returns the clone's result."""
    for i, v in enumerate(op.operands):
        if v not in mapping:
            owner = v.owner
            if isinstance(owner, ir.Block) or owner.name != "arith.constant":
                raise KilnError(f"stage 'loops': a row reduction's body uses {v}, defined outside it")
            mapping[v] = owner.clone().result
    new = op.clone()
    for i, v in enumerate(op.operands):
        new.operands[i] = mapping[v]
    if len(op.results):
        mapping[op.result] = new.result
        return new.result
    return None
