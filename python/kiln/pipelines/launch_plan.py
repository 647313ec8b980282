"""The host side of a GPU program as data: the launch plan the runtime replays.

After the `loops` stage, an entry point's host code is func/memref IR: the arena allocation and views
into it, reshapes, calls to dispatch functions that each hold one `gpu.launch_func`, copies (results,
views at a runtime position) and constants. `launch_plan()` interprets that IR once, at
compile time, into a list of launch and copy commands over symbolic buffers (entry arguments, out-
params, allocations, constants) with byte offsets -- the form `kiln.runtime.gpu` replays, or captures
into a CUDA/HIP graph. Host code that computes anything else (arithmetic on scalars, dynamic shapes)
is refused with a message naming the op.
"""

from __future__ import annotations

import numpy as np
from mlir import ir

from ..errors import KilnError

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
    where a command is {"op": "launch", "kernel", "grid": [x, y, z], "block": [x, y, z], "args": [ref],
    "shared_bytes" (optional): dynamic shared memory}
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
        if any(a.get("buffer") == "scalars" for c in commands if c["op"] == "launch" for a in c["args"]):
            plans[entry]["scalar_buffer"] = True  # kernels read integer arguments from device memory
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


def _bound_scalars(func, call, refs, constants, launched: list, here: str) -> None:
    """A kernel's `kiln.scalar_bounds` ([argument, largest valid value] pairs: e.g. the position of a
    KV-cache write) as "bounds" of its launch, [[entry argument, largest value]], which the runtime
    checks before the kernel can write outside its buffer; a constant out of range is refused here."""
    pairs = list(ir.DenseI64ArrayAttr(func.attributes["kiln.scalar_bounds"]))
    bounds = []
    for arg, hi in zip(pairs[::2], pairs[1::2]):
        operand = call.operands[arg]
        if refs.get(operand, ("",))[0] == "scalars":  # a slot in device memory (gpu_scalars.py)
            r = {"scalar": "arg", "index": refs[operand][2] // 8}
        elif refs.get(operand, ("",))[0] == "constant":
            r = {"scalar": "constant", "value": int(constants[refs[operand][1]][0][0])}
        else:
            r = _scalar_ref(refs, operand, here)
        if r["scalar"] == "arg":
            if [r["index"], hi] not in bounds:  # (merged launches: each member bounds the same scalar)
                bounds.append([r["index"], hi])
        elif not 0 <= r["value"] <= hi:
            raise KilnError(f"{here}: operand {arg} of @{ir.StringAttr(func.attributes['sym_name']).value} is "
                            f"{r['value']}, outside 0..{hi}")
    for command in launched:
        if command["op"] == "launch":
            command["bounds"] = bounds


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
        if name == "memref.alloca" and "kiln.scalar_slot" in op.attributes:
            refs[op.result] = ("slot",)  # a kernel scalar in device memory, set by the next store
        elif name in ("arith.index_cast", "arith.extsi") and not isinstance(op.operands[0].type, ir.MemRefType):
            r = _scalar_ref(refs, op.operands[0], here)
            refs[op.result] = ("scalar", r["index"], "i64") if r["scalar"] == "arg" else \
                ("constant-scalar", r["value"], "i64")
        elif name == "memref.store" and refs.get(op.operands[1]) == ("slot",):
            # an entry argument's slot is word i of the entry point's scalar buffer (the runtime
            # writes it before each launch); a constant's is a constant of its own
            r = _scalar_ref(refs, op.operands[0], here)
            if r["scalar"] == "arg":
                refs[op.operands[1]] = ("scalars", 0, 8 * r["index"])
            else:
                sym = f"__scalar_{int(r['value'])}"
                constants.setdefault(sym, (np.array([int(r["value"])], np.int64), {"dtype": "i64", "shape": [1]}))
                refs[op.operands[1]] = ("constant", sym, 0)
        elif name == "memref.alloc" or name == "memref.alloca":
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
            # offset (a row at the decode position) is tracked as entry scalars x element
            # multipliers, for host copies (kernels cannot take such a view; KV-cache writes are
            # kernels of their own, gpu_cache_update.py).
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
            start = len(commands)
            _interpret(body, inner, funcs, globals_, constants, allocations, commands, callee)
            if "kiln.scalar_bounds" in funcs[callee].attributes:
                _bound_scalars(funcs[callee], op, refs, constants, commands[start:], here)
        elif name == "gpu.launch_func":
            launch = gpu_d.LaunchFuncOp(op) if not isinstance(op, gpu_d.LaunchFuncOp) else op
            grid = [_static_int(v, here) for v in (launch.gridSizeX, launch.gridSizeY, launch.gridSizeZ)]
            threads = [_static_int(v, here) for v in (launch.blockSizeX, launch.blockSizeY, launch.blockSizeZ)]
            kernel = ir.SymbolRefAttr(op.attributes["kernel"])
            args = []
            for v in launch.kernelOperands:
                args.append(_ref(refs, v, here) if isinstance(v.type, ir.MemRefType) else _scalar_ref(refs, v, here))
            command = {"op": "launch", "kernel": str(kernel).split("::")[0].lstrip("@"), "grid": grid,
                       "block": threads, "args": args}
            if launch.dynamicSharedMemorySize is not None:
                command["shared_bytes"] = _static_int(launch.dynamicSharedMemorySize, here)
            commands.append(command)
        else:
            raise KilnError(f"{here}: the GPU targets cannot run this op on the host; only kernels "
                            "(gpu.launch_func), buffer views and copies are supported there")
