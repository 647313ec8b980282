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
host side stays as func/memref IR calling `gpu.launch_func`; `launch_plan()` turns it into a list of
commands the runtime replays (allocate, launch, copy), recorded in the artifact's manifest. Kernels
use the bare-pointer calling convention: every memref argument is one device pointer, so memrefs
crossing the host/kernel boundary must have static shapes.
"""

from __future__ import annotations

import math

import numpy as np
from mlir import ir
from mlir.dialects.transform import interpreter

from ..errors import KilnError
from . import cpu, schedules
from .common import public_funcs, run_passes

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
    """The shared `linalg` stage, after giving causal attention with a runtime KV offset an explicit
    (zero) mask. Without a mask, the lowering reads only the first offset + q_len keys: a runtime
    extent, which would make the attention kernels' shapes dynamic. With it, the kernels keep the
    cache's static length and future keys are masked by the causal bound (they add exp(-inf) = 0)."""
    _mask_dynamic_causal_attention(module)
    from .common import make_linalg as shared

    shared(module)


def _mask_dynamic_causal_attention(module: ir.Module) -> None:
    from mlir.dialects import linalg, tensor

    found = []
    for op in module.body.operations:
        if op.operation.name == "func.func":
            _walk(op, lambda o: found.append(o) if o.operation.name == "transformer.attention" else None)
    for op in found:
        seg = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
        q, k, v = op.operands[0], op.operands[1], op.operands[2]
        if "causal" not in op.attributes or seg[3] or not seg[4]:
            continue  # no causal bound, a mask already, or no offset
        offset = op.operands[3]
        if not isinstance(offset.owner, ir.Block) and offset.owner.name == "arith.constant":
            continue  # a constant offset: the lowering's key slice is static
        qt, kt = ir.RankedTensorType(q.type), ir.RankedTensorType(k.type)
        if not (qt.has_static_shape and kt.has_static_shape):
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


def make_tiled(module: ir.Module) -> None:
    """Tile each kernel into a block grid and threads (see `gpu_schedule`), fills fused into both."""
    any_op = "!transform.any_op"
    lines = [
        "module attributes {transform.with_named_sequence} {",
        f"  transform.named_sequence @__transform_main(%root: {any_op} {{transform.readonly}}) {{",
    ]
    funcs = {ir.StringAttr(op.attributes["sym_name"]).value: op
             for op in module.body.operations if op.operation.name == "func.func"}
    for i, kernel in enumerate(schedules.kernels_of(module)):
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
    _apply(module, "\n".join(lines), "tiled")
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
    """Tensors -> memrefs, as for the CPU (the host's intermediates become one device arena)."""
    cpu.make_bufferized(module)


def make_loops(module: ir.Module) -> None:
    """Block and thread foralls -> gpu.launch; linalg -> scf loops in each thread; launches outlined
    into kernels of one gpu.module (`kernels`)."""
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


def _walk(op, fn) -> None:
    for region in op.regions:
        for block in region.blocks:
            for child in block.operations:
                fn(child)
                _walk(child, fn)


def uses_math(module: ir.Module) -> bool:
    """Does any kernel use a math-dialect op (which may need a device math library)?"""
    found = []
    for _, body in kernel_modules(module):
        for op in body.operations:
            _walk(op, lambda o: found.append(o) if o.operation.name.startswith("math.") else None)
    return bool(found)


# erf(x) = sign(x) (1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-x²)), t = 1 / (1 + p|x|):
# Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7 (f32's resolution near 1).
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def expand_erf(module: ir.Module) -> None:
    """Rewrites math.erf in the kernels into arith + math.exp (targets without a device erf)."""
    from mlir.dialects import arith, math as math_d

    erfs = []
    for _, body in kernel_modules(module):
        for op in body.operations:
            _walk(op, lambda o: erfs.append(o) if o.operation.name == "math.erf" else None)
    for op in erfs:
        x = op.operands[0]
        t_ = x.type
        with ir.InsertionPoint(op), op.location:
            def c(v):
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


_ELEMENT_BYTES = {"f64": 8, "f32": 4, "f16": 2, "bf16": 2, "i64": 8, "i32": 4, "i16": 2, "i8": 1, "i1": 1,
                  "index": 8}
_NUMPY = {"f64": np.float64, "f32": np.float32, "f16": np.float16, "i64": np.int64, "i32": np.int32,
          "i16": np.int16, "i8": np.int8, "i1": np.bool_}


def _memref_bytes(t, where: str) -> int:
    mt = ir.MemRefType(t)
    if not mt.has_static_shape:
        raise KilnError(f"{where}: GPU targets need static shapes, got {mt}")
    return int(np.prod(mt.shape, dtype=np.int64)) * _ELEMENT_BYTES[str(mt.element_type)]


_MAX_COPY_RUNS = 4096


def _copy_ref(refs: dict, value, where: str) -> tuple:
    """(ref, memref type, element offset or None (the type's), [(entry scalar, elements per unit)])."""
    if value not in refs or len(refs[value]) < 4:
        return _ref(refs, value, where), value.type, None, []
    kind, index, offset, (elements, terms) = refs[value]
    ref = _ref({value: (kind, index, offset)}, value, where)
    return ref, value.type, elements, terms


def _copy_commands(src: dict, src_type, src_elements, src_terms, dst: dict, dst_type, dst_elements,
                   dst_terms, where: str) -> list:
    """A memref.copy as byte-range copies: one per run of elements contiguous in both memrefs (one in
    all for identity layouts; a strided view gives a run per row). A runtime offset (entry scalars)
    goes into the refs as "scalars": [[argument index, bytes per unit], ...]."""
    st, dt = ir.MemRefType(src_type), ir.MemRefType(dst_type)
    _memref_bytes(src_type, where)
    esize = _ELEMENT_BYTES[str(st.element_type)]
    shape = list(st.shape)
    (ss, so), (ds, do) = st.get_strides_and_offset(), dt.get_strides_and_offset()
    so = so if src_elements is None else src_elements
    do = do if dst_elements is None else dst_elements
    dynamic = ir.ShapedType.get_dynamic_stride_or_offset()
    if any(x == dynamic for x in [*ss, so, *ds, do]):
        raise KilnError(f"{where}: a copy with dynamic strides or offsets ({src_type} -> {dst_type})")
    if src_terms:
        src = dict(src, scalars=[[i, m * esize] for i, m in src_terms])
    if dst_terms:
        dst = dict(dst, scalars=[[i, m * esize] for i, m in dst_terms])
    # the trailing dims that are row-major contiguous in both memrefs form one run
    inner, run = len(shape), 1
    while inner > 0 and (shape[inner - 1] == 1 or (ss[inner - 1] == run and ds[inner - 1] == run)):
        inner -= 1
        run *= shape[inner]
    outer = shape[:inner]
    count = int(np.prod(outer, dtype=np.int64)) if outer else 1
    if count > _MAX_COPY_RUNS:
        raise KilnError(f"{where}: a strided copy of {count} runs ({src_type} -> {dst_type}); at most "
                        f"{_MAX_COPY_RUNS} are supported")
    commands = []
    for idx in np.ndindex(*outer) if outer else [()]:
        s_off = so + sum(i * x for i, x in zip(idx, ss))
        d_off = do + sum(i * x for i, x in zip(idx, ds))
        commands.append({"op": "copy", "src": dict(src, offset=src["offset"] + s_off * esize),
                         "dst": dict(dst, offset=dst["offset"] + d_off * esize), "bytes": run * esize})
    return commands


def _static_int(value, where: str) -> int:
    owner = value.owner
    if isinstance(owner, ir.Block) or owner.name != "arith.constant":
        raise KilnError(f"{where}: expected a constant, got {value}")
    return ir.IntegerAttr(owner.attributes["value"]).value


def launch_plan(module: ir.Module, signatures: dict) -> tuple:
    """Each entry point's host code as a list of commands the runtime replays, and the constants.

    plans: {entry: {"num_args": n, "num_results": r, "allocations": [bytes, ...], "commands": [...]}}
    where a command is {"op": "launch", "kernel", "grid": [x, y, z], "block": [x, y, z], "args": [ref]}
    or {"op": "copy", "src": ref, "dst": ref, "bytes": n}, and a ref is {"buffer": kind, "index": i,
    "offset": bytes, "scalars" (copies only, optional): [[entry scalar i, bytes per unit], ...] added to
    the offset at run time}: kind "arg" (entry argument i), "result" (out-param i: the i-th result that
    does not update an argument in place), "alloc"
    (allocation i, made once per program) or "constant" (the constant named "name"). Scalar kernel
    operands are {"scalar": "arg", "index": i, "type"} (entry argument i) or {"scalar": "constant",
    "value", "type"}.
    """
    funcs = {ir.StringAttr(op.attributes["sym_name"]).value: op
             for op in module.body.operations if op.operation.name == "func.func"}
    globals_ = {ir.StringAttr(op.attributes["sym_name"]).value: op
                for op in module.body.operations if op.operation.name == "memref.global"}
    constants, plans = {}, {}
    for entry, sig in signatures.items():
        func = funcs.get(entry)
        if func is None:
            raise KilnError(f"entry point '{entry}' is missing from the module")
        # results updated in place (`updates`: result -> argument) have no out-param
        n_args = len(sig["args"])
        n_results = len(sig["results"]) - len(sig.get("updates", {}))
        block = func.regions[0].blocks[0]
        if len(block.arguments) != n_args + n_results:
            raise KilnError(f"entry point '{entry}': {len(block.arguments)} arguments after bufferization, "
                            f"expected {n_args} inputs and {n_results} out-params")
        refs = {}
        for i, a in enumerate(block.arguments):
            if not isinstance(a.type, ir.MemRefType):
                if i >= n_args or str(a.type) not in _SCALAR_TYPES:
                    raise KilnError(f"entry point '{entry}': argument {i} is a {a.type}; GPU targets take "
                                    f"buffers and {', '.join(_SCALAR_TYPES)} scalars")
                refs[a] = ("scalar", i, str(a.type))
                continue
            refs[a] = ("arg", i, 0) if i < n_args else ("result", i - n_args, 0)
        allocations, commands = [], []
        _interpret(block, refs, funcs, globals_, constants, allocations, commands, entry)
        plans[entry] = {"num_args": n_args, "num_results": n_results, "allocations": allocations,
                        "commands": commands}
    return plans, constants


_SCALAR_TYPES = ("index", "i64", "i32", "f32", "f64")


def _scalar_ref(refs: dict, value, where: str) -> dict:
    """A scalar kernel operand: an entry argument ({"scalar": "arg", "index", "type"}) or a constant
    ({"scalar": "constant", "value", "type"})."""
    t = str(value.type)
    if t not in _SCALAR_TYPES:
        raise KilnError(f"{where}: kernel operand {value} has type {t}, which launches cannot pass")
    if value in refs and refs[value][0] == "scalar":
        return {"scalar": "arg", "index": refs[value][1], "type": t}
    if value in refs and refs[value][0] == "constant-scalar":
        return {"scalar": "constant", "value": refs[value][1], "type": t}
    owner = value.owner
    if not isinstance(owner, ir.Block) and owner.name == "arith.constant":
        attr = owner.attributes["value"]
        v = ir.FloatAttr(attr).value if t in ("f32", "f64") else ir.IntegerAttr(attr).value
        return {"scalar": "constant", "value": v, "type": t}
    raise KilnError(f"{where}: kernel operand {value} is computed on the host; the GPU launch plan passes "
                    "only entry-point scalars and constants")


def _dynamic_offset(op, refs: dict, where: str) -> tuple:
    """(static elements, [(entry scalar index, elements per unit)]) = the element offset of a subview
    whose offsets are entry scalars or constants, over a source with a static layout."""
    src = op.operands[0]
    strides, base = ir.MemRefType(src.type).get_strides_and_offset()
    dynamic = ir.ShapedType.get_dynamic_stride_or_offset()
    if base == dynamic or any(x == dynamic for x in strides) or len(refs[src]) > 3:
        raise KilnError(f"{where}: a subview at a runtime offset of a view that has one already")
    static_offsets = list(ir.DenseI64ArrayAttr(op.attributes["static_offsets"]))
    dyn_values = iter(op.operands[1:1 + sum(1 for x in static_offsets if x == dynamic)])
    elements, terms = base, []
    for o, stride in zip(static_offsets, strides):
        if o != dynamic:
            elements += o * stride
            continue
        r = _scalar_ref(refs, next(dyn_values), where)
        if r["scalar"] == "constant":
            elements += int(r["value"]) * stride
        else:
            terms.append((r["index"], stride))
    return elements, terms


def _ref(refs: dict, value, where: str) -> dict:
    if value not in refs or refs[value][0] in ("scalar", "constant-scalar"):
        raise KilnError(f"{where}: {value} is not a buffer the host plan knows (only allocations, views, "
                        "reshapes, arguments and constants are)")
    if len(refs[value]) > 3:
        raise KilnError(f"{where}: a view at a runtime offset ({value.type}) passed to a kernel; kernels "
                        "take memrefs with static layouts")
    kind, index, offset = refs[value]
    ref = {"buffer": kind, "index": index, "offset": offset}
    if kind == "constant":
        ref = {"buffer": kind, "name": index, "offset": offset}
    return ref


def _interpret(block, refs, funcs, globals_, constants, allocations, commands, where) -> None:
    """Walks host code (func/memref/gpu.launch_func), following calls, into `commands`."""
    from mlir.dialects import gpu as gpu_d

    for op in block.operations:
        name = op.operation.name
        here = f"host code of '{where}' ({name})"
        if name in ("arith.constant", "memref.dealloc", "func.return"):
            if name == "func.return" and len(op.operands):
                raise KilnError(f"{here}: a GPU entry point must return its results through out-params")
            continue
        if name == "memref.alloc" or name == "memref.alloca":
            allocations.append(_memref_bytes(op.result.type, here))
            refs[op.result] = ("alloc", len(allocations) - 1, 0)
        elif name == "memref.view":
            kind, index, offset = refs[op.operands[0]]
            refs[op.result] = (kind, index, offset + _static_int(op.operands[1], here))
        elif name in ("memref.expand_shape", "memref.collapse_shape", "memref.cast"):
            refs[op.result] = refs[op.operands[0]]
        elif name == "memref.subview":
            # A kernel receives the base pointer; the subview's offset and strides are static in its
            # memref type, and the bare-pointer convention applies them inside the kernel. A runtime
            # offset (a KV cache row at the decode position) is tracked as entry scalars x element
            # multipliers, for host copies (kernels cannot take such a view).
            rt = ir.MemRefType(op.result.type)
            strides, offset = rt.get_strides_and_offset()
            dynamic = ir.ShapedType.get_dynamic_stride_or_offset()
            if any(x == dynamic for x in strides) or not rt.has_static_shape:
                raise KilnError(f"{here}: a subview with a dynamic stride or size ({op.result.type}); "
                                "GPU kernels take memrefs with static layouts")
            refs[op.result] = refs[op.operands[0]]
            if offset == dynamic:
                refs[op.result] = refs[op.operands[0]][:3] + (_dynamic_offset(op, refs, here),)
        elif name == "memref.get_global":
            sym = ir.FlatSymbolRefAttr(op.attributes["name"]).value
            if sym not in constants:
                g = globals_[sym]
                if "initial_value" not in g.attributes:
                    raise KilnError(f"{here}: global @{sym} has no initial value")
                dense = ir.DenseElementsAttr(g.attributes["initial_value"])
                mt = ir.MemRefType(ir.TypeAttr(g.attributes["type"]).value)
                dtype = _NUMPY[str(mt.element_type)]
                array = np.array(dense, dtype=dtype) if not dense.is_splat else \
                    np.full(mt.shape, np.array(dense.get_splat_value().value, dtype=dtype))
                array = np.ascontiguousarray(np.broadcast_to(array, mt.shape)).astype(dtype)
                constants[sym] = (array, {"dtype": str(mt.element_type), "shape": list(mt.shape)})
            refs[op.result] = ("constant", sym, 0)
        elif name == "memref.copy":
            src, dst = op.operands
            commands += _copy_commands(*_copy_ref(refs, src, here), *_copy_ref(refs, dst, here), here)
        elif name == "func.call":
            callee = ir.FlatSymbolRefAttr(op.attributes["callee"]).value
            if callee not in funcs or len(funcs[callee].regions[0].blocks) == 0:
                raise KilnError(f"{here}: call to @{callee}, which has no body")
            body = funcs[callee].regions[0].blocks[0]
            inner = dict(refs)
            for arg, value in zip(body.arguments, op.operands):
                if value in refs:
                    inner[arg] = refs[value]
                elif not isinstance(value.type, ir.MemRefType):
                    r = _scalar_ref(refs, value, here)  # a constant: passed on as one
                    if r["scalar"] == "constant":
                        inner[arg] = ("constant-scalar", r["value"], r["type"])
            _interpret(body, inner, funcs, globals_, constants, allocations, commands, callee)
        elif name == "gpu.launch_func":
            launch = gpu_d.LaunchFuncOp(op) if not isinstance(op, gpu_d.LaunchFuncOp) else op
            grid = [_static_int(v, here) for v in (launch.gridSizeX, launch.gridSizeY, launch.gridSizeZ)]
            threads = [_static_int(v, here) for v in (launch.blockSizeX, launch.blockSizeY, launch.blockSizeZ)]
            kernel = ir.SymbolRefAttr(op.attributes["kernel"])
            args = []
            for v in launch.kernelOperands:
                args.append(_ref(refs, v, here) if isinstance(v.type, ir.MemRefType) else _scalar_ref(refs, v, here))
            commands.append({"op": "launch", "kernel": str(kernel).split("::")[0].lstrip("@"),
                             "grid": grid, "block": threads, "args": args})
        else:
            raise KilnError(f"{here}: the GPU targets cannot run this op on the host; only kernels "
                            "(gpu.launch_func), buffer views and copies are supported there")
