"""Integer kernel scalars in device memory, so a graph replays at a new decode position unchanged.

A decode step's kernels that read the position (flash attention, KV-cache writes) took it as a kernel
parameter: a graph captured at one position had to have those nodes' parameters set again at the
next (90 nodes per SmolLM2 step, ~10 µs of driver time each; HIP, which cannot set node parameters,
captured the whole step again). Here every integer kernel operand is passed through device memory
instead: the kernel takes a `memref<1xi64>` and loads it inside its block forall, and the host
stores the value into a one-word slot (`memref.alloca {kiln.scalar_slot}`) before the call. The launch
plan (launch_plan.py) maps a slot holding an entry-point argument to the entry point's scalar buffer
(`{"buffer": "scalars"}`: word i holds argument i, written by the runtime before each launch of the
plan or its graph) and a slot holding a constant to a constant.

Applied to kernel functions on buffers at the `loops` stage, before the foralls become launches;
operands used outside the block forall keep their by-value parameter.
"""

from __future__ import annotations

from mlir import ir

from .common import find_ops

SLOT_ATTR = "kiln.scalar_slot"


def pass_through_memory(module: ir.Module) -> int:
    """Rewrites every kernel function's integer operands (and their callers); returns how many."""
    from .gpu import BLOCK_DIM_ATTR

    funcs = {ir.StringAttr(op.attributes["sym_name"]).value: op
             for op in module.body.operations if op.operation.name == "func.func"}
    converted = {}  # kernel name -> argument numbers now passed as memref<1xi64>
    for name, func in funcs.items():
        if BLOCK_DIM_ATTR not in func.attributes:
            continue
        args = _convert_kernel(func)
        if args:
            converted[name] = args
    for func in funcs.values():
        if BLOCK_DIM_ATTR not in func.attributes and len(func.regions[0].blocks):
            _convert_calls(func, converted)
    return sum(len(a) for a in converted.values())


def _slot_type():
    return ir.MemRefType.get([1], ir.IntegerType.get_signless(64))


def _top_forall(func):
    ops = [o for o in func.regions[0].blocks[0].operations if o.operation.name == "scf.forall"]
    return ops[0] if len(ops) == 1 else None


def _inside(op, ancestor) -> bool:
    while op is not None:
        if op == ancestor:
            return True
        op = op.parent
        op = op.operation if op is not None else None
    return False


def _convert_kernel(func) -> list:
    from mlir.dialects import arith, memref

    forall = _top_forall(func)
    if forall is None:
        return []
    block = func.regions[0].blocks[0]
    body = forall.regions[0].blocks[0]
    args = []
    for arg in block.arguments:
        if not isinstance(arg.type, (ir.IndexType, ir.IntegerType)) or not list(arg.uses):
            continue
        if not all(_inside(use.owner.operation, forall.operation) for use in arg.uses):
            continue
        original = arg.type
        uses = [(use.owner, use.operand_number) for use in arg.uses]
        arg.set_type(_slot_type())
        with ir.InsertionPoint.at_block_begin(body), func.location:
            zero = arith.constant(ir.IndexType.get(), 0)
            word = memref.load(arg, [zero])
            if isinstance(original, ir.IndexType):
                value = arith.index_cast(original, word)
            elif ir.IntegerType(original).width < 64:
                value = arith.trunci(original, word)
            else:
                value = word
        for owner, number in uses:
            owner.operands[number] = value
        args.append(arg.arg_number)
    if args:
        inputs = [a.type for a in block.arguments]
        func.attributes["function_type"] = ir.TypeAttr.get(ir.FunctionType.get(inputs, []))
    return args


def _convert_calls(func, converted: dict) -> None:
    from mlir.dialects import arith, memref

    for call in find_ops(func, lambda o: o.name == "func.call"):
        callee = ir.FlatSymbolRefAttr(call.attributes["callee"]).value
        for number in converted.get(callee, ()):
            value = call.operands[number]
            with ir.InsertionPoint(call), call.location:
                slot = memref.alloca(_slot_type(), [], [])
                slot.owner.attributes[SLOT_ATTR] = ir.UnitAttr.get()
                i64 = ir.IntegerType.get_signless(64)
                if isinstance(value.type, ir.IndexType):
                    word = arith.index_cast(i64, value)
                elif ir.IntegerType(value.type).width < 64:
                    word = arith.extsi(i64, value)
                else:
                    word = value
                memref.store(word, slot, [arith.constant(ir.IndexType.get(), 0)])
            call.operands[number] = slot
