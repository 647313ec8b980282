"""Boolean tensors as bytes: every `tensor<...xi1>` inside the entry point becomes `tensor<...xi8>`.

torch-mlir's decompositions of unraised SDPA (the causal mask) and of softmax (the all-masked-row
check) make intermediate i1 tensors; Kiln's CPU backend stores them as i1 memrefs, which MLIR 22's
memref-to-LLVM lowering rejects with an assertion (a process abort). Bytes are what PyTorch stores
for bool anyway. Computation stays i1: linalg region arguments read from a widened tensor are
truncated back to i1 and values yielded into one are zero-extended. Boolean arguments and results
of the entry point become bytes too; the compiled module views numpy bools as int8 and back.
"""

from __future__ import annotations

import numpy as np
from mlir import ir



def _is_bool_tensor(t) -> bool:
    return isinstance(t, ir.RankedTensorType) and isinstance(t.element_type, ir.IntegerType) \
        and ir.IntegerType(t.element_type).width == 1


def _byte_tensor(t):
    return ir.RankedTensorType.get(t.shape, ir.IntegerType.get_signless(8), t.encoding)


def _is_i1(t) -> bool:
    return isinstance(t, ir.IntegerType) and ir.IntegerType(t).width == 1


def widen(func):
    """Rewrites `func` (a func.func) in place. Returns (values widened, positions of boolean
    arguments, positions of boolean results): those now take and give bytes (numpy bool viewed as
    int8), which the caller converts at the boundary."""
    with ir.Location.unknown(func.context):
        return _widen(func)


def _widen(func):
    ftype = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    bool_args = [i for i, t in enumerate(ftype.inputs) if _is_bool_tensor(t)]
    bool_results = [i for i, t in enumerate(ftype.results) if _is_bool_tensor(t)]
    i8, i1 = ir.IntegerType.get_signless(8), ir.IntegerType.get_signless(1)
    widened = 0
    entry = func.regions[0].blocks[0]
    for i in bool_args:
        entry.arguments[i].set_type(_byte_tensor(entry.arguments[i].type))
        widened += 1
    if bool_args or bool_results:
        inputs = [_byte_tensor(t) if _is_bool_tensor(t) else t for t in ftype.inputs]
        results = [_byte_tensor(t) if _is_bool_tensor(t) else t for t in ftype.results]
        func.attributes["function_type"] = ir.TypeAttr.get(ir.FunctionType.get(inputs, results))
    for block in func.regions[0].blocks:
        for op in list(block.operations):
            op = op.operation
            if op.name == "arith.constant" and op.results and _is_bool_tensor(op.results[0].type):
                _widen_constant(op)
                widened += 1
                continue
            for r in op.results:
                if _is_bool_tensor(r.type):
                    r.set_type(_byte_tensor(r.type))
                    widened += 1
            if op.name == "linalg.fill" and _is_i1(op.operands[0].type) and _is_byte(op.operands[1].type):
                with op.location, ir.InsertionPoint(op):
                    wide = ir.Operation.create("arith.extui", results=[i8], operands=[op.operands[0]])
                op.operands[0] = wide.results[0]
                for arg in op.regions[0].blocks[0].arguments:
                    arg.set_type(i8)
            elif op.regions and op.name.startswith("linalg."):
                _fix_region(op, i8, i1)
            elif op.name == "tensor.extract" and _is_i1(op.results[0].type) and _is_byte(op.operands[0].type):
                op.results[0].set_type(i8)
                with op.location, ir.InsertionPoint.after(op):
                    narrow = ir.Operation.create("arith.trunci", results=[i1], operands=[op.results[0]])
                op.results[0].replace_all_uses_except(narrow.results[0], narrow)
    return widened, bool_args, bool_results


def _is_byte(t) -> bool:
    return isinstance(t, ir.RankedTensorType) and isinstance(t.element_type, ir.IntegerType) \
        and ir.IntegerType(t.element_type).width == 8


def _widen_constant(op) -> None:
    t = op.results[0].type
    attr = ir.DenseElementsAttr(op.attributes["value"])
    if attr.is_splat:
        value = np.full(t.shape, bool(ir.IntegerAttr(attr.get_splat_value()).value), dtype=np.int8)
    else:
        ints = ir.DenseIntElementsAttr(attr)
        value = np.array([bool(ints[i]) for i in range(len(ints))], dtype=np.int8).reshape(t.shape)
    with op.location, ir.InsertionPoint(op):
        new = ir.Operation.create("arith.constant", results=[_byte_tensor(t)],
                                  attributes={"value": ir.DenseElementsAttr.get(value, type=_byte_tensor(t))})
    op.results[0].replace_all_uses_with(new.results[0])
    op.erase()


def _fix_region(op, i8, i1) -> None:
    """A linalg op's region arguments match its operands (inputs, then inits) and its yield its
    results: where those are now bytes, the region truncates to i1 on entry and extends on yield."""
    body = op.regions[0].blocks[0]
    first = body.operations[0]
    for arg, value in zip(body.arguments, list(op.operands)):
        if _is_i1(arg.type) and _is_byte(value.type):
            arg.set_type(i8)
            with op.location, ir.InsertionPoint(first):
                narrow = ir.Operation.create("arith.trunci", results=[i1], operands=[arg])
            arg.replace_all_uses_except(narrow.results[0], narrow)
    terminator = body.operations[len(body.operations) - 1]
    for i, (value, result) in enumerate(zip(list(terminator.operands), op.results)):
        if _is_i1(value.type) and _is_byte(result.type):
            with op.location, ir.InsertionPoint(terminator):
                wide = ir.Operation.create("arith.extui", results=[i8], operands=[value])
            terminator.operands[i] = wide.results[0]
