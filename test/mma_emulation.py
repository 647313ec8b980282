"""Runs a tensor-core kernel at warp level on the CPU, one OS thread per GPU thread, real barriers.

`test/gpu_emulation.py` runs a kernel's threads one after another, which is wrong as soon as threads
share memory: a tensor-core block stages its A and B tiles in shared memory together, then waits at
a barrier. This emulator runs the kernel as `gpu_mma` writes it *before* the upstream conversion to
nvgpu (the `loops` stage with `gpu_mma._to_mma_sync` disabled): vector.contract on 16x16 x 8x16 tiles
read from shared memory, which every lane of a warp computes whole (the same values, so the
redundant writes agree). Each GPU thread is a Python thread calling the CPU-compiled kernel; a block's
threads meet at `gpu.barrier` through a threading.Barrier callback; shared memory is a module global
(blocks run one after another); each thread's prefetch buffer (memref.alloca) is its own. What this
checks: the staging (indexing, transposes, rounding to bf16/f16, loading one K step ahead), the
per-warp tiles, the accumulators and the write-back. What it cannot check: the
fragment layouts of ldmatrix/mma.sync (upstream's convert-vector-to-gpu, tested upstream on GPUs)
and the bf16 retyping of mma.sync (checked textually in the PTX).
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
    """(name, arg types, body text, shared-memory globals, grid, block) of the one gpu.func."""
    with ir.Context():
        module = ir.Module.parse(loops_text)
        found = []
        for op in module.body.operations:
            if op.operation.name != "gpu.module":
                continue
            body = op.regions[0].blocks[0]
            globals_ = [str(o) for o in body.operations if o.operation.name == "memref.global"]
            for f in body.operations:
                if f.operation.name == "gpu.func":
                    name = ir.StringAttr(f.attributes["sym_name"]).value
                    types = [str(a.type) for a in f.regions[0].blocks[0].arguments]
                    grid = list(ir.DenseI32ArrayAttr(f.attributes["known_grid_size"]))
                    block = list(ir.DenseI32ArrayAttr(f.attributes["known_block_size"]))
                    found.append((name, types, "\n".join(str(f).split("\n")[1:-1]), globals_, grid, block))
    assert len(found) == 1, f"expected one kernel, found {[k[0] for k in found]}"
    return found[0]


_CONTRACT = re.compile(r"(%\w+) = vector\.contract (\{.*\}) (%\w+), (%\w+), (%\w+) : "
                       r"vector<16x16xf16>, vector<8x16xf16> into vector<16x8xf32>")


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


class WarpLevelKernel:
    """The single kernel of a one-GEMM program's `loops` stage (warp-level form), runnable on numpy arrays."""

    def __init__(self, loops_text: str, low: str):
        name, self.types, body, globals_, self.grid, self.block = _kernel(loops_text)
        assert "vector.contract" in body and _SHARED in body, "not a warp-level tensor-core kernel"
        body = _ID.sub(lambda m: f"{m.group(1)} = arith.addi %__{m.group(2)}_{m.group(3)}, %__zero : index", body)
        body = body.replace("gpu.barrier", "llvm.call %__barrier() : !llvm.ptr, () -> ()")
        body = body.replace("gpu.return", "return").replace(_SHARED, ">")
        body = _CONTRACT.sub(lambda m: _widened_contract(m, low), body)
        assert "gpu." not in body, "an op the emulator does not know: " + body[body.index("gpu."):][:80]
        ids = [f"%__{k}_{a}: index" for k in ("block_id", "thread_id") for a in "xyz"]
        args = ", ".join([f"%arg{i}: {t}" for i, t in enumerate(self.types)] + ["%__barrier: !llvm.ptr"] + ids)
        text = "module {\n" + "\n".join(g.replace(_SHARED, ">") for g in globals_) + "\n" + \
            f"func.func @kernel({args}) attributes {{llvm.emit_c_interface}} {{\n" \
            "  %__zero = arith.constant 0 : index\n" + body + "\n}\n}\n"
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

    def __del__(self):
        if getattr(self, "_path", None):
            os.unlink(self._path)

    def __call__(self, *arrays) -> None:
        """Runs every block (in turn) with all its threads (at once) on `arrays`, the kernel's arguments."""
        assert len(arrays) == len(self.types)
        descs = [descriptor(a) for a in arrays]
        fn = self.lib._mlir_ciface_kernel
        errors = []
        for bz in range(self.grid[2]):
            for by in range(self.grid[1]):
                for bx in range(self.grid[0]):
                    barrier = threading.Barrier(int(np.prod(self.block)), timeout=60)

                    def wait():
                        try:
                            barrier.wait()
                        except threading.BrokenBarrierError as e:  # a thread failed: let the others end
                            errors.append(e)

                    callback = ctypes.CFUNCTYPE(None)(wait)
                    threads = [
                        threading.Thread(target=fn, args=(*[ctypes.pointer(d) for d in descs], callback,
                                                          *map(ctypes.c_int64, (bx, by, bz, tx, ty, tz))))
                        for tz in range(self.block[2]) for ty in range(self.block[1]) for tx in range(self.block[0])
                    ]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
        assert not errors, f"a barrier broke: {errors[0]!r}"
