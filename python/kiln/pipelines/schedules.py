"""Per-kernel schedules for the `tiled` stage, written in the transform dialect and built from Python.

A schedule is a small dataclass of explicit parameters; `transform_script()` turns the schedules of a
module's kernels into one transform-dialect module that the interpreter applies. Kernels are found by
symbol name and their root op by the `kiln.root` attribute that dispatch formation sets.

f32 GEMM-shaped contractions with 16 or more rows (linear, matmul, batched matmul) get a packed,
register-tiled, vectorized schedule (`packed_gemm`, see `Schedule`); decode-shaped linears (fewer than
16 rows, static N and K) get `matvec`, which streams each row of W once through vector FMAs; f32 row
reductions (norms' sums, pooling) get `row_reduction`, a grid whose rows each accumulate into a vector
of partial sums. Every other kernel gets a `grid`:
its parallel loops are tiled into a workgroup grid (`scf.forall`, run on the device's thread pool)
and the fills that initialize it are fused into each workgroup. Attention kernels arrive already
in flash form (a workgroup grid over query tiles, transformer-to-linalg) and get `flash_attention`,
which register-tiles and vectorizes the tile body.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from mlir import ir


@dataclass(frozen=True)
class Kernel:
    """What the tiled stage knows about one dispatch function."""

    name: str
    kernel_class: str
    loop_ranges: tuple  # static trip counts, -1 where dynamic
    iterator_types: str  # one letter per loop: p(arallel) or r(eduction)
    has_init_fill: bool
    # For a GEMM-shaped contraction (see `gemm_form`): "nk" when the rhs is indexed [.., n, k]
    # (linear: x·Wᵀ), "kn" when [.., k, n] (matmul); "" for anything else.
    gemm_rhs: str = ""
    gemm_multiplicands: str = ""  # of a GEMM-shaped contraction: "f32", "bf16" or "f16" (see `gemm_form`)
    f32: bool = False  # every operand of the root is an f32 tensor
    rhs_batch: int = 0  # batch loops that index the rhs (0 for a linear's weight)
    quantized: bool = False  # the root reads integer data (a linear over dequantized blocks)
    # The panel width of a weight stored pre-packed (rhs = linalg.unpack of [N/w, K, w] panels), else 0.
    packed_rhs: int = 0
    # Flash attention: (query rows, keys, head_dim) of a tile (`kiln.flash_tile`), else ().
    tile_shape: tuple = ()
    results: int = 1  # of the root op (a fused multi-result reduction has several)


@dataclass(frozen=True)
class Schedule:
    """Explicit parameters of a kernel's schedule.

    `grid` schedules only tile the parallel loops into a workgroup grid (`workgroup_tiles`, one per
    loop, 0 = not tiled); `row_reduction` schedules take the same grid and vectorize each row's
    reduction into `vector_width` partial sums. `packed_gemm` schedules (GEMM-shaped f32 contractions, loops
    [batch.., m, n, k]) pack the operands into register-tile panels, then tile and vectorize:

      * packing: A[.., M, K] -> [.., M/mr, K, mr], B -> [.., N/nr, K, nr] (from W[N, K] or B[K, N]),
        C -> [.., M/mr, N/nr, mr, nr], zero-padded to whole panels so every tile is full and no
        vector is masked. Done inside the kernel on every call (an O(MK + NK + MN) copy, in parallel
        workgroups), except for weights stored as panels at load (`packed_rhs`), whose packing
        folds away. Whole-tile C is copied back tile by tile into the result.
      * workgroups: `workgroup_tiles` = (mc, nc) elements of C per workgroup (scf.forall, OpenMP).
      * cache tile: `k_tile` elements of K per step; within a step, each B panel (kc x nr, then in
        L1) meets every A row tile of the workgroup (the A block mc x kc stays in L2) while the
        next panel is prefetched (pipelines/panel_prefetch.py).
      * register tile: `register_tile` = (mr, nr) accumulators, nr a multiple of `vector_width`;
        `k_unroll` outer products per inner-loop iteration (vector.contract -> outerproduct -> FMA).

    `flash_attention` schedules (attention kernels in flash form, tiles Sᵀ[keys, rows]):
    `register_tile` = (keys per register tile of the scores product Sᵀ += Kᵀ[d]ᵀ Qᵀ[d], query rows
    per register tile of the output product acc += Pᵀ[j]ᵀ V[j]); every op of the tile body is
    vectorized, transposes in 16x16 shuffle blocks.

    `matvec` schedules (f32 x[b.., m, K]·W[N, K]ᵀ, m < 16: decode steps, bandwidth-bound) read each
    row of W once, contiguously: `workgroup_tiles` = (nc,) rows of W per workgroup; `register_tile`
    = (mr, nr): nr rows of W and mr rows of x per register tile; `k_tile` = kv partial sums per
    output along K (a multiple of `vector_width`), summed horizontally once per tile. See
    `_matvec_lines`.
    """

    workgroup_tiles: tuple  # grid: per loop (0 = not tiled); packed_gemm: (mc, nc); matvec: (nc,)
    kind: str = "grid"  # "grid" | "row_reduction" | "packed_gemm" | "matvec" | "dequantized_matvec" | "flash_attention"
    register_tile: tuple = ()  # (mr, nr)
    k_tile: int = 0  # kc
    k_unroll: int = 1
    vector_width: int = 16  # f32 lanes per vector register (AVX-512)


def kernels_of(module: ir.Module) -> list:
    kernels = []
    for op in module.body.operations:
        if op.operation.name != "func.func" or "kiln.dispatch" not in op.attributes:
            continue
        attrs = op.attributes
        ops = list(op.regions[0].blocks[0].operations)
        body_ops = [o.operation.name for o in ops]
        iterator_types = ir.StringAttr(attrs["kiln.iterator_types"]).value
        root = next((o for o in ops if "kiln.root" in o.attributes), None)
        gemm_rhs, multiplicands, rhs_batch = ("", "", 0) if root is None else gemm_form(root, iterator_types)
        f32 = root is not None and all_f32(root)
        quantized = root is not None and any(
            isinstance(ir.ShapedType(v.type).element_type, ir.IntegerType)
            for v in root.operation.operands if isinstance(v.type, ir.ShapedType))
        packed_rhs = _panel_width(root.operation.operands[1]) if gemm_rhs == "nk" else 0
        kernels.append(
            Kernel(
                name=ir.StringAttr(attrs["sym_name"]).value,
                kernel_class=ir.StringAttr(attrs["kiln.kernel_class"]).value,
                loop_ranges=tuple(ir.DenseI64ArrayAttr(attrs["kiln.loop_ranges"])),
                iterator_types=iterator_types,
                has_init_fill="linalg.fill" in body_ops[:-2],
                gemm_rhs=gemm_rhs,
                gemm_multiplicands=multiplicands,
                f32=f32,
                rhs_batch=rhs_batch,
                quantized=quantized,
                packed_rhs=packed_rhs,
                tile_shape=tuple(ir.DenseI64ArrayAttr(root.attributes["kiln.flash_tile"]))
                if root is not None and "kiln.flash_tile" in root.attributes else (),
                results=0 if root is None else len(root.results),
            )
        )
    return kernels


def _panel_width(value) -> int:
    """w when `value` is W[N, K] unpacked from [N/w, K, w] panels (a weight prepared at load, see
    models.graph.panel_params), else 0."""
    owner = value.owner
    if not isinstance(owner, ir.Operation) and hasattr(owner, "operation"):
        owner = owner.operation
    if getattr(owner, "name", "") != "linalg.unpack":
        return 0
    attrs = owner.attributes
    inner = list(ir.DenseI64ArrayAttr(attrs["inner_dims_pos"]))
    outer = list(ir.DenseI64ArrayAttr(attrs["outer_dims_perm"])) if "outer_dims_perm" in attrs else []
    tiles = list(ir.DenseI64ArrayAttr(attrs["static_inner_tiles"]))
    return tiles[0] if inner == [0] and outer in ([], [0, 1]) and len(tiles) == 1 and tiles[0] > 0 else 0


def gemm_form(root, iterator_types: str):
    """("nk" | "kn" | "", multiplicand type, rhs batch loops) for a root op: is it
    C[b.., m, n] += A[b.., m, k] * B[b'.., n|k, k|n] (b' some of the batch loops b, in order, k the one
    reduction loop, innermost), with a mul-add body? The multiplicand type is "f32" when every operand
    is f32, "bf16" or "f16" when A and B are of that type, extended to f32 in the body (a mixed-precision
    GEMM: C is f32), else ""."""
    n_loops = len(iterator_types)
    if root.operation.name != "linalg.generic" or n_loops < 3 or iterator_types != "p" * (n_loops - 1) + "r":
        return "", "", 0
    if len(root.operation.operands) != 3:
        return "", "", 0
    maps = []
    for a in ir.ArrayAttr(root.attributes["indexing_maps"]):
        amap = ir.AffineMapAttr(a).value
        dims = []
        for e in amap.results:
            if not isinstance(e.maybe_downcast(), ir.AffineDimExpr):
                return "", "", 0
            dims.append(e.maybe_downcast().position)
        maps.append(dims)
    lhs, rhs, out = maps
    k, n, m = n_loops - 1, n_loops - 2, n_loops - 3
    batch = list(range(m))
    if out != batch + [m, n] or lhs != batch + [m, k]:
        return "", "", 0
    if rhs[-2:] == [n, k]:
        form = "nk"
    elif rhs[-2:] == [k, n]:
        form = "kn"
    else:
        return "", "", 0
    rhs_batch = rhs[:-2]
    if rhs_batch != sorted(rhs_batch) or not set(rhs_batch) <= set(batch):
        return "", "", 0  # the rhs's batch loops: some of the output's, in order (GQA skips one)
    multiplicands = _mul_add_multiplicands(root)
    return (form, multiplicands, len(rhs) - 2) if multiplicands else ("", "", 0)


def _mul_add_multiplicands(root) -> str:
    """"f32" for a body mulf(a, b), addf(c, .) on f32 operands; "bf16"/"f16" for one that first extends
    A's and B's elements (both of that type) to f32, into an f32 C; else ""."""
    body = root.regions[0].blocks[0]
    ops = list(body.operations)
    names = [o.operation.name for o in ops]
    if names == ["arith.mulf", "arith.addf", "linalg.yield"]:
        return "f32" if all_f32(root) else ""
    if names != ["arith.extf", "arith.extf", "arith.mulf", "arith.addf", "linalg.yield"]:
        return ""
    types = {str(ir.ShapedType(v.type).element_type) for v in root.operation.operands[:2]}
    args = {ir.BlockArgument(o.operands[0]).arg_number for o in ops[:2] if isinstance(o.operands[0].owner, ir.Block)}
    if (len(types) != 1 or types - {"bf16", "f16"} or args != {0, 1}
            or str(ir.ShapedType(root.operation.operands[2].type).element_type) != "f32"
            or not all(any(v == e.result for v in ops[2].operands) for e in ops[:2])):
        return ""
    return types.pop()


def all_f32(root) -> bool:
    """Is every operand of the root op an f32 tensor?"""
    return all(isinstance(v.type, ir.ShapedType) and isinstance(ir.ShapedType(v.type).element_type, ir.F32Type)
               for v in root.operation.operands)


def default_schedule(kernel: Kernel, target_workgroups: int = 64) -> Schedule:
    """The packed GEMM schedule for f32 GEMM-shaped contractions with more than a few rows; else a
    grid of about `target_workgroups` workgroups over the outermost parallel loops."""
    if kernel.kernel_class == "contraction" and kernel.gemm_rhs and kernel.f32:
        m_extent = kernel.loop_ranges[-3]
        if m_extent < 0 or m_extent >= 16:
            return packed_gemm_schedule(kernel)
        if is_matvec(kernel):
            return matvec_schedule(kernel)
    if is_dequantized_matvec(kernel):
        return dequantized_matvec_schedule(kernel)
    if kernel.kernel_class == "attention" and kernel.tile_shape:
        return flash_attention_schedule(kernel)
    if is_row_reduction(kernel):
        return row_reduction_schedule(kernel, target_workgroups)
    return grid_schedule(kernel, target_workgroups)


def is_row_reduction(kernel: Kernel) -> bool:
    """An f32 reduction over one innermost loop of static extent, a multiple of 16, past parallel
    loops (RMSNorm's and LayerNorm's row sums, mean pooling). As a plain loop nest it is scalar, its
    accumulator stored to memory after every element."""
    its, ranges = kernel.iterator_types, kernel.loop_ranges
    return (kernel.kernel_class == "reduction" and kernel.f32 and not kernel.quantized and kernel.results == 1
            and len(its) == len(ranges) >= 2 and its == "p" * (len(its) - 1) + "r"
            and all(e > 0 for e in ranges) and ranges[-1] >= 64 and ranges[-1] % 16 == 0)


def row_reduction_schedule(kernel: Kernel, target_workgroups: int = 64) -> Schedule:
    """The grid's workgroups; in each, one row at a time reduced into `vector_width` partial sums
    (vector registers), summed horizontally once per row. See `_row_reduction_lines`."""
    return dataclasses.replace(grid_schedule(kernel, target_workgroups), kind="row_reduction")


def flash_attention_schedule(kernel: Kernel, accumulators: int = 16) -> Schedule:
    """Register tiles of about `accumulators` vector registers for both products of a flash tile:
    keys x ceil(rows / 16) for the scores, rows x ceil(head_dim / 16) for the output (each a divisor
    of its dimension, so every register tile is full)."""
    rows, keys, head_dim = kernel.tile_shape

    def within(extent, vectors):
        limit = max(1, accumulators // max(1, math.ceil(vectors / 16)))
        return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)

    return Schedule((), kind="flash_attention", register_tile=(within(keys, rows), within(rows, head_dim)))


def packed_gemm_schedule(kernel: Kernel, max_k_tile: int = 256) -> Schedule:
    """AVX-512 f32: 8x32 register tile (16 zmm accumulators), K in <=256 steps, workgroups of up to
    128x256 (see `gemm_workgroups`).

    The micro-kernel must see static sizes, so the K step divides K (then the unroll divides the
    step); when K is dynamic or has no convenient divisor, the unroll is 1 (a unit step is static)."""
    mr, nr = 8, 32
    k = kernel.loop_ranges[-1]
    kc, ku = max_k_tile, 1
    if k > 0:
        for u in (4, 2):
            if k % u == 0:
                kc_u = max((d for d in range(u, min(k, max_k_tile) + 1, u) if k % d == 0), default=0)
                if kc_u >= min(k, 64):
                    kc, ku = kc_u, u
                    break
        else:
            kc = k if k <= max_k_tile else max_k_tile
    return Schedule(gemm_workgroups(kernel), kind="packed_gemm", register_tile=(mr, nr), k_tile=kc, k_unroll=ku)


def gemm_workgroups(kernel: Kernel, min_workgroups: int = 8) -> tuple:
    """(mc, nc): 128x256 tiles of C, halved (N first, then M; whole register tiles) until there are
    `min_workgroups` of them, so a prefill-sized GEMM (M = 128, N = 192..1536) keeps every thread busy
    instead of leaving one or two workgroups to a single thread; then an even number of them."""
    m, n = kernel.loop_ranges[-3:-1]
    batch = math.prod(e for e in kernel.loop_ranges[:-3] if e > 0)
    mc, nc = 128, 256
    if m <= 0 or n <= 0:
        return mc, nc

    def count():
        return batch * math.ceil(m / mc) * math.ceil(n / nc)

    while count() < min_workgroups and nc > 64:
        nc //= 2
    while count() < min_workgroups and mc > 32:
        mc //= 2
    if count() % 2 and count() > 1 and nc > 32:
        nc //= 2  # an odd count leaves a thread of two idle while the last workgroup runs
    return mc, nc


def is_matvec(kernel: Kernel) -> bool:
    """Decode-shaped f32 x[b.., m, K]·W[N, K]ᵀ: a few rows (static m < 16), static N and K, and a weight
    without batch dims, so each output row reads one contiguous row of W."""
    if not (kernel.kernel_class == "contraction" and kernel.gemm_rhs == "nk" and kernel.f32):
        return False
    m, n, k = kernel.loop_ranges[-3:]
    return kernel.rhs_batch == 0 and 0 < m < 16 and n > 0 and k > 0


def matvec_schedule(kernel: Kernel, rows: int = 8, lanes: int = 16, target_workgroups: int = 64) -> Schedule:
    """Bandwidth-bound x·Wᵀ with few rows (see `Schedule`, kind "matvec"): `rows` rows of W per register
    tile, each with `lanes` f32 partial sums along K; about `target_workgroups` workgroups over N."""
    m, n = kernel.loop_ranges[-3:-1]
    rows = max(1, min(rows, n))
    # Rows of x per register tile: the largest divisor of m that keeps mr x rows x lanes/16
    # accumulators within 16 of the 32 vector registers (each step loads `rows` vectors of W per
    # lane group, and reuses each for mr rows of x).
    budget = max(1, 16 // (rows * max(1, lanes // 16)))
    mr = max(d for d in range(1, max(1, min(m, budget)) + 1) if m % d == 0) if m > 0 else 1
    blocks = n // rows
    nc = rows * max(1, math.ceil(blocks / target_workgroups))
    return Schedule((nc,), kind="matvec", register_tile=(mr, rows), k_tile=lanes)


def is_dequantized_matvec(kernel: Kernel) -> bool:
    """A decode-step linear over block-quantized weights (transformer.dequantize fused into the
    linear), static extents, reducing 16 values at a time: loops [b.., n, block, j] (4-bit
    formats, both nibbles per step) or [b.., n, block, half, j] (q8_0)."""
    r, kinds = kernel.loop_ranges, kernel.iterator_types
    if not (kernel.quantized and kernel.kernel_class == "reduction" and min(r, default=0) > 0 and r[-1] == 16):
        return False
    return (len(r) >= 3 and kinds.endswith("prr")) or (len(r) >= 4 and kinds.endswith("prrr") and r[-2] == 2)


def dequantized_matvec_schedule(kernel: Kernel, rows: int = 1, target_workgroups: int = 64) -> Schedule:
    """`rows` rows of quantized W per register tile (a divisor of N), each with 16 f32 partial sums,
    about `target_workgroups` workgroups over N (see `_dequantized_matvec_lines`)."""
    n = kernel.loop_ranges[-1 - reduction_loops(kernel)]
    rows = max(d for d in range(1, min(rows, n) + 1) if n % d == 0)
    blocks = n // rows
    per_workgroup = max(1, math.ceil(blocks / target_workgroups))
    while blocks % per_workgroup:
        per_workgroup += 1
    return Schedule((rows * per_workgroup,), kind="dequantized_matvec", register_tile=(1, rows), k_tile=16)


def candidates(kernel: Kernel) -> list:
    """Schedules `kiln tune` tries for `kernel`, the default first."""
    default = default_schedule(kernel)
    found = [default]
    if default.kind == "packed_gemm":
        for mc, nc in ((64, 256), (128, 128), (256, 256), (64, 512), (32, 128), (64, 128), (64, 64), (32, 256)):
            found.append(dataclasses.replace(default, workgroup_tiles=(mc, nc)))
        for kc in (128, 512):
            alt = packed_gemm_schedule(kernel, max_k_tile=kc)
            found.append(dataclasses.replace(alt, workgroup_tiles=default.workgroup_tiles))
    elif default.kind == "matvec":
        for rows, lanes, target in ((8, 16, 16), (8, 16, 256), (4, 32, 64), (4, 16, 64), (8, 32, 64)):
            found.append(matvec_schedule(kernel, rows, lanes, target))
    elif default.kind == "dequantized_matvec":
        for rows, target in ((8, 16), (8, 256), (4, 64), (16, 64), (2, 64)):
            found.append(dequantized_matvec_schedule(kernel, rows, target))
    elif default.kind == "flash_attention":
        for accumulators in (8, 12, 24):
            found.append(flash_attention_schedule(kernel, accumulators))
    elif default.kind == "row_reduction":
        for target in (8, 16, 32, 128, 256):
            found.append(row_reduction_schedule(kernel, target))
    else:
        for target in (8, 16, 32, 128, 256):
            found.append(grid_schedule(kernel, target))
    unique = []
    for sched in found:
        if sched not in unique:
            unique.append(sched)
    return unique


def schedule_from_json(text: str) -> Schedule:
    d = json.loads(text) if isinstance(text, str) else dict(text)
    for key in ("workgroup_tiles", "register_tile"):
        if key in d:
            d[key] = tuple(d[key])
    return Schedule(**d)


def choose(kernel: Kernel, func, cache, cpu: str) -> tuple:
    """(schedule, source) for a kernel: a `kiln.schedule` attribute on its function (set by the tuner),
    else the tuning cache's winner for this kernel on this CPU, else `default_schedule`."""
    if "kiln.schedule" in func.attributes:
        return schedule_from_json(ir.StringAttr(func.attributes["kiln.schedule"]).value), "attribute"
    if cache is not None:
        from ..tuning import kernel_key

        arg_types = list(ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value).inputs)
        entry = cache.get(kernel_key(kernel, arg_types, cpu))
        if entry is not None:
            return schedule_from_json(entry["schedule"]), "tuned"
    return default_schedule(kernel), "default"


# Kernels with fewer loop iterations than this run on the calling thread: a parallel region costs
# more (fork, barrier) than it saves. A decode step is mostly such kernels (norms, RoPE, head
# transposes of one token), hundreds of them per token.
SERIAL_WORK = 16384
_DYNAMIC_EXTENT_GUESS = 256


def grid_schedule(kernel: Kernel, target_workgroups: int = 64) -> Schedule:
    """Tiles the outermost parallel loops so there are about `target_workgroups` workgroups; small
    kernels (fewer than SERIAL_WORK iterations) are not tiled and run serially."""
    tiles = [0] * len(kernel.loop_ranges)
    work = math.prod(e if e >= 0 else _DYNAMIC_EXTENT_GUESS for e in kernel.loop_ranges)
    if work < SERIAL_WORK:
        return Schedule(tuple(tiles))
    remaining = target_workgroups
    for i, (extent, kind) in enumerate(zip(kernel.loop_ranges, kernel.iterator_types)):
        if kind != "p" or extent < 0 or remaining <= 1:
            break
        if extent <= remaining:
            tiles[i] = 1
            remaining = math.ceil(remaining / extent)
        else:
            tiles[i] = math.ceil(extent / remaining)
            remaining = 1
    return Schedule(tuple(tiles))


def transform_script(plan: list) -> str:
    """The transform module applying `plan`, a list of (Kernel, Schedule)."""
    any_op = "!transform.any_op"
    lines = [
        "module attributes {transform.with_named_sequence} {",
        f"  transform.named_sequence @__transform_main(%root: {any_op} {{transform.readonly}}) {{",
    ]
    for i, (kernel, schedule) in enumerate(plan):
        if kernel.packed_rhs and schedule.kind != "packed_gemm":
            lines += _unpack_weight_lines(i, kernel)
        if schedule.kind == "packed_gemm":
            lines += _packed_gemm_lines(i, kernel, schedule)
            continue
        if schedule.kind == "matvec":
            lines += _matvec_lines(i, kernel, schedule)
            continue
        if schedule.kind == "dequantized_matvec":
            lines += _dequantized_matvec_lines(i, kernel, schedule)
            continue
        if schedule.kind == "flash_attention":
            lines += _flash_attention_lines(i, kernel, schedule)
            continue
        if schedule.kind == "row_reduction":
            lines += _row_reduction_lines(i, kernel, schedule)
            continue
        if any(schedule.workgroup_tiles):
            lines += _grid_lines(i, kernel, schedule)[0]
    lines += ["    transform.yield", "  }", "}"]
    return "\n".join(lines)


def _grid_lines(i: int, kernel: Kernel, s: Schedule) -> tuple:
    """(transform IR, handle of the root) for the workgroup grid of kernel number `i`: its root tiled
    by `s.workgroup_tiles` into an scf.forall (if any is nonzero), the fill that initializes it fused
    into each workgroup."""
    any_op = "!transform.any_op"
    f = f"%f{i}"
    lines = [
        f'    {f} = transform.structured.match ops{{["func.func"]}} '
        f'attributes{{sym_name = "{kernel.name}"}} in %root : ({any_op}) -> {any_op}',
        f"    %r{i} = transform.structured.match attributes{{kiln.root}} in {f} : ({any_op}) -> {any_op}",
    ]
    if not any(s.workgroup_tiles):
        return lines, f"%r{i}"
    lines.append(f"    %t{i}, %wg{i} = transform.structured.tile_using_forall %r{i} tile_sizes "
                 f"[{', '.join(map(str, s.workgroup_tiles))}] : ({any_op}) -> ({any_op}, {any_op})")
    if kernel.has_init_fill:
        lines += [
            f'    %fill{i} = transform.structured.match ops{{["linalg.fill"]}} in {f} : ({any_op}) -> {any_op}',
            f"    %fused{i}, %wg{i}b = transform.structured.fuse_into_containing_op %fill{i} into %wg{i} "
            f": ({any_op}, {any_op}) -> ({any_op}, {any_op})",
        ]
    return lines, f"%t{i}"


def _unpack_weight_lines(i: int, kernel: Kernel) -> list:
    """A weight stored as panels, read by a kernel whose schedule does not pack it (a decode-shaped
    linear): its unpack becomes a transpose and reshape, an explicit copy in every call."""
    any_op = "!transform.any_op"
    return [
        f'    %fu{i} = transform.structured.match ops{{["func.func"]}} '
        f'attributes{{sym_name = "{kernel.name}"}} in %root : ({any_op}) -> {any_op}',
        f'    %wu{i} = transform.structured.match ops{{["linalg.unpack"]}} in %fu{i} '
        f': ({any_op}) -> !transform.op<"linalg.unpack">',
        f"    %wu{i}a, %wu{i}b, %wu{i}c, %wu{i}d = transform.structured.lower_unpack %wu{i} : "
        f'(!transform.op<"linalg.unpack">) -> (!transform.op<"tensor.empty">, '
        f'!transform.op<"linalg.transpose">, !transform.op<"tensor.collapse_shape">, '
        f'!transform.op<"tensor.extract_slice">)',
    ]


def _packed_gemm_lines(i: int, kernel: Kernel, s: Schedule) -> list:
    """Transform IR for a `packed_gemm` schedule (see `Schedule`) of kernel number `i`."""
    any_op = "!transform.any_op"
    nb = len(kernel.loop_ranges) - 3  # batch loops
    mr, nr = s.register_tile
    mc, nc = s.workgroup_tiles
    z = [0] * nb

    def lst(xs):
        return "[" + ", ".join(map(str, xs)) + "]"

    def tile_for(res, target, sizes, interchange=()):
        loops = sum(1 for x in sizes if x)
        handles = ", ".join([any_op] * (loops + 1))
        order = f" interchange = {lst(interchange)}" if interchange else ""
        return (f"    {res}, %l{res[1:]}:{loops} = transform.structured.tile_using_for {target} "
                f"tile_sizes {lst(sizes)}{order} : ({any_op}) -> ({handles})")

    f = f"%f{i}"
    lines = [
        f'    {f} = transform.structured.match ops{{["func.func"]}} '
        f'attributes{{sym_name = "{kernel.name}"}} in %root : ({any_op}) -> {any_op}',
        f"    %r{i} = transform.structured.match attributes{{kiln.root}} in {f} : ({any_op}) -> {any_op}",
        # Data tiling: loops [b.., M, N, K] -> [b.., M/mr, N/nr, K, mr, nr]; operands padded to panels.
        f"    %p{i} = transform.structured.pack %r{i} packed_sizes = {lst(z + [mr, nr, 0])} "
        f": ({any_op}) -> {any_op}",
    ]
    packed = f"%p{i}"
    m, n, k = kernel.loop_ranges[-3:]
    # Packs that need no padding run as vector code (below): A[b.., M, K] -> [b.., M/mr, K, mr] by
    # transposes of [mr, 16] blocks; a weight W[N, K] (a linear's, no batch dims) -> [N/nr, K, nr] by
    # transposes of 16x16 register blocks (AVX-512 shuffles); B[.., K, N] -> [.., N/nr, K, nr] by row
    # copies. Other packs go element by element. A weight stored in [N/nr, K, nr] panels
    # (kernel.packed_rhs == nr) needs no packing at all: the pack of its unpack folds away
    # (canonicalization below).
    vector_packs = []  # (linalg.pack handle, its batch dims, vector tile of its transpose, lowering)
    if m > 0 and k > 0 and m % mr == 0 and k % 16 == 0:
        lines.append(f"    %apk{i} = transform.get_producer_of_operand %p{i}[0] : ({any_op}) -> {any_op}")
        vector_packs.append((f"%apk{i}", nb, [1] * nb + [1, 16, mr], "shuffle_1d"))
    if (kernel.gemm_rhs == "nk" and kernel.rhs_batch == 0 and n > 0 and k > 0 and n % nr == 0
            and nr % 16 == 0 and k % 16 == 0 and kernel.packed_rhs != nr):
        lines.append(f"    %bpk{i} = transform.get_producer_of_operand %p{i}[1] : ({any_op}) -> {any_op}")
        vector_packs.append((f"%bpk{i}", 0, [1, 16, 16], "shuffle_16x16"))
    elif kernel.gemm_rhs == "kn" and n > 0 and k > 0 and n % nr == 0:
        vector_packs.append((f"%bpt{i}", kernel.rhs_batch, [1] * kernel.rhs_batch + [1, math.gcd(k, 8), nr],
                             "eltwise"))
    if kernel.gemm_rhs == "kn":
        # B[.., K, N] packs to [.., K, N/nr, nr]: make it [.., N/nr, K, nr] so a panel is contiguous.
        rb = kernel.rhs_batch
        lines += [
            f"    %bp{i} = transform.get_producer_of_operand %p{i}[1] : ({any_op}) -> {any_op}",
            f"    %pt{i}, %bpt{i}, %bu{i} = transform.structured.pack_transpose %bp{i} with_compute_op(%p{i}) "
            f"outer_perm = {lst(list(range(rb)) + [rb + 1, rb])} "
            f": ({any_op}, {any_op}) -> ({any_op}, {any_op}, {any_op})",
        ]
        packed = f"%pt{i}"
    lines += [
        f"    transform.apply_patterns to {f} {{",
        "      transform.apply_patterns.canonicalization",
        f"    }} : {any_op}",
        # Loops -> [b.., M/mr, N/nr, mr, nr, K]: the reduction innermost, as outer products want it.
        f"    %pi{i} = transform.structured.interchange {packed} iterator_interchange = "
        f"{lst(list(range(nb)) + [nb, nb + 1, nb + 3, nb + 4, nb + 2])} : ({any_op}) -> {any_op}",
    ]
    whole_c = m > 0 and n > 0 and m % mr == 0 and n % nr == 0  # C is whole register tiles
    whole_tiles = (whole_c and m % mc == 0 and n % nc == 0 and mc % mr == 0 and nc % nr == 0
                   and kernel.packed_rhs in (0, nr))  # (C's unpack is then the kernel's only one)
    if whole_tiles:
        # Each workgroup computes its tile of the packed C and copies it into the result while it
        # is in cache: the unpack's workgroups are the GEMM's (one parallel region, not two).
        lines += [
            f'    %up{i} = transform.structured.match ops{{["linalg.unpack"]}} in {f} : ({any_op}) -> {any_op}',
            f"    %upw{i}, %wg{i} = transform.structured.tile_using_forall %up{i} tile_sizes "
            f"{lst([1] * nb + [mc, nc])} : ({any_op}) -> ({any_op}, {any_op})",
            f"    %t{i}, %wg{i}a = transform.structured.fuse_into_containing_op %pi{i} into %wg{i} "
            f": ({any_op}, {any_op}) -> ({any_op}, {any_op})",
        ]
    else:
        lines.append(
            f"    %t{i}, %wg{i} = transform.structured.tile_using_forall %pi{i} tile_sizes "
            f"{lst([1] * nb + [max(1, mc // mr), max(1, nc // nr), 0, 0, 0])} : ({any_op}) -> ({any_op}, {any_op})")
    if kernel.has_init_fill:
        lines += [
            f'    %fill{i} = transform.structured.match ops{{["linalg.fill"]}} in {f} : ({any_op}) -> {any_op}',
            f"    %fused{i}, %wg{i}b = transform.structured.fuse_into_containing_op %fill{i} into "
            f"{'%wg' + str(i) + ('a' if whole_tiles else '')} : ({any_op}, {any_op}) -> ({any_op}, {any_op})",
        ]
    lines += [
        tile_for(f"%k{i}", f"%t{i}", z + [0, 0, 0, 0, s.k_tile]),
        f'    transform.annotate %lk{i} "kiln.gemm_k_block_loop" : {any_op}',
        # Per K block: each B panel of the workgroup (outer), then each A row tile (inner), so a
        # panel is read from memory once and from L1 by the other row tiles (BLIS's loop order);
        # the loops are tagged for the panel prefetch (pipelines/panel_prefetch.py).
        tile_for(f"%u{i}", f"%k{i}", z + [1, 1, 0, 0, s.k_unroll],
                 list(range(nb)) + [nb + 1, nb] + list(range(nb + 2, nb + 5))),
        f'    transform.annotate %lu{i}#0 "kiln.gemm_panel_loop" : {any_op}',
        f'    transform.annotate %lu{i}#1 "kiln.gemm_row_loop" : {any_op}',
        f'    transform.annotate %lu{i}#2 "kiln.gemm_k_loop" : {any_op}',
        # The micro-kernel: C[mr, nr] += A[ku, mr]ᵀ · B[ku, nr] on unit-dim-free slices.
        f"    transform.apply_patterns to {f} {{",
        "      transform.apply_patterns.linalg.fold_unit_extent_dims_via_slices",
        "      transform.apply_patterns.canonicalization",
        f"    }} : {any_op}",
        f'    %g{i} = transform.structured.match ops{{["linalg.generic"]}} in {f} : ({any_op}) -> {any_op}',
        f"    transform.structured.vectorize %g{i} : {any_op}",
        f"    transform.apply_patterns to {f} {{",
        "      transform.apply_patterns.vector.transfer_permutation_patterns",
        f"    }} : {any_op}",
        f"    transform.apply_patterns to {f} {{",
        "      transform.apply_patterns.vector.reduction_to_contract",
        f"    }} : {any_op}",
        f"    transform.apply_patterns to {f} {{",
        '      transform.apply_patterns.vector.lower_contraction lowering_strategy = "outerproduct"',
        "      transform.apply_patterns.vector.lower_outerproduct",
        "      transform.apply_patterns.vector.transfer_permutation_patterns",
        "      transform.apply_patterns.vector.lower_transfer max_transfer_rank = 1",
        "      transform.apply_patterns.canonicalization",
        f"    }} : {any_op}",
    ]
    unit_batch = all(e == 1 for e in kernel.loop_ranges[:nb])
    for j, (handle, batch_dims, vector_tile, strategy) in enumerate(vector_packs):
        # Workgroups over the panels (past batch dims of one, which would leave one workgroup).
        threads = [0] * batch_dims + [16] if unit_batch else [16]
        lines += [
            f'    %vpc{i}_{j} = transform.cast {handle} : {any_op} to !transform.op<"linalg.pack">',
            f"    %vl{i}_{j}a, %vl{i}_{j}b, %vl{i}_{j}c = transform.structured.lower_pack %vpc{i}_{j} : "
            f'(!transform.op<"linalg.pack">) -> (!transform.op<"tensor.pad">, '
            f'!transform.op<"tensor.expand_shape">, !transform.op<"linalg.transpose">)',
            f"    %vpt{i}_{j}, %vpw{i}_{j} = transform.structured.tile_using_forall %vl{i}_{j}c "
            f'num_threads {lst(threads)} : (!transform.op<"linalg.transpose">) -> ({any_op}, {any_op})',
            tile_for(f"%vpv{i}_{j}", f"%vpt{i}_{j}", vector_tile),
            f"    transform.structured.vectorize %vpv{i}_{j} : {any_op}",
            f"    transform.apply_patterns to {f} {{",
            f'      transform.apply_patterns.vector.lower_transpose lowering_strategy = "{strategy}"',
            "      transform.apply_patterns.vector.lower_shape_cast",
            "      transform.apply_patterns.vector.transfer_permutation_patterns",
            "      transform.apply_patterns.vector.lower_transfer max_transfer_rank = 1",
            f"    }} : {any_op}",
        ]
    if whole_tiles:
        # (matched again: the rewrites since may have replaced the op the fusion handle tracked)
        lines.append(f'    %upt{i} = transform.structured.match ops{{["linalg.unpack"]}} in {f} : ({any_op}) -> {any_op}')
    elif whole_c:
        # Each [mr, nr] tile is copied from the packed C straight into the result, as vector rows
        # (no transposed copy of C, no copy of that into the result), in workgroups of their own:
        # whole register tiles that divide C, so every tile is static.
        def dividing(extent, limit, unit):
            return max(d for d in range(unit, max(limit, unit) + 1, unit) if extent % d == 0)

        lines += [
            f'    %up{i} = transform.structured.match ops{{["linalg.unpack"]}} in {f} : ({any_op}) -> {any_op}',
            f"    %upt{i}, %upw{i} = transform.structured.tile_using_forall %up{i} tile_sizes "
            f"{lst([1] * nb + [dividing(m, mc, mr), dividing(n, nc, nr)])} : ({any_op}) -> ({any_op}, {any_op})",
        ]
    if whole_c:
        lines += [
            tile_for(f"%upv{i}", f"%upt{i}", [1] * nb + [mr, nr]),
            f"    transform.structured.vectorize %upv{i} : {any_op}",
        ]
    else:
        lines += [
            f'    %up{i} = transform.structured.match ops{{["linalg.unpack"]}} in {f} : ({any_op}) -> !transform.op<"linalg.unpack">',
            f"    %up{i}a, %up{i}b, %up{i}c, %up{i}d = transform.structured.lower_unpack %up{i} : "
            f'(!transform.op<"linalg.unpack">) -> (!transform.op<"tensor.empty">, '
            f'!transform.op<"linalg.transpose">, !transform.op<"tensor.collapse_shape">, '
            f'!transform.op<"tensor.extract_slice">)',
        ]
    lines += [
        # Packs (and unpacks of partial tiles) -> pad + reshape + transpose; the transposes run as
        # parallel workgroups.
        f'    %pk{i} = transform.structured.match ops{{["linalg.pack"]}} in {f} : ({any_op}) -> !transform.op<"linalg.pack">',
        f"    %pk{i}a, %pk{i}b, %pk{i}c = transform.structured.lower_pack %pk{i} : "
        f'(!transform.op<"linalg.pack">) -> (!transform.op<"tensor.pad">, '
        f'!transform.op<"tensor.expand_shape">, !transform.op<"linalg.transpose">)',
        f'    %tr{i} = transform.structured.match ops{{["linalg.transpose"]}} in {f} : ({any_op}) -> {any_op}',
        f"    %trt{i}, %trw{i} = transform.structured.tile_using_forall %tr{i} num_threads [16] "
        f": ({any_op}) -> ({any_op}, {any_op})",
    ]
    return lines



def _matvec_lines(i: int, kernel: Kernel, s: Schedule) -> list:
    """Transform IR for a `matvec` schedule (see `Schedule`) of kernel number `i`, loops [b.., m, n, k]
    with static n and k:

      * N is split at N' = N - N % nr; rows [0, N') run in workgroups of nc rows (scf.forall, nc a
        multiple of nr dividing N'), the N % nr leftover rows after them on the calling thread.
      * Within a workgroup: a loop over blocks of nr rows of W (outermost, so a block of W is reused
        from cache by every row of x), then over b.. one at a time and m, mr rows at a time (mr must
        divide m, else 1).
      * K is split at K' = K - K % kv. K' is split-reduced into kv lanes of partial sums
        (k = r * kv + lane, r a reduction loop of K' / kv steps): each step is nr contiguous
        kv-wide loads of W, mr of x, and mr x nr x kv/vw vector FMAs (vector.contract with a unit
        reduction -> parallel arith -> vector.fma) into accumulators kept in registers; the lanes
        are summed horizontally once per tile (a shuffle tree: the llvm stage reassociates vector
        reductions), then the K % kv leftover columns are added.
    """
    any_op = "!transform.any_op"
    nb = len(kernel.loop_ranges) - 3
    n, k = kernel.loop_ranges[-2:]
    m = kernel.loop_ranges[-3]
    mr = s.register_tile[0] if m > 0 and m % s.register_tile[0] == 0 else 1
    nr = max(1, min(s.register_tile[1], n))
    kv = s.k_tile
    n_main = n - n % nr
    k_main = k - k % kv
    nc = max(nr, min(s.workgroup_tiles[0] // nr * nr, n_main)) if n_main else nr
    while n_main and n_main % nc:
        nc -= nr

    def lst(xs):
        return "[" + ", ".join(map(str, xs)) + "]"

    f = f"%f{i}"
    lines = [
        f'    {f} = transform.structured.match ops{{["func.func"]}} '
        f'attributes{{sym_name = "{kernel.name}"}} in %root : ({any_op}) -> {any_op}',
        f"    %r{i} = transform.structured.match attributes{{kiln.root}} in {f} : ({any_op}) -> {any_op}",
    ]
    blocks = []  # (handle, rows of W per register tile)
    if 0 < n_main < n:
        lines += [
            f"    %ns{i} = transform.structured.split %r{i} after {n_main} {{dimension = {nb + 1}}} : {any_op}",
            f"    %nm{i}, %nt{i} = transform.split_handle %ns{i} : ({any_op}) -> ({any_op}, {any_op})",
        ]
        main, tail = f"%nm{i}", f"%nt{i}"
    else:
        main, tail = (f"%r{i}", None) if n_main else (None, f"%r{i}")
    if main is not None:
        lines.append(
            f"    %w{i}, %wg{i} = transform.structured.tile_using_forall {main} tile_sizes "
            f"{lst([0] * nb + [0, nc, 0])} : ({any_op}) -> ({any_op}, {any_op})"
        )
        blocks.append((f"%w{i}", nr))
    if tail is not None:
        blocks.append((tail, n - n_main))
    to_vectorize = []
    for j, (h, rows) in enumerate(blocks):
        p = f"{i}_{j}"
        loops = nb + 2
        handles = ", ".join([any_op] * (loops + 1))
        # Loop order: n blocks, then b.., m (interchange is over the tiled loops' dims).
        lines.append(
            f"    %b{p}, %bl{p}:{loops} = transform.structured.tile_using_for {h} tile_sizes "
            f"{lst([1] * nb + [mr, rows, 0])} interchange = {lst([nb + 1] + list(range(nb + 1)) + [nb + 2])} "
            f": ({any_op}) -> ({handles})"
        )
        kmain, ktail = f"%b{p}", None
        if 0 < k_main < k:
            lines += [
                f"    %ks{p} = transform.structured.split %b{p} after {k_main} {{dimension = {nb + 2}}} : {any_op}",
                f"    %km{p}, %kt{p} = transform.split_handle %ks{p} : ({any_op}) -> ({any_op}, {any_op})",
            ]
            kmain, ktail = f"%km{p}", f"%kt{p}"
        elif k_main == 0:
            kmain, ktail = None, f"%b{p}"
        if kmain is not None:
            lines += [
                f"    %si{p}, %sf{p}, %sp{p}, %sc{p} = transform.structured.split_reduction {kmain} "
                f"{{split_factor = {kv}, insert_split_dimension = {nb + 2}, inner_parallel}} "
                f": ({any_op}) -> ({any_op}, {any_op}, {any_op}, {any_op})",
                # dims of the split op: [b.., m, n, r, lane]; one step of r per iteration.
                f"    %st{p}, %sl{p} = transform.structured.tile_using_for %sp{p} tile_sizes "
                f"{lst([0] * nb + [0, 0, 1, 0])} : ({any_op}) -> ({any_op}, {any_op})",
            ]
            to_vectorize += [f"%sf{p}", f"%st{p}", f"%sc{p}"]
        if ktail is not None:
            to_vectorize.append(ktail)
    for j, h in enumerate(to_vectorize):
        lines.append(f"    transform.structured.vectorize {h} : {any_op}")
    lines += [
        f"    transform.apply_patterns to {f} {{",
        "      transform.apply_patterns.vector.reduction_to_contract",
        "      transform.apply_patterns.vector.transfer_permutation_patterns",
        f"    }} : {any_op}",
        f"    transform.apply_patterns to {f} {{",
        '      transform.apply_patterns.vector.lower_contraction lowering_strategy = "parallelarith"',
        '      transform.apply_patterns.vector.lower_multi_reduction lowering_strategy = "innerreduction"',
        "      transform.apply_patterns.vector.transfer_permutation_patterns",
        "      transform.apply_patterns.vector.lower_transfer max_transfer_rank = 1",
        "      transform.apply_patterns.canonicalization",
        f"    }} : {any_op}",
    ]
    return lines


def reduction_loops(kernel: Kernel) -> int:
    """How many loops the kernel's iterator types end with that are reductions."""
    return len(kernel.iterator_types) - len(kernel.iterator_types.rstrip("r"))


def _dequantized_matvec_lines(i: int, kernel: Kernel, s: Schedule) -> list:
    """Transform IR for a `dequantized_matvec` schedule of kernel number `i`, loops [b.., n, block,
    (half,) j]: workgroups of nc rows of W (scf.forall); in each, nr rows and one row of x at a
    time; the reduction is tiled one block (and half) at a time into 16 f32 partial sums per row
    (tile_reduction_using_for: each step expands 16 bytes to 16 or 2 x 16 f32 weights and
    multiply-adds them with x in vector registers), summed horizontally once per row. More than
    one row per tile gives the vectorizer 2-D broadcasts it lowers poorly: rows = 1."""
    any_op = "!transform.any_op"
    reductions = reduction_loops(kernel)
    nb = len(kernel.loop_ranges) - 1 - reductions
    steps = [1] * (reductions - 1) + [16]
    nc, nr = s.workgroup_tiles[0], s.register_tile[1]

    def lst(xs):
        return "[" + ", ".join(map(str, xs)) + "]"

    f = f"%f{i}"
    return [
        f'    {f} = transform.structured.match ops{{["func.func"]}} '
        f'attributes{{sym_name = "{kernel.name}"}} in %root : ({any_op}) -> {any_op}',
        f"    %r{i} = transform.structured.match attributes{{kiln.root}} in {f} : ({any_op}) -> {any_op}",
        f"    %w{i}, %wg{i} = transform.structured.tile_using_forall %r{i} tile_sizes "
        f"{lst([0] * nb + [nc] + [0] * reductions)} : ({any_op}) -> ({any_op}, {any_op})",
        f"    %b{i}, %bl{i}:{nb + 1} = transform.structured.tile_using_for %w{i} tile_sizes "
        f"{lst([1] * nb + [nr] + [0] * reductions)} : ({any_op}) -> ({', '.join([any_op] * (nb + 2))})",
    ] + _partial_reduction_lines(i, f, f"%b{i}", [0] * nb + [0] + steps)


def _row_reduction_lines(i: int, kernel: Kernel, s: Schedule) -> list:
    """Transform IR for a `row_reduction` schedule of kernel number `i`, loops [p.., r]: the grid's
    workgroups (scf.forall, the initializing fill fused in, as for `grid`), then one row at a time,
    its reduction tiled by `vector_width` (tile_reduction_using_for: a vector of partial results
    updated element-wise along the row, then combined once), all of it vectorized."""
    any_op = "!transform.any_op"
    nb = len(kernel.loop_ranges) - 1
    lines, root = _grid_lines(i, kernel, s)
    return lines + [
        f"    %b{i}, %bl{i}:{nb} = transform.structured.tile_using_for {root} tile_sizes "
        f"[{', '.join(['1'] * nb + ['0'])}] : ({any_op}) -> ({', '.join([any_op] * (nb + 1))})",
    ] + _partial_reduction_lines(i, f"%f{i}", f"%b{i}", [0] * nb + [s.vector_width])


def _partial_reduction_lines(i: int, func: str, op: str, steps: list) -> list:
    """`op`'s reduction tiled by `steps` into a vector of partial results (tile_reduction_using_for:
    the partial results' init, the element-wise update along the reduction, the final combine), all
    three vectorized; the combine lowers to one horizontal reduction per result."""
    any_op = "!transform.any_op"
    return [
        f"    %pf{i}, %pp{i}, %pc{i}, %pl{i} = transform.structured.tile_reduction_using_for {op} "
        f"by tile_sizes = [{', '.join(map(str, steps))}] "
        f": ({any_op}) -> ({any_op}, {any_op}, {any_op}, {any_op})",
        f"    transform.structured.vectorize %pf{i} : {any_op}",
        f"    transform.structured.vectorize %pp{i} : {any_op}",
        f"    transform.structured.vectorize %pc{i} : {any_op}",
        f"    transform.apply_patterns to {func} {{",
        "      transform.apply_patterns.vector.cast_away_vector_leading_one_dim",
        "      transform.apply_patterns.canonicalization",
        f"    }} : {any_op}",
        f"    transform.apply_patterns to {func} {{",
        "      transform.apply_patterns.vector.transfer_permutation_patterns",
        '      transform.apply_patterns.vector.lower_multi_reduction lowering_strategy = "innerreduction"',
        "      transform.apply_patterns.vector.lower_transfer max_transfer_rank = 1",
        "      transform.apply_patterns.canonicalization",
        f"    }} : {any_op}",
    ]


def _flash_attention_lines(i: int, kernel: Kernel, s: Schedule) -> list:
    """Transform IR for a `flash_attention` schedule of kernel number `i` (see `Schedule`): the ops
    of the flash tile body are found by their `kiln.flash` role. Both products are register-tiled
    (scores over keys, the output over query rows) and lowered to outer products of contiguous
    rows; the transposes (Qᵀ once per workgroup, Kᵀ per key tile) in 16x16 blocks by shuffles; the
    row max and sum reduce across vectors (the reduced dimension is the outer one)."""
    any_op = "!transform.any_op"
    rows, keys, head_dim = kernel.tile_shape
    score_keys, out_rows = s.register_tile
    f = f"%f{i}"

    def role(name):
        return (f'    %{name}{i} = transform.structured.match attributes{{kiln.flash = "{name}"}} in {f} '
                f": ({any_op}) -> {any_op}")

    lines = [
        f'    {f} = transform.structured.match ops{{["func.func"]}} '
        f'attributes{{sym_name = "{kernel.name}"}} in %root : ({any_op}) -> {any_op}',
    ]
    for name, extents in (("queries", (head_dim, rows)), ("keys", (head_dim, keys))):
        lines.append(role(name))
        if all(e % 16 == 0 for e in extents):
            lines += [
                f"    %{name}t{i}, %{name}l{i}:2 = transform.structured.tile_using_for %{name}{i} tile_sizes [16, 16] "
                f": ({any_op}) -> ({any_op}, {any_op}, {any_op})",
                f"    transform.structured.vectorize %{name}t{i} : {any_op}",
            ]
        else:
            lines.append(f"    transform.structured.vectorize %{name}{i} : {any_op}")
    for name, tile in (("scores", score_keys), ("pv", out_rows)):
        lines += [
            role(name),
            f"    %{name}t{i}, %{name}l{i} = transform.structured.tile_using_for %{name}{i} tile_sizes [{tile}, 0, 0] "
            f": ({any_op}) -> ({any_op}, {any_op})",
            f"    transform.structured.vectorize %{name}t{i} : {any_op}",
        ]
    for name in ("init", "mask", "row_max", "rescale", "probs", "row_sum", "sum_update", "acc_scale", "normalize"):
        lines += [role(name), f"    transform.structured.vectorize %{name}{i} : {any_op}"]
    lines += [
        f"    transform.apply_patterns to {f} {{",
        "      transform.apply_patterns.vector.transfer_permutation_patterns",
        "      transform.apply_patterns.vector.reduction_to_contract",
        f"    }} : {any_op}",
        f"    transform.apply_patterns to {f} {{",
        '      transform.apply_patterns.vector.lower_contraction lowering_strategy = "outerproduct"',
        "      transform.apply_patterns.vector.lower_outerproduct",
        '      transform.apply_patterns.vector.lower_multi_reduction lowering_strategy = "innerparallel"',
        '      transform.apply_patterns.vector.lower_transpose lowering_strategy = "shuffle_16x16"',
        "      transform.apply_patterns.vector.transfer_permutation_patterns",
        "      transform.apply_patterns.vector.lower_transfer max_transfer_rank = 1",
        "      transform.apply_patterns.canonicalization",
        f"    }} : {any_op}",
    ]
    return lines
