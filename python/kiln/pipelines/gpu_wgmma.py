"""Hopper warpgroup GEMMs (sm_90a): wgmma.mma_async on A and B in 128-byte-swizzled shared memory.

`gpu_mma`'s mma.sync kernels read every fragment from shared memory into registers (ldmatrix)
before the warp's instruction; on an H100 they stop far below the tensor cores' peak. wgmma reads
both operands straight from shared memory, 64 x N x 16 per instruction and warpgroup (4 warps, 128
lanes), asynchronously. It takes them in what the PTX ISA calls canonical layouts, described to it by
64-bit matrix descriptors (start address, leading and stride byte offsets LBO/SBO, swizzle mode):

    A[m, k], B[n, k] (K-major)  rows of one K step (64 elements, 128 bytes), 8-row groups of 1024
                                bytes one after another: SBO = 1024 (LBO unused)
    B[k, n] (N-major: the instruction's transposed B, `imm-trans-b`)  per 64 columns of N a block of
                                KT rows of 128 bytes: SBO = 1024 (8 rows of K), LBO = KT x 128 (the
                                next 64 columns)
    128-byte swizzle            chunk c (16 bytes) of row r of an 8-row group is stored at chunk
                                c xor r: address bits 4-6 xor bits 7-9, which the instruction undoes;
                                so the buffers are 1024-byte aligned (the dynamic shared memory is,
                                `gpu.extern_dynamic_shared_memory`)

K steps of 16 within a buffer move the descriptors' start: 32 bytes along K-major rows, 2048 bytes
(16 rows) through N-major blocks.

    block    TM x TN of C, warpgroups of 64 x WN (MmaTile: wm = 64, wn = WN, lanes = 128)
    K step   KT = 64, a cp.async ring of `stages` (3 or more) buffers (A's, then B's), each thread
             16-byte chunks at their swizzled places; copies issued stages - 2 steps ahead, one step's
             instructions in flight
    per step wait for this step's copies, make them visible to the tensor cores (fence.proxy.async:
             wgmma reads through the async proxy), a barrier, issue the copies of step i + stages - 2
             into the buffer step i - 2 read, wgmma.fence, KT / 16 wgmma.mma_async chained on the
             accumulators, commit, and wait until only these are in flight: the tensor cores work on
             step i while the warpgroup goes on to step i + 1, and step i - 1's instructions are
             done (by every warpgroup, after the next barrier) before its buffer is overwritten
    C        each lane's WN / 2 f32 accumulators, an !llvm.struct: lane l of warp w holds rows
             16 w + l / 4 (+ 8), columns 8 j + 2 (l mod 4) (+ 1), j < WN / 8; stored in pairs

Only 16-bit tensors (bf16, f16): the copies move them as they are. The kernel is written at the
`loops` stage with nvvm ops, so `test/mma_emulation.py` runs exactly what is compiled, decoding the
descriptors itself.
"""

from __future__ import annotations

from ..errors import KilnError
from .gpu_mma import Gemm, KernelText, MmaTile, close_blocks, function_text, open_blocks

ROW_BYTES = 128  # one K step of a row (64 16-bit elements): the 128-byte swizzle's row
GROUP_BYTES = 8 * ROW_BYTES  # a swizzle atom: 8 rows
SWIZZLE_128B = 1 << 62  # the descriptor's layout type (bits 62-63)
_SMEM = "#gpu.address_space<workgroup>"


def descriptor_bits(lbo: int, sbo: int) -> int:
    """A matrix descriptor's fields other than the start address (bits 0-13, in 16-byte units):
    LBO (bits 16-29) and SBO (bits 32-45) in 16-byte units, and the 128-byte swizzle."""
    return SWIZZLE_128B | (sbo >> 4) << 32 | (lbo >> 4) << 16


def kernel_text(g: Gemm, name: str, tile: MmaTile, low: str) -> str:
    """The wgmma kernel for GEMM `g` of kernel `name` (module doc), as MLIR text."""
    if g.elt != low:
        raise KilnError(f"stage 'loops': kernel {name}: wgmma multiplies 16-bit tensors as they are, "
                        f"not {g.elt} ones rounded to {low}")
    k = g.ranges[-1]
    kt, wn, threads, stages = tile.kt, tile.wn, tile.threads, tile.stages
    groups_n = tile.tn // wn  # warpgroups along N
    t = KernelText()
    grid, m0, n0, a_batch, b_batch = open_blocks(t, g, tile.tm, tile.tn)
    raw_t = f"memref<?xi8, {_SMEM}>"
    a_elems, b_elems = stages * tile.tm * kt, stages * tile.tn * kt
    smem_t = {"a": f"memref<{a_elems}x{low}, {_SMEM}>", "b": f"memref<{b_elems}x{low}, {_SMEM}>"}
    t.emit(f"%smem = gpu.dynamic_shared_memory : {raw_t}")
    t.emit(f"%sa = memref.view %smem[{t.c(0)}][] : {raw_t} to {smem_t['a']}")
    t.emit(f"%sb = memref.view %smem[{t.c(2 * a_elems)}][] : {raw_t} to {smem_t['b']}")
    t.emit(f"scf.forall (%t) in ({threads}) {{")
    group = t.apply("d0 floordiv 128", "%t")
    group_m, group_n = t.apply(f"d0 floordiv {groups_n}", group), t.apply(f"d0 mod {groups_n}", group)

    # Each thread's 16-byte chunks of a step's A and B tiles: (element offset in the step's buffer,
    # global indices at K offset k0)
    def chunks(x: str):
        rows, per_row = (kt, tile.tn // 8) if (x == "b" and g.kn) else (tile.tm if x == "a" else tile.tn, kt // 8)
        out = []
        for j in range(rows * per_row // threads):
            q = t.apply(f"d0 + {j * threads}", "%t")
            r, cc = t.apply(f"d0 floordiv {per_row}", q), t.apply(f"d0 mod {per_row}", q)
            swizzled = t.fresh()
            t.emit(f"{swizzled} = arith.xori {t.apply('d0 mod 8', cc)}, {t.apply('d0 mod 8', r)} : index")
            # N-major B: chunk cc of row r is in the block of columns 64 (cc / 8) on
            block = f" + (d2 floordiv 8) * {kt * 64}" if x == "b" and g.kn else ""
            offset = t.fresh()
            t.emit(f"{offset} = affine.apply affine_map<(d0, d1, d2) -> (d0 * 64 + d1 * 8{block})>({r}, {swizzled}, {cc})")
            out.append((offset, r, cc))
        return out

    def global_index(x: str, r: str, cc: str, k0: str) -> str:
        col = t.apply("d0 * 8 + d1", cc, k0)
        if x == "a":
            return ", ".join(a_batch + [t.apply("d0 + d1", m0, r), col])
        if g.kn:  # r along K, the chunk along N
            return ", ".join(b_batch + [t.apply("d0 + d1", k0, r), t.apply("d0 * 8 + d1", cc, n0)])
        return ", ".join(b_batch + [t.apply("d0 + d1", n0, r), col])

    sources = [(x, f"%arg{arg}", g.types[arg], chunks(x)) for x, arg in (("a", g.a), ("b", g.b))]
    token = "!nvgpu.device.async.token"

    def copy(k0: str, stage: str) -> str:
        tokens = []
        for x, src, src_t, found in sources:
            step_elems = (tile.tm if x == "a" else tile.tn) * kt
            for offset, r, cc in found:
                tokens.append(t.fresh())
                at = t.apply(f"d0 * {step_elems} + d1", stage, offset)
                t.emit(f"{tokens[-1]} = nvgpu.device_async_copy {src}[{global_index(x, r, cc, k0)}], "
                       f"%s{x}[{at}], 8 {{bypassL1}} : {src_t} to {smem_t[x]}")
        done = t.fresh()
        t.emit(f"{done} = nvgpu.device_async_create_group {', '.join(tokens)}")
        return done

    # Descriptors: the buffers' start in 16-byte units (of the shared window) and the fixed fields;
    # each step adds its buffer's and the warpgroup's offset, each K step of 16 its own.
    i64 = _I64(t)
    base = t.fresh()
    t.emit(f"{base} = memref.extract_aligned_pointer_as_index %smem : {raw_t} -> index")
    start = i64.op("andi", i64.op("shrui", i64.cast(base), i64.c(4)), i64.c(0x3FFF))
    b_lbo = kt * ROW_BYTES if g.kn else 16
    desc = {"a": i64.op("ori", start, i64.c(descriptor_bits(16, GROUP_BYTES))),
            "b": i64.op("ori", i64.op("addi", start, i64.c(2 * a_elems >> 4)), i64.c(descriptor_bits(b_lbo, GROUP_BYTES)))}
    # the warpgroup's rows of A (64 of 128 bytes), its columns of B: rows of B[n, k], or blocks of
    # 64 columns of B[k, n]
    b_group = (wn // 64) * kt * ROW_BYTES if g.kn else wn * ROW_BYTES
    group_offset = {"a": (group_m, 64 * ROW_BYTES >> 4), "b": (group_n, b_group >> 4)}
    k_step = {"a": 32 >> 4, "b": (16 * ROW_BYTES if g.kn else 32) >> 4}

    acc_t = "!llvm.struct<(" + ", ".join(["f32"] * (wn // 2)) + ")>"
    warp, lane = t.apply("(d0 mod 128) floordiv 32", "%t"), t.apply("d0 mod 32", "%t")
    row0 = t.apply("d0 + d1 * 64 + d2 * 16 + d3 floordiv 4", m0, group_m, warp, lane)
    col0 = t.apply(f"d0 + d1 * {wn} + (d2 mod 4) * 2", n0, group_n, lane)
    c_arg, c_t = f"%arg{g.c}", g.types[g.c]

    def c_pair(p: int) -> str:
        """C's indices of this lane's accumulators 2p and 2p + 1 (adjacent columns)."""
        return ", ".join(a_batch + [t.apply(f"d0 + {8 * (p % 2)}", row0), t.apply(f"d0 + {8 * (p // 2)}", col0)])

    acc = t.fresh()
    if g.init == 0.0:
        t.emit(f"{acc} = llvm.mlir.zero : {acc_t}")
    else:
        t.emit(f"{acc} = llvm.mlir.undef : {acc_t}")
        value = t.fresh()
        if g.init is not None:
            t.emit(f"{value} = arith.constant {g.init!r} : f32")
        for p in range(wn // 4):
            if g.init is None:  # accumulating into C: start from it
                pair = t.fresh()
                t.emit(f"{pair} = vector.load {c_arg}[{c_pair(p)}] {{alignment = 8 : i64}} : {c_t}, vector<2xf32>")
            for e in range(2):
                if g.init is None:
                    value = t.fresh()
                    t.emit(f"{value} = vector.extract {pair}[{e}] : f32 from vector<2xf32>")
                inserted = t.fresh()
                t.emit(f"{inserted} = llvm.insertvalue {value}, {acc}[{2 * p + e}] : {acc_t}")
                acc = inserted

    ahead = stages - 2  # steps whose copies are in flight during a step's instructions
    pending = [copy(t.c(s * kt), t.c(s)) for s in range(ahead)][-1]
    results = t.fresh()
    t.emit(f"{results}:2 = scf.for %i = {t.c(0)} to {t.c(k // kt)} step {t.c(1)} iter_args("
           f"%acc = {acc}, %pending = {pending}) -> ({acc_t}, {token}) {{")
    t.emit(f"nvgpu.device_async_wait %pending {{numGroups = {ahead - 1} : i32}}")
    t.emit("nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}")
    t.emit("gpu.barrier")
    k_next = t.fresh()  # past the last step: the last one again (in bounds, never read)
    t.emit(f"{k_next} = affine.min affine_map<(d0) -> ((d0 + {ahead}) * {kt}, {k - kt})>(%i)")
    issued = copy(k_next, t.apply(f"(d0 + {ahead}) mod {stages}", "%i"))
    stage = t.apply(f"d0 mod {stages}", "%i")
    step_desc = {}
    for x, step_units in (("a", tile.tm * kt * 2 >> 4), ("b", tile.tn * kt * 2 >> 4)):
        which, units = group_offset[x]
        step_desc[x] = i64.op("addi", desc[x], i64.cast(t.apply(f"d0 * {step_units} + d1 * {units}", stage, which)))
    t.emit("nvvm.wgmma.fence.aligned")
    current = "%acc"
    for kk in range(kt // 16):
        da, db = (i64.op("addi", step_desc[x], i64.c(kk * k_step[x])) if kk else step_desc[x] for x in "ab")
        d = t.fresh()
        t.emit(f"{d} = nvvm.wgmma.mma_async {da}, {db}, {current}, #nvvm.shape<m = 64, n = {wn}, k = 16>, "
               f"D [<f32>, #nvvm.wgmma_scale_out<one>], A [<{low}>, #nvvm.wgmma_scale_in<one>, <row>], "
               f"B [<{low}>, #nvvm.wgmma_scale_in<one>, <{'row' if g.kn else 'col'}>] : {acc_t} -> {acc_t}")
        current = d
    t.emit("nvvm.wgmma.commit.group.sync.aligned")
    t.emit("nvvm.wgmma.wait.group.sync.aligned 1")
    t.emit(f"scf.yield {current}, {issued} : {acc_t}, {token}")
    t.emit("}")
    t.emit("nvvm.wgmma.wait.group.sync.aligned 0")
    t.emit(f"nvgpu.device_async_wait {results}#1 {{numGroups = 0 : i32}}")
    for p in range(wn // 4):
        values = []
        for e in range(2):
            values.append(t.fresh())
            t.emit(f"{values[-1]} = llvm.extractvalue {results}#0[{2 * p + e}] : {acc_t}")
        pair = t.fresh()
        t.emit(f"{pair} = vector.from_elements {', '.join(values)} : vector<2xf32>")
        t.emit(f"vector.store {pair}, {c_arg}[{c_pair(p)}] {{alignment = 8 : i64}} : {c_t}, vector<2xf32>")
    close_blocks(t, grid)
    return function_text(name, g.types, tile.shared_bytes(g.kn), t)


class _I64:
    """i64 arithmetic of the descriptors in a KernelText."""

    def __init__(self, t: KernelText):
        self.t, self.constants = t, {}

    def c(self, value: int) -> str:
        if value not in self.constants:
            self.constants[value] = self.t.fresh()
            self.t.emit(f"{self.constants[value]} = arith.constant {value} : i64")
        return self.constants[value]

    def cast(self, index: str) -> str:
        v = self.t.fresh()
        self.t.emit(f"{v} = arith.index_cast {index} : index to i64")
        return v

    def op(self, name: str, a: str, b: str) -> str:
        v = self.t.fresh()
        self.t.emit(f"{v} = arith.{name} {a}, {b} : i64")
        return v
