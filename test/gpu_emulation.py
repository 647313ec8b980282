"""A CPU stand-in for a GPU driver, so GPU programs can be checked numerically on machines without a GPU.

The kernels of a module's `loops` stage (gpu.func in gpu.modules, after block/thread mapping and
outlining) are turned into CPU functions that take their block and thread ids as arguments, and a
wrapper runs every (block, thread) of a launch in turn. `EmulatedDriver` implements the GpuDriver
interface (memory, copies, launches) with host memory and those functions, so the real runtime code
(kiln.runtime.gpu: the artifact's launch plan, buffer addresses, scalar and constant operands, copies)
runs unchanged. What it does not check is the NVVM/ROCDL code generation itself (the artifacts' PTX
and hsaco are checked structurally elsewhere).

Threads run one after another, which is one valid schedule as long as threads of a kernel do not
communicate through memory (no shared memory; barriers are dropped). Warp shuffles (`gpu.shuffle
xor`, the matvec schedule's reduction) are emulated by running a block's threads in passes until a
fixed point: each shuffle records the lane's value and returns its partner's from the previous pass
(`_SHUFFLE_C`). The values of the i-th shuffle are exact from pass i + 1 on, so a pass in which no
recorded value changed computed every shuffle as lock-step lanes would. Every pass starts from the
memory the block started from (the kernel's buffers are saved at the block's start and restored
before each further pass), so only the last pass's effects remain.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import tempfile

import numpy as np
from mlir import ir

from kiln.errors import KilnError
from kiln.pipelines import cpu
from kiln.pipelines.common import run_passes
from kiln.runtime.device import Device
from kiln.runtime.gpu import GpuDriver
from kiln.runtime.memref import descriptor_type

_ID_OPS = {"block_id": "bid", "thread_id": "tid", "grid_dim": "gd", "block_dim": "bd"}
_ID = re.compile(r"(%[\w.$-]+) = gpu\.(block_id|thread_id|grid_dim|block_dim)\s+([xyz])(?:\s+upper_bound\s+\d+)?")
_SHUFFLE = re.compile(r"(%[\w.$-]+(?::2|, %[\w.$-]+)) = gpu\.shuffle\s+(\w+) (%[\w.$-]+(?:#\d+)?), (%[\w.$-]+), "
                      r"(%[\w.$-]+) : f32")
_SHUFFLE_C = r"""
#include <stdlib.h>
#include <string.h>
static float *vals[2];
static unsigned char *seen[2];
static long *occ, threads, slots, passes;
static int changed;
static struct { char *at, *saved; long bytes; } buffers[64];
static int n_buffers;

void kiln_emu_track_reset(void) {
  for (int b = 0; b < n_buffers; b++) free(buffers[b].saved);
  n_buffers = 0;
}

void kiln_emu_track(void *at, long bytes) {
  if (n_buffers == 64) abort();
  buffers[n_buffers].at = at;
  buffers[n_buffers].bytes = bytes;
  buffers[n_buffers++].saved = malloc(bytes);
}

static void grow(long need) {
  long n = slots ? slots : 8;
  while (n <= need) n *= 2;
  for (int p = 0; p < 2; p++) {
    vals[p] = realloc(vals[p], n * threads * sizeof(float));
    seen[p] = realloc(seen[p], n * threads);
    memset(seen[p] + slots * threads, 0, (n - slots) * threads);
  }
  slots = n;
}

void kiln_emu_block_begin(long n) {
  threads = n;
  free(vals[0]); free(vals[1]); free(seen[0]); free(seen[1]); free(occ);
  vals[0] = vals[1] = 0; seen[0] = seen[1] = 0; slots = 0; passes = 0;
  occ = calloc(n, sizeof(long));
  for (int b = 0; b < n_buffers; b++) memcpy(buffers[b].saved, buffers[b].at, buffers[b].bytes);
}

void kiln_emu_pass_begin(void) {
  if (passes)
    for (int b = 0; b < n_buffers; b++) memcpy(buffers[b].at, buffers[b].saved, buffers[b].bytes);
  memset(occ, 0, threads * sizeof(long));
  if (slots) memset(seen[1], 0, slots * threads);
  changed = 0;
}

/* [1]: this pass; [0]: the previous one. */
float kiln_emu_shuffle_xor(float v, long lane, int offset, int width) {
  long o = occ[lane]++;
  if (o >= slots) grow(o);
  long i = o * threads + lane;
  if (!seen[0][i] || memcmp(&vals[0][i], &v, sizeof v)) changed = 1;
  vals[1][i] = v;
  seen[1][i] = 1;
  long base = lane - lane % width, partner = (lane % width) ^ offset;
  if (partner >= width || base + partner >= threads) return v;
  long j = o * threads + base + partner;
  return seen[0][j] ? vals[0][j] : 0.0f;
}

int kiln_emu_pass_end(void) {
  float *v = vals[0]; vals[0] = vals[1]; vals[1] = v;
  unsigned char *s = seen[0]; seen[0] = seen[1]; seen[1] = s;
  if (++passes > 10000) abort();
  return changed;
}
"""
_SHUFFLE_DECLS = """
func.func private @kiln_emu_block_begin(i64)
func.func private @kiln_emu_pass_begin()
func.func private @kiln_emu_pass_end() -> i32
func.func private @kiln_emu_shuffle_xor(f32, i64, i32, i32) -> f32
func.func private @__emu_shuffle(%v: f32, %lane: index, %offset: i32, %width: i32) -> (f32, i1) {
  %l = arith.index_cast %lane : index to i64
  %r = func.call @kiln_emu_shuffle_xor(%v, %l, %offset, %width) : (f32, i64, i32, i32) -> f32
  %t = arith.constant true
  return %r, %t : f32, i1
}
"""
_NUMPY = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "i64": np.int64, "i32": np.int32,
          "i8": np.int8, "i1": np.bool_}


def _kernels(loops_module: ir.Module) -> list:
    """[(name, [arg types as text], body text)] of every gpu.func of the `loops` stage."""
    found = []
    for op in loops_module.body.operations:
        if op.operation.name != "gpu.module":
            continue
        for f in op.regions[0].blocks[0].operations:
            if f.operation.name != "gpu.func":
                continue
            name = ir.StringAttr(f.attributes["sym_name"]).value
            types = [str(a.type) for a in f.regions[0].blocks[0].arguments]
            lines = str(f).split("\n")
            found.append((name, types, "\n".join(lines[1:-1])))
    return found


def emulation_module_text(loops_text: str) -> tuple:
    """(MLIR text with a C-interface function per kernel, {kernel: arg types})."""
    with ir.Context():
        module = ir.Module.parse(loops_text)
        kernels = _kernels(module)
    parts, signatures = [], {}
    ids = [f"%__{p}{a}" for p in ("bid", "tid", "gd", "bd") for a in "xyz"]
    if any(_SHUFFLE.search(body) for _, _, body in kernels):
        parts.append(_SHUFFLE_DECLS)
    for name, types, body in kernels:
        shuffles = bool(_SHUFFLE.search(body))
        for m in _SHUFFLE.finditer(body):
            if m.group(2) != "xor":
                raise KilnError(f"kernel {name}: the emulator runs gpu.shuffle xor only, got {m.group(2)}")
        body = _SHUFFLE.sub(lambda m: f"{m.group(1)} = func.call @__emu_shuffle({m.group(3)}, %__lane, {m.group(4)}, "
                                      f"{m.group(5)}) : (f32, index, i32, i32) -> (f32, i1)", body)
        if "gpu." in _ID.sub("", body).replace("gpu.barrier", "").replace("gpu.return", ""):
            raise KilnError(f"kernel {name}: an op the emulator does not know: "
                            + next(l for l in body.split("\n") if "gpu." in _ID.sub("", l)
                                   and "gpu.barrier" not in l and "gpu.return" not in l))
        if "#gpu.address_space" in body:
            raise KilnError(f"kernel {name} uses shared memory, which sequential emulation cannot run")
        body = _ID.sub(lambda m: f"{m.group(1)} = arith.addi %__{_ID_OPS[m.group(2)]}{m.group(3)}, %__zero : index", body)
        body = body.replace("gpu.barrier", "").replace("gpu.return", "return")
        args = ", ".join(f"%arg{i}: {t}" for i, t in enumerate(types))
        idx_args = ", ".join(f"{v}: index" for v in ids)
        lane = ("  %__l0 = arith.muli %__bdy, %__tidz : index\n  %__l1 = arith.addi %__tidy, %__l0 : index\n"
                "  %__l2 = arith.muli %__bdx, %__l1 : index\n  %__lane = arith.addi %__tidx, %__l2 : index\n")
        parts.append(f"func.func private @{name}_body({args}, {idx_args}) {{\n"
                     f"  %__zero = arith.constant 0 : index\n{lane if shuffles else ''}{body}\n}}")
        call_types = ", ".join(types + ["index"] * 12)
        loop_ids = [f"%__bid{a}" for a in "zyx"] + [f"%__tid{a}" for a in "zyx"]
        bounds = [f"%__gd{a}" for a in "zyx"] + [f"%__bd{a}" for a in "zyx"]
        params = [f"%__{p}{a}" for p in ("gd", "bd") for a in "xyz"]  # launch(grid..., block...)
        lines = [f"func.func @{name}({args}, " + ", ".join(f"{b}: index" for b in params) +
                 ") attributes {llvm.emit_c_interface} {",
                 "  %__c0 = arith.constant 0 : index", "  %__c1 = arith.constant 1 : index"]
        for v, b in zip(loop_ids[:3], bounds[:3]):
            lines.append(f"  scf.for {v} = %__c0 to {b} step %__c1 {{")
        if shuffles:  # the block's threads in passes until their shuffles reach a fixed point
            lines += ["  %__n0 = arith.muli %__bdx, %__bdy : index", "  %__n1 = arith.muli %__n0, %__bdz : index",
                      "  %__n = arith.index_cast %__n1 : index to i64",
                      "  func.call @kiln_emu_block_begin(%__n) : (i64) -> ()",
                      "  scf.while : () -> () {", "  func.call @kiln_emu_pass_begin() : () -> ()"]
        for v, b in zip(loop_ids[3:], bounds[3:]):
            lines.append(f"  scf.for {v} = %__c0 to {b} step %__c1 {{")
        call_args = ", ".join([f"%arg{i}" for i in range(len(types))] + ids)
        lines.append(f"    func.call @{name}_body({call_args}) : ({call_types}) -> ()")
        lines += ["  }"] * 3
        if shuffles:
            lines += ["  %__again = func.call @kiln_emu_pass_end() : () -> i32",
                      "  %__zero32 = arith.constant 0 : i32",
                      "  %__more = arith.cmpi ne, %__again, %__zero32 : i32",
                      "  scf.condition(%__more)", "  } do {", "  scf.yield", "  }"]
        lines += ["  }"] * 3 + ["  return", "}"]
        parts.append("\n".join(lines))
        signatures[name] = types
    return "module {\n" + "\n".join(parts) + "\n}\n", signatures


def _refused_in_capture(name, *args):
    raise KilnError(f"emulated driver: {name} on a stream being captured into a graph "
                    "(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED on a GPU)")


class EmulatedDriver(GpuDriver):
    """Host memory and CPU-compiled kernels behind the GpuDriver interface."""

    name = "emulated"
    device_name = "CPU emulation"

    def __init__(self, loops_text: str, chip: str = "sm_80"):
        super().__init__(None)
        self.chip = chip
        text, self.signatures = emulation_module_text(loops_text)
        self._shuffles = _shuffle_library() if "@kiln_emu_shuffle_xor" in text else None
        with ir.Context():
            module = ir.Module.parse(text)
            run_passes(module, "expand-strided-metadata,lower-affine,convert-scf-to-cf,convert-vector-to-llvm,convert-math-to-llvm,"
                               "convert-math-to-libm,convert-to-llvm,reconcile-unrealized-casts", "emulation")
            so = cpu.build_shared_object(module, cpu.host_cpu())
        fd, self._path = tempfile.mkstemp(suffix=".so")
        with os.fdopen(fd, "wb") as f:
            f.write(so)
        self.lib = ctypes.CDLL(self._path)
        self._memory = {}
        self.launches = []  # (kernel, grid, block) in launch order
        self.copies = 0
        self.graph_launches = 0
        self.node_updates = 0

    def activate(self) -> None:
        pass

    def select_image(self, kernel, blobs, target):
        return kernel["symbol"].encode(), "emulated"

    def load_module(self, image: bytes):
        return image.decode()

    def get_function(self, module, name: str):
        if name not in self.signatures:
            raise KilnError(f"the emulated module has no kernel {name}")
        return name

    def mem_alloc(self, nbytes: int) -> int:
        block = np.zeros(max(1, nbytes) + 64, np.uint8)
        ptr = block.ctypes.data + (-block.ctypes.data) % 64
        self._memory[ptr] = block
        return ptr

    def mem_free(self, ptr: int) -> None:
        self._memory.pop(ptr, None)

    def _check_range(self, ptr: int, nbytes: int, what: str) -> None:
        for base, block in self._memory.items():
            end = block.ctypes.data + block.nbytes
            if base <= ptr and ptr + nbytes <= end:
                return
        raise KilnError(f"{what}: [{ptr:#x}, +{nbytes}) is outside every allocation")

    def copy_htod(self, dst, src, nbytes):
        self._check_range(dst, nbytes, "copy to device")
        ctypes.memmove(dst, src, nbytes)

    def copy_dtoh(self, dst, src, nbytes):
        self._check_range(src, nbytes, "copy from device")
        ctypes.memmove(dst, src, nbytes)

    def copy_dtod(self, dst, src, nbytes):
        self._check_range(src, nbytes, "device copy source")
        self._check_range(dst, nbytes, "device copy destination")
        self.copies += 1
        ctypes.memmove(dst, src, nbytes)

    def launch(self, function, grid, block, shared_bytes, params) -> None:
        types = self.signatures[function]
        call, keep = [], []
        if self._shuffles is not None:  # the buffers a block's passes restore (see the module doc)
            self._shuffles.kiln_emu_track_reset()
        for i, t in enumerate(types):
            address = params[i]
            if t.startswith("memref<"):
                ptr = ctypes.c_uint64.from_address(address).value
                d = self._descriptor(ptr, t, f"kernel {function} argument {i}")
                keep.append(d)
                call.append(ctypes.pointer(d))
                if self._shuffles is not None:
                    self._shuffles.kiln_emu_track(ctypes.c_void_p(ptr), ctypes.c_long(_extent_bytes(t)))
            elif t in ("index", "i64"):
                call.append(ctypes.c_int64.from_address(address))
            elif t == "i32":
                call.append(ctypes.c_int32.from_address(address))
            elif t == "f32":
                call.append(ctypes.c_float.from_address(address))
            else:
                raise KilnError(f"kernel {function} argument {i}: cannot emulate a {t} parameter")
        call += [ctypes.c_int64(v) for v in (*grid, *block)]
        self.launches.append((function, tuple(grid), tuple(block)))
        getattr(self.lib, f"_mlir_ciface_{function}")(*call)

    def _descriptor(self, ptr: int, type_text: str, what: str):
        shape, strides, offset, element = _layout(type_text)
        self._check_range(ptr, _extent_bytes(type_text), what)
        rank = len(shape)
        if not rank:
            return descriptor_type(0)(ptr, ptr, offset)
        dims = ctypes.c_int64 * rank
        return descriptor_type(rank)(ptr, ptr, offset, dims(*shape), dims(*strides))

    def synchronize(self) -> None:
        pass

    def begin_capture(self) -> None:
        self._captured = []
        self._launch, self._copy = self.launch, self.copy_dtod
        self.launch = lambda f, grid, block, shared_bytes, params: self._captured.append(
            (self._launch, (f, grid, block, shared_bytes, self._copy_params(f, params))))
        self.copy_dtod = lambda *a: self._captured.append((self._copy, a))
        # as on CUDA: a stream being captured refuses host copies and synchronization
        for name in ("copy_htod", "copy_dtoh", "synchronize"):
            setattr(self, name, functools.partial(_refused_in_capture, name))

    def _copy_params(self, function, params):
        """The launch's parameter values copied, as a graph captures them (the caller's go away)."""
        values = [ctypes.create_string_buffer(ctypes.string_at(params[i], 4 if t in ("i32", "f32") else 8), 8)
                  for i, t in enumerate(self.signatures[function])]
        array = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
        array._values = values  # kept alive with the array
        return array

    def end_capture(self, previous=None):
        """The captured calls; `previous` (an earlier capture) is updated in place, as the drivers'
        graph-exec update does."""
        del self.launch, self.copy_dtod, self.copy_htod, self.copy_dtoh, self.synchronize  # the class's
        if previous is None:
            return list(self._captured)
        previous[:] = self._captured
        return previous

    def graph_nodes(self, graph, kinds):
        """Node i is the graph's i-th captured call, as a one-stream capture's chain is."""
        captured = ["launch" if fn == self._launch else "copy" for fn, _ in graph]
        return list(range(len(graph))) if captured == kinds else None

    def set_kernel_node(self, graph, node, function, grid, block, shared_bytes, params) -> None:
        self.node_updates += 1
        graph[node] = (self._launch, (function, grid, block, shared_bytes, self._copy_params(function, params)))

    def set_copy_node(self, graph, node, dst, src, nbytes) -> None:
        self.node_updates += 1
        graph[node] = (self._copy, (dst, src, nbytes))

    def graph_launch(self, graph) -> None:
        self.graph_launches += 1
        for fn, args in graph:
            fn(*args)

    def graph_destroy(self, graph) -> None:
        pass


@functools.lru_cache(maxsize=None)
def _shuffle_library() -> ctypes.CDLL:
    """The shuffle emulation (`_SHUFFLE_C`), built once and loaded RTLD_GLOBAL so the emulated
    kernels' shared objects resolve its symbols."""
    import subprocess

    directory = tempfile.mkdtemp(prefix="kiln-emu-")
    source, library = os.path.join(directory, "shuffle.c"), os.path.join(directory, "libshuffle.so")
    with open(source, "w") as f:
        f.write(_SHUFFLE_C)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", source, "-o", library], check=True)
    return ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)


@functools.lru_cache(maxsize=None)
def _layout(type_text: str) -> tuple:
    """(shape, strides, offset, element type) of a memref type (parsed once: launches are many)."""
    with ir.Context():
        mt = ir.MemRefType(ir.Type.parse(type_text))
        strides, offset = mt.get_strides_and_offset()
        return list(mt.shape), list(strides), offset, str(mt.element_type)


def _extent_bytes(type_text: str) -> int:
    """Bytes from a memref's base pointer to the end of its last element."""
    shape, strides, offset, element = _layout(type_text)
    extent = offset + sum((d - 1) * s for d, s in zip(shape, strides)) + 1 if shape else offset + 1
    return extent * np.dtype(_NUMPY[element]).itemsize


def emulated_device(loops_text: str, driver: str = "cuda", chip: str = "sm_80") -> Device:
    """A Device whose driver is an EmulatedDriver for the kernels of `loops_text`."""
    device = Device.__new__(Device)
    device.driver = driver
    device.gpu = EmulatedDriver(loops_text, chip)
    device._num_threads = None
    return device
