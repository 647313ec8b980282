"""From the child's linalg IR to Kiln's input: calls of raised patterns become `transformer` ops, and
the entry point's arguments are named after the module's parameters.

The child leaves each raised pattern as `func.call @__kiln_raised_<id>(operands)` of a private
declaration; here, in Kiln's own MLIR, each call is replaced by the transformer op the parent
recorded for `<id>` (operand roles and attributes from `raising.Raised`), and the declarations go.
"""

from __future__ import annotations

from mlir import ir

from ...errors import KilnError

_CALLEE_PREFIX = "__kiln_raised_"
# Optional operands of ops with AttrSizedOperandSegments, in ODS order.
_SEGMENTS = {
    "layer_norm": ("input", "weight", "bias"),
    "attention": ("query", "key", "value", "mask", "offset"),
}
_ORDER = {
    "linear": ("input", "weight", "bias"),
    "rms_norm": ("input", "weight"),
    "gated_mlp": ("input", "gate_weight", "up_weight", "down_weight"),
    "embedding": ("table", "indices"),
    "silu": ("input",),
    "gelu": ("input",),
    "softmax": ("input",),
    "split_heads": ("input",),
    "merge_heads": ("input",),
}


def _attribute(name: str, value):
    if name == "causal":
        return ir.UnitAttr.get() if value else None
    if name in ("eps", "scale"):
        return ir.FloatAttr.get(ir.F64Type.get(), float(value))
    if name in ("axis", "num_heads"):
        return ir.IntegerAttr.get(ir.IntegerType.get_signless(64), int(value))
    if name in ("approximate", "activation"):
        return ir.StringAttr.get(str(value))
    raise KilnError(f"internal error: no MLIR form for attribute '{name}' of a raised pattern")


def _walk(op):
    for region in op.regions:
        for block in region.blocks:
            for child in block.operations:
                yield child.operation
                yield from _walk(child.operation)


def raise_calls(module: ir.Module, raised: dict) -> int:
    """Replaces every call of a raised pattern by its transformer op; returns how many it replaced."""
    count = 0
    with module.context:
        for op in list(_walk(module.operation)):
            if op.name != "func.call":
                continue
            callee = ir.FlatSymbolRefAttr(op.attributes["callee"]).value
            if not callee.startswith(_CALLEE_PREFIX):
                continue
            record = raised.get(int(callee[len(_CALLEE_PREFIX):]))
            if record is None:
                raise KilnError(f"internal error: the child's IR calls {callee}, which no raised pattern made")
            kind = record.op
            by_role = dict(zip(record.operands, op.operands))
            order = _SEGMENTS.get(kind) or _ORDER[kind]
            with ir.InsertionPoint(op), op.location:
                attributes = {}
                for name, value in record.attrs.items():
                    attr = _attribute(name, value)
                    if attr is not None:
                        attributes[name] = attr
                if kind in _SEGMENTS:
                    attributes["operandSegmentSizes"] = ir.DenseI32ArrayAttr.get(
                        [1 if role in by_role else 0 for role in order])
                new = ir.Operation.create(
                    f"transformer.{kind}",
                    results=[r.type for r in op.results],
                    operands=[by_role[role] for role in order if role in by_role],
                    attributes=attributes,
                )
            op.results[0].replace_all_uses_with(new.results[0])
            op.erase()
            count += 1
        for op in list(module.body.operations):
            if op.operation.name == "func.func" and \
                    ir.StringAttr(op.attributes["sym_name"]).value.startswith(_CALLEE_PREFIX):
                op.operation.erase()
    return count


def name_arguments(func, names: list) -> None:
    """Tags argument i of `func` with `kiln.name = names[i]` (the state_dict key of a parameter or
    buffer, the input's name for a user input), so printed IR shows what each argument binds to."""
    with func.context:
        func.attributes["arg_attrs"] = ir.ArrayAttr.get(
            [ir.DictAttr.get({"kiln.name": ir.StringAttr.get(n)}) for n in names])
