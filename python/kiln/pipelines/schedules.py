"""Per-kernel schedules for the `tiled` stage, written in the transform dialect and built from Python.

A schedule is a small dataclass of explicit parameters; `transform_script()` turns the schedules of a
module's kernels into one transform-dialect module that the interpreter applies. Kernels are found by
symbol name and their root op by the `kiln.root` attribute that dispatch formation sets.

f32 GEMM-shaped contractions with 16 or more rows (linear, matmul, batched matmul) get a packed,
register-tiled, vectorized schedule (`packed_gemm`, see `Schedule`). Every other kernel gets a `grid`:
its parallel loops are tiled into a workgroup grid (`scf.forall`, run on the device's thread pool)
and the fills that initialize it are fused into each workgroup. Further class-specific schedules
(matvec, flash attention) plug in here.
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
    f32: bool = False  # every operand of the root is f32
    rhs_batch: int = 0  # batch loops that index the rhs (0 for a linear's weight)


@dataclass(frozen=True)
class Schedule:
    """Explicit parameters of a kernel's schedule.

    `grid` schedules only tile the parallel loops into a workgroup grid (`workgroup_tiles`, one per
    loop, 0 = not tiled). `packed_gemm` schedules (GEMM-shaped f32 contractions, loops
    [batch.., m, n, k]) pack the operands into register-tile panels, then tile and vectorize:

      * packing: A[.., M, K] -> [.., M/mr, K, mr], B -> [.., N/nr, K, nr] (from W[N, K] or B[K, N]),
        C -> [.., M/mr, N/nr, mr, nr], zero-padded to whole panels so every tile is full and no
        vector is masked. Done inside the kernel on every call (an O(MK + NK + MN) copy, in parallel
        workgroups) -- cheap next to the O(MNK) product for prefill shapes; packing weights once at
        load time is the next step.
      * workgroups: `workgroup_tiles` = (mc, nc) elements of C per workgroup (scf.forall, OpenMP).
      * cache tile: `k_tile` elements of K per step (the A block mc x kc stays in L2, a B panel
        kc x nr in L1).
      * register tile: `register_tile` = (mr, nr) accumulators, nr a multiple of `vector_width`;
        `k_unroll` outer products per inner-loop iteration (vector.contract -> outerproduct -> FMA).
    """

    workgroup_tiles: tuple  # grid: per loop (0 = not tiled); packed_gemm: (mc, nc) in elements
    kind: str = "grid"  # "grid" | "packed_gemm"
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
        gemm_rhs, f32, rhs_batch = ("", False, 0) if root is None else gemm_form(root, iterator_types)
        kernels.append(
            Kernel(
                name=ir.StringAttr(attrs["sym_name"]).value,
                kernel_class=ir.StringAttr(attrs["kiln.kernel_class"]).value,
                loop_ranges=tuple(ir.DenseI64ArrayAttr(attrs["kiln.loop_ranges"])),
                iterator_types=iterator_types,
                has_init_fill="linalg.fill" in body_ops[:-2],
                gemm_rhs=gemm_rhs,
                f32=f32,
                rhs_batch=rhs_batch,
            )
        )
    return kernels


def gemm_form(root, iterator_types: str):
    """("nk" | "kn" | "", all-f32, rhs batch loops) for a root op: is it C[b.., m, n] += A[b.., m, k] * B[b'.., n|k, k|n]
    (b' a suffix of the batch loops b, k the one reduction loop, innermost), with a mul-add body?"""
    n_loops = len(iterator_types)
    if root.operation.name != "linalg.generic" or n_loops < 3 or iterator_types != "p" * (n_loops - 1) + "r":
        return "", False, 0
    if len(root.operation.operands) != 3:
        return "", False, 0
    maps = []
    for a in ir.ArrayAttr(root.attributes["indexing_maps"]):
        amap = ir.AffineMapAttr(a).value
        dims = []
        for e in amap.results:
            if not isinstance(e.maybe_downcast(), ir.AffineDimExpr):
                return "", False, 0
            dims.append(e.maybe_downcast().position)
        maps.append(dims)
    lhs, rhs, out = maps
    k, n, m = n_loops - 1, n_loops - 2, n_loops - 3
    batch = list(range(m))
    if out != batch + [m, n] or lhs != batch + [m, k]:
        return "", False, 0
    if rhs[-2:] == [n, k]:
        form = "nk"
    elif rhs[-2:] == [k, n]:
        form = "kn"
    else:
        return "", False, 0
    if rhs[:-2] != batch[len(batch) - len(rhs[:-2]):]:
        return "", False, 0
    body = [o.operation.name for o in root.regions[0].blocks[0].operations]
    if body != ["arith.mulf", "arith.addf", "linalg.yield"]:
        return "", False, 0
    f32 = all(
        isinstance(ir.ShapedType(v.type).element_type, ir.F32Type) for v in root.operation.operands
    )
    return form, f32, len(rhs) - 2


def default_schedule(kernel: Kernel, target_workgroups: int = 64) -> Schedule:
    """The packed GEMM schedule for f32 GEMM-shaped contractions with more than a few rows; else a
    grid of about `target_workgroups` workgroups over the outermost parallel loops."""
    if kernel.kernel_class == "contraction" and kernel.gemm_rhs and kernel.f32:
        m_extent = kernel.loop_ranges[-3]
        if m_extent < 0 or m_extent >= 16:
            return packed_gemm_schedule(kernel)
    return grid_schedule(kernel, target_workgroups)


def packed_gemm_schedule(kernel: Kernel, max_k_tile: int = 256) -> Schedule:
    """AVX-512 f32: 8x32 register tile (16 zmm accumulators), 128x256 workgroups, K in <=256 steps.

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
    return Schedule((128, 256), kind="packed_gemm", register_tile=(mr, nr), k_tile=kc, k_unroll=ku)


def candidates(kernel: Kernel) -> list:
    """Schedules `kiln tune` tries for `kernel`, the default first."""
    default = default_schedule(kernel)
    found = [default]
    if default.kind == "packed_gemm":
        for mc, nc in ((64, 256), (128, 128), (256, 256), (64, 512)):
            found.append(dataclasses.replace(default, workgroup_tiles=(mc, nc)))
        for kc in (128, 512):
            alt = packed_gemm_schedule(kernel, max_k_tile=kc)
            found.append(dataclasses.replace(alt, workgroup_tiles=default.workgroup_tiles))
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


def grid_schedule(kernel: Kernel, target_workgroups: int = 64) -> Schedule:
    """Tiles the outermost parallel loops so there are about `target_workgroups` workgroups."""
    tiles = [0] * len(kernel.loop_ranges)
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
        if schedule.kind == "packed_gemm":
            lines += _packed_gemm_lines(i, kernel, schedule)
            continue
        if not any(schedule.workgroup_tiles):
            continue
        tiles = ", ".join(map(str, schedule.workgroup_tiles))
        lines += [
            f'    %f{i} = transform.structured.match ops{{["func.func"]}} '
            f'attributes{{sym_name = "{kernel.name}"}} in %root : ({any_op}) -> {any_op}',
            f"    %r{i} = transform.structured.match attributes{{kiln.root}} in %f{i} : ({any_op}) -> {any_op}",
            f"    %t{i}, %wg{i} = transform.structured.tile_using_forall %r{i} tile_sizes [{tiles}] "
            f": ({any_op}) -> ({any_op}, {any_op})",
        ]
        if kernel.has_init_fill:
            lines += [
                f'    %fill{i} = transform.structured.match ops{{["linalg.fill"]}} in %f{i} '
                f": ({any_op}) -> {any_op}",
                f"    %fused{i}, %wg{i}b = transform.structured.fuse_into_containing_op %fill{i} into %wg{i} "
                f": ({any_op}, {any_op}) -> ({any_op}, {any_op})",
            ]
    lines += ["    transform.yield", "  }", "}"]
    return "\n".join(lines)


def _packed_gemm_lines(i: int, kernel: Kernel, s: Schedule) -> list:
    """Transform IR for a `packed_gemm` schedule (see `Schedule`) of kernel number `i`."""
    any_op = "!transform.any_op"
    nb = len(kernel.loop_ranges) - 3  # batch loops
    mr, nr = s.register_tile
    mc, nc = s.workgroup_tiles
    z = [0] * nb

    def lst(xs):
        return "[" + ", ".join(map(str, xs)) + "]"

    def tile_for(res, target, sizes):
        loops = sum(1 for x in sizes if x)
        handles = ", ".join([any_op] * (loops + 1))
        return (f"    {res}, %l{res[1:]}:{loops} = transform.structured.tile_using_for {target} "
                f"tile_sizes {lst(sizes)} : ({any_op}) -> ({handles})")

    f, v = f"%f{i}", f"%v{i}"
    lines = [
        f'    {f} = transform.structured.match ops{{["func.func"]}} '
        f'attributes{{sym_name = "{kernel.name}"}} in %root : ({any_op}) -> {any_op}',
        f"    %r{i} = transform.structured.match attributes{{kiln.root}} in {f} : ({any_op}) -> {any_op}",
        # Data tiling: loops [b.., M, N, K] -> [b.., M/mr, N/nr, K, mr, nr]; operands padded to panels.
        f"    %p{i} = transform.structured.pack %r{i} packed_sizes = {lst(z + [mr, nr, 0])} "
        f": ({any_op}) -> {any_op}",
    ]
    packed = f"%p{i}"
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
        f"    %t{i}, %wg{i} = transform.structured.tile_using_forall %pi{i} tile_sizes "
        f"{lst([1] * nb + [max(1, mc // mr), max(1, nc // nr), 0, 0, 0])} : ({any_op}) -> ({any_op}, {any_op})",
    ]
    if kernel.has_init_fill:
        lines += [
            f'    %fill{i} = transform.structured.match ops{{["linalg.fill"]}} in {f} : ({any_op}) -> {any_op}',
            f"    %fused{i}, %wg{i}b = transform.structured.fuse_into_containing_op %fill{i} into %wg{i} "
            f": ({any_op}, {any_op}) -> ({any_op}, {any_op})",
        ]
    lines += [
        tile_for(f"%k{i}", f"%t{i}", z + [0, 0, 0, 0, s.k_tile]),
        tile_for(f"%u{i}", f"%k{i}", z + [1, 1, 0, 0, s.k_unroll]),
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
        # Packs and unpacks -> pad + reshape + transpose; the transposes run as parallel workgroups.
        f'    %pk{i} = transform.structured.match ops{{["linalg.pack"]}} in {f} : ({any_op}) -> !transform.op<"linalg.pack">',
        f"    %pk{i}a, %pk{i}b, %pk{i}c = transform.structured.lower_pack %pk{i} : "
        f'(!transform.op<"linalg.pack">) -> (!transform.op<"tensor.pad">, '
        f'!transform.op<"tensor.expand_shape">, !transform.op<"linalg.transpose">)',
        f'    %up{i} = transform.structured.match ops{{["linalg.unpack"]}} in {f} : ({any_op}) -> !transform.op<"linalg.unpack">',
        f"    %up{i}a, %up{i}b, %up{i}c, %up{i}d = transform.structured.lower_unpack %up{i} : "
        f'(!transform.op<"linalg.unpack">) -> (!transform.op<"tensor.empty">, '
        f'!transform.op<"linalg.transpose">, !transform.op<"tensor.collapse_shape">, '
        f'!transform.op<"tensor.extract_slice">)',
        f'    %tr{i} = transform.structured.match ops{{["linalg.transpose"]}} in {f} : ({any_op}) -> {any_op}',
        f"    %trt{i}, %trw{i} = transform.structured.tile_using_forall %tr{i} num_threads [16] "
        f": ({any_op}) -> ({any_op}, {any_op})",
    ]
    return lines

