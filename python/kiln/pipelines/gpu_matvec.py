"""Decode-shaped linears on GPUs: a warp per row of W, coalesced 16-byte loads, a shuffle reduction.

A decode step's linear is x[b.., m, K]·W[N, K]ᵀ with a few rows of x (`schedules.is_matvec`): it reads
all of W once and is bound by memory bandwidth. The generic schedule gives each thread one output
and walks K alone, so the 32 threads of a warp read 32 different rows of W: every load touches 32
cache lines. Here the 32 lanes of a warp share one row n of W instead:

    block   WARPS warps (WARPS rows of W) per block; a grid over N / WARPS (and batch dims)
    lane    reads W[n, 4·lane + 128·i] as one 16-byte vector for i = 0, 1, ... (a warp reads 512
            contiguous bytes per step) and the same 4 elements of each of the m rows of x;
            m vector<4xf32> accumulators (each W load is used m times)
    reduce  each lane sums its vector, then a butterfly of `gpu.shuffle xor` 16, 8, 4, 2, 1 gives
            every lane the row's total (shfl.sync.bfly on NVIDIA, ds_bpermute on AMD; width 32 so
            64-lane AMD wavefronts reduce as two halves); lane 0 adds the fill value and stores.

The kernel is marked at the `tiled` stage (`mark`: not tiled there) and written on buffers at the
`loops` stage (`build_kernels`), before the foralls are mapped to blocks and threads.
"""

from __future__ import annotations

from mlir import ir

from ..errors import KilnError
from . import schedules
from .written_kernels import WARP, constant_lines, f32_literal, kernel_argument, marked_functions, replace_function

MAX_ROWS = 4  # rows of x (decode steps, small batches); more rows keep the register-tiled GEMM schedule
MATVEC_ATTR = "kiln.matvec_warps"  # warps (rows of W) per block of a kernel with this schedule
VECTOR = 4  # f32 per 16-byte load
_BODY = ["arith.addf", "arith.mulf", "linalg.yield"]
_FUNC = {"arith.constant", "func.return", "linalg.fill", "linalg.generic"}


def warps_per_block(kernel: schedules.Kernel, func, precision: str) -> int:
    """Rows of W per block when `kernel` gets this schedule, else 0: an f32 matvec (`is_matvec`) that
    is x·Wᵀ added to its output (zero-filled in the kernel or before it) and nothing else, at most
    MAX_ROWS rows of x, K a multiple of 4, at most two batch dims wider than 1."""
    if precision != "f32" or not schedules.is_matvec(kernel):
        return 0
    ranges = kernel.loop_ranges
    nb = len(ranges) - 3
    m, n, k = ranges[nb:]
    if m > MAX_ROWS or k % VECTOR or sum(1 for r in ranges[:nb] if r > 1) > 2:
        return 0
    ops = list(func.regions[0].blocks[0].operations)
    names = [o.operation.name for o in ops]
    if set(names) - _FUNC or names.count("linalg.generic") != 1 or names.count("linalg.fill") > 1:
        return 0
    root = next(o for o in ops if "kiln.root" in o.attributes)
    if sorted(o.operation.name for o in root.regions[0].blocks[0].operations) != _BODY:
        return 0
    if any(_dims(m) is None for m in ir.ArrayAttr(root.attributes["indexing_maps"])):
        return 0
    return next(w for w in (4, 2, 1) if n % w == 0)


def mark(kernel: schedules.Kernel, func, precision: str) -> bool:
    """Gives `kernel` this schedule when it qualifies (see `warps_per_block`); True if it did."""
    from .gpu import BLOCK_DIM_ATTR

    warps = warps_per_block(kernel, func, precision)
    if warps:
        func.attributes[MATVEC_ATTR] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), warps)
        func.attributes[BLOCK_DIM_ATTR] = ir.DenseI64ArrayAttr.get([WARP * warps, 1, 1])
    return bool(warps)


def build_kernels(module: ir.Module) -> list:
    """Rewrites every kernel marked `kiln.matvec_warps` (on buffers) into block and thread foralls
    around its lanes' K loop and shuffle reduction; returns the kernels' names."""
    done = []
    for op in marked_functions(module, MATVEC_ATTR):
        name = ir.StringAttr(op.attributes["sym_name"]).value
        replace_function(op, _kernel_text(op, name, ir.IntegerAttr(op.attributes[MATVEC_ATTR]).value))
        done.append(name)
    return done


def _dims(amap_attr):
    """The loop of each result of an indexing map (None unless every result is a plain loop)."""
    dims = []
    for e in ir.AffineMapAttr(amap_attr).value.results:
        e = e.maybe_downcast()
        if not isinstance(e, ir.AffineDimExpr):
            return None
        dims.append(e.position)
    return dims


def _alignment(memref_type) -> int:
    """16 where every row of the buffer starts 16-byte aligned (dense, no offset), else 4."""
    t = ir.MemRefType(memref_type)
    strides, offset = t.get_strides_and_offset()
    if strides[-1] != 1:
        raise KilnError(f"the matvec schedule needs unit-stride rows, got a buffer {t}")
    return 16 if offset == 0 and all(s % VECTOR == 0 for s in strides[:-1]) else 4


def _kernel_text(func, name: str, warps: int) -> str:
    block = func.regions[0].blocks[0]
    ops = list(block.operations)
    root = next(o for o in ops if "kiln.root" in o.attributes)
    fill = next((o for o in ops if o.operation.name == "linalg.fill"), None)
    what = f"kernel {name} has the matvec schedule but an operand of its linear"
    x_arg, w_arg, out_arg = (kernel_argument(v, block, what) for v in root.operands[:3])
    if fill is not None and kernel_argument(fill.operands[1], block, what) != out_arg:
        raise KilnError(f"stage 'loops': kernel {name}: the fill does not initialize the linear's output")
    # The sum is added to the fill value, or to what the output holds (filled by an earlier kernel).
    init = None if fill is None else ir.FloatAttr(fill.operands[0].owner.attributes["value"]).value
    types = [str(a.type) for a in block.arguments]
    x_dims, w_dims, out_dims = (_dims(m) for m in ir.ArrayAttr(root.attributes["indexing_maps"]))
    ranges = list(ir.DenseI64ArrayAttr(func.attributes["kiln.loop_ranges"]))
    nb = len(ranges) - 3
    m, n, k = ranges[nb:]
    batch = [d for d in range(nb) if ranges[d] > 1]
    grid = [ranges[d] for d in batch] + [n // warps]
    gids = [f"%g{i}" for i in range(len(grid))]
    constants = {0, 1, WARP * VECTOR, k}

    def c(v):
        constants.add(v)
        return f"%c{v}"

    value = {d: (gids[batch.index(d)] if d in batch else c(0)) for d in range(nb)}
    value.update({nb + 1: "%n", nb + 2: "%kk"})

    def index(dims, row=0):
        return ", ".join(value[d] if d != nb else c(row) for d in dims)

    vec = f"vector<{VECTOR}xf32>"
    align_x, align_w = _alignment(block.arguments[x_arg].type), _alignment(block.arguments[w_arg].type)
    accs = [f"%a{i}" for i in range(m)]
    lines = [
        f"scf.forall ({', '.join(gids)}) in ({', '.join(map(str, grid))}) {{",
        f"  scf.forall (%t) in ({WARP * warps}) {{",
        f"    %lane = affine.apply affine_map<(d0) -> (d0 mod {WARP})>(%t)",
        f"    %n = affine.apply affine_map<(d0, d1) -> (d0 * {warps} + d1 floordiv {WARP})>({gids[-1]}, %t)",
        f"    %k0 = affine.apply affine_map<(d0) -> (d0 * {VECTOR})>(%lane)",
        f"    %acc:{m} = scf.for %kk = %k0 to {c(k)} step {c(WARP * VECTOR)} iter_args("
        + ", ".join(f"{a} = %zero" for a in accs) + f") -> ({', '.join([vec] * m)}) {{",
        f"      %w = vector.load %arg{w_arg}[{index(w_dims)}] {{alignment = {align_w} : i64}} "
        f": {types[w_arg]}, {vec}",
    ]
    for i, a in enumerate(accs):
        lines += [
            f"      %x{i} = vector.load %arg{x_arg}[{index(x_dims, i)}] {{alignment = {align_x} : i64}} "
            f": {types[x_arg]}, {vec}",
            f"      %s{i} = vector.fma %x{i}, %w, {a} : {vec}",
        ]
    lines.append(f"      scf.yield {', '.join(f'%s{i}' for i in range(m))} : {', '.join([vec] * m)}")
    lines.append("    }")
    totals = []
    for i in range(m):
        total = f"%r{i}_0"
        lines.append(f"    {total} = vector.reduction <add>, %acc#{i} : {vec} into f32")
        for step, offset in enumerate((16, 8, 4, 2, 1), start=1):
            lines += [
                f"    %sh{i}_{step}, %ok{i}_{step} = gpu.shuffle xor {total}, %o{offset}, %width : f32",
                f"    %r{i}_{step} = arith.addf {total}, %sh{i}_{step} : f32",
            ]
            total = f"%r{i}_{step}"
        totals.append(total)
    lines.append(f"    %first = arith.cmpi eq, %lane, {c(0)} : index")
    lines.append("    scf.if %first {")
    for i, total in enumerate(totals):
        out = f"%arg{out_arg}[{index(out_dims, i)}] : {types[out_arg]}"
        start = "%init"
        if init is None:
            start = f"%init{i}"
            lines.append(f"      {start} = memref.load {out}")
        lines += [f"      %y{i} = arith.addf {start}, {total} : f32", f"      memref.store %y{i}, {out}"]
    lines += [
        "    }",
        "  } {mapping = [#gpu.thread<x>]}",
        f"}} {{mapping = [{', '.join(f'#gpu.block<{a}>' for a in reversed('xyz'[:len(grid)]))}]}}",
        "return",
    ]
    header = constant_lines(constants, (16, 8, 4, 2, 1))
    header.append(f"%zero = arith.constant dense<0.0> : {vec}")
    if init is not None:
        header.append(f"%init = arith.constant {f32_literal(init)} : f32")
    args = ", ".join(f"%arg{i}: {t}" for i, t in enumerate(types))
    return "\n".join([f"func.func private @{name}({args}) {{", *header, *lines, "}"])
