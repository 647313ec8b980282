"""Tensor-core GEMMs: bf16/f16 operands, f32 accumulators, on the matrix instruction of the chip.

    NVIDIA sm_80+      `mma.sync.m16n8k16`, per warp of 32 lanes
    NVIDIA sm_90a      `wgmma.mma_async.m64nNk16` per warpgroup of 128 lanes, for 16-bit tensors
                       (`gpu_wgmma` writes those kernels; this module picks their tiles)
    AMD CDNA gfx90a/gfx94x/gfx950   `v_mfma_f32_16x16x16_{bf16,f16}` (amdgpu.mfma), per wavefront of 64
    AMD RDNA3 gfx11xx  `v_wmma_f32_16x16x16_{bf16,f16}` (amdgpu.wmma), per wavefront of 32
    AMD RDNA4 gfx12xx  the same wmma with its own lane layout

Two kinds of GEMM-shaped contraction (loops [b.., m, n, k], see `schedules.gemm_form`) whose
extents fit whole tiles get this kernel instead of the SIMT schedule: one on bf16/f16 tensors (A
and B extended to f32 in its body, C f32), whatever the precision; and, with `precision="bf16"|
"f16"`, one on f32 tensors, whose operands are rounded to that type on the way into shared memory.

    block   TM x TN of C (a grid of M/TM x N/TN tiles x the batch loops' iterations): 128 x 128 for
            large GEMMs on 16-bit tensors, else up to 64 x 64
    warps   WM x WN of C each (2 x 2 warps or wavefronts, 2 x 4 or 4 x 2 in tiles `kiln tune` may
            pick; 64 x 64 or up to 32 x 32);
            16-row instruction tiles, f32 accumulators in registers through the whole K loop
    K step  KT (32 or 16) of A and B in shared memory: A as [TM, KT], B as [TN, KT] -- or [KT, TN]
            for B[k, n], read transposed, 16 columns per ldmatrix.x4.trans -- rows padded by 8
            elements against bank conflicts; the buffers are views of the kernel's dynamic shared
            memory, which its launch sizes (up to the chip's limit, `shared_memory_limit`). Two
            ways to get them there:
            - registers (any chip, any operands): every thread stores the 16-byte vectors it
              loaded during the previous step (8 bf16/f16 elements, or 4 f32 rounded to
              bf16/f16), issues the loads of the next step (in flight during this one's matrix
              instructions); a barrier; the instructions; a barrier.
            - a cp.async ring (NVIDIA, 16-bit tensors, 2 K steps or more): 2 to 4 buffers (as
              many as there are K steps), copies issued that many steps minus one ahead; per step
              one wait, one barrier, the next copies, the instructions.
            Each warp reads its fragments and issues (WM/16) x (WN/n) x (KT/16) instructions.

The kernel is written at the `loops` stage (on buffers). For NVIDIA it is vector code per warp --
vector.contract on 16x16 x 8x16 tiles read from shared memory -- which upstream's
`convert-vector-to-gpu{use-nvgpu}` turns into nvgpu.ldmatrix + nvgpu.mma.sync with the mma fragment
layouts. That conversion knows f16 but not bf16, so bf16 tiles are held in shared memory as f16-typed
16-bit words (same bits, no arithmetic on them) and each bf16 kernel's nvgpu.mma.sync is rewritten
into nvvm.mma.sync with bf16 multiplicands here (`_retype_bf16_mma`). MLIR has no such conversion to
amdgpu.mfma/wmma, so for AMD the kernel is written per lane: each lane loads the elements of A, B and
C its instruction's layout gives it (`MatrixCore`) and issues amdgpu.mfma/wmma, which
convert-gpu-to-rocdl lowers to the rocdl intrinsics. Shapes that do not fit (M % 16, N % n or
K % 16 nonzero, M < 16: decode steps; A or B computed in the kernel) keep the SIMT schedule, f32
operands rounded to the precision there too (`round_operands`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from mlir import ir

from ..errors import KilnError
from . import schedules

PRECISIONS = ("f32", "bf16", "f16")
PRECISION_ATTR = "kiln.precision"
MMA_ATTR = "kiln.mma_tile"  # MmaTile.attribute() on a kernel that gets the tensor-core schedule
_PAD = 8  # f16 elements of padding per shared-memory row (keeps fragment rows 16-byte aligned)


@dataclass(frozen=True)
class MatrixCore:
    """A chip's matrix instruction for a 16 x n tile of C with K = 16: bf16/f16 in, f32 accumulators.

    AMD's instructions take operands per lane: lane l holds row l % 16 of A's tile and column l % 16
    of B's, `k_per_lane` consecutive K elements from K offset k_per_lane * (l // 16) (modulo 16: with
    16, the two half-waves hold the same elements), and accumulator e of row
    e * acc_rows[0] + (l // 16) * acc_rows[1], column l % 16."""

    name: str  # "mma.sync", "mfma" or "wmma"
    lanes: int  # threads issuing one instruction: a warp, or a wavefront (64 on CDNA)
    n: int  # columns of C per instruction
    k_per_lane: int = 0
    acc_rows: tuple = (0, 0)

    @property
    def accumulators(self) -> int:
        """f32 accumulators per lane for one 16 x n tile."""
        return 16 * self.n // self.lanes


MMA_SYNC = MatrixCore("mma.sync", 32, 8)
MFMA = MatrixCore("mfma", 64, 16, k_per_lane=4, acc_rows=(1, 4))
WMMA_RDNA3 = MatrixCore("wmma", 32, 16, k_per_lane=16, acc_rows=(2, 1))
WMMA_RDNA4 = MatrixCore("wmma", 32, 16, k_per_lane=8, acc_rows=(1, 8))
_MFMA_CHIPS = ("gfx90a", "gfx940", "gfx941", "gfx942", "gfx950")  # CDNA2+: 16x16x16 bf16 (the "_1k" form)


def matrix_core(chip: str) -> MatrixCore | None:
    """The chip's matrix instruction with bf16/f16 multiplicands, or None (the SIMT schedule)."""
    if chip.startswith("sm_"):
        return MMA_SYNC if int(chip[3:].rstrip("a")) >= 80 else None
    if chip in _MFMA_CHIPS:
        return MFMA
    if re.match(r"^gfx11[0-9a-f]{2}$", chip):
        return WMMA_RDNA3
    if re.match(r"^gfx12[0-9a-f]{2}$", chip):
        return WMMA_RDNA4
    return None


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise KilnError(f"unknown precision '{precision}': give one of {', '.join(PRECISIONS)}")
    return precision


def module_precision(module: ir.Module) -> str:
    """The precision recorded on the module by kiln.compile (`kiln.precision`), else f32."""
    attrs = module.operation.attributes
    return ir.StringAttr(attrs[PRECISION_ATTR]).value if PRECISION_ATTR in attrs else "f32"


@dataclass(frozen=True)
class MmaTile:
    tm: int  # rows of C per block
    tn: int  # columns of C per block
    kt: int  # K per shared-memory stage
    wm: int  # rows of C per warp
    wn: int  # columns of C per warp
    lanes: int  # threads per warp (wavefront)
    stages: int = 1  # shared-memory buffers: 1 (staged through registers) or a cp.async ring

    @property
    def threads(self) -> int:
        return self.lanes * (self.tm // self.wm) * (self.tn // self.wn)

    def attribute(self) -> list:
        return [self.tm, self.tn, self.kt, self.wm, self.wn, self.lanes, self.stages]

    @property
    def warpgroups(self) -> bool:
        """Is this a Hopper wgmma tile (`gpu_wgmma`): "warps" of 128 lanes, warpgroups?"""
        return self.lanes == WARPGROUP

    def shared_bytes(self, kn: bool) -> int:
        """Shared memory of the A and B buffers (16-bit elements, rows padded by _PAD; unpadded,
        swizzled, for wgmma)."""
        if self.warpgroups:
            return 2 * self.stages * self.kt * (self.tm + self.tn)
        b_rows = self.tn * (self.kt + _PAD) if not kn else self.kt * (self.tn + _PAD)
        return 2 * self.stages * (self.tm * (self.kt + _PAD) + b_rows)


WARPGROUP = 128  # lanes of a Hopper warpgroup: the MmaTile.lanes of wgmma tiles
ASYNC_STAGES = 4  # cp.async ring depth: three K steps in flight during a fourth's matrix instructions
SHARED_BYTES_ATTR = "kiln.shared_bytes"  # on a tensor-core kernel: its dynamic shared memory


def shared_memory_limit(chip: str) -> int:
    """The shared memory (LDS) one block of a kernel may use on `chip`, in bytes. Tensor-core kernels
    take theirs as dynamic shared memory, which on NVIDIA a kernel opts into beyond 48 KiB (the
    runtime does, `allow_shared_memory`): 163 KiB on sm_80/sm_87, 99 KiB on sm_86/sm_89/sm_120, 227
    KiB on sm_90/sm_100 (CUDA programming guide, "technical specifications per compute capability");
    64 KiB of LDS per workgroup on AMD chips, 160 KiB on gfx950."""
    if chip.startswith("sm_"):
        major_minor = int(chip[3:].rstrip("af"))
        return {80: 163, 87: 163, 90: 227, 100: 227, 103: 227}.get(major_minor, 99) * 1024
    return 160 * 1024 if chip == "gfx950" else 64 * 1024


def warpgroup_mma(chip: str) -> bool:
    """Has `chip` Hopper's wgmma.mma_async (`gpu_wgmma`)? Only sm_90a: PTX's arch-specific target
    (sm_90 code may not use it, nor may later chips')."""
    return chip == "sm_90a"


def mma_schedule(kernel: schedules.Kernel, func, precision: str, chip: str, cache=None) -> tuple:
    """(tile, source) of a kernel that takes the tensor-core kernel -- the tile a `kiln.mma_tile`
    attribute forces (`kiln tune` sets it), else the tuning cache's winner for this GEMM on `chip`,
    else `default_tile`'s -- or (None, "") when it keeps the SIMT schedule (see module doc)."""
    core = matrix_core(chip)
    if not _takes_tensor_cores(kernel, func, precision, core):
        return None, ""
    if MMA_ATTR in func.attributes:
        tile = MmaTile(*ir.DenseI64ArrayAttr(func.attributes[MMA_ATTR]))
        if not fits(tile, kernel, chip):
            raise KilnError(f"kernel {kernel.name}: the forced tensor-core tile {tile.attribute()} does not fit "
                            f"loops {list(kernel.loop_ranges)} on {chip}")
        return tile, "attribute"
    if cache is not None:
        from ..tuning import kernel_key

        arg_types = list(ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value).inputs)
        entry = cache.get(kernel_key(kernel, arg_types, chip))
        if entry is not None and "mma_tile" in entry and fits(MmaTile(*entry["mma_tile"]), kernel, chip):
            return MmaTile(*entry["mma_tile"]), "tuned"
    tile = default_tile(kernel, chip)
    return (tile, "default") if tile is not None else (None, "")


def _takes_tensor_cores(kernel: schedules.Kernel, func, precision: str, core) -> bool:
    """A static GEMM-shaped contraction on bf16/f16 multiplicands (f32 ones with a bf16/f16
    precision) of its arguments, into C filled with a constant or accumulated into an argument, on a
    chip with a matrix instruction."""
    if core is None or kernel.kernel_class != "contraction" or not kernel.gemm_rhs:
        return False
    if kernel.gemm_multiplicands == "f32" and precision == "f32":
        return False  # f32 products stay f32 (SIMT): only bf16/f16 multiplicands go to the matrix cores
    if any(r < 0 for r in kernel.loop_ranges):
        return False
    root, block = _root(func), func.regions[0].blocks[0]
    if not _only_gemm(block):
        return False
    if any(_arg_number(v, block) is None for v in root.operands[:2]):
        return False  # an operand computed in the kernel: its shape and layout are not the argument's
    c = root.operands[2]  # C: an argument, or an argument filled with a constant
    return _arg_number(c, block) is not None or (
        c.owner.name == "linalg.fill" and _arg_number(c.owner.operands[1], block) is not None
        and not isinstance(c.owner.operands[0].owner, ir.Block))


def default_tile(kernel: schedules.Kernel, chip: str):
    """The untuned tile: 128 x 128 blocks of 2 x 2 warps of 64 x 64 for large GEMMs on 16-bit tensors
    (each element of A and B read from shared memory is used 8 (A) or 4 (B) times per warp; 128
    accumulators per lane), else blocks up to 64 x 64 of warps up to 32 x 32; K steps of 32 (or 16);
    on NVIDIA, for 16-bit tensors, a cp.async ring of as many buffers (up to 4) as the chip's shared
    memory holds. On sm_90a, 16-bit GEMMs of 128 x 128 blocks or more take wgmma instead: 2
    warpgroups of 64 x 256 (or 64 x 128) each. None when no tile divides the GEMM."""
    core = matrix_core(chip)
    m, n, k = kernel.loop_ranges[-3:]
    for tn in (256, 128):  # sm_90a: 2 warpgroups of 64 x tn, K steps of 64, the deepest ring that fits
        for stages in range(ASYNC_STAGES, 2, -1):
            tile = MmaTile(128, tn, 64, 64, tn, WARPGROUP, stages)
            if fits(tile, kernel, chip):
                return tile
    kt = next((t for t in (32, 16) if k % t == 0), 0)
    if kernel.gemm_multiplicands != "f32" and m % 128 == 0 and n % 128 == 0 and kt == 32:
        tile = MmaTile(128, 128, kt, 64, 64, core.lanes)
    else:
        tm = next((t for t in (64, 32, 16) if m % t == 0), 0)
        tn = next((t for t in (64, 32, 16, 8) if n % t == 0 and t % core.n == 0), 0)
        if not (tm and tn and kt):
            return None
        tile = MmaTile(tm, tn, kt, min(tm, 32), min(tn, 32), core.lanes)
    for stages in range(ASYNC_STAGES, 1, -1):
        ring = dataclasses.replace(tile, stages=stages)
        if fits(ring, kernel, chip):
            return ring
    return tile


def fits(tile: MmaTile, kernel: schedules.Kernel, chip: str) -> bool:
    """Can `tile` compute this GEMM on `chip`: whole blocks, warps and instruction tiles; at most 128
    accumulators per lane; its buffers in the chip's shared memory; a cp.async ring (stages > 1) only
    on NVIDIA for 16-bit tensors, with whole 16-byte chunks per thread and a K step per buffer at
    least."""
    core = matrix_core(chip)
    m, n, k = kernel.loop_ranges[-3:]
    if tile.warpgroups:
        return _fits_warpgroups(tile, kernel, chip)
    if not (tile.lanes == core.lanes and tile.kt in (16, 32, 64) and m % tile.tm == 0 and n % tile.tn == 0
            and k % tile.kt == 0 and tile.tm % tile.wm == 0 and tile.tn % tile.wn == 0 and tile.wm % 16 == 0
            and tile.wn % core.n == 0 and tile.wm * tile.wn // core.lanes <= 128 and tile.threads <= 1024
            and tile.shared_bytes(kernel.gemm_rhs == "kn") <= shared_memory_limit(chip)):
        return False
    if tile.stages == 1:
        return True
    chunks = 8 * tile.threads
    return (core.name == "mma.sync" and kernel.gemm_multiplicands != "f32" and k // tile.kt >= tile.stages
            and (tile.tm * tile.kt) % chunks == 0 and (tile.tn * tile.kt) % chunks == 0)


def _fits_warpgroups(tile: MmaTile, kernel: schedules.Kernel, chip: str) -> bool:
    """A wgmma tile (`gpu_wgmma`) on sm_90a, for 16-bit tensors: warpgroups of 64 rows and 64 to 256
    columns (whole 128-byte swizzle atoms of B[k, n]), K steps of 64 (one 128-byte row of A), a
    cp.async ring of 3 buffers or more (one read by the instructions in flight, one by those
    issued, the others loading) with whole 16-byte chunks per thread, at most 128 accumulators per
    lane."""
    m, n, k = kernel.loop_ranges[-3:]
    return (warpgroup_mma(chip) and kernel.gemm_multiplicands in ("bf16", "f16") and tile.kt == 64
            and tile.wm == 64 and tile.wn in (64, 128, 192, 256) and tile.tm % 64 == 0 and tile.tn % tile.wn == 0
            and m % tile.tm == 0 and n % tile.tn == 0 and k % tile.kt == 0 and 3 <= tile.stages <= k // tile.kt
            and tile.threads <= 1024 and tile.wn // 2 <= 128
            and (tile.tm * tile.kt) % (8 * tile.threads) == 0 and (tile.tn * tile.kt) % (8 * tile.threads) == 0
            and tile.shared_bytes(kernel.gemm_rhs == "kn") <= shared_memory_limit(chip))


def tile_candidates(kernel: schedules.Kernel, chip: str) -> list:
    """The tiles `kiln tune` times for a tensor-core GEMM on `chip` (those that fit): blocks of 4 or 8
    warps from 32 x 32 to 256 x 128, K steps of 16 to 64, staged through registers or a cp.async ring
    of 2 to 5 buffers; on sm_90a also wgmma tiles of 1 to 4 warpgroups, rings of 3 to 6 buffers."""
    core = matrix_core(chip)
    found = []
    for tm, tn, wm, wn in ((32, 32, 16, 16), (64, 64, 32, 32), (128, 64, 64, 32), (64, 128, 32, 64),
                           (128, 128, 64, 64), (128, 128, 64, 32), (128, 128, 32, 64),
                           (128, 256, 64, 64), (256, 128, 64, 64)):
        for kt in (16, 32, 64):
            for stages in (1, 2, 3, 4, 5):
                tile = MmaTile(tm, tn, kt, wm, wn, core.lanes, stages)
                if fits(tile, kernel, chip):
                    found.append(tile)
    if warpgroup_mma(chip):
        for tm, tn, wn in ((64, 128, 128), (64, 256, 256), (128, 128, 128), (128, 128, 64), (128, 256, 256),
                           (128, 256, 128), (256, 128, 128)):
            for stages in (3, 4, 5, 6):
                tile = MmaTile(tm, tn, 64, 64, wn, WARPGROUP, stages)
                if fits(tile, kernel, chip):
                    found.append(tile)
    return found


def _only_gemm(block) -> bool:
    """Does the kernel body hold just its root GEMM, at most one fill, constants and the return?"""
    names = [o.operation.name for o in block.operations]
    return (names.count("linalg.generic") == 1 and names.count("linalg.fill") <= 1
            and all(n in ("arith.constant", "linalg.fill", "linalg.generic", "func.return") for n in names)
            and any("kiln.root" in o.attributes for o in block.operations))


def _root(func):
    return next((o for o in func.regions[0].blocks[0].operations if "kiln.root" in o.attributes), None)


def operand_args(func) -> tuple:
    """The argument numbers of a GEMM kernel's A and B (its root's inputs), before tiling."""
    root, block = _root(func), func.regions[0].blocks[0]
    return tuple(_arg_number(v, block) for v in root.operands[:2])


def round_operands(func, args: tuple, precision: str) -> None:
    """Rounds a tiled SIMT GEMM's A and B (arguments `args`) to `precision`: the product is then of
    bf16/f16 values, summed in f32, as on tensor cores. Vectorized schedules get extf(truncf(v)) on
    each vector read of A or B (the contraction stays a contraction: FMAs); scalar ones in the
    root's body."""
    from mlir.dialects import arith

    low = ir.BF16Type.get() if precision == "bf16" else ir.F16Type.get()
    block = func.regions[0].blocks[0]
    reads, roots = [], []
    _walk(func, lambda o: reads.append(o) if o.operation.name == "vector.transfer_read"
          and _traced_arg(o.operands[0], block) in args else
          roots.append(o) if "kiln.root" in o.attributes else None)
    for read in reads:
        with ir.InsertionPoint.after(read), read.location:
            low_value = arith.truncf(ir.VectorType.get(read.result.type.shape, low), read.result)
            rounded = arith.extf(read.result.type, low_value)
        read.result.replace_all_uses_except(rounded, low_value.owner.operation)
    for root in roots:
        body = root.regions[0].blocks[0]
        mul = next(iter(body.operations))  # gemm_form: the body is mulf(a, b), addf, yield
        with ir.InsertionPoint(mul), mul.location:
            for j, v in enumerate(list(mul.operands)):
                if _arg_number(v, body) in (0, 1):
                    mul.operands[j] = arith.extf(v.type, arith.truncf(low, v))


def _traced_arg(value, block):
    """The argument of `block` that `value` is a slice of, or None."""
    while not isinstance(value.owner, ir.Block) and value.owner.name == "tensor.extract_slice":
        value = value.owner.operands[0]
    return _arg_number(value, block)


# ---- C stored rounded (tiled stage: found; loops stage: done) ----------------------------------

ROUNDING_ATTR = "kiln.mma_rounds_c"  # on a tensor-core kernel that stores C rounded to this type
_ROUNDING_KERNEL_ATTR = "kiln.rounds_mma_result"  # on the elementwise kernel that did the rounding


def mark_rounded_results(module: ir.Module) -> None:
    """A GEMM on bf16/f16 tensors sums in f32, and a transformer op whose result is bf16/f16 rounds
    that sum in a second kernel. When every caller of a tensor-core kernel passes its C only to such a
    rounding kernel, the GEMM can store C rounded itself: this marks both (at `tiled`, on tensors,
    while the rounding is still one linalg.generic); `absorb_rounding` rewires the calls at `loops`."""
    funcs = {ir.StringAttr(op.attributes["sym_name"]).value: op
             for op in module.body.operations if op.operation.name == "func.func"}
    callers = _host_calls(module)
    for name, func in funcs.items():
        if MMA_ATTR not in func.attributes or name not in callers:
            continue
        low = str(ir.ShapedType(func.regions[0].blocks[0].arguments[operand_args(func)[0]].type).element_type)
        if low not in ("bf16", "f16") or _fill_constant(func) is None:
            continue
        roundings = []
        for call in callers[name]:
            uses = list(call.results[0].uses) if len(call.results) == 1 else []
            user = uses[0].owner if len(uses) == 1 else None
            callee = ir.FlatSymbolRefAttr(user.attributes["callee"]).value \
                if user is not None and user.name == "func.call" else None
            if callee is None or uses[0].operand_number != 0 or not _rounds_to(funcs[callee], low):
                break
            roundings.append(funcs[callee])
        else:
            func.attributes[ROUNDING_ATTR] = ir.StringAttr.get(low)
            for r in roundings:
                r.attributes[_ROUNDING_KERNEL_ATTR] = ir.UnitAttr.get()


def _fill_constant(func):
    """The constant a kernel's fill starts C at, or None (no fill: C accumulates into an argument)."""
    fill = next((o for o in func.regions[0].blocks[0].operations if o.operation.name == "linalg.fill"), None)
    if fill is None or isinstance(fill.operands[0].owner, ir.Block):
        return None
    return ir.FloatAttr(fill.operands[0].owner.attributes["value"]).value


def _rounds_to(func, low: str) -> bool:
    """Is `func` (a dispatch, on tensors) y = truncf(x) elementwise, from f32 argument 0 into `low`?"""
    ops = list(func.regions[0].blocks[0].operations)
    if [o.operation.name for o in ops] != ["linalg.generic", "func.return"] or len(func.regions[0].blocks[0].arguments) != 2:
        return False
    generic = ops[0]
    body = [o.operation.name for o in generic.regions[0].blocks[0].operations]
    maps = {str(m) for m in ir.ArrayAttr(generic.attributes["indexing_maps"])}
    x, y = generic.operands
    return (body == ["arith.truncf", "linalg.yield"] and len(maps) == 1
            and "->" in maps.pop() and _arg_number(x, func.regions[0].blocks[0]) == 0
            and str(ir.ShapedType(y.type).element_type) == low
            and str(ir.ShapedType(x.type).element_type) == "f32")


def absorb_rounding(module: ir.Module, func, name: str):
    """At `loops` (on buffers): every host call of tensor-core kernel `func` marked ROUNDING_ATTR
    passes, instead of its f32 C buffer, the buffer its rounding kernel wrote, whose call goes (and
    with it the f32 buffer). Returns C's element type: the mark's, or None (unmarked)."""
    if ROUNDING_ATTR not in func.attributes:
        return None
    c_arg = _c_arg(func)
    sites = []
    for call in _host_calls(module).get(name, []):
        c = call.operands[c_arg]
        users = [u.owner for u in c.uses if u.owner != call]
        rounding = [u for u in users if u.name == "func.call" and _ROUNDING_KERNEL_ATTR in
                    _callee(module, u).attributes and u.operands[0] == c]
        if len(rounding) != 1 or any(u.name != "memref.dealloc" for u in users if u != rounding[0]):
            raise KilnError(f"stage 'loops': kernel {name} stores C rounded, but a caller's C buffer "
                            f"({c.type}) is not only rounded after the call:\n{call}")
        sites.append((call, c, rounding[0]))
    for call, c, rounding in sites:
        call.operands[c_arg] = rounding.operands[1]
        rounding.erase()
        for u in [u.owner for u in c.uses]:
            u.erase()  # its dealloc
        if not isinstance(c.owner, ir.Block) and not list(c.uses):
            c.owner.erase()
    return ir.StringAttr(func.attributes[ROUNDING_ATTR]).value


def _host_calls(module: ir.Module) -> dict:
    """callee name -> the func.call ops of the host functions (not the kernels) that call it."""
    calls = {}
    for f in module.body.operations:
        if f.operation.name == "func.func" and "kiln.dispatch" not in f.attributes and f.regions[0].blocks:
            _walk(f, lambda o: calls.setdefault(ir.FlatSymbolRefAttr(o.attributes["callee"]).value, []).append(o)
                  if o.operation.name == "func.call" else None)
    return calls


def _c_arg(func) -> int:
    """The argument number of a tensor-core kernel's C, on buffers (its root writes the argument)."""
    return _arg_number(_root(func).operands[2], func.regions[0].blocks[0])


def _callee(module: ir.Module, call):
    name = ir.FlatSymbolRefAttr(call.attributes["callee"]).value
    return next(op for op in module.body.operations
                if op.operation.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == name)


def _round_c_stores(func, c_arg: int, low: str) -> None:
    """Every store of the kernel into C (argument c_arg: vector.transfer_write, vector.store or
    memref.store of f32 values) rounds its value to `low`, and C becomes a `low` buffer."""
    from mlir.dialects import arith

    c = func.regions[0].blocks[0].arguments[c_arg]
    low_t = ir.BF16Type.get() if low == "bf16" else ir.F16Type.get()
    stores = [u.owner for u in c.uses if u.owner.name in ("vector.transfer_write", "vector.store", "memref.store")]
    if len(stores) != len(list(c.uses)):
        raise KilnError(f"kernel {ir.StringAttr(func.attributes['sym_name']).value}: C is read, not only stored")
    for store in stores:
        value = store.operands[0]
        t = value.type
        rounded_t = ir.VectorType.get(ir.VectorType(t).shape, low_t) if isinstance(t, ir.VectorType) else low_t
        with ir.InsertionPoint(store), store.location:
            store.operands[0] = arith.truncf(rounded_t, value)
        if "alignment" in store.attributes:  # (`_align_c_fragments`: f32 pairs) half the bytes now
            align = ir.IntegerAttr(store.attributes["alignment"]).value // 2
            store.attributes["alignment"] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), align)
    memref_t = ir.MemRefType(c.type)
    c.set_type(ir.MemRefType.get(memref_t.shape, low_t))
    ftype = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    inputs = list(ftype.inputs)
    inputs[c_arg] = c.type
    func.attributes["function_type"] = ir.TypeAttr.get(ir.FunctionType.get(inputs, ftype.results))


# ---- the kernel (loops stage) ---------------------------------------------------------------


def build_kernels(module: ir.Module, chip: str) -> None:
    """Rewrites every kernel marked `kiln.mma_tile` (on buffers, after bufferization) into its
    tensor-core form for `chip`: block and thread foralls around the K loop, the chip's matrix
    instructions inside."""
    precision, core = module_precision(module), matrix_core(chip)
    for op in list(module.body.operations):
        if op.operation.name != "func.func" or MMA_ATTR not in op.attributes:
            continue
        name = ir.StringAttr(op.attributes["sym_name"]).value
        tile = MmaTile(*ir.DenseI64ArrayAttr(op.attributes[MMA_ATTR]))
        low = _multiplicand_type(op, precision)
        rounded_c = absorb_rounding(module, op, name)
        c_arg = _c_arg(op)
        if tile.warpgroups:
            from . import gpu_wgmma

            text = gpu_wgmma.kernel_text(gemm_of(op, name), name, tile, low)
        else:
            text = _kernel_text(op, name, tile, low, core)
        new = ir.Module.parse(text, context=module.context)
        ops = list(new.body.operations)
        for new_op in ops:
            new_op.operation.move_before(op)
        for attr in [op.attributes[i] for i in range(len(op.attributes))]:
            if attr.name not in ("function_type", "sym_name", "sym_visibility"):
                ops[-1].attributes[attr.name] = attr.attr
        op.operation.erase()
        if core.name == "mma.sync" and not tile.warpgroups:
            _to_mma_sync(ops[-1], name, low)
        if rounded_c:
            _round_c_stores(ops[-1], c_arg, rounded_c)
    _drop_uncalled_rounding_kernels(module)


def _drop_uncalled_rounding_kernels(module: ir.Module) -> None:
    """Rounding kernels whose every call `absorb_rounding` removed."""
    called = _host_calls(module)
    for f in list(module.body.operations):
        if (f.operation.name == "func.func" and _ROUNDING_KERNEL_ATTR in f.attributes
                and ir.StringAttr(f.attributes["sym_name"]).value not in called):
            f.operation.erase()


def size_shared_memory(module: ir.Module) -> None:
    """After outlining: each tensor-core kernel's launch takes the dynamic shared memory the kernel
    needs (`kiln.shared_bytes` on its host function), as gpu.launch_func's
    `dynamic_shared_memory_size`, which the launch plan passes on to the driver."""
    from mlir.dialects import arith

    for func in module.body.operations:
        if func.operation.name != "func.func" or SHARED_BYTES_ATTR not in func.attributes:
            continue
        nbytes = ir.IntegerAttr(func.attributes[SHARED_BYTES_ATTR]).value
        launches = []
        _walk(func, lambda o: launches.append(o) if o.operation.name == "gpu.launch_func" else None)
        for launch in launches:
            segments = list(ir.DenseI32ArrayAttr(launch.attributes["operandSegmentSizes"]))
            if segments[_DYNAMIC_SHARED_SEGMENT]:
                continue
            with ir.InsertionPoint(launch), launch.location:
                size = arith.constant(ir.IntegerType.get_signless(32), nbytes)
                operands = list(launch.operands)
                operands.insert(sum(segments[:_DYNAMIC_SHARED_SEGMENT]), size)
                segments[_DYNAMIC_SHARED_SEGMENT] = 1
                attributes = {a.name: a.attr for a in (launch.attributes[i] for i in range(len(launch.attributes)))}
                attributes["operandSegmentSizes"] = ir.DenseI32ArrayAttr.get(segments)
                ir.Operation.create("gpu.launch_func", results=[r.type for r in launch.results],
                                    operands=operands, attributes=attributes)
            launch.erase()


# gpu.launch_func's operand groups: async dependencies, grid x/y/z, block x/y/z, cluster x/y/z,
# dynamic shared memory size, kernel operands, async object
_DYNAMIC_SHARED_SEGMENT = 10


def _multiplicand_type(func, precision: str) -> str:
    """What a tensor-core kernel multiplies: its A's element type when that is bf16/f16, else (f32
    operands) the module's precision."""
    a = func.regions[0].blocks[0].arguments[operand_args(func)[0]]
    elt = str(ir.ShapedType(a.type).element_type)
    return elt if elt in ("bf16", "f16") else precision


def _to_mma_sync(func, name: str, low: str) -> None:
    """vector.contract on shared-memory tiles -> nvgpu.ldmatrix + nvgpu.mma.sync (upstream), then
    bf16 multiplicands for bf16 kernels."""
    from mlir.passmanager import PassManager

    pm = PassManager.parse("func.func(convert-vector-to-gpu{use-nvgpu=true},canonicalize,cse)",
                           context=func.context)
    try:
        pm.run(func.operation)
    except ir.MLIRError as e:
        raise KilnError(f"stage 'loops': kernel {name}: the tensor-core rewrite failed: {e}") from e
    left = []
    _walk(func, lambda o: left.append(o) if o.operation.name == "vector.contract" else None)
    if left:
        raise KilnError(f"stage 'loops': kernel {name}: {len(left)} vector.contract were not turned into mma.sync")
    if low == "bf16":
        _retype_bf16_mma(func)
    _align_c_fragments(func)


def _align_c_fragments(func) -> None:
    """The accumulators' loads and stores of C (2 f32 per lane, at an even column of a row of N % 8
    == 0 elements) are 8-byte aligned: say so, for one 64-bit access instead of two."""
    found = []
    _walk(func, lambda o: found.append(o) if o.operation.name in ("vector.load", "vector.store") else None)
    for op in found:
        memref = op.operands[0 if op.operation.name == "vector.load" else 1]
        vec = op.result.type if op.operation.name == "vector.load" else op.operands[0].type
        if str(vec) == "vector<2xf32>" and "alignment" not in op.attributes \
                and "workgroup" not in str(memref.type):
            op.attributes["alignment"] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), 8)


def _arg_number(value, block):
    if not isinstance(value.owner, ir.Block):
        return None
    arg = ir.BlockArgument(value)
    return arg.arg_number if arg.owner == block else None


def _dims(amap_attr) -> list:
    return [e.maybe_downcast().position for e in ir.AffineMapAttr(amap_attr).value.results]


class KernelText:
    """SSA names and lines of the generated kernel."""

    def __init__(self):
        self.lines, self.count, self.constants = [], 0, set()

    def c(self, value: int) -> str:
        self.constants.add(value)
        return f"%c{value}"

    def fresh(self) -> str:
        self.count += 1
        return f"%v{self.count}"

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def apply(self, expr: str, *operands) -> str:
        """affine.apply of `expr` over d0, d1, ... = operands."""
        v = self.fresh()
        dims = ", ".join(f"d{i}" for i in range(len(operands)))
        self.emit(f"{v} = affine.apply affine_map<({dims}) -> ({expr})>({', '.join(operands)})")
        return v


@dataclass
class Gemm:
    """A tensor-core kernel's GEMM on its arguments, after bufferization: what both kernel writers
    (this module's, `gpu_wgmma`'s) need."""

    types: list  # the kernel's argument types
    a: int  # argument numbers of A, B and C
    b: int
    c: int
    init: float | None  # C's initial value: the fill's constant, or None (accumulated into C)
    ranges: list  # loop ranges [b.., m, n, k]
    rhs: list  # B's loops
    kn: bool  # B is [k, n] (else [n, k])
    elt: str  # A's and B's element type in memory

    @property
    def nb(self) -> int:
        return len(self.ranges) - 3


def gemm_of(func, name: str) -> Gemm:
    """The GEMM of a kernel with the tensor-core schedule (a fill + GEMM root on its arguments)."""
    block = func.regions[0].blocks[0]
    root, fill = _root(func), next((o for o in block.operations if o.operation.name == "linalg.fill"), None)
    arg_of = [None if root is None else _arg_number(v, block) for v in (root.operands if root else [])]
    if (not _only_gemm(block) or None in arg_of
            or (fill is not None and _arg_number(fill.operands[1], block) != arg_of[2])):
        raise KilnError(f"stage 'loops': kernel {name} has the tensor-core schedule but is not a GEMM on its "
                        f"arguments (C filled or accumulated into) after bufferization:\n{func}")
    types = [str(a.type) for a in block.arguments]
    for i in arg_of:
        strides, offset = ir.MemRefType(block.arguments[i].type).get_strides_and_offset()
        if offset != 0 or strides[-1] != 1:
            raise KilnError(f"stage 'loops': kernel {name}: argument {i} ({types[i]}) is not a dense buffer")
    ranges = list(ir.DenseI64ArrayAttr(func.attributes["kiln.loop_ranges"]))
    nb = len(ranges) - 3
    rhs = _dims(ir.ArrayAttr(root.attributes["indexing_maps"])[1])
    return Gemm(types, *arg_of, init=None if fill is None else ir.FloatAttr(fill.operands[0].owner.attributes["value"]).value,
                ranges=ranges, rhs=rhs, kn=rhs[-2:] == [nb + 2, nb + 1],
                elt=str(ir.MemRefType(block.arguments[arg_of[0]].type).element_type))


def open_blocks(t: KernelText, g: Gemm, tm: int, tn: int) -> tuple:
    """Opens the grid's scf.forall (M / tm x N / tn blocks; the batch loops with several iterations
    share one more grid dimension, block z). Returns (grid, the block's first row and column of C,
    A's batch indices, B's batch indices)."""
    m, n, _ = g.ranges[g.nb:]
    batch_loops = [d for d in range(g.nb) if g.ranges[d] > 1]
    grid = ([math.prod(g.ranges[d] for d in batch_loops)] if batch_loops else []) + [m // tm, n // tn]
    gids = [f"%g{i}" for i in range(len(grid))]
    t.emit(f"scf.forall ({', '.join(gids)}) in ({', '.join(map(str, grid))}) {{")
    batch = {}
    for j, d in enumerate(batch_loops):
        inner = math.prod(g.ranges[e] for e in batch_loops[j + 1:])
        batch[d] = t.apply(f"(d0 floordiv {inner}) mod {g.ranges[d]}", gids[0])
    a_batch = [batch.get(d, t.c(0)) for d in range(g.nb)]
    b_batch = [batch.get(d, t.c(0)) for d in g.rhs[:-2]]
    return grid, t.apply(f"d0 * {tm}", gids[-2]), t.apply(f"d0 * {tn}", gids[-1]), a_batch, b_batch


def close_blocks(t: KernelText, grid: list) -> None:
    """Closes the thread and grid foralls `open_blocks` and the kernel opened."""
    t.emit("} {mapping = [#gpu.thread<x>]}")
    axes = ["x", "y", "z"][: len(grid)]
    t.emit(f"}} {{mapping = [{', '.join(f'#gpu.block<{a}>' for a in reversed(axes))}]}}")
    t.emit("return")


def function_text(name: str, types: list, shared_bytes: int, t: KernelText) -> str:
    """The kernel function around `t`'s lines, with its constants and `kiln.shared_bytes`."""
    consts = [f"%c{v} = arith.constant {v} : index" for v in sorted(t.constants)]
    args = ", ".join(f"%arg{i}: {ty}" for i, ty in enumerate(types))
    return "\n".join([
        f"func.func private @{name}({args}) attributes {{{SHARED_BYTES_ATTR} = {shared_bytes} : i64}} {{",
        *consts, *t.lines, "}",
    ])


def _kernel_text(func, name: str, tile: MmaTile, low: str, core: MatrixCore) -> str:
    """The tensor-core kernel replacing `func` (a fill + GEMM root on its arguments) multiplying in
    `low` (bf16 or f16), as MLIR text (a function whose `kiln.shared_bytes` is the dynamic shared
    memory it needs)."""
    g = gemm_of(func, name)
    init, types, kn, elt = g.init, g.types, g.kn, g.elt
    ta, tb, tc = (types[i] for i in (g.a, g.b, g.c))
    va, vb, vc = (f"%arg{i}" for i in (g.a, g.b, g.c))
    m, n, k = g.ranges[g.nb:]
    # A and B in memory: f32 (rounded to `low` on the way into shared memory), or `low` tensors,
    # copied as they are
    vec = 16 // (4 if elt == "f32" else 2)  # elements per 16-byte load
    threads, stages = tile.threads, tile.stages

    # Shared memory, one buffer per stage: A as [TM, KT], B as [TN, KT] -- or as [KT, TN] when it is
    # B[k, n] (its fragments are then read transposed: ldmatrix.trans) -- rows padded by _PAD elements.
    # Both are views of the kernel's dynamic shared memory (A's buffers first, then B's; sized at the
    # launch, see `size_shared_memory`), as f16 words for the fragment reads (bf16 ones too, see
    # module doc) and, for bf16 cp.async copies, as bf16.
    smem = "#gpu.address_space<workgroup>"
    shapes = {"a": (stages, tile.tm, tile.kt + _PAD),
              "b": (stages, tile.kt, tile.tn + _PAD) if kn else (stages, tile.tn, tile.kt + _PAD)}
    smem_t = {x: f"memref<{'x'.join(map(str, shape))}xf16, {smem}>" for x, shape in shapes.items()}
    raw_t = f"memref<?xi8, {smem}>"
    byte_offset = {"a": 0, "b": 2 * math.prod(shapes["a"])}

    t = KernelText()
    grid, m0, n0, a_batch, b_batch = open_blocks(t, g, tile.tm, tile.tn)
    copy_t = dict(smem_t)  # what cp.async writes: the operands' own type
    t.emit(f"%smem = gpu.dynamic_shared_memory : {raw_t}")
    for x in "ab":
        at = t.c(byte_offset[x])
        t.emit(f"%s{x} = memref.view %smem[{at}][] : {raw_t} to {smem_t[x]}")
        if stages > 1:
            copy_t[x] = smem_t[x].replace("xf16,", f"x{low},")
            t.emit(f"%s{x}_in = memref.view %smem[{at}][] : {raw_t} to {copy_t[x]}")
    t.emit(f"scf.forall (%t) in ({threads}) {{")
    t.emit("%pad = arith.constant 0.0 : f16")
    wm, wn = _warp_offsets(t, tile)
    c_at = _CTile(t, vc, tc, a_batch, t.apply("d0 + d1", m0, wm), t.apply("d0 + d1", n0, wn))
    tiles = (_WarpTiles if core.name == "mma.sync" else _LaneTiles)(
        t, tile, core, low, (smem_t["a"], smem_t["b"], kn), (wm, wn), c_at)
    n_acc = (tile.wm // 16) * (tile.wn // core.n)
    inits = [tiles.initial(i, j, init) for i in range(tile.wm // 16) for j in range(tile.wn // core.n)]

    # Each thread's share of the A and B tiles: chunks of `vec` consecutive elements (one 16-byte
    # load), at (r, c) of the tile in shared memory; a thread past the last chunk loads the last one
    # again but stores nothing.
    def chunks(rows, cols):
        groups, out = cols // vec, []
        total = rows * groups
        for j in range((total + threads - 1) // threads):
            guard = total - j * threads if (j + 1) * threads > total else 0
            if guard:
                idx = t.fresh()
                t.emit(f"{idx} = affine.min affine_map<(d0) -> (d0 + {j * threads}, {total - 1})>(%t)")
            else:
                idx = t.apply(f"d0 + {j * threads}", "%t")
            out.append((t.apply(f"d0 floordiv {groups}", idx), t.apply(f"(d0 mod {groups}) * {vec}", idx), guard))
        return out

    a_chunks = chunks(tile.tm, tile.kt)
    b_chunks = chunks(tile.kt, tile.tn) if kn else chunks(tile.tn, tile.kt)
    sources = [("a", va, ta, a_batch, r, c, guard) for r, c, guard in a_chunks] + \
              [("b", vb, tb, b_batch, r, c, guard) for r, c, guard in b_chunks]

    def global_index(x, src_batch, r, c, k0) -> str:
        """The indices in A or B of a chunk at (r, c) of its shared-memory tile, at K offset k0."""
        if x == "a":
            index = [t.apply("d0 + d1", m0, r), t.apply("d0 + d1", k0, c)]
        elif kn:  # B[k, n] tile: r along K, c along N
            index = [t.apply("d0 + d1", k0, r), t.apply("d0 + d1", n0, c)]
        else:
            index = [t.apply("d0 + d1", n0, r), t.apply("d0 + d1", k0, c)]
        return ", ".join(src_batch + index)

    accs = [f"%a{i}" for i in range(n_acc)]
    carried = [tiles.acc_t] * n_acc
    results = t.fresh()
    steps = k // tile.kt
    if stages == 1:
        _register_staged_loop(t, tiles, tile, sources, global_index, vec, elt, low, core, k, inits, results)
    else:
        # cp.async ring: step s is copied into buffer s % stages, stages - 1 steps ahead of the one the
        # matrix instructions read. One barrier per step: after it, every thread's copies of step i
        # have landed (each waited for its own) and every warp is done with step i - 1, whose buffer
        # the copies issued next overwrite.
        token = "!nvgpu.device.async.token"

        def copy(k0, stage) -> str:
            tokens = []
            for x, src, src_t, src_batch, r, c, _ in sources:
                tokens.append(t.fresh())
                t.emit(f"{tokens[-1]} = nvgpu.device_async_copy {src}[{global_index(x, src_batch, r, c, k0)}], "
                       f"%s{x}_in[{stage}, {r}, {c}], {vec} {{bypassL1}} : {src_t} to {copy_t[x]}")
            group = t.fresh()
            t.emit(f"{group} = nvgpu.device_async_create_group {', '.join(tokens)}")
            return group

        pending = [copy(t.c(s * tile.kt), t.c(s)) for s in range(stages - 1)][-1]
        t.emit(f"{results}:{n_acc + 1} = scf.for %i = {t.c(0)} to {t.c(steps)} step {t.c(1)} iter_args("
               + ", ".join(f"{a} = {v}" for a, v in zip(accs + ["%pending"], inits + [pending]))
               + f") -> ({', '.join(carried + [token])}) {{")
        t.emit(f"nvgpu.device_async_wait %pending {{numGroups = {stages - 2} : i32}}")
        t.emit("gpu.barrier")
        k_next = t.fresh()  # past the last step: the last one again (in bounds, never read)
        t.emit(f"{k_next} = affine.min affine_map<(d0) -> ((d0 + {stages - 1}) * {tile.kt}, {k - tile.kt})>(%i)")
        issued = copy(k_next, t.apply(f"(d0 + {stages - 1}) mod {stages}", "%i"))
        stage, current = t.apply(f"d0 mod {stages}", "%i"), list(accs)
        for kk in range(tile.kt // 16):
            tiles.step(kk, current, stage)
        t.emit(f"scf.yield {', '.join(current + [issued])} : {', '.join(carried + [token])}")
        t.emit("}")
        t.emit(f"nvgpu.device_async_wait {results}#{n_acc} {{numGroups = 0 : i32}}")
    for i in range(tile.wm // 16):
        for j in range(tile.wn // core.n):
            tiles.write(i, j, f"{results}#{i * (tile.wn // core.n) + j}")
    close_blocks(t, grid)
    return function_text(name, types, tile.shared_bytes(kn), t)


def _register_staged_loop(t: KernelText, tiles, tile: MmaTile, sources: list, global_index, vec: int, elt: str,
                          low: str, core: MatrixCore, k: int, inits: list, results: str) -> None:
    """The K loop with one shared-memory buffer, staged through registers: the chunks loaded during
    step i - 1 are stored (f32 ones rounded to `low`), the loads of step i + 1 issued (in flight during
    this step's matrix instructions), a barrier, the matrix instructions, a barrier. The chunks wait in
    a small per-thread buffer (registers once LLVM promotes it) rather than in the loop's iter_args,
    which convert-vector-to-gpu would refuse."""
    def load(k0):
        values = []
        for x, src, src_t, src_batch, r, c, _ in sources:
            values.append(t.fresh())
            t.emit(f"{values[-1]} = vector.load {src}[{global_index(x, src_batch, r, c, k0)}] "
                   f"{{alignment = 16 : i64}} : {src_t}, vector<{vec}x{elt}>")
        return values

    def store(values):
        for value, (x, *_, r, c, guard) in zip(values, sources):
            if guard:
                ok = t.fresh()
                t.emit(f"{ok} = arith.cmpi ult, %t, {t.c(guard)} : index")
                t.emit(f"scf.if {ok} {{")
            h = value
            if elt == "f32":
                h = t.fresh()
                t.emit(f"{h} = arith.truncf {value} : vector<{vec}xf32> to vector<{vec}x{low}>")
            if low == "bf16":  # held as 16-bit f16 words (see module doc)
                w = t.fresh()
                t.emit(f"{w} = arith.bitcast {h} : vector<{vec}xbf16> to vector<{vec}xf16>")
                h = w
            smem_t = tiles.sa_t if x == "a" else tiles.sb_t
            t.emit(f"vector.store {h}, %s{x}[{t.c(0)}, {r}, {c}] {{alignment = {2 * vec} : i64}} "
                   f": {smem_t}, vector<{vec}xf16>")
            if guard:
                t.emit("}")

    private = "" if core.name == "mma.sync" else ", #gpu.address_space<private>"  # AMDGPU's allocas: addrspace 5
    regs_t = f"memref<{len(sources)}x{vec}x{elt}{private}>"
    t.emit(f"%regs = memref.alloca() : {regs_t}")

    def hold(values):
        for i, v in enumerate(values):
            t.emit(f"vector.store {v}, %regs[{t.c(i)}, {t.c(0)}] : {regs_t}, vector<{vec}x{elt}>")

    hold(load(t.c(0)))
    n_acc = len(inits)
    accs = [f"%a{i}" for i in range(n_acc)]
    t.emit(f"{results}:{n_acc} = scf.for %k0 = {t.c(0)} to {t.c(k)} step {t.c(tile.kt)} iter_args("
           + ", ".join(f"{a} = {v}" for a, v in zip(accs, inits)) + f") -> ({', '.join([tiles.acc_t] * n_acc)}) {{")
    held = []
    for i in range(len(sources)):
        held.append(t.fresh())
        t.emit(f"{held[-1]} = vector.load %regs[{t.c(i)}, {t.c(0)}] : {regs_t}, vector<{vec}x{elt}>")
    store(held)
    k_next = t.fresh()  # the last step loads its own tiles again (in bounds, unused)
    t.emit(f"{k_next} = affine.min affine_map<(d0) -> (d0 + {tile.kt}, {k - tile.kt})>(%k0)")
    hold(load(k_next))
    t.emit("gpu.barrier")
    current = list(accs)
    for kk in range(tile.kt // 16):
        tiles.step(kk, current, t.c(0))
    t.emit("gpu.barrier")
    t.emit(f"scf.yield {', '.join(current)} : {', '.join([tiles.acc_t] * n_acc)}")
    t.emit("}")


@dataclass
class _CTile:
    """Where a warp's part of C is: the buffer, its type, the batch indices and the warp's first row
    and column."""

    t: KernelText
    buffer: str
    type: str
    batch: list
    row: str
    col: str

    def index(self, row_offset, col_offset) -> str:
        """C's indices at (row_offset, col_offset) from the warp's corner: constants or SSA values."""
        def at(base, offset):
            return self.t.apply(f"d0 + {offset}", base) if isinstance(offset, int) else \
                self.t.apply("d0 + d1", base, offset)
        return ", ".join(self.batch + [at(self.row, row_offset), at(self.col, col_offset)])


class _WarpTiles:
    """NVIDIA: vector.contract per warp on 16x16 x 8x16 tiles of shared memory, turned into ldmatrix +
    mma.sync by upstream's convert-vector-to-gpu (`_to_mma_sync`)."""

    acc_t = "vector<16x8xf32>"
    _MAPS = ("indexing_maps = [affine_map<(m, n, k) -> (m, k)>, affine_map<(m, n, k) -> (n, k)>, "
             "affine_map<(m, n, k) -> (m, n)>], iterator_types = [\"parallel\", \"parallel\", \"reduction\"], "
             "kind = #vector.kind<add>")

    def __init__(self, t: KernelText, tile: MmaTile, core: MatrixCore, low: str, smem: tuple, warp: tuple,
                 c: _CTile):
        self.t, self.tile, self.c = t, tile, c
        self.sa_t, self.sb_t, self.kn = smem
        self.warp_m, self.warp_n = warp

    def initial(self, i: int, j: int, init) -> str:
        t = self.t
        if init is not None:
            v = t.fresh()
            t.emit(f"{v} = arith.constant dense<{init!r}> : {self.acc_t}")
            return v
        zero, v = t.fresh(), t.fresh()
        t.emit(f"{zero} = arith.constant 0.0 : f32")
        t.emit(f"{v} = vector.transfer_read {self.c.buffer}[{self.c.index(16 * i, 8 * j)}], {zero} "
               f"{{in_bounds = [true, true]}} : {self.c.type}, {self.acc_t}")
        return v

    def step(self, kk: int, current: list, stage: str) -> None:
        """The instructions of K step kk (16 elements) of shared-memory buffer `stage`."""
        t, tile = self.t, self.tile
        col = t.c(16 * kk)
        rows, cols = "affine_map<(s, r, c) -> (r, c)>", "affine_map<(s, r, c) -> (c, r)>"
        a_frags, b_frags = [], []
        for i in range(tile.wm // 16):
            row, a = t.apply(f"d0 + {16 * i}", self.warp_m), t.fresh()
            t.emit(f"{a} = vector.transfer_read %sa[{stage}, {row}, {col}], %pad {{in_bounds = [true, true], "
                   f"permutation_map = {rows}}} : {self.sa_t}, vector<16x16xf16>")
            a_frags.append(a)
        # B as [k, n] is read transposed, 16 columns of N at a time (ldmatrix.x4.trans), each half an
        # instruction's operand: upstream's slicing of an ldmatrix.x4 fragment (registers 0-1, 2-3) is
        # right for transposed reads only (an untransposed x4 holds the halves in registers 0, 2 and 1, 3)
        pair = 2 if self.kn and tile.wn % 16 == 0 else 1
        for j in range(0, tile.wn // 8, pair):
            n, b = t.apply(f"d0 + {8 * j}", self.warp_n), t.fresh()
            at, layout = (f"{col}, {n}", cols) if self.kn else (f"{n}, {col}", rows)
            t.emit(f"{b} = vector.transfer_read %sb[{stage}, {at}], %pad {{in_bounds = [true, true], "
                   f"permutation_map = {layout}}} : {self.sb_t}, vector<{8 * pair}x16xf16>")
            if pair == 1:
                b_frags.append(b)
                continue
            for half in range(2):
                h = t.fresh()
                t.emit(f"{h} = vector.extract_strided_slice {b} {{offsets = [{8 * half}, 0], sizes = [8, 16], "
                       f"strides = [1, 1]}} : vector<16x16xf16> to vector<8x16xf16>")
                b_frags.append(h)
        for i, a in enumerate(a_frags):
            for j, b in enumerate(b_frags):
                idx, d = i * len(b_frags) + j, t.fresh()
                t.emit(f"{d} = vector.contract {{{self._MAPS}}} {a}, {b}, {current[idx]} "
                       f": vector<16x16xf16>, vector<8x16xf16> into {self.acc_t}")
                current[idx] = d

    def write(self, i: int, j: int, value: str) -> None:
        self.t.emit(f"vector.transfer_write {value}, {self.c.buffer}[{self.c.index(16 * i, 8 * j)}] "
                    f"{{in_bounds = [true, true]}} : {self.acc_t}, {self.c.type}")


class _LaneTiles:
    """AMD: each lane loads its elements of the 16x16 tiles (`MatrixCore` layout) and issues
    amdgpu.mfma / amdgpu.wmma; C's accumulators are loaded and stored element by element."""

    def __init__(self, t: KernelText, tile: MmaTile, core: MatrixCore, low: str, smem: tuple, warp: tuple,
                 c: _CTile):
        self.t, self.tile, self.core, self.low, self.c = t, tile, core, low, c
        self.sa_t, self.sb_t, self.kn = smem
        self.warp_m, self.warp_n = warp
        self.n_acc = core.accumulators
        self.acc_t = f"vector<{self.n_acc}xf32>"
        lanes, kl = core.lanes, core.k_per_lane
        self.row16 = t.apply("d0 mod 16", "%t")  # A's row, B's column and C's column of this lane
        self.group = t.apply(f"(d0 mod {lanes}) floordiv 16", "%t")  # which 16 lanes of the warp
        self.k_lane = t.apply(f"(d0 mod {16 // kl}) * {kl}", self.group)  # its first K element

    def _c_elements(self, i: int, j: int):
        """(accumulator e, C's indices) of this lane in tile (i, j)."""
        r0, r1 = self.core.acc_rows
        for e in range(self.n_acc):
            row = self.t.apply(f"d0 * {r1} + {16 * i + e * r0}", self.group)
            col = self.t.apply(f"d0 + {16 * j}", self.row16)
            yield e, self.c.index(row, col)

    def initial(self, i: int, j: int, init) -> str:
        t = self.t
        v = t.fresh()
        if init is not None:
            t.emit(f"{v} = arith.constant dense<{init!r}> : {self.acc_t}")
            return v
        elements = []
        for _, index in self._c_elements(i, j):
            elements.append(t.fresh())
            t.emit(f"{elements[-1]} = memref.load {self.c.buffer}[{index}] : {self.c.type}")
        t.emit(f"{v} = vector.from_elements {', '.join(elements)} : {self.acc_t}")
        return v

    def _fragment(self, smem: str, smem_t: str, row0: str, kk: int, stage: str, transposed: bool) -> str:
        """This lane's K elements of the tile row (A) or column (B) at `row0` + its row, K step kk, of
        buffer `stage`: one vector load, or (`transposed`: B held as [k, n]) one load per element."""
        t, kl = self.t, self.core.k_per_lane
        row, col = t.apply("d0 + d1", row0, self.row16), t.apply(f"d0 + {16 * kk}", self.k_lane)
        words = t.fresh()
        if transposed:
            elements = []
            for e in range(kl):
                elements.append(t.fresh())
                t.emit(f"{elements[-1]} = memref.load {smem}[{stage}, {t.apply(f'd0 + {e}', col)}, {row}] : {smem_t}")
            t.emit(f"{words} = vector.from_elements {', '.join(elements)} : vector<{kl}xf16>")
        else:
            t.emit(f"{words} = vector.load {smem}[{stage}, {row}, {col}] {{alignment = {min(16, 2 * kl)} : i64}} "
                   f": {smem_t}, vector<{kl}xf16>")
        if self.low == "f16":
            return words
        v = t.fresh()  # bf16 tiles are held as f16-typed words (see module doc)
        t.emit(f"{v} = arith.bitcast {words} : vector<{kl}xf16> to vector<{kl}xbf16>")
        return v

    def step(self, kk: int, current: list, stage: str) -> None:
        t, tile, core, low, kl = self.t, self.tile, self.core, self.low, self.core.k_per_lane
        a_frags = [self._fragment("%sa", self.sa_t, t.apply(f"d0 + {16 * i}", self.warp_m), kk, stage, False)
                   for i in range(tile.wm // 16)]
        b_frags = [self._fragment("%sb", self.sb_t, t.apply(f"d0 + {16 * j}", self.warp_n), kk, stage, self.kn)
                   for j in range(tile.wn // 16)]
        operands = f"vector<{kl}x{low}>, vector<{kl}x{low}>, {self.acc_t}"
        for i, a in enumerate(a_frags):
            for j, b in enumerate(b_frags):
                idx, d = i * len(b_frags) + j, t.fresh()
                if core.name == "mfma":
                    t.emit(f"{d} = amdgpu.mfma 16x16x16 {a} * {b} + {current[idx]} blgp = none : {operands}")
                else:
                    t.emit(f"{d} = amdgpu.wmma 16x16x16 {a} * {b} + {current[idx]} : {operands}")
                current[idx] = d

    def write(self, i: int, j: int, value: str) -> None:
        t = self.t
        for e, index in self._c_elements(i, j):
            x = t.fresh()
            t.emit(f"{x} = vector.extract {value}[{e}] : f32 from {self.acc_t}")
            t.emit(f"memref.store {x}, {self.c.buffer}[{index}] : {self.c.type}")


def _warp_offsets(t: KernelText, tile: MmaTile):
    """The first row and column of this thread's warp in the block's tile of C."""
    warps_n = tile.tn // tile.wn
    return (t.apply(f"((d0 floordiv {tile.lanes}) floordiv {warps_n}) * {tile.wm}", "%t"),
            t.apply(f"((d0 floordiv {tile.lanes}) mod {warps_n}) * {tile.wn}", "%t"))


def _walk(op, fn) -> None:
    for region in op.regions:
        for block in region.blocks:
            for child in block.operations:
                fn(child)
                _walk(child, fn)


def _retype_bf16_mma(func) -> None:
    """nvgpu.mma.sync on the 16-bit words of bf16 tiles (typed f16, see module doc) -> nvvm.mma.sync
    with bf16 multiplicands: A and B registers as i32 (two bf16 each), C and D as four f32."""
    from mlir.dialects import vector

    found = []
    _walk(func, lambda o: found.append(o) if o.operation.name == "nvgpu.mma.sync" else None)
    i32, f32 = ir.IntegerType.get_signless(32), ir.F32Type.get()
    result_t = ir.Type.parse("!llvm.struct<(f32, f32, f32, f32)>")
    attrs = {
        "layoutA": "#nvvm.mma_layout<row>", "layoutB": "#nvvm.mma_layout<col>",
        "multiplicandAPtxType": "#nvvm.mma_type<bf16>", "multiplicandBPtxType": "#nvvm.mma_type<bf16>",
        "shape": "#nvvm.shape<m = 16, n = 8, k = 16>", "operandSegmentSizes": "array<i32: 4, 2, 4>",
    }
    for op in found:
        a, b, c = op.operands
        if str(a.type) != "vector<4x2xf16>" or str(b.type) != "vector<2x2xf16>" or str(c.type) != "vector<2x2xf32>":
            raise KilnError(f"unexpected bf16 mma.sync operands: {a.type}, {b.type}, {c.type}")
        with ir.InsertionPoint(op), op.location:
            def words(v, rows):
                w = vector.bitcast(ir.VectorType.get([rows, 1], i32), v)
                return [vector.extract(w, [], [r, 0]) for r in range(rows)]

            acc = [vector.extract(c, [], [r, col]) for r in range(2) for col in range(2)]
            mma = ir.Operation.create(
                "nvvm.mma.sync", results=[result_t], operands=words(a, 4) + words(b, 2) + acc,
                attributes={k: ir.Attribute.parse(v) for k, v in attrs.items()})
            parts = [ir.Operation.create("llvm.extractvalue", results=[f32], operands=[mma.result],
                                         attributes={"position": ir.Attribute.parse(f"array<i64: {r}>")}).result
                     for r in range(4)]
            d = vector.from_elements(op.result.type, parts)
        op.result.replace_all_uses_with(d)
        op.operation.erase()
