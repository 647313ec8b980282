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
            64-lane AMD wavefronts reduce as two halves); lane 0 adds the fill value (or what the
            output holds: a residual, see kiln-accumulate-residuals) and stores.

The product need not be x·w: kiln-fuse-into-matvecs fuses the elementwise op that computes x into
the matvec (RMSNorm's scaling, SiLU(gate)·up), so the body computes x from several operands. Its
operations are written on the lanes' 4-element vectors, except those that do not depend on k (an
RMSNorm's rsqrt of the row's mean square), computed once per row before the K loop.

With `precision="bf16"|"f16"` the lanes round their vectors of x (computed, for a fused matvec) and
W to that type before the FMA: products of rounded values, summed in f32, as the tensor cores and
the SIMT GEMMs of that precision compute (a fused matvec left to the generic schedules rounds them
in its body: `round_fused_product`).

A decode linear over GGUF blocks (transformer.dequantize fused into it: loops [b.., n, block, (half,)
j], see TransformerToLinalg) gets the same warp per row of W, with blocks instead of 4-element vectors:

    lane    expands blocks l, l + 32, ... of row n: one 16-byte load of the block's bytes per half (j
            is 16 wide: both nibbles of 16 bytes for Q4_0/Q4_1, two halves of 32 bytes for Q8_0), its
            f16 scale (and min) once, x's 2 x 16 values at the block; the root's body is evaluated on
            16-wide vectors (integer ops included), scalars broadcast
    reduce  as above; a warp reads 512 contiguous bytes of blocks per step

Its vector of x is read through the [.., K/32, 2, 16] view the lowering gives it (the halves at a
constant index, `gpu.read_slices_in_place`), computed from RMSNorm or SiLU(gate)·up as it is read
(kiln-fuse-into-matvecs expands those producers to the view's shape), and a residual is its output's
start (kiln-accumulate-residuals): a decode step with quantized weights launches as many kernels as
one with float32 weights, and reads 4.5-8.5 bits per weight instead of 32.

The kernel is marked at the `tiled` stage (`mark`: not tiled there) and written on buffers at the
`loops` stage (`build_kernels`), before the foralls are mapped to blocks and threads.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

from mlir import ir

from ..errors import KilnError
from . import schedules
from .written_kernels import WARP, constant_lines, f32_literal, kernel_argument, marked_functions, replace_function

MAX_ROWS = 4  # rows of x (decode steps, small batches); more rows keep the register-tiled GEMM schedule
MATVEC_ATTR = "kiln.matvec_warps"  # warps (rows of W) per block of a kernel with this schedule
VECTOR = 4  # f32 per 16-byte load
_FUNC = {"arith.constant", "func.return", "linalg.fill", "linalg.generic"}


def warps_per_block(kernel: schedules.Kernel, func, precision: str) -> int:
    """Rows of W per block when `kernel` gets this schedule, else 0: a matvec (`_matvec_root`) with
    at most two batch dims wider than 1, m <= MAX_ROWS rows of x and K a multiple of 4; with a
    bf16/f16 `precision`, one whose product is a multiplication (the kernel rounds its factors). A
    linear over quantized blocks (`_dequantized_root`) takes it at any precision: its weights are
    the stored values, and it multiplies in f32."""
    if _dequantized_root(kernel, func) is not None:
        n = kernel.loop_ranges[-1 - schedules.reduction_loops(kernel)]
        return next(w for w in (4, 2, 1) if n % w == 0)
    root = _matvec_root(kernel, func)
    if root is None:
        return 0
    ranges = kernel.loop_ranges
    nb = len(ranges) - 3
    m, n, k = ranges[nb:]
    if m > MAX_ROWS or k % VECTOR or sum(1 for r in ranges[:nb] if r > 1) > 2:
        return 0
    if precision != "f32" and _product(root).owner.name != "arith.mulf":
        return 0
    return next(w for w in (4, 2, 1) if n % w == 0)


def _matvec_root(kernel: schedules.Kernel, func):
    """The root of a matvec kernel, else None: loops [b.., m, n, k] (k the one reduction loop),
    static; a root adding to its f32 output [b.., m, n] (zero-filled in the kernel or before it) the
    sum over k of a product of f32 operands (`_product`): a weight W[n, k] and operands indexed by
    some of b.., m and k (k innermost). Plain x·Wᵀ is a "contraction" kernel; a matvec with a fused
    producer (kiln-fuse-into-matvecs) is a "reduction" one."""
    if kernel.kernel_class not in ("contraction", "reduction"):
        return None
    ranges, kinds = kernel.loop_ranges, kernel.iterator_types
    if len(ranges) < 3 or kinds != "p" * (len(ranges) - 1) + "r" or any(r <= 0 for r in ranges):
        return None
    nb = len(ranges) - 3
    ops = list(func.regions[0].blocks[0].operations)
    names = [o.operation.name for o in ops]
    if set(names) - _FUNC or names.count("linalg.generic") != 1 or names.count("linalg.fill") > 1:
        return None
    root = next(o for o in ops if "kiln.root" in o.attributes)
    maps = [_dims(m) for m in ir.ArrayAttr(root.attributes["indexing_maps"])]
    if any(d is None for d in maps) or maps[-1] != list(range(nb)) + [nb, nb + 1] or _product(root) is None:
        return None
    if [d for d in maps[:-1] if nb + 1 in d] != [[nb + 1, nb + 2]]:
        return None  # not exactly one W[n, k]
    if any(nb + 2 in d and d[-1] != nb + 2 for d in maps[:-1]):
        return None  # read along k, but not contiguously
    return root


def round_fused_product(kernel: schedules.Kernel, func, precision: str) -> bool:
    """A fused matvec ("reduction" kernel) left to the generic schedules with a bf16/f16 precision:
    the factors of its product are rounded to `precision` in its root's body, as this schedule's
    kernel rounds them. True if it was one."""
    from mlir.dialects import arith

    root = _matvec_root(kernel, func) if kernel.kernel_class == "reduction" else None
    if root is None:
        return False
    mul = _product(root).owner
    if mul.name != "arith.mulf":
        raise KilnError(f"kernel {kernel.name}: a fused matvec whose product is {mul.name}, not a "
                        f"multiplication, cannot take precision {precision}")
    low = ir.BF16Type.get() if precision == "bf16" else ir.F16Type.get()
    with ir.InsertionPoint(mul), mul.location:
        for j, v in enumerate(list(mul.operands)):
            mul.operands[j] = arith.extf(v.type, arith.truncf(low, v))
    return True


def _dequantized_root(kernel: schedules.Kernel, func):
    """The root of a decode-step linear over block-quantized weights, else None: loops [b.., n,
    block, (half,) j] (`schedules.is_dequantized_matvec`: j the 16 values one step expands), at most
    two batch dims wider than 1, a root adding to its f32 output [b.., n] (zero-filled in the kernel
    or before it) a term computed by integer and float arith/math (`_product`) from operands indexed
    by plain loops and constants (x's halves), j innermost where it indexes one."""
    if not schedules.is_dequantized_matvec(kernel):
        return None
    ranges = kernel.loop_ranges
    nb = len(ranges) - 1 - schedules.reduction_loops(kernel)
    ops = list(func.regions[0].blocks[0].operations)
    names = [o.operation.name for o in ops]
    if set(names) - _FUNC or names.count("linalg.generic") != 1 or names.count("linalg.fill") > 1:
        return None
    if sum(1 for r in ranges[:nb] if r > 1) > 2:
        return None
    root = next(o for o in ops if "kiln.root" in o.attributes)
    maps = [_dims(m, constants=True) for m in ir.ArrayAttr(root.attributes["indexing_maps"])]
    if any(d is None for d in maps) or maps[-1] != list(range(nb + 1)) or _product(root, f32_only=False) is None:
        return None
    j = len(ranges) - 1
    if any(j in d and d[-1] != j for d in maps[:-1]):
        return None
    if not isinstance(ir.ShapedType(root.operands[-1].type).element_type, ir.F32Type):
        return None
    return root


def _product(root, f32_only: bool = True):
    """The value the body adds to the output (`out + p` or `p + out`, `out` used nowhere else) when
    every other op is arith/math with one result and no regions, on f32 block arguments only with
    `f32_only`; else None."""
    body = root.regions[0].blocks[0]
    ops = list(body.operations)
    out = body.arguments[len(body.arguments) - 1]
    if len(ops) < 2 or ops[-2].name != "arith.addf" or ops[-1].operands[0] != ops[-2].result:
        return None
    operands = list(ops[-2].operands)
    if operands.count(out) != 1:
        return None
    for op in ops[:-2]:
        if (op.name.split(".")[0] not in ("arith", "math") or len(op.results) != 1 or len(op.regions)
                or out in list(op.operands) or "index" in str(op.result.type)):
            return None
    if f32_only and any(str(a.type) != "f32" for a in body.arguments):
        return None
    product = operands[1] if operands[0] == out else operands[0]
    return None if isinstance(product.owner, ir.Block) else product


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
    from .gpu_mma import module_precision

    done, precision = [], module_precision(module)
    for op in marked_functions(module, MATVEC_ATTR):
        name = ir.StringAttr(op.attributes["sym_name"]).value
        warps = ir.IntegerAttr(op.attributes[MATVEC_ATTR]).value
        dequantized = ir.StringAttr(op.attributes["kiln.iterator_types"]).value.endswith("rr")
        replace_function(op, _dequantized_kernel_text(op, name, warps) if dequantized
                         else _kernel_text(op, name, warps, precision))
        done.append(name)
    return done


class _Constant(NamedTuple):
    """An indexing map's constant result (`_dims(..., constants=True)`)."""

    value: int


def _dims(amap_attr, constants: bool = False):
    """The loop of each result of an indexing map, or with `constants` a `_Constant` for a constant
    result (None unless every result is one of those)."""
    dims = []
    for e in ir.AffineMapAttr(amap_attr).value.results:
        e = e.maybe_downcast()
        if isinstance(e, ir.AffineDimExpr):
            dims.append(e.position)
        elif constants and isinstance(e, ir.AffineConstantExpr):
            dims.append(_Constant(e.value))
        else:
            return None
    return dims


def _alignment(memref_type) -> int:
    """The byte alignment of a vector load starting at a multiple of 16 bytes along a row of the
    buffer: 16 where every row starts 16-byte aligned (static offset and strides), else the
    element's size."""
    t = ir.MemRefType(memref_type)
    strides, offset = t.get_strides_and_offset()
    if strides[-1] != 1:
        raise KilnError(f"the matvec schedule needs unit-stride rows, got a buffer {t}")
    size = max(1, t.element_type.width // 8)
    dynamic = ir.ShapedType.get_dynamic_stride_or_offset()
    aligned = offset != dynamic and all(x != dynamic and x * size % 16 == 0 for x in (offset, *strides[:-1]))
    return 16 if aligned else size


def _linear_parts(func, name: str) -> tuple:
    """(root, its operands' argument numbers, the argument types, the fill value or None: the sum
    is added to what the output holds, filled by an earlier kernel)."""
    block = func.regions[0].blocks[0]
    ops = list(block.operations)
    root = next(o for o in ops if "kiln.root" in o.attributes)
    fill = next((o for o in ops if o.operation.name == "linalg.fill"), None)
    what = f"kernel {name} has the matvec schedule but an operand of its linear"
    args = [kernel_argument(v, block, what) for v in root.operands]
    if fill is not None and kernel_argument(fill.operands[1], block, what) != args[-1]:
        raise KilnError(f"stage 'loops': kernel {name}: the fill does not initialize the linear's output")
    init = None if fill is None else ir.FloatAttr(fill.operands[0].owner.attributes["value"]).value
    return root, args, [str(a.type) for a in block.arguments], init


def _kernel_text(func, name: str, warps: int, precision: str = "f32") -> str:
    block = func.regions[0].blocks[0]
    root, args, types, init = _linear_parts(func, name)
    out_arg = args[-1]
    maps = [_dims(m) for m in ir.ArrayAttr(root.attributes["indexing_maps"])]
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
    body = root.regions[0].blocks[0]
    product = _product(root)
    inputs = list(body.arguments)[:-1]
    header, before, inside = [], [], []  # function constants; per row before the K loop; in it
    rows = [dict() for _ in range(m)]  # body value -> (SSA name, vector?), for each row of x
    for i in range(m):
        for j, arg in enumerate(inputs):
            if nb + 2 not in maps[j]:  # one scalar per row (an RMSNorm's mean square)
                before.append(f"    %s{i}_{j} = memref.load %arg{args[j]}[{index(maps[j], i)}] : {types[args[j]]}")
                rows[i][arg] = (f"%s{i}_{j}", False)
                continue
            ssa = f"%v{i}_{j}" if nb in maps[j] else f"%v_{j}"  # per row, or shared by the rows
            if i == 0 or nb in maps[j]:
                align = _alignment(block.arguments[args[j]].type)
                inside.append(f"      {ssa} = vector.load %arg{args[j]}[{index(maps[j], i)}] "
                              f"{{alignment = {align} : i64}} : {types[args[j]]}, {vec}")
            rows[i][arg] = (ssa, True)

    def vector_operand(i, v, tag):
        """Row i's value of `v` as a vector: a row-invariant scalar is broadcast before the loop."""
        ssa, is_vec = rows[i][v]
        if not is_vec:
            ssa = f"%bcast{i}_{tag}"
            before.append(f"    {ssa} = vector.broadcast {rows[i][v][0]} : {v.type} to vector<{VECTOR}x{v.type}>")
        return ssa

    fma = product.owner.name == "arith.mulf"  # the last multiplication becomes the accumulating FMA
    body_ops = list(body.operations)[:-2]
    for o, op in enumerate(body_ops):
        for v in op.operands:  # constants the body uses from outside
            if v not in rows[0] and not isinstance(v.owner, ir.Block) and v.owner.name == "arith.constant":
                header.append(f"%bc{len(header)} = {str(v.owner).split(' = ', 1)[1]}")
                for r in rows:
                    r[v] = (f"%bc{len(header) - 1}", False)
        if fma and op == product.owner:
            break
        for i in range(m):
            res = f"%e{i}_{o}"
            if any(rows[i][v][1] for v in op.operands):  # on the lanes' vectors, in the K loop
                operands = [vector_operand(i, v, f"{o}_{p}") for p, v in enumerate(op.operands)]
                inside.append("      " + _generic_text(op, res, operands, VECTOR))
                rows[i][op.result] = (res, True)
            else:  # row-invariant: once per row, before the loop
                before.append("    " + _generic_text(op, res, [rows[i][v][0] for v in op.operands], 0))
                rows[i][op.result] = (res, False)
    rounded = {}  # vector -> its value rounded to `precision` (W's, shared by the rows, once)

    def rounded_to_precision(ssa):
        if precision == "f32":
            return ssa
        if ssa not in rounded:
            low = f"vector<{VECTOR}x{precision}>"
            inside.append(f"      {ssa}_low = arith.truncf {ssa} : {vec} to {low}")
            inside.append(f"      {ssa}_rounded = arith.extf {ssa}_low : {low} to {vec}")
            rounded[ssa] = f"{ssa}_rounded"
        return rounded[ssa]

    accs = [f"%a{i}" for i in range(m)]
    for i, a in enumerate(accs):
        if fma:
            x, w = (rounded_to_precision(vector_operand(i, v, f"p{p}")) for p, v in enumerate(product.owner.operands))
            inside.append(f"      %s{i} = vector.fma {x}, {w}, {a} : {vec}")
        else:
            inside.append(f"      %s{i} = arith.addf {a}, {vector_operand(i, product, 'p')} : {vec}")
    lines = [
        f"scf.forall ({', '.join(gids)}) in ({', '.join(map(str, grid))}) {{",
        f"  scf.forall (%t) in ({WARP * warps}) {{",
        f"    %lane = affine.apply affine_map<(d0) -> (d0 mod {WARP})>(%t)",
        f"    %n = affine.apply affine_map<(d0, d1) -> (d0 * {warps} + d1 floordiv {WARP})>({gids[-1]}, %t)",
        f"    %k0 = affine.apply affine_map<(d0) -> (d0 * {VECTOR})>(%lane)",
        *before,
        f"    %acc:{m} = scf.for %kk = %k0 to {c(k)} step {c(WARP * VECTOR)} iter_args("
        + ", ".join(f"{a} = %zero" for a in accs) + f") -> ({', '.join([vec] * m)}) {{",
        *inside,
        f"      scf.yield {', '.join(f'%s{i}' for i in range(m))} : {', '.join([vec] * m)}",
        "    }",
    ]
    c(0)
    outputs = [(f"%acc#{i}", f"%arg{out_arg}[{index(maps[-1], i)}] : {types[out_arg]}") for i in range(m)]
    lines += _sum_lanes_and_store(outputs, vec, init, len(grid))
    header = constant_lines(constants, (16, 8, 4, 2, 1)) + header
    header.append(f"%zero = arith.constant dense<0.0> : {vec}")
    return _function_text(name, types, header, init, lines)


def _sum_lanes_and_store(outputs: list, vec: str, init, grid_dims: int) -> list:
    """The end of a matvec kernel, in its thread forall: each (accumulator vector, output element)
    of `outputs` summed over the vector, then over the warp's lanes (a butterfly of shuffles), and
    lane 0 adds it to `init` (None: to what the output holds) and stores it; the foralls closed."""
    lines, totals = [], []
    for i, (acc, _) in enumerate(outputs):
        total = f"%r{i}_0"
        lines.append(f"    {total} = vector.reduction <add>, {acc} : {vec} into f32")
        for step, offset in enumerate((16, 8, 4, 2, 1), start=1):
            lines += [
                f"    %sh{i}_{step}, %ok{i}_{step} = gpu.shuffle xor {total}, %o{offset}, %width : f32",
                f"    %r{i}_{step} = arith.addf {total}, %sh{i}_{step} : f32",
            ]
            total = f"%r{i}_{step}"
        totals.append(total)
    lines.append("    %first = arith.cmpi eq, %lane, %c0 : index")
    lines.append("    scf.if %first {")
    for i, ((_, out), total) in enumerate(zip(outputs, totals)):
        start = "%init"
        if init is None:
            start = f"%init{i}"
            lines.append(f"      {start} = memref.load {out}")
        lines += [f"      %y{i} = arith.addf {start}, {total} : f32", f"      memref.store %y{i}, {out}"]
    return lines + [
        "    }",
        "  } {mapping = [#gpu.thread<x>]}",
        f"}} {{mapping = [{', '.join(f'#gpu.block<{a}>' for a in reversed('xyz'[:grid_dims]))}]}}",
        "return",
    ]


def _function_text(name: str, types: list, header: list, init, lines: list) -> str:
    if init is not None:
        header = header + [f"%init = arith.constant {f32_literal(init)} : f32"]
    arg_list = ", ".join(f"%arg{i}: {t}" for i, t in enumerate(types))
    return "\n".join([f"func.func private @{name}({arg_list}) {{", *header, *lines, "}"])


def _dequantized_kernel_text(func, name: str, warps: int) -> str:
    """A decode-step linear over block-quantized weights (`_dequantized_root`), loops [b.., n, block,
    (half,) j]: a warp per row n of W, lane l expanding blocks l, l + 32, ... (one 16-byte load of
    a block's data per half, its scale and min) and evaluating the root's body on vectors along j;
    the half loop (q8_0's two 16-byte halves) is unrolled. Operands indexed by neither block nor
    j are read once per row, before the loop."""
    root, args, types, init = _linear_parts(func, name)
    arguments = func.regions[0].blocks[0].arguments
    maps = [_dims(m, constants=True) for m in ir.ArrayAttr(root.attributes["indexing_maps"])]
    ranges = list(ir.DenseI64ArrayAttr(func.attributes["kiln.loop_ranges"]))
    kinds = ir.StringAttr(func.attributes["kiln.iterator_types"]).value
    j = len(ranges) - 1
    nb = len(kinds.rstrip("r")) - 1  # batch loops before n
    blk, halves = nb + 1, list(range(nb + 2, j))
    width = ranges[j]
    batch = [d for d in range(nb) if ranges[d] > 1]
    grid = [ranges[d] for d in batch] + [ranges[nb] // warps]
    gids = [f"%g{i}" for i in range(len(grid))]
    constants = {0, ranges[blk], WARP}
    vec = f"vector<{width}xf32>"
    before, inside, memo = [], [], {}

    def emit(where: list, indent: str, text: str) -> str:
        """`text`'s value (once: equal expressions are one SSA value)."""
        if text not in memo:
            memo[text] = f"%q{len(memo)}"
            where.append(f"{indent}{memo[text]} = {text}")
        return memo[text]

    body = root.regions[0].blocks[0]
    term = _product(root, f32_only=False)
    body_ops = list(body.operations)[:-2]
    fma = term.owner.name == "arith.mulf"
    acc = "%acc"
    for step_number, half in enumerate(itertools.product(*(range(ranges[h]) for h in halves))):
        value = {d: (gids[batch.index(d)] if d in batch else "%c0") for d in range(nb)}
        value.update({nb: "%n", blk: "%blk", j: "%c0"})
        value.update({h: f"%c{i}" for h, i in zip(halves, half)})
        constants.update(half)
        for d in {d for m in maps for d in m if isinstance(d, _Constant)}:  # a constant index (x's half)
            value[d] = f"%c{d.value}"
            constants.add(d.value)
        # body value -> (SSA name, level): 0 once per row, 1 once per step, 2 a vector along j
        known = {}
        for a, arg in enumerate(list(body.arguments)[:-1]):
            at = f"%arg{args[a]}[{', '.join(value[d] for d in maps[a])}]"
            if j in maps[a]:
                align = _alignment(arguments[args[a]].type)
                known[arg] = (emit(inside, "      ", f"vector.load {at} {{alignment = {align} : i64}} : "
                                                   f"{types[args[a]]}, vector<{width}x{arg.type}>"), 2)
            else:
                level = int(blk in maps[a] or any(h in maps[a] for h in halves))
                known[arg] = (emit(inside if level else before, "      " if level else "    ",
                                   f"memref.load {at} : {types[args[a]]}"), level)

        def operand(v, level: int) -> str:
            """`v` at `level` (a scalar broadcast to a vector where the op is one)."""
            if v not in known:  # a constant the body uses from outside
                known[v] = (emit(before, "    ", str(v.owner).split(" = ", 1)[1]), 0)
            ssa, own = known[v]
            if level < 2 or own == 2:
                return ssa
            where, indent = (inside, "      ") if own else (before, "    ")
            return emit(where, indent, f"vector.broadcast {ssa} : {v.type} to vector<{width}x{v.type}>")

        for op in body_ops:
            if fma and op == term.owner:
                break
            for v in op.operands:
                operand(v, 0)
            level = max(known[v][1] for v in op.operands)
            where, indent = (inside, "      ") if level else (before, "    ")
            known[op.result] = (emit(where, indent, _generic_text(op, "", [operand(v, level) for v in op.operands],
                                                                  width if level == 2 else 0)), level)
        step = f"%acc{step_number}"
        if fma:
            x, w = (operand(v, 2) for v in term.owner.operands)
            inside.append(f"      {step} = vector.fma {x}, {w}, {acc} : {vec}")
        else:
            inside.append(f"      {step} = arith.addf {acc}, {operand(term, 2)} : {vec}")
        acc = step
    lines = [
        f"scf.forall ({', '.join(gids)}) in ({', '.join(map(str, grid))}) {{",
        f"  scf.forall (%t) in ({WARP * warps}) {{",
        f"    %lane = affine.apply affine_map<(d0) -> (d0 mod {WARP})>(%t)",
        f"    %n = affine.apply affine_map<(d0, d1) -> (d0 * {warps} + d1 floordiv {WARP})>({gids[-1]}, %t)",
        *before,
        f"    %sum = scf.for %blk = %lane to %c{ranges[blk]} step %c{WARP} iter_args(%acc = %zero) -> ({vec}) {{",
        *inside,
        f"      scf.yield {acc} : {vec}",
        "    }",
    ]
    out = f"%arg{args[-1]}[{', '.join([*(gids[batch.index(d)] if d in batch else '%c0' for d in range(nb)), '%n'])}]"
    lines += _sum_lanes_and_store([("%sum", f"{out} : {types[args[-1]]}")], vec, init, len(grid))
    header = constant_lines(constants, (16, 8, 4, 2, 1)) + [f"%zero = arith.constant dense<0.0> : {vec}"]
    return _function_text(name, types, header, init, lines)


def _generic_text(op, result: str, operands: list, width: int) -> str:
    """`op` (one scalar result) in MLIR's generic form on `operands`, on `width`-wide vectors of its
    operand and result types unless `width` is 0; `result` is the name it defines ("": the op's
    text alone)."""
    asm = op.get_asm(print_generic_op_form=True).strip()
    name_and_operands, _ = asm.split(" = ", 1)[1].rsplit(" : ", 1)
    attributes = name_and_operands.split(")", 1)[1]

    def typed(t):
        return f"vector<{width}x{t}>" if width else str(t)

    in_types = ", ".join(typed(v.type) for v in op.operands)
    text = f'"{op.name}"({", ".join(operands)}){attributes} : ({in_types}) -> {typed(op.result.type)}'
    return f"{result} = {text}" if result else text
