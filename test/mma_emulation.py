"""Runs a tensor-core kernel on the CPU, one OS thread per GPU thread, real barriers.

`test/gpu_emulation.py` runs a kernel's threads one after another, which is wrong as soon as threads
share memory: a tensor-core block stages its A and B tiles in shared memory together, then waits at
a barrier. Each GPU thread here is a Python thread calling the CPU-compiled kernel; a block's
threads meet at `gpu.barrier` through a threading.Barrier callback; shared memory (dynamic, of the
size the launch gives) is one array all threads get (blocks run one after another); each thread's prefetch
buffer (memref.alloca) is its own.

NVIDIA kernels run as `gpu_mma` writes them *before* the upstream conversion to nvgpu (the `loops`
stage with `gpu_mma._to_mma_sync` disabled): vector.contract on 16x16 x 8x16 tiles read from shared
memory, which every lane of a warp computes whole (the same values, so the redundant writes agree).
That cannot check the fragment layouts of ldmatrix/mma.sync (upstream's convert-vector-to-gpu,
tested upstream on GPUs) nor the bf16 retyping of mma.sync (checked textually in the PTX).

AMD kernels are written per lane, so they run as compiled: each amdgpu.mfma / amdgpu.wmma becomes an
exchange. Every lane stores its operands in a block-wide table and meets the others at a barrier
whose action computes each wavefront's 16x16x16 product from the table with the instruction's lane
layout (`LAYOUTS`, from AMD's matrix instruction documentation, written here independently of
Kiln's `MatrixCore`) and hands every lane its accumulators back. This checks Kiln's layouts as well.

Hopper wgmma kernels (`gpu_wgmma`, sm_90a) are written with nvvm ops at `loops`, so they run as
compiled too: each nvvm.wgmma.mma_async becomes an exchange whose action reads the warpgroup's A and
B out of shared memory through its two matrix descriptors -- decoded here from the PTX ISA's
canonical layouts (K-major, N-major, 128-byte swizzle), not from Kiln's writer -- and hands every
lane its accumulators in the instruction's D layout (`wgmma_product`). The descriptors' start
addresses are offsets in the emulated shared memory (the shared window starts at 0); the fences,
commits and waits are no-ops (the exchange is synchronous).

cp.async copies (16-bit tensors on NVIDIA) become plain 16-byte loads and stores, done at once: the
barrier that follows every wait orders them as the wait does on a GPU, so the ring of shared-memory
buffers (which step lands in which buffer, when it is overwritten) is checked, not the asynchrony.

What all of it checks: the staging (indexing, transposes, rounding to bf16/f16, loading one K step
ahead or the cp.async ring), the per-warp tiles, the accumulators and the write-back.
"""

from __future__ import annotations

import ctypes
import os
import re
import tempfile
import threading

import numpy as np
from mlir import ir

from kiln.pipelines import cpu
from kiln.pipelines.common import run_passes
from kiln.runtime.memref import descriptor

_ID = re.compile(r"(%[\w.$-]+) = gpu\.(block_id|thread_id)\s+([xyz])(?:\s+upper_bound\s+\d+)?")
_SHARED = ", #gpu.address_space<workgroup>>"


def _kernel(loops_text: str):
    """(name, arg types, body text, grid, block, dynamic shared memory bytes) of the one gpu.func;
    its shared memory is what its launch gives it."""
    from mlir.dialects import gpu

    with ir.Context():
        module = ir.Module.parse(loops_text)
        found, shared = [], []
        for op in module.body.operations:
            if op.operation.name == "func.func":
                for inner in op.regions[0].blocks[0].operations:
                    if inner.operation.name == "gpu.launch_func":
                        assert isinstance(inner, gpu.LaunchFuncOp)
                        size = inner.dynamicSharedMemorySize
                        shared.append(0 if size is None else ir.IntegerAttr(size.owner.attributes["value"]).value)
            if op.operation.name != "gpu.module":
                continue
            for f in op.regions[0].blocks[0].operations:
                if f.operation.name == "gpu.func":
                    name = ir.StringAttr(f.attributes["sym_name"]).value
                    types = [str(a.type) for a in f.regions[0].blocks[0].arguments]
                    grid = list(ir.DenseI32ArrayAttr(f.attributes["known_grid_size"]))
                    block = list(ir.DenseI32ArrayAttr(f.attributes["known_block_size"]))
                    found.append((name, types, "\n".join(str(f).split("\n")[1:-1]), grid, block))
    assert len(found) == 1 and len(shared) == 1, f"expected one kernel and launch, found {[k[0] for k in found]}"
    return (*found[0], shared[0])


_CONTRACT = re.compile(r"(%\w+) = vector\.contract (\{.*\}) (%\w+), (%\w+), (%\w+) : "
                       r"vector<16x16xf16>, vector<8x16xf16> into vector<16x8xf32>")
_AMD_MMA = re.compile(r"(%\w+) = amdgpu\.(mfma|wmma) 16x16x16 (%\w+) \* (%\w+) \+ (%\w+)(?: blgp = +none)? : "
                      r"vector<(\d+)x(bf16|f16)>, vector<\d+x(?:bf16|f16)>, vector<(\d+)xf32>")
_PRIVATE = ", #gpu.address_space<private>>"
# cp.async (after the shared-memory address spaces are dropped): a copy becomes a 16-byte load and
# store, its tokens and groups constants, a wait nothing (the barrier after it orders the threads)
_ASYNC_COPY = re.compile(r"(%\w+) = nvgpu\.device_async_copy (%\w+)\[([^\]]*)\], (%\w+)\[([^\]]*)\], (\d+)"
                         r"(?: \{bypassL1\})? : (memref<[^>]*x(\w+)>) to (memref<[^>]*>)")
_ASYNC_GROUP = re.compile(r"(%\w+) = nvgpu\.device_async_create_group .*")
_ASYNC_WAIT = re.compile(r"nvgpu\.device_async_wait .*")
_DYNAMIC_SHARED = re.compile(r"(%\w+) = gpu\.dynamic_shared_memory : memref<\?xi8>")
_WGMMA = re.compile(r"(%\w+) = nvvm\.wgmma\.mma_async (%\w+), (%\w+), (%\w+), <m = 64, n = (\d+), k = 16>, "
                    r"D\[<f32>, <one>\], A\[<(bf16|f16)>, <one>, <row>\], B\[<(?:bf16|f16)>, <one>, <(row|col)>\] "
                    r": (!llvm\.struct<\([^)]*\)>) -> !llvm\.struct<\([^)]*\)>")
_WGMMA_SYNC = re.compile(r"nvvm\.(fence\.proxy \{[^}]*\}|wgmma\.fence\.aligned|wgmma\.commit\.group\.sync\.aligned"
                         r"|wgmma\.wait\.group\.sync\.aligned \d+)")
# the shared window's address of the dynamic shared memory (what wgmma descriptors start from): 0
_SHARED_ADDRESS = re.compile(r"(%\w+) = memref\.extract_aligned_pointer_as_index %\w+ : memref<\?xi8> -> index")


def _copy(m) -> str:
    tok, src, src_at, dst, dst_at, n, src_t, elt, dst_t = m.groups()
    v = f"%__cp{tok[1:]}"
    return (f"{v} = vector.load {src}[{src_at}] : {src_t}, vector<{n}x{elt}>\n"
            f"vector.store {v}, {dst}[{dst_at}] : {dst_t}, vector<{n}x{elt}>\n{tok} = arith.constant true")


def _widened_contract(m, low: str) -> str:
    """The f16-typed tiles as `low` (bf16 words are held as f16, see gpu_mma), widened to f32."""
    lines, wide, res = [], [], m.group(1)[1:]
    for tag, v, shape in (("a", m.group(3), "16x16"), ("b", m.group(4), "8x16")):
        src = v
        if low == "bf16":
            src = f"%__{tag}l{res}"
            lines.append(f"{src} = arith.bitcast {v} : vector<{shape}xf16> to vector<{shape}xbf16>")
        wide.append(f"%__{tag}w{res}")
        lines.append(f"{wide[-1]} = arith.extf {src} : vector<{shape}x{low}> to vector<{shape}xf32>")
    lines.append(f"{m.group(1)} = vector.contract {m.group(2)} {wide[0]}, {wide[1]}, {m.group(5)} "
                 ": vector<16x16xf32>, vector<8x16xf32> into vector<16x8xf32>")
    return "\n".join(lines)


def _exchange(m, table: str) -> str:
    """An amdgpu.mfma/wmma as: store this lane's operands in the exchange table, meet the block at the
    exchange barrier (whose action computes the products), load this lane's accumulators."""
    res, a, b, c, k, low, n = m.group(1), m.group(3), m.group(4), m.group(5), m.group(6), m.group(7), m.group(8)
    tag = res[1:]
    lines = []
    for name, v in (("a", a), ("b", b)):
        lines.append(f"%__{name}w{tag} = arith.extf {v} : vector<{k}x{low}> to vector<{k}xf32>")
        lines.append(f"vector.store %__{name}w{tag}, %__x{name}[%__thread_id_x, %__zero] : {table}, vector<{k}xf32>")
    lines.append(f"vector.store {c}, %__xc[%__thread_id_x, %__zero] : {table}, vector<{n}xf32>")
    lines.append("llvm.call %__exchange() : !llvm.ptr, () -> ()")
    lines.append(f"{res} = vector.load %__xd[%__thread_id_x, %__zero] : {table}, vector<{n}xf32>")
    return "\n".join(lines)


def _wgmma_exchange(m, table: str, descriptors: str) -> str:
    """An nvvm.wgmma.mma_async as: store this lane's descriptors and accumulators in the exchange
    tables, meet the block at the exchange barrier (whose action computes every warpgroup's
    product), build the result from this lane's row of table d."""
    res, da, db, acc, acc_t = m.group(1), m.group(2), m.group(3), m.group(4), m.group(8)
    tag, fields = res[1:], int(m.group(5)) // 2
    lines = [f"memref.store {d}, %__xdesc[%__thread_id_x, {i}] : {descriptors}" for i, d in (("%__zero", da), ("%__one", db))]
    for e in range(fields):
        lines.append(f"%__e{tag}_{e} = llvm.extractvalue {acc}[{e}] : {acc_t}")
    lines.append(f"%__c{tag} = vector.from_elements {', '.join(f'%__e{tag}_{e}' for e in range(fields))} : vector<{fields}xf32>")
    lines.append(f"vector.store %__c{tag}, %__xc[%__thread_id_x, %__zero] : {table}, vector<{fields}xf32>")
    lines.append("llvm.call %__exchange() : !llvm.ptr, () -> ()")
    lines.append(f"%__d{tag} = vector.load %__xd[%__thread_id_x, %__zero] : {table}, vector<{fields}xf32>")
    lines.append(f"%__s{tag}_0 = llvm.mlir.undef : {acc_t}")
    for e in range(fields):
        lines.append(f"%__v{tag}_{e} = vector.extract %__d{tag}[{e}] : f32 from vector<{fields}xf32>")
        into = res if e == fields - 1 else f"%__s{tag}_{e + 1}"
        lines.append(f"{into} = llvm.insertvalue %__v{tag}_{e}, %__s{tag}_{e}[{e}] : {acc_t}")
    return "\n".join(lines)


def _smem_operand(shared: np.ndarray, descriptor: int, rows: int, k_major: bool, low: str) -> np.ndarray:
    """The rows x 16 operand (A: 64 x 16 of M x K; B: N x 16, as N x K) a wgmma matrix descriptor
    points at in shared memory (bytes): start address, LBO and SBO in 16-byte units at bits 0, 16
    and 32, layout type at bit 62 (1: 128-byte swizzle, the only one Kiln writes). Canonical
    layouts (PTX ISA, "shared memory matrix layout"): K-major, 8-row groups SBO apart, rows 128
    bytes apart, K contiguous; N-major (B transposed), 64 columns contiguous per row of K, rows 128
    bytes apart, 8-row groups of K SBO apart, the next 64 columns LBO on. The 128-byte swizzle
    xors address bits 4-6 with bits 7-9."""
    assert descriptor >> 62 == 1 and (descriptor >> 49) & 7 == 0, f"not a 128-byte-swizzle descriptor: {descriptor:#x}"
    start, lbo, sbo = ((descriptor >> s & 0x3FFF) << 4 for s in (0, 16, 32))
    r, kk = np.meshgrid(np.arange(rows), np.arange(16), indexing="ij")
    if k_major:
        address = start + (r // 8) * sbo + (r % 8) * 128 + 2 * kk
    else:
        address = start + (r // 64) * lbo + (kk // 8) * sbo + (kk % 8) * 128 + 2 * (r % 64)
    address = address ^ (((address >> 7) & 7) << 4)
    words = shared[address].astype(np.uint16) | shared[address + 1].astype(np.uint16) << 8
    if low == "f16":
        return words.view(np.float16).astype(np.float64)
    return (words.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def wgmma_product(shared: np.ndarray, descriptors: np.ndarray, c: np.ndarray, n: int, low: str, b_k_major: bool):
    """One warpgroup's wgmma.mma_async.m64n{n}k16.f32: descriptors [128, 2] (every lane's A and B
    descriptors, which must agree), c [128, n / 2] its accumulators; returns D's. Lane l of warp w
    holds D[16 w + l / 4 + 8 ((i / 2) mod 2), 8 (i / 4) + 2 (l mod 4) + i mod 2] as accumulator i
    (PTX ISA, "register fragment layout for accumulator matrix D" of .m64nNk16)."""
    assert (descriptors == descriptors[0]).all(), "the lanes of a warpgroup gave different descriptors"
    a = _smem_operand(shared, int(descriptors[0, 0]), 64, True, low)
    b = _smem_operand(shared, int(descriptors[0, 1]), n, b_k_major, low)
    lane, i = np.meshgrid(np.arange(128), np.arange(n // 2), indexing="ij")
    row = 16 * (lane // 32) + (lane % 32) // 4 + 8 * ((i // 2) % 2)
    col = 8 * (i // 4) + 2 * (lane % 4) + i % 2
    d = np.zeros((64, n))
    d[row, col] = c
    d += a @ b.T
    return d[row, col]


def _lanes(lanes: int, per_lane: int):
    """(lane, element) index grids of a wavefront's operand table."""
    return np.meshgrid(np.arange(lanes), np.arange(per_lane), indexing="ij")


def _k_split(lanes: int, per_lane: int):
    """The 16x16x16 instruction whose lane l holds A[l % 16, per_lane (l // 16) + i],
    B[per_lane (l // 16) + i, l % 16] and C[per_lane (l // 16) + i, l % 16], i < per_lane:
    CDNA's v_mfma_f32_16x16x16_{bf16,f16} (64 lanes, 4 each) and RDNA4's v_wmma_f32_16x16x16_{bf16,f16}
    (32 lanes, 8 each)."""

    def instruction(a, b, c):
        l, i = _lanes(lanes, per_lane)
        A, B, C = np.zeros((16, 16)), np.zeros((16, 16)), np.zeros((16, 16))
        A[l % 16, per_lane * (l // 16) + i] = a[:, :per_lane]
        B[per_lane * (l // 16) + i, l % 16] = b[:, :per_lane]
        C[per_lane * (l // 16) + i, l % 16] = c[:, :per_lane]
        return (A @ B + C)[per_lane * (l // 16) + i, l % 16]

    return instruction


def _wmma_rdna3(a, b, c):
    """v_wmma_f32_16x16x16_{bf16,f16} on gfx11, 32 lanes: lane l holds A[l % 16, 0..15] and
    B[0..15, l % 16] (lanes 16..31 repeat lanes 0..15) and C[2 i + l // 16, l % 16], i < 8."""
    assert np.array_equal(a[:16, :16], a[16:32, :16]) and np.array_equal(b[:16, :16], b[16:32, :16]), \
        "gfx11 wmma: the two half-waves must hold the same A and B"
    l, i = _lanes(32, 8)
    C = np.zeros((16, 16))
    C[2 * i + l // 16, l % 16] = c[:, :8]
    D = a[:16, :16] @ b[:16, :16].T + C  # a[lane] = row lane of A, b[lane] = column lane of B
    return D[2 * i + l // 16, l % 16]


# chip -> (lanes per wavefront, the instruction on one wavefront's operand tables)
_MFMA, _WMMA_RDNA4 = _k_split(64, 4), _k_split(32, 8)
LAYOUTS = {"gfx90a": (64, _MFMA), "gfx942": (64, _MFMA), "gfx950": (64, _MFMA),
           "gfx1100": (32, _wmma_rdna3), "gfx1151": (32, _wmma_rdna3), "gfx1201": (32, _WMMA_RDNA4)}


class TensorCoreKernel:
    """The single kernel of a one-GEMM program's `loops` stage, runnable on numpy arrays: NVIDIA's
    warp-level form (`low`: the operands' precision) or AMD's lane-level one (`chip` names the
    instruction layout)."""

    def __init__(self, loops_text: str, low: str, chip: str | None = None):
        name, self.types, body, self.grid, self.block, shared_bytes = _kernel(loops_text)
        threads = int(np.prod(self.block))
        table, descriptors = f"memref<{threads}x128xf32>", f"memref<{threads}x2xi64>"
        amd = bool(_AMD_MMA.search(body))
        # wgmma: (n, multiplicand type, is B K-major) of the kernel's instructions
        self.wgmma = {(int(m.group(5)), m.group(6), m.group(7) == "col") for m in _WGMMA.finditer(body)}
        assert len(self.wgmma) <= 1, f"wgmma instructions of several shapes: {self.wgmma}"
        assert _SHARED in body and (amd or self.wgmma or "vector.contract" in body), "not a tensor-core kernel"
        assert amd == (chip is not None), "give the chip of an AMD kernel (and only of one)"
        body = _ID.sub(lambda m: f"{m.group(1)} = arith.addi %__{m.group(2)}_{m.group(3)}, %__zero : index", body)
        body = body.replace("gpu.barrier", "llvm.call %__barrier() : !llvm.ptr, () -> ()")
        body = body.replace("gpu.return", "return").replace(_SHARED, ">").replace(_PRIVATE, ">")
        body = _DYNAMIC_SHARED.sub(lambda m: f"{m.group(1)} = memref.cast %__shared : memref<{shared_bytes}xi8> "
                                             "to memref<?xi8>", body)
        body = _ASYNC_COPY.sub(_copy, body).replace("!nvgpu.device.async.token", "i1")
        body = _ASYNC_WAIT.sub("", _ASYNC_GROUP.sub(lambda m: f"{m.group(1)} = arith.constant true", body))
        body = _CONTRACT.sub(lambda m: _widened_contract(m, low), body)
        body = _AMD_MMA.sub(lambda m: _exchange(m, table), body)
        body = _SHARED_ADDRESS.sub(lambda m: f"{m.group(1)} = arith.constant 0 : index", body)
        body = _WGMMA.sub(lambda m: _wgmma_exchange(m, table, descriptors), _WGMMA_SYNC.sub("", body))
        assert "gpu." not in body, "an op the emulator does not know: " + body[body.index("gpu."):][:80]
        # the exchange tables (AMD) are arguments: every thread gets the same arrays
        self.tables = {x: np.zeros((threads, 128), np.float32) for x in "abcd"}
        self.descriptors = np.zeros((threads, 2), np.int64)
        ids = [f"%__{k}_{a}: index" for k in ("block_id", "thread_id") for a in "xyz"]
        args = ", ".join([f"%arg{i}: {t}" for i, t in enumerate(self.types)]
                         + [f"%__x{x}: {table}" for x in self.tables] + [f"%__xdesc: {descriptors}"]
                         + [f"%__shared: memref<{shared_bytes}xi8>"]
                         + ["%__barrier: !llvm.ptr", "%__exchange: !llvm.ptr"] + ids)
        text = "module {\n" + f"func.func @kernel({args}) attributes {{llvm.emit_c_interface}} {{\n" \
            "  %__zero = arith.constant 0 : index\n  %__one = arith.constant 1 : index\n" + body + "\n}\n}\n"
        with ir.Context():
            module = ir.Module.parse(text)
            run_passes(module, "arith-expand{include-bf16=true},expand-strided-metadata,lower-affine,convert-scf-to-cf,convert-vector-to-llvm,"
                               "convert-math-to-llvm,convert-to-llvm,reconcile-unrealized-casts", "emulation")
            so = cpu.build_shared_object(module, cpu.host_cpu())
        fd, self._path = tempfile.mkstemp(suffix=".so")
        with os.fdopen(fd, "wb") as f:
            f.write(so)
        self.lib = ctypes.CDLL(self._path)
        self.name = name
        self.exchanges = 0
        if amd:
            self.lanes, self.instruction = LAYOUTS[chip]
            assert threads % self.lanes == 0
        # the block's shared memory (an argument: the wgmma exchange reads it), 1024-byte aligned
        # like the GPU's dynamic shared memory (`gpu.extern_dynamic_shared_memory`)
        memory = np.zeros(shared_bytes + 1024, np.uint8)
        skip = -memory.ctypes.data % 1024
        self.shared = memory[skip:skip + shared_bytes]

    def _exchange(self) -> None:
        """The barrier action of an amdgpu.mfma/wmma (every wavefront's product) or of a
        wgmma.mma_async (every warpgroup's), into table d."""
        x = self.tables
        if self.wgmma:
            (n, low, b_k_major), = self.wgmma
            for w in range(0, x["c"].shape[0], 128):
                lanes = slice(w, w + 128)
                x["d"][lanes, :n // 2] = wgmma_product(self.shared, self.descriptors[lanes], x["c"][lanes, :n // 2],
                                                       n, low, b_k_major)
            self.exchanges += 1
            return
        for w in range(0, x["a"].shape[0], self.lanes):
            lanes = slice(w, w + self.lanes)
            d = self.instruction(x["a"][lanes].astype(np.float64), x["b"][lanes].astype(np.float64),
                                 x["c"][lanes].astype(np.float64))
            x["d"][lanes, :d.shape[1]] = d
        self.exchanges += 1

    def __del__(self):
        if getattr(self, "_path", None):
            os.unlink(self._path)

    def __call__(self, *arrays) -> None:
        """Runs every block (in turn) with all its threads (at once) on `arrays`, the kernel's arguments."""
        assert len(arrays) == len(self.types)
        descs = [descriptor(a) for a in [*arrays, *self.tables.values(), self.descriptors, self.shared]]
        fn = self.lib._mlir_ciface_kernel
        errors = []
        for bz in range(self.grid[2]):
            for by in range(self.grid[1]):
                for bx in range(self.grid[0]):
                    barrier = threading.Barrier(int(np.prod(self.block)), timeout=60)
                    exchange = threading.Barrier(int(np.prod(self.block)), action=self._exchange, timeout=60)

                    def waiter(b):
                        def wait():
                            try:
                                b.wait()
                            except threading.BrokenBarrierError as e:  # a thread failed: let the others end
                                errors.append(e)
                        return ctypes.CFUNCTYPE(None)(wait)

                    callbacks = (waiter(barrier), waiter(exchange))
                    threads = [
                        threading.Thread(target=fn, args=(*[ctypes.pointer(d) for d in descs], *callbacks,
                                                          *map(ctypes.c_int64, (bx, by, bz, tx, ty, tz))))
                        for tz in range(self.block[2]) for ty in range(self.block[1]) for tx in range(self.block[0])
                    ]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
        assert not errors, f"a barrier broke: {errors[0]!r}"
