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
_FUNC = {"arith.constant", "func.return", "linalg.fill", "linalg.generic"}


def warps_per_block(kernel: schedules.Kernel, func, precision: str) -> int:
    """Rows of W per block when `kernel` gets this schedule, else 0: a matvec (`_matvec_root`) with
    at most two batch dims wider than 1, m <= MAX_ROWS rows of x and K a multiple of 4; with a
    bf16/f16 `precision`, one whose product is a multiplication (the kernel rounds its factors)."""
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


def _product(root):
    """The value the body adds to the output (`out + p` or `p + out`, `out` used nowhere else) when
    every other op is f32 arith/math with one result and no regions; else None."""
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
    if any(str(a.type) != "f32" for a in body.arguments):
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
        replace_function(op, _kernel_text(op, name, ir.IntegerAttr(op.attributes[MATVEC_ATTR]).value, precision))
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


def _kernel_text(func, name: str, warps: int, precision: str = "f32") -> str:
    block = func.regions[0].blocks[0]
    ops = list(block.operations)
    root = next(o for o in ops if "kiln.root" in o.attributes)
    fill = next((o for o in ops if o.operation.name == "linalg.fill"), None)
    what = f"kernel {name} has the matvec schedule but an operand of its linear"
    args = [kernel_argument(v, block, what) for v in root.operands]
    out_arg = args[-1]
    if fill is not None and kernel_argument(fill.operands[1], block, what) != out_arg:
        raise KilnError(f"stage 'loops': kernel {name}: the fill does not initialize the linear's output")
    # The sum is added to the fill value, or to what the output holds (filled by an earlier kernel).
    init = None if fill is None else ir.FloatAttr(fill.operands[0].owner.attributes["value"]).value
    types = [str(a.type) for a in block.arguments]
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
                inside.append("      " + _generic_text(op, res, operands, True))
                rows[i][op.result] = (res, True)
            else:  # row-invariant: once per row, before the loop
                before.append("    " + _generic_text(op, res, [rows[i][v][0] for v in op.operands], False))
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
        out = f"%arg{out_arg}[{index(maps[-1], i)}] : {types[out_arg]}"
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
    header = constant_lines(constants, (16, 8, 4, 2, 1)) + header
    header.append(f"%zero = arith.constant dense<0.0> : {vec}")
    if init is not None:
        header.append(f"%init = arith.constant {f32_literal(init)} : f32")
    arg_list = ", ".join(f"%arg{i}: {t}" for i, t in enumerate(types))
    return "\n".join([f"func.func private @{name}({arg_list}) {{", *header, *lines, "}"])


def _generic_text(op, result: str, operands: list, vector: bool) -> str:
    """`op` (one scalar result) in MLIR's generic form on `operands`, on VECTOR-wide vectors of its
    operand and result types when `vector`."""
    asm = op.get_asm(print_generic_op_form=True).strip()
    name_and_operands, _ = asm.split(" = ", 1)[1].rsplit(" : ", 1)
    attributes = name_and_operands.split(")", 1)[1]

    def typed(t):
        return f"vector<{VECTOR}x{t}>" if vector else str(t)

    in_types = ", ".join(typed(v.type) for v in op.operands)
    return f'{result} = "{op.name}"({", ".join(operands)}){attributes} : ({in_types}) -> {typed(op.result.type)}'
