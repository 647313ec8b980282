"""Independent launches side by side: consecutive kernel launches of an entry point that touch
disjoint memory (or only read the same) and have the same block shape become one launch.

A decode step is a chain of small kernels, and on a GPU each costs a launch (a graph node) whatever
its size. Many neighbours do not depend on each other: a layer's q, k and v projections, its gate
and up projections, RoPE of q and of k, the two KV-cache writes. `merge_launches` puts such a run of
launches into one kernel whose blocks are the members' blocks one after another: block b runs member
j's code, its block ids computed from b - (blocks of members before j), chosen by a branch that is
uniform in the block. The merged kernel takes every member's operands; its dynamic shared memory is the largest of
theirs.

When launches may merge (decided on the host code at the `loops` stage, after outlining):
  - each is a call of a dispatch function that holds just one gpu.launch_func whose operands are the
    function's arguments (or constant globals), and its kernel does not use gpu.grid_dim or global
    ids (its grid changes: member j's grid is linearized, x fastest, into blocks after those of
    members 0..j-1, and its block ids computed back from the merged kernel's);
  - all have the same block shape, or the others are small plain kernels (`_Launch.paddable`):
    the merged block is the largest along each axis, and a smaller member's code runs only in the
    threads inside its own block shape (the others of its blocks skip it);
  - none writes memory another one reads or writes: operands are traced through views and reshapes
    to their buffer and byte range; a kernel writes an operand it stores into, copies into or passes
    to an op that may write (anything other than loads and views);
  - only views, reshapes, constants and scalar slots (gpu_scalars.py) are between them on the host:
    the merged launch takes the place of the last one.
Distinct arguments of an entry point are taken to be distinct buffers (as Kiln's runtime and models
pass them).
"""

from __future__ import annotations

import dataclasses
import math
import re

from mlir import ir

from . import gpu

MAX_MEMBERS = 8  # launches per merged kernel: its code holds all of theirs
MAX_PADDED_THREADS = 16384  # threads of all blocks of a kernel that runs in larger blocks than its own
MAX_BLOCK_THREADS = 1024
_NEUTRAL_HOST_OPS = ("arith.constant", "arith.index_cast", "memref.view", "memref.expand_shape",
                     "memref.collapse_shape", "memref.cast", "memref.subview")
_VIEW_OPS = ("memref.view", "memref.expand_shape", "memref.collapse_shape", "memref.cast", "memref.subview",
             "memref.reinterpret_cast")
_READ_OPS = ("memref.load", "vector.load", "vector.transfer_read", "memref.dim", "nvgpu.ldmatrix",
             "memref.extract_aligned_pointer_as_index", "memref.extract_strided_metadata")
_BLOCK_ID = re.compile(r"(%[\w$.-]+) = gpu\.block_id\s+([xyz])(?:\s+upper_bound\s+\d+)?")
_HEADER = re.compile(r"gpu\.func @[\w$.-]+\((.*?)\)( workgroup\(.*?\))? kernel")
_SSA = re.compile(r"%([\w$.-]+)")
_AXES = "xyz"
_FRESH = ("memref.alloc", "memref.alloca", "memref.get_global")  # host ops that make a buffer of their own
_ANYWHERE = object()  # (see _bytes)


@dataclasses.dataclass
class _Launch:
    """A host call of a single-launch dispatch function, as the merging needs it."""

    call: object  # the func.call
    kernel: str  # the kernel's symbol, "module::func"
    func: object  # the kernel's gpu.func
    grid: tuple  # blocks along x, y, z
    blocks: int  # all of them
    block: tuple
    shared: int  # dynamic shared memory bytes
    operands: list  # the kernel's arguments in order: host values, or _Global constants
    written: list  # per operand: may the kernel write it?
    bounds: list  # kiln.scalar_bounds of the dispatch function, per kernel operand: [(operand, hi)]
    # may it run in larger blocks, its code skipped by the threads outside its own? Small kernels
    # (MAX_PADDED_THREADS) whose threads do not meet: no barrier but the one before gpu.return (a
    # no-op there), no shuffles, shared memory or warp-wide instructions
    paddable: bool


@dataclasses.dataclass(frozen=True)
class _Global:
    """A launch operand the dispatch function takes from a global (memref.get_global: a constant)."""

    symbol: str
    type: str


def merge_launches(module: ir.Module) -> int:
    """Merges runs of independent launches in every entry point (module doc). Returns how many
    launches are gone."""
    kernels = {f"{name}::{ir.StringAttr(f.attributes['sym_name']).value}": f
               for name, body in gpu.kernel_modules(module) for f in body.operations if f.operation.name == "gpu.func"}
    funcs = {ir.StringAttr(op.attributes["sym_name"]).value: op
             for op in module.body.operations if op.operation.name == "func.func"}
    merged, gone, mergeable = {}, 0, {}
    for func in list(funcs.values()):
        if "kiln.dispatch" in func.attributes or not func.regions[0].blocks:
            continue
        runs, run = [], []
        for op in list(func.regions[0].blocks[0].operations):
            launch = _launch(op, funcs, kernels, mergeable) if op.operation.name == "func.call" else None
            if launch is not None and run and _joins(run, launch):
                run.append(launch)
            elif launch is not None:
                runs.append(run)
                run = [launch]
            elif not _neutral(op):
                runs.append(run)
                run = []
        runs.append(run)
        for run in runs:
            if len(run) > 1:
                _replace(module, run, merged)
                gone += len(run) - 1
    if gone:
        _drop_unused(module)
    return gone


def _drop_unused(module: ir.Module) -> None:
    """Dispatch functions no longer called, then kernels no longer launched."""
    def referenced(op_name: str, attribute: str) -> set:
        found = set()
        for op in module.body.operations:
            if op.operation.name == "func.func":
                gpu.walk_ops(op, lambda o: found.add(str(o.attributes[attribute]).split("::")[0].lstrip("@"))
                             if o.operation.name == op_name else None)
        return found

    called = referenced("func.call", "callee")
    for op in list(module.body.operations):
        if (op.operation.name == "func.func" and "kiln.dispatch" in op.attributes
                and ir.StringAttr(op.attributes["sym_name"]).value not in called):
            op.operation.erase()
    launched = referenced("gpu.launch_func", "kernel")
    for op in list(module.body.operations):
        if op.operation.name == "gpu.module" and ir.StringAttr(op.attributes["sym_name"]).value not in launched:
            op.operation.erase()


def _launch(call, funcs: dict, kernels: dict, mergeable: dict):
    """The _Launch of a host call, or None when it is not a call of a single-launch dispatch
    function the merging can take (module doc). `mergeable` caches, per kernel, whether its code
    can be merged."""
    callee = funcs.get(ir.FlatSymbolRefAttr(call.attributes["callee"]).value)
    if callee is None or "kiln.dispatch" not in callee.attributes or not callee.regions[0].blocks:
        return None
    body = callee.regions[0].blocks[0]
    ops = [o for o in body.operations if o.operation.name not in ("arith.constant", "memref.get_global", "func.return")]
    if len(ops) != 1 or ops[0].operation.name != "gpu.launch_func":
        return None
    from mlir.dialects import gpu as gpu_d

    launch = gpu_d.LaunchFuncOp(ops[0]) if not isinstance(ops[0], gpu_d.LaunchFuncOp) else ops[0]
    if list(launch.asyncDependencies) or launch.asyncToken is not None:
        return None
    sizes = [_constant(v) for v in (launch.gridSizeX, launch.gridSizeY, launch.gridSizeZ,
                                    launch.blockSizeX, launch.blockSizeY, launch.blockSizeZ)]
    shared = 0 if launch.dynamicSharedMemorySize is None else _constant(launch.dynamicSharedMemorySize)
    if None in sizes or shared is None:
        return None
    kernel = str(ir.SymbolRefAttr(ops[0].attributes["kernel"])).replace("@", "")
    func = kernels.get(kernel)
    if func is None or len(func.regions[0].blocks) != 1 or len(func.operation.parent.regions[0].blocks[0].operations) != 1:
        return None  # not one block, or other symbols beside it in its gpu.module
    if kernel not in mergeable:  # (may it merge, may its code run in larger blocks)
        text = _printed(func)
        # not when it uses its grid's shape, has private attributions, or returns early
        mergeable[kernel] = (not (any(s in text for s in ("gpu.grid_dim", "gpu.global_id"))
                                  or not _HEADER.match(text.split("\n", 1)[0]) or text.count("gpu.return") != 1
                                  or text.rstrip().rsplit("\n", 2)[-2].strip() != "gpu.return"),
                             _threads_never_meet(text))
    if not mergeable[kernel][0]:
        return None
    positions, operands = [], []
    for v in launch.kernelOperands:
        if not isinstance(v.owner, ir.Block) and v.owner.operation.name == "memref.get_global":
            positions.append(None)
            operands.append(_Global(ir.FlatSymbolRefAttr(v.owner.attributes["name"]).value, str(v.type)))
            continue
        if not isinstance(v.owner, ir.Block) or ir.BlockArgument(v).owner != body:
            return None  # an operand computed in the dispatch function
        positions.append(ir.BlockArgument(v).arg_number)
        operands.append(call.operands[positions[-1]])
    bounds = []
    if "kiln.scalar_bounds" in callee.attributes:
        pairs = list(ir.DenseI64ArrayAttr(callee.attributes["kiln.scalar_bounds"]))
        for arg, hi in zip(pairs[::2], pairs[1::2]):
            if arg not in positions:
                return None
            bounds.append((positions.index(arg), hi))
    written = [_may_write(a) for a in func.regions[0].blocks[0].arguments[:len(operands)]]
    paddable = mergeable[kernel][1] and not shared and math.prod(sizes) <= MAX_PADDED_THREADS
    return _Launch(call, kernel, func, tuple(sizes[:3]), math.prod(sizes[:3]), tuple(sizes[3:]), shared, operands,
                   written, bounds, paddable)


def _threads_never_meet(text: str) -> bool:
    """Do the threads of the kernel printed as `text` never communicate: no barrier but the one
    before gpu.return, no shuffles, workgroup memory or warp-wide instructions?"""
    header, *body = text.rstrip().split("\n")[:-2]  # without gpu.return and the closing brace
    if body and body[-1].strip() == "gpu.barrier":
        body = body[:-1]
    return not any(s in line for line in [header, *body] for s in (
        "gpu.barrier", "gpu.shuffle", "gpu.block_dim", "gpu.subgroup", "workgroup", "nvvm.", "nvgpu.", "rocdl.",
        "amdgpu."))


def _printed(func) -> str:
    """A gpu.func's text, printed in its own scope (printing a nested op in the module's scope walks
    the whole module: seconds per kernel for a model)."""
    return func.operation.get_asm(use_local_scope=True)


def _constant(value):
    owner = value.owner
    if isinstance(owner, ir.Block) or owner.operation.name != "arith.constant":
        return None
    return ir.IntegerAttr(owner.attributes["value"]).value


def _may_write(value) -> bool:
    """Might a kernel write through `value` (a memref argument, or a view of one)?"""
    if not isinstance(value.type, ir.MemRefType):
        return False
    for use in value.uses:
        user = use.owner
        name = user.operation.name
        if name in _VIEW_OPS:
            if _may_write(user.results[0]):
                return True
        elif name not in _READ_OPS:
            return True
    return False


def _neutral(op) -> bool:
    """May a host op stand between launches that merge (it reads and writes no device memory)?"""
    name = op.operation.name
    if name in _NEUTRAL_HOST_OPS:
        return True
    if name == "memref.alloca":
        return "kiln.scalar_slot" in op.attributes
    if name == "memref.store":  # a scalar slot's value (gpu_scalars.py)
        owner = op.operands[1].owner
        return not isinstance(owner, ir.Block) and "kiln.scalar_slot" in owner.attributes
    return False


def _merged_block(run: list) -> tuple:
    """The block shape of the merged kernel of `run`: the largest along each axis."""
    return tuple(max(m.block[a] for m in run) for a in range(3))


def _joins(run: list, launch: _Launch) -> bool:
    """May `launch` join the run of launches before it?"""
    block = _merged_block([*run, launch])
    if len(run) >= MAX_MEMBERS or math.prod(block) > MAX_BLOCK_THREADS:
        return False
    if any(m.block != block and not m.paddable for m in (*run, launch)):
        return False
    mine = [(_bytes(v), w) for v, w in zip(launch.operands, launch.written)]
    for other in run:
        for v, w in zip(other.operands, other.written):
            theirs = _bytes(v)
            for r, mw in mine:
                if (w or mw) and _overlap(theirs, r):
                    return False
    return True


def _bytes(value) -> tuple:
    """(buffer, first byte, end byte) of a host memref value: its allocation or argument through
    views and reshapes; end None when unknown (the whole buffer from there); buffer _ANYWHERE when
    the value comes from an op the tracing does not know (it may overlap anything)."""
    if isinstance(value, _Global):
        return value, 0, None
    offset = 0
    end = _size(value.type)
    while not isinstance(value.owner, ir.Block):
        op = value.owner
        name = op.operation.name
        if name == "memref.view":
            at = _constant(op.operands[1])
            offset, end = (offset + at, end) if at is not None else (0, None)
        elif name == "memref.subview":
            end = None  # somewhere in its source, past the offset so far
        elif name in _FRESH:
            break
        elif name not in ("memref.expand_shape", "memref.collapse_shape", "memref.cast"):
            return _ANYWHERE, 0, None
        value = op.operands[0]
    return value, offset, None if end is None else offset + end


def _size(t) -> int | None:
    mt = ir.MemRefType(t) if isinstance(t, ir.MemRefType) else None
    if mt is None or not mt.has_static_shape:
        return None
    bits = mt.element_type.width if hasattr(mt.element_type, "width") else 64
    return math.prod(mt.shape) * max(bits // 8, 1)


def _overlap(a: tuple, b: tuple) -> bool:
    (ba, la, ea), (bb, lb, eb) = a, b
    if ba is _ANYWHERE or bb is _ANYWHERE:
        return True
    if ba != bb:
        return False
    if ea is None or eb is None:
        return True
    return la < eb and lb < ea


def _replace(module: ir.Module, run: list, merged: dict) -> None:
    """Replaces the calls of `run` by one call (where the last was) of a dispatch function launching
    the merged kernel (made once per sequence of kernels and block shape)."""
    key = tuple(m.kernel for m in run)
    if key not in merged:
        merged[key] = _make_merged(module, run, len(merged))
    dispatch = merged[key]
    last = run[-1].call
    with ir.InsertionPoint(last), last.location:
        ir.Operation.create("func.call", results=[],
                            operands=[v for m in run for v in m.operands if not isinstance(v, _Global)],
                            attributes={"callee": ir.FlatSymbolRefAttr.get(dispatch)})
    for m in run:
        m.call.erase()


def _make_merged(module: ir.Module, run: list, number: int) -> str:
    """Adds the merged kernel (in a gpu.module of its own) and its dispatch function; returns the
    dispatch function's name."""
    host = ir.StringAttr(run[0].call.operation.parent.attributes["sym_name"]).value
    dispatch_name = f"{host}_merged_{number}"
    name = f"{dispatch_name}_kernel"
    signature, bodies, attributions = [], [], []
    block = _merged_block(run)
    for j, m in enumerate(run):
        text = _SSA.sub(lambda x: f"%m{j}_{x.group(1)}", _printed(m.func))
        header, body = text.split("\n", 1)
        body = body.rstrip().rsplit("\n", 1)[0]  # without the closing brace
        lines = body.split("\n")
        args = _HEADER.match(header)
        signature.append(args.group(1))
        if args.group(2):
            attributions.append(args.group(2).strip())
        first = sum(x.blocks for x in run[:j])

        def block_id(x, m=m, first=first):
            """Member m's block id along an axis: its grid linearized, x fastest, from block `first`."""
            axis = _AXES.index(x.group(2))
            inner = math.prod(m.grid[:axis])
            return (f"{x.group(1)} = affine.apply affine_map<(d0) -> (((d0 - {first}) floordiv {inner}) "
                    f"mod {m.grid[axis]})>(%bid)")

        code = _BLOCK_ID.sub(block_id, "\n".join(lines[:-1]))  # without the gpu.return
        if m.block != block:  # padded: its code in its own threads only (its last barrier is a no-op)
            code = code.rstrip()
            if code.endswith("gpu.barrier"):
                code = code[:-len("gpu.barrier")]
            guard, active = [], None  # thread id < the member's block size, along the axes it is smaller
            for x, size, merged_size in zip(_AXES, m.block, block):
                if size == merged_size:
                    continue
                guard += [f"%m{j}_tid{x} = gpu.thread_id {x}", f"%m{j}_size{x} = arith.constant {size} : index",
                          f"%m{j}_in{x} = arith.cmpi ult, %m{j}_tid{x}, %m{j}_size{x} : index"]
                if active is not None:
                    guard.append(f"%m{j}_in{x}_all = arith.andi {active}, %m{j}_in{x} : i1")
                active = f"%m{j}_in{x}_all" if active is not None else f"%m{j}_in{x}"
            code = "\n".join([*guard, f"scf.if {active} {{", code, "}"])
        bodies.append((code, first))
    total = sum(m.blocks for m in run)
    workgroup = ""
    if attributions:
        workgroup = " workgroup(" + ", ".join(a[len("workgroup("):-1] for a in attributions) + ")"
    bx, by, bz = block
    lines = [f"gpu.module @{name} {{",
             f"gpu.func @{name}({', '.join(s for s in signature if s)}){workgroup} kernel attributes "
             f"{{known_block_size = array<i32: {bx}, {by}, {bz}>, known_grid_size = array<i32: {total}, 1, 1>}} {{",
             "%bid = gpu.block_id x"]
    for j, (_, first) in enumerate(bodies):
        lines.append(f"%first{j} = arith.constant {first} : index")
    for j, (body, first) in enumerate(bodies):
        if j + 1 < len(bodies):
            lines.append(f"%in{j} = arith.cmpi ult, %bid, %first{j + 1} : index")
            lines.append(f"scf.if %in{j} {{")
            lines.append(body)
            lines.append("} else {")
        else:
            lines.append(body)
    lines += ["}"] * (len(bodies) - 1) + ["gpu.return", "}", "}"]
    # the dispatch function: every member's operands, the launch, the members' scalar bounds
    types, launch_args, bounds, globals_ = [], [], [], []
    for m in run:
        at = []  # where each operand is in the dispatch function's arguments (None: a global)
        for v in m.operands:
            if isinstance(v, _Global):
                globals_.append(f"%g{len(globals_)} = memref.get_global @{v.symbol} : {v.type}")
                launch_args.append(f"%g{len(globals_) - 1} : {v.type}")
                at.append(None)
                continue
            at.append(len(types))
            launch_args.append(f"%a{len(types)} : {v.type}")
            types.append(str(v.type))
        for operand, hi in m.bounds:
            bounds += [at[operand], hi]
    args = ", ".join(f"%a{i}: {t}" for i, t in enumerate(types))
    shared = max(m.shared for m in run)
    classes = "+".join(_kernel_class(m) for m in run)
    attributes = f'kiln.dispatch, kiln.kernel_class = "{classes}"'
    if bounds:
        attributes += f", kiln.scalar_bounds = array<i64: {', '.join(map(str, bounds))}>"
    dispatch = [f"func.func private @{dispatch_name}({args}) attributes {{{attributes}}} {{",
                f"%blocks = arith.constant {total} : index", "%one = arith.constant 1 : index",
                f"%bx = arith.constant {bx} : index", f"%by = arith.constant {by} : index",
                f"%bz = arith.constant {bz} : index", *globals_]
    smem = ""
    if shared:
        dispatch.append(f"%smem = arith.constant {shared} : i32")
        smem = " dynamic_shared_memory_size %smem"
    dispatch += [f"gpu.launch_func @{name}::@{name} blocks in (%blocks, %one, %one) threads in (%bx, %by, %bz)"
                 f"{smem} args({', '.join(launch_args)})", "return", "}"]
    # the globals' declarations let the text parse (the module has their definitions)
    declared = sorted({f'memref.global "private" @{v.symbol} : {v.type}' for m in run for v in m.operands
                       if isinstance(v, _Global)})
    parsed = ir.Module.parse("module attributes {gpu.container_module} {\n" + "\n".join(declared + lines + dispatch)
                             + "\n}", context=module.context)
    anchor = run[0].func.operation.parent  # the first member's gpu.module
    for op in list(parsed.body.operations):
        if op.operation.name != "memref.global":
            op.operation.move_before(anchor)
    return dispatch_name


def _kernel_class(launch: _Launch) -> str:
    """The kernel class (`kiln.kernel_class`) of a launch's dispatch function."""
    module = launch.call.operation.parent.parent
    callee = ir.FlatSymbolRefAttr(launch.call.attributes["callee"]).value
    func = next(op for op in module.regions[0].blocks[0].operations if op.operation.name == "func.func"
                and ir.StringAttr(op.attributes["sym_name"]).value == callee)
    return ir.StringAttr(func.attributes["kiln.kernel_class"]).value if "kiln.kernel_class" in func.attributes else "kernel"
