"""The GPU stages both GPU targets share: tiled -> bufferized -> loops, and the host launch list.

    tiled       every kernel's parallel loops are tiled twice in the transform dialect: a grid of
                blocks (`scf.forall` mapped to #gpu.block<x|y|z>) and, inside each block tile, a
                forall of threads (#gpu.thread<x|y>), one output element per thread; the fills that
                initialize a reduction are fused into both, so each thread initializes what it sums.
    bufferized  the CPU target's bufferization (read-only entry arguments, out-params, host arena).
    loops       the foralls become a `gpu.launch` (transform.gpu.map_forall_to_blocks /
                map_nested_forall_to_threads), linalg becomes scf loops inside it, and every launch is
                outlined into a kernel of one `gpu.module` (gpu-kernel-outlining).

The target stages (`cuda.py`, `rocm.py`) lower the gpu.module to nvvm / rocdl and serialize it. The
host side stays as func/memref IR calling `gpu.launch_func`; `launch_plan.py` turns it into a list of
commands the runtime replays (allocate, launch, copy), recorded in the artifact's manifest. Kernels
use the bare-pointer calling convention: every memref argument is one device pointer, so memrefs
crossing the host/kernel boundary must have static shapes.
"""

from __future__ import annotations

import math

from mlir import ir
from mlir.dialects.transform import interpreter

from ..errors import KilnError
from . import (cpu, gpu_cache_update, gpu_flash, gpu_matvec, gpu_mma, gpu_reduction, gpu_scalars, launch_merging,
               schedules)
from .common import run_passes

MAX_THREADS = 256  # threads per block
THREADS_X = 64  # threads along the innermost parallel loop
BLOCK_DIM_ATTR = "kiln.gpu_block_dims"
_AXES = ("x", "y", "z")


def _pow2_tile(extent: int, target: int) -> int:
    """The largest power of two <= target that divides `extent` (whole blocks, no bounds checks);
    `target` itself when that would be tiny (then edge tiles are guarded)."""
    if extent <= target:
        return extent
    t = 1 << int(math.log2(target))
    while t > 1 and extent % t:
        t //= 2
    return t if t >= 8 else target


def gpu_schedule(kernel: schedules.Kernel) -> tuple:
    """(block tile per loop, threads per tiled loop (innermost last), block dims (x, y, z)).

    The innermost parallel loop with more than one iteration goes to threads x, the next one to
    threads y; those two and one more parallel loop (the innermost remaining one) form the block
    grid (x, y, z). Further parallel loops and all reduction loops run sequentially in each thread."""
    ranges, kinds = kernel.loop_ranges, kernel.iterator_types
    if any(r < 0 for r in ranges):
        raise KilnError(f"kernel {kernel.name}: GPU targets need static shapes, its loop ranges are "
                        f"{list(ranges)} (-1 = dynamic)")
    parallel = [i for i, k in enumerate(kinds) if k == "p"]
    wide = [i for i in parallel if ranges[i] > 1]
    tiles = [0] * len(ranges)
    if not wide:
        if not parallel:
            raise KilnError(f"kernel {kernel.name} ({kernel.kernel_class}) has no parallel loop to map to "
                            "GPU blocks; a full reduction to a scalar is not supported on GPU targets yet")
        tiles[parallel[-1]] = 1
        return tiles, [1], (1, 1, 1)
    x = wide[-1]
    tiles[x] = _pow2_tile(ranges[x], THREADS_X)
    thread_loops = [x]
    if len(wide) > 1:
        y = wide[-2]
        tiles[y] = _pow2_tile(ranges[y], max(1, MAX_THREADS // tiles[x]))
        thread_loops.insert(0, y)
        if tiles[x] * tiles[y] > MAX_THREADS:  # a non-dividing fallback overshot: one row of threads
            tiles[y] = 1
        if len(wide) > 2:
            tiles[wide[-3]] = 1
    threads = [tiles[i] for i in thread_loops]
    block = tuple(list(reversed(threads)) + [1] * (3 - len(threads)))
    return tiles, threads, block


REGISTER_ROWS = 4  # rows of a contraction's output per thread (each loaded B element is reused this often)


def contraction_schedule(kernel: schedules.Kernel):
    """A register-tiled schedule for an f32 GEMM-shaped contraction (loops [b.., m, n, k]), or None.

    Each thread computes `rm` rows x 1 column of a block's TM x TN output tile: K is walked `kt`
    elements at a time as a vector contraction (rm x kt of A, kt of B: 16-byte loads where contiguous),
    the rm accumulators stay in registers across the K loop (hoisted out of it), and every element of
    B read is used rm times. Only when all tiles divide their loops (no masked edges): other shapes
    get `gpu_schedule`'s one-output-per-thread kernels. Returns (tiles, threads, block, kt)."""
    if not (kernel.kernel_class == "contraction" and kernel.gemm_rhs and kernel.f32):
        return None
    ranges = kernel.loop_ranges
    if any(r < 0 for r in ranges):
        return None
    nb = len(ranges) - 3
    m, n, k = ranges[nb:]
    kt = next((t for t in (8, 4, 2) if k % t == 0), 0)
    tn = _pow2_tile(n, 32)
    if not kt or n % tn:
        return None
    rm = next(r for r in (REGISTER_ROWS, 2, 1) if m % r == 0)
    tm = _pow2_tile(m, rm * max(1, MAX_THREADS // tn))
    if m % tm or tm % rm:
        return None
    batch = [d for d in range(nb) if ranges[d] > 1]
    if len(batch) + (m > 1) + 1 > 3:
        return None  # more than three block dims
    tiles = [0] * len(ranges)
    for d in batch:
        tiles[d] = 1
    if m > 1:
        tiles[nb] = tm
    tiles[nb + 1] = tn
    threads = ([tm // rm] if m > 1 else []) + [tn]
    block = (tn, tm // rm if m > 1 else 1, 1)
    return tiles, threads, block, kt


def make_linalg(module: ir.Module) -> None:
    """The shared `linalg` stage with f32 attention in flash form, the CPU's (one kernel per
    attention, written for GPUs at the loops stage: gpu_flash.py). Other causal attention with a
    runtime KV offset (f16/bf16, or with a mask) gets an explicit (zero) mask first. Without a mask,
    the decomposed lowering reads only the first offset + q_len keys: a runtime extent, which would
    make the attention kernels' shapes dynamic. With it, the kernels keep the cache's static length
    and future keys are masked by the causal bound (they add exp(-inf) = 0); the softmax·V kernel
    then stops at the position (`skip_masked_iterations`). A decode step's launches are its cost,
    so residual additions after a linear are done in the linear's accumulator
    (kiln-accumulate-residuals), and the elementwise ops that compute a matvec's vector (RMSNorm's
    scaling, SiLU(gate)·up) are fused into it (kiln-fuse-into-matvecs, see gpu_matvec)."""
    _mask_dynamic_causal_attention(module)
    from .common import make_linalg as shared

    shared(module, "transformer-to-linalg{"
           f"flash-kv-tile={cpu.FLASH_KV_TILE} flash-query-rows={cpu.FLASH_QUERY_ROWS}}}")
    read_slices_in_place(module)
    run_passes(module, "func.func(kiln-accumulate-residuals),canonicalize,cse,"
               f"func.func(kiln-fuse-into-matvecs{{max-rows={gpu_matvec.MAX_ROWS}}}),canonicalize,cse", "linalg")


def read_slices_in_place(module: ir.Module) -> None:
    """A linalg.generic input that is a rank-reducing tensor.extract_slice at a static position
    (dropped unit dims at constant offsets, the others whole) is read from the sliced tensor
    instead, through an indexing map with those constants: the halves of x a dequantized linear
    reads (TransformerToLinalg) would otherwise be strided views a kernel boundary copies into
    contiguous buffers, a host copy per row on GPUs."""
    def fold(op):
        if op.name != "linalg.generic":
            return
        maps = list(ir.ArrayAttr(op.attributes["indexing_maps"]))
        n_in = len(maps) - len(op.results)
        for i, v in enumerate(list(op.operands)[:n_in]):
            slice_op = v.owner if isinstance(v, ir.OpResult) else None
            if slice_op is None or slice_op.name != "tensor.extract_slice" or len(slice_op.operands) != 1:
                continue
            source_t, result_t = ir.RankedTensorType(slice_op.operands[0].type), ir.RankedTensorType(v.type)
            offsets, sizes, strides = (list(ir.DenseI64ArrayAttr(slice_op.attributes[f"static_{x}"]))
                                       for x in ("offsets", "sizes", "strides"))
            kept = [d for d in range(source_t.rank) if sizes[d] != 1 or source_t.shape[d] == 1]
            if (set(strides) != {1} or len(kept) != result_t.rank
                    or any(offsets[d] or sizes[d] != source_t.shape[d] for d in kept)):
                continue
            old = ir.AffineMapAttr(maps[i]).value
            results, kept_results = [], iter(old.results)
            for d in range(source_t.rank):
                results.append(next(kept_results) if d in kept else ir.AffineConstantExpr.get(offsets[d]))
            maps[i] = ir.AffineMapAttr.get(ir.AffineMap.get(old.n_dims, old.n_symbols, results))
            op.operands[i] = slice_op.operands[0]
            op.attributes["indexing_maps"] = ir.ArrayAttr.get(maps)

    walk_ops(module.operation, fold)


def _mask_dynamic_causal_attention(module: ir.Module) -> None:
    from mlir.dialects import linalg, tensor

    found = []
    for op in module.body.operations:
        if op.operation.name == "func.func":
            walk_ops(op, lambda o: found.append(o) if o.operation.name == "transformer.attention" else None)
    for op in found:
        seg = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
        q, k, v = op.operands[0], op.operands[1], op.operands[2]
        if "causal" not in op.attributes or seg[3] or not seg[4]:
            continue  # no causal bound, a mask already, or no offset
        offset = op.operands[3]
        if not isinstance(offset.owner, ir.Block) and offset.owner.name == "arith.constant":
            continue  # a constant offset: the lowering's key slice is static
        qt, kt = ir.RankedTensorType(q.type), ir.RankedTensorType(k.type)
        if not (qt.has_static_shape and kt.has_static_shape) or _takes_flash_form(op):
            continue
        mask_type = ir.RankedTensorType.get([1, 1, qt.shape[2], kt.shape[2]], qt.element_type)
        with ir.InsertionPoint(op), op.location:
            from mlir.dialects import arith

            zero = arith.constant(qt.element_type, 0.0)
            mask = linalg.fill(zero, outs=[tensor.empty(mask_type.shape, qt.element_type)])
            attrs = {name: op.attributes[name] for name in op.attributes}
            attrs["operandSegmentSizes"] = ir.DenseI32ArrayAttr.get([1, 1, 1, 1, 1])
            new = ir.Operation.create("transformer.attention", results=[op.result.type],
                                      operands=[q, k, v, mask, offset], attributes=attrs)
        op.result.replace_all_uses_with(new.result)
        op.operation.erase()


def _takes_flash_form(op) -> bool:
    """Does transformer-to-linalg give this (unmasked) attention its flash form: f32 q, k and v,
    whole GQA groups, values as wide as the queries?"""
    q, k, v = (ir.RankedTensorType(op.operands[i].type) for i in range(3))
    f32 = all(isinstance(t.element_type, ir.F32Type) for t in (q, k, v))
    return f32 and q.shape[1] % k.shape[1] == 0 and v.shape[3] == q.shape[3]


def make_tiled(module: ir.Module) -> None:
    """Tile each kernel into a block grid and threads (see `gpu_schedule`), fills fused into both;
    mark the tensor-core, flash-attention, matvec and row-reduction kernels written at `loops`."""
    from ..tuning import TuningCache

    any_op = "!transform.any_op"
    lines = [
        "module attributes {transform.with_named_sequence} {",
        f"  transform.named_sequence @__transform_main(%root: {any_op} {{transform.readonly}}) {{",
    ]
    funcs = {ir.StringAttr(op.attributes["sym_name"]).value: op
             for op in module.body.operations if op.operation.name == "func.func"}
    precision, chip = gpu_mma.module_precision(module), target_chip(module, "")
    cache = TuningCache()  # tensor-core tiles `kiln tune --target cuda|rocm` found on a GPU of this chip
    rounded = []  # (func, its A and B arguments) of SIMT GEMMs whose operands are rounded to `precision`
    for i, kernel in enumerate(schedules.kernels_of(module)):
        if kernel.packed_rhs:
            raise KilnError(f"kernel {kernel.name} reads a weight stored as [N/{kernel.packed_rhs}, K, "
                            f"{kernel.packed_rhs}] panels (linalg.unpack), the CPU GEMM's layout; GPU targets "
                            "take the weight as W[N, K]")
        if gpu_flash.mark(kernel, funcs[kernel.name]):  # flash attention, written at `loops`
            continue
        mma, source = gpu_mma.mma_schedule(kernel, funcs[kernel.name], precision, chip, cache)
        if mma is not None:  # tensor cores: the kernel is written at the loops stage (gpu_mma.py)
            funcs[kernel.name].attributes[gpu_mma.MMA_ATTR] = ir.DenseI64ArrayAttr.get(mma.attribute())
            funcs[kernel.name].attributes["kiln.schedule_source"] = ir.StringAttr.get(source)
            funcs[kernel.name].attributes[BLOCK_DIM_ATTR] = ir.DenseI64ArrayAttr.get([mma.threads, 1, 1])
            continue
        if gpu_matvec.mark(kernel, funcs[kernel.name], precision):  # a warp per row of W (gpu_matvec.py)
            continue
        if precision != "f32":  # a fused matvec left to the other schedules rounds its product's factors
            gpu_matvec.round_fused_product(kernel, funcs[kernel.name], precision)
        if gpu_reduction.mark(kernel, funcs[kernel.name]):  # a warp per output (gpu_reduction.py)
            continue
        if precision != "f32" and kernel.gemm_rhs and kernel.f32:
            rounded.append((funcs[kernel.name], gpu_mma.operand_args(funcs[kernel.name])))
        register_tiled = contraction_schedule(kernel)
        if register_tiled is not None:
            tiles, threads, block, kt = register_tiled
        else:
            tiles, threads, block = gpu_schedule(kernel)
            kt = _vector_reduction_step(kernel, funcs[kernel.name], tiles)
        funcs[kernel.name].attributes[BLOCK_DIM_ATTR] = ir.DenseI64ArrayAttr.get(list(block))
        n_block = sum(1 for t in tiles if t)
        block_map = ", ".join(f"#gpu.block<{_AXES[n_block - 1 - j]}>" for j in range(n_block))
        thread_map = ", ".join(f"#gpu.thread<{_AXES[len(threads) - 1 - j]}>" for j in range(len(threads)))
        lines += [
            f'    %f{i} = transform.structured.match ops{{["func.func"]}} '
            f'attributes{{sym_name = "{kernel.name}"}} in %root : ({any_op}) -> {any_op}',
            f"    %r{i} = transform.structured.match attributes{{kiln.root}} in %f{i} : ({any_op}) -> {any_op}",
            f"    %t{i}, %b{i} = transform.structured.tile_using_forall %r{i} tile_sizes "
            f"[{', '.join(map(str, tiles))}] (mapping = [{block_map}]) : ({any_op}) -> ({any_op}, {any_op})",
        ]
        num_threads = [0] * len(tiles)  # threads along the thread loops, none along the others
        thread_dims = _thread_loops(tiles, threads, kernel) if register_tiled is None else \
            [d for d in (len(tiles) - 3, len(tiles) - 2) if tiles[d]]
        for d, n in zip(thread_dims, threads):
            num_threads[d] = n
        lines.append(
            f"    %u{i}, %th{i} = transform.structured.tile_using_forall %t{i} num_threads "
            f"[{', '.join(map(str, num_threads))}] (mapping = [{thread_map}]) "
            f": ({any_op}) -> ({any_op}, {any_op})"
        )
        if kernel.has_init_fill:
            lines += [
                f'    %fill{i} = transform.structured.match ops{{["linalg.fill"]}} in %f{i} '
                f": ({any_op}) -> {any_op}",
                f"    %fb{i}, %b{i}b = transform.structured.fuse_into_containing_op %fill{i} into %b{i} "
                f": ({any_op}, {any_op}) -> ({any_op}, {any_op})",
                f"    %ft{i}, %th{i}b = transform.structured.fuse_into_containing_op %fb{i} into %th{i} "
                f": ({any_op}, {any_op}) -> ({any_op}, {any_op})",
            ]
        if register_tiled is not None or kt:
            lines += _register_tile_lines(i, len(tiles), kt, kernel.has_init_fill)
    lines += ["    transform.yield", "  }", "}"]
    gpu_mma.mark_rounded_results(module)  # before the rounding kernels are tiled
    _apply(module, "\n".join(lines), "tiled")
    for func, args in rounded:
        gpu_mma.round_operands(func, args, precision)
    # Register-tiled contractions: the accumulators' vector read/write move out of the K loop.
    run_passes(module, "canonicalize,cse,func.func(loop-invariant-subset-hoisting),canonicalize,cse", "tiled")


def _vector_reduction_step(kernel: schedules.Kernel, func, tiles: list) -> int:
    """K step of a one-output reduction over its innermost loop (rms_norm's sum of squares, softmax's
    max and sum) whose reduction extent it divides, else 0: then each thread sums kt-wide vectors
    with its accumulator in registers instead of storing to its output every step. Only where every
    block tile divides its loop (a thread's slice must have a static shape to be vectorized)."""
    kinds, ranges = kernel.iterator_types, kernel.loop_ranges
    if kinds.count("r") != 1 or not kinds.endswith("r") or any(r < 0 for r in ranges):
        return 0
    if any(t and r % t for t, r in zip(tiles, ranges)):
        return 0
    root = next((o for o in func.regions[0].blocks[0].operations if "kiln.root" in o.attributes), None)
    if root is None or root.operation.name != "linalg.generic":
        return 0
    n_in = len(ir.ArrayAttr(root.attributes["indexing_maps"])) - len(root.results)
    if len(root.results) != 1 or any(o.operation.name == "linalg.index"
                                     for o in root.regions[0].blocks[0].operations):
        return 0
    if any(not isinstance(ir.ShapedType(v.type).element_type, ir.F32Type) for v in root.operands[: n_in + 1]):
        return 0
    return next((t for t in (8, 4, 2) if ranges[-1] % t == 0 and ranges[-1] > t), 0)


def _register_tile_lines(i: int, n_loops: int, kt: int, has_fill: bool) -> list:
    """K in steps of kt around each thread's rm x 1 x kt contraction, vectorized (see
    `contraction_schedule`)."""
    any_op = "!transform.any_op"
    sizes = ", ".join(["0"] * (n_loops - 1) + [str(kt)])
    lines = [
        f"    %kt{i}, %kl{i} = transform.structured.tile_using_for %u{i} tile_sizes [{sizes}] "
        f": ({any_op}) -> ({any_op}, {any_op})",
        f"    transform.structured.vectorize %kt{i} : {any_op}",
    ]
    if has_fill:
        lines.append(f"    transform.structured.vectorize %ft{i} : {any_op}")
    lines += [
        f"    transform.apply_patterns to %f{i} {{",
        "      transform.apply_patterns.vector.reduction_to_contract",
        "      transform.apply_patterns.vector.transfer_permutation_patterns",
        f"    }} : {any_op}",
        f"    transform.apply_patterns to %f{i} {{",
        '      transform.apply_patterns.vector.lower_contraction lowering_strategy = "outerproduct"',
        "      transform.apply_patterns.vector.lower_outerproduct",
        '      transform.apply_patterns.vector.lower_multi_reduction lowering_strategy = "innerreduction"',
        "      transform.apply_patterns.vector.transfer_permutation_patterns",
        "      transform.apply_patterns.canonicalization",
        f"    }} : {any_op}",
    ]
    return lines


def _thread_loops(tiles: list, threads: list, kernel: schedules.Kernel) -> list:
    """The loops (in loop order) that `threads` split: the innermost tiled loops with more than one
    iteration, or the single tiled loop of a one-thread kernel."""
    tiled = [d for d, t in enumerate(tiles) if t]
    wide = [d for d in tiled if kernel.loop_ranges[d] > 1]
    return (wide or tiled)[-len(threads):]


def _apply(module: ir.Module, script_text: str, stage: str) -> None:
    script = ir.Module.parse(script_text, context=module.context)
    try:
        interpreter.apply_named_sequence(module.operation, script.body.operations[0], script.operation)
    except (ir.MLIRError, ValueError) as e:
        raise KilnError(f"stage '{stage}' failed: {e}") from e


def make_bufferized(module: ir.Module) -> None:
    """Tensors -> memrefs, as for the CPU (the host's intermediates become one device arena). A copy
    reads a transpose kernel's input through a transposed view only where it becomes a cache-update
    kernel (gpu_cache_update.py); other host copies are byte ranges."""
    cpu.make_bufferized(module, gpu_cache_update.is_cache_update)


def make_loops(module: ir.Module) -> None:
    """Block and thread foralls -> gpu.launch; linalg -> scf loops in each thread; launches outlined
    into kernels of one gpu.module (`kernels`). KV-cache writes become kernels, and tensor-core,
    matvec, flash-attention and row-reduction kernels are written first (gpu_cache_update.py,
    gpu_mma.py, gpu_matvec.py, gpu_flash.py, gpu_reduction.py); then integer kernel operands are
    passed through device memory (gpu_scalars.py). Last, neighbouring launches that do not depend on
    each other become one (launch_merging.py)."""
    gpu_cache_update.build_kernels(module)
    gpu_mma.build_kernels(module, target_chip(module, ""))
    gpu_matvec.build_kernels(module)
    gpu_flash.build_kernels(module)
    gpu_reduction.build_kernels(module)
    gpu_scalars.pass_through_memory(module)
    any_op = "!transform.any_op"
    lines = [
        "module attributes {transform.with_named_sequence} {",
        f"  transform.named_sequence @__transform_main(%root: {any_op} {{transform.readonly}}) {{",
    ]
    for i, op in enumerate(module.body.operations):
        if op.operation.name != "func.func" or BLOCK_DIM_ATTR not in op.attributes:
            continue
        name = ir.StringAttr(op.attributes["sym_name"]).value
        block = list(ir.DenseI64ArrayAttr(op.attributes[BLOCK_DIM_ATTR]))
        lines += [
            f'    %f{i} = transform.structured.match ops{{["func.func"]}} '
            f'attributes{{sym_name = "{name}"}} in %root : ({any_op}) -> {any_op}',
            f"    %l{i} = transform.gpu.map_forall_to_blocks %f{i} generate_gpu_launch : ({any_op}) -> {any_op}",
            f"    %m{i} = transform.gpu.map_nested_forall_to_threads %l{i} block_dims = "
            f"[{', '.join(map(str, block))}] : ({any_op}) -> {any_op}",
        ]
    lines += ["    transform.yield", "  }", "}"]
    _apply(module, "\n".join(lines), "loops")
    run_passes(
        module,
        "func.func(convert-vector-to-scf{full-unroll},convert-linalg-to-loops),canonicalize,cse,"
        "gpu-launch-sink-index-computations,gpu-kernel-outlining{data-layout-str=},canonicalize,cse",
        "loops",
    )
    gpu_mma.size_shared_memory(module)
    skip_masked_iterations(module)
    launch_merging.merge_launches(module)


def skip_masked_iterations(module: ir.Module) -> None:
    """Ends a kernel's loop at `x + 1` where its iterations past `x` (a runtime scalar) change nothing.

    Decode attention keeps the KV cache's static length (see `make_linalg`); its softmax·V kernel sums
    over every cache row, keeping its output unchanged past the position
    (`store(select(iv > x, old, new))` with `old` loaded from where it stores). Bounding the loop at
    min(end, x + 1) reads only the filled rows of V. Loops with loop-carried values, other stores or
    other side effects are left alone."""
    from mlir.dialects import arith

    loops = []
    for _, body in kernel_modules(module):
        for op in body.operations:
            walk_ops(op, lambda o: loops.append(o) if o.operation.name == "scf.for" else None)
    for loop in loops:
        bound = _masked_bound(loop)
        if bound is None:
            continue
        with ir.InsertionPoint(loop), loop.location:
            end = arith.addi(bound, arith.constant(ir.IndexType.get(), 1))
            loop.operands[1] = arith.minui(end, loop.operands[1])


_PURE_PREFIXES = ("arith.", "math.", "memref.load", "scf.yield")
_UGT = 8  # arith.cmpi predicate


def _masked_bound(loop):
    """`x` when every iteration of `loop` with induction variable > x stores back what it loaded."""
    if len(loop.results):
        return None
    body = loop.regions[0].blocks[0]
    iv, ops = body.arguments[0], list(body.operations)
    stores = [o for o in ops if o.operation.name == "memref.store"]
    if len(stores) != 1 or any(o.operation.name != "memref.store" and not o.operation.name.startswith(_PURE_PREFIXES)
                               for o in ops):
        return None
    store = stores[0]
    selected = store.operands[0].owner
    if isinstance(selected, ir.Block) or selected.name != "arith.select":
        return None
    cmp, kept = selected.operands[0].owner, selected.operands[1].owner
    if (isinstance(cmp, ir.Block) or cmp.name != "arith.cmpi" or cmp.operands[0] != iv
            or ir.IntegerAttr(cmp.attributes["predicate"]).value != _UGT):
        return None
    if (isinstance(kept, ir.Block) or kept.name != "memref.load" or kept.operands[0] != store.operands[1]
            or list(kept.operands[1:]) != list(store.operands[2:])):
        return None
    bound = cmp.operands[1]
    defined = [r for o in ops for r in o.results]
    return None if any(bound == v for v in defined) else bound


CHIP_ATTR = "kiln.target_chip"


def target_chip(module: ir.Module, default: str) -> str:
    """The chip recorded on the module by kiln.compile (`kiln.target_chip`), else `default`."""
    attrs = module.operation.attributes
    return ir.StringAttr(attrs[CHIP_ATTR]).value if CHIP_ATTR in attrs else default


def kernel_modules(module: ir.Module):
    """(name, body block) of every gpu.module."""
    for op in module.body.operations:
        if op.operation.name == "gpu.module":
            yield ir.StringAttr(op.attributes["sym_name"]).value, op.regions[0].blocks[0]


def extern_dynamic_shared_memory(module: ir.Module) -> None:
    """After the gpu -> nvvm/rocdl conversion: the dynamic shared memory global (`__dynamic_shmem__N`,
    what gpu.dynamic_shared_memory becomes) is an external declaration, so NVPTX writes `.extern
    .shared .b8 __dynamic_shmem__N[]` and AMDGPU takes it for dynamic LDS. The conversion makes it
    internal, and NVPTX then demotes it to a one-byte static variable of the kernel that the kernel
    reads past. It is 1024-byte aligned: wgmma's swizzled tiles (`gpu_wgmma`) need that."""
    for _, body in kernel_modules(module):
        for op in body.operations:
            if (op.operation.name == "llvm.mlir.global"
                    and ir.StringAttr(op.attributes["sym_name"]).value.startswith("__dynamic_shmem__")):
                op.attributes["linkage"] = ir.Attribute.parse("#llvm.linkage<external>")
                op.attributes["alignment"] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), 1024)


def walk_ops(op, fn) -> None:
    """Calls fn on every op nested in `op`, outer ones first."""
    for region in op.regions:
        for block in region.blocks:
            for child in block.operations:
                fn(child)
                walk_ops(child, fn)


def uses_math(module: ir.Module) -> bool:
    """Does any kernel use a math-dialect op (which may need a device math library)?"""
    found = []
    for _, body in kernel_modules(module):
        for op in body.operations:
            walk_ops(op, lambda o: found.append(o) if o.operation.name.startswith("math.") else None)
    return bool(found)


# erf(x) = sign(x) (1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-x²)), t = 1 / (1 + p|x|):
# Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7 (f32's resolution near 1).
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def expand_erf(module: ir.Module) -> None:
    """Rewrites math.erf in the kernels (on scalars or vectors) into arith + math.exp (targets
    without a device erf)."""
    from mlir.dialects import arith, math as math_d

    erfs = []
    for _, body in kernel_modules(module):
        for op in body.operations:
            walk_ops(op, lambda o: erfs.append(o) if o.operation.name == "math.erf" else None)
    for op in erfs:
        x = op.operands[0]
        t_ = x.type
        with ir.InsertionPoint(op), op.location:
            def c(v):
                if isinstance(t_, ir.VectorType):  # a fused matvec's body works on vectors
                    elt = ir.VectorType(t_).element_type
                    return arith.constant(t_, ir.DenseElementsAttr.get_splat(t_, ir.FloatAttr.get(elt, v)))
                return arith.constant(t_, v)

            a = math_d.absf(x)
            t = arith.divf(c(1.0), arith.addf(c(1.0), arith.mulf(c(_ERF_P), a)))
            poly = c(_ERF_A[4])
            for coef in reversed(_ERF_A[:4]):
                poly = arith.addf(c(coef), arith.mulf(t, poly))
            e = math_d.exp(arith.negf(arith.mulf(a, a)))
            y = arith.subf(c(1.0), arith.mulf(arith.mulf(t, poly), e))
            result = math_d.copysign(y, x)
        op.result.replace_all_uses_with(result)
        op.operation.erase()


def serialize(module: ir.Module, fmt: str, stage: str) -> dict:
    """{gpu.module name: bytes}: gpu-module-to-binary on a clone (the module itself is not changed)."""
    from mlir.dialects import gpu as gpu_d

    clone = ir.Module.parse(str(module), context=module.context)
    run_passes(clone, f"gpu-module-to-binary{{format={fmt}}}", stage)
    out = {}
    for op in clone.body.operations:
        if op.operation.name == "gpu.binary":
            obj = gpu_d.ObjectAttr(ir.ArrayAttr(op.attributes["objects"])[0])
            out[ir.StringAttr(op.attributes["sym_name"]).value] = obj.object
    return out


def build_artifact(module: ir.Module, signatures: dict, target: dict, binaries: dict):
    """A GPU `.kiln` artifact: kernels (class, blobs per format), constants, and each entry point's
    launch plan (see `launch_plan`)."""
    import importlib.metadata

    from .. import __version__, artifact

    classes = {}
    for op in module.body.operations:
        if op.operation.name == "func.func" and "kiln.kernel_class" in op.attributes:
            classes[ir.StringAttr(op.attributes["sym_name"]).value] = \
                ir.StringAttr(op.attributes["kiln.kernel_class"]).value
    from .launch_plan import launch_plan

    blobs, kernels = {}, []
    plans, constants = launch_plan(module, signatures)
    for name, by_format in binaries.items():
        entry = {"name": name, "symbol": name, "class": classes.get(name.removesuffix("_kernel"), "unknown"),
                 "blobs": {}}
        for fmt, data in by_format.items():
            blob = f"{fmt}/{name}"
            blobs[blob] = data
            entry["blobs"][fmt] = blob
        kernels.append(entry)
    for name, (array, info) in constants.items():
        blobs[f"constant/{name}"] = array.tobytes()
        info["blob"] = f"constant/{name}"
    precision = gpu_mma.module_precision(module)
    if precision != "f32":  # GEMM operands rounded to bf16/f16 (absent: f32)
        target = dict(target, precision=precision)
    manifest = {
        "format": artifact.FORMAT_VERSION,
        "kiln_version": __version__,
        "mlir_version": importlib.metadata.version("xtc-mlir-python-bindings"),
        "target": target,
        "entry_points": signatures,
        "kernels": kernels,
        "constants": {name: info for name, (_, info) in constants.items()},
        "programs": plans,
    }
    return artifact.Artifact(manifest, blobs)
