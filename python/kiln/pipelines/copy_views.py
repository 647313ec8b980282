"""Host copies of a transpose kernel's result read its input through a transposed view instead.

A prefill's V projection [b, s, h*d] is split into heads by a transpose kernel ([b, h, s, d],
`split_heads`) whose only reader is the copy into the KV cache (`kv_cache_update`, a host
`memref.copy` into a view of the cache). A copy of a copy: the host copy can read the projection
through a `memref.transpose` view, and the transpose kernel and its buffer go (one launch less per
layer). The copy then moves the same elements to the same places.

Runs on host functions after bufferization and before the buffer plan (so the plan sees the
transpose's input live until the copy). A transpose kernel is one that kiln-form-dispatches tagged
with `kiln.permutation` (its root is a `linalg.transpose`); its arguments are (input, output). The
fold applies when every use of the kernel's output buffer is, in order, a transpose kernel writing
it and then one `memref.copy` reading it (bufferization gives every layer's V the same buffer), and
no op between the kernel and its copy touches the input's buffer except through views. Transpose
kernels no host calls any more are erased. `accepts(copy)` lets a target keep copies it cannot do with a strided source (GPU
targets turn only a cache update into a kernel, gpu_cache_update.py; other copies there are byte
ranges).
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import memref

_VIEWS = ("memref.expand_shape", "memref.collapse_shape", "memref.subview", "memref.view", "memref.cast",
          "memref.transpose", "memref.reinterpret_cast")


def _root(value):
    """The buffer a memref value is a view of (an alloc's result or a function argument)."""
    while not isinstance(value.owner, ir.Block) and value.owner.name in _VIEWS:
        value = value.owner.operands[0]
    return value


def _is_view(op) -> bool:
    return op.name in _VIEWS or op.name in ("memref.dim", "memref.extract_strided_metadata")


def fold_transposes_into_copies(module: ir.Module, accepts=lambda copy: True) -> int:
    """Rewrites every foldable (transpose kernel, copy) pair in the host functions; returns how many."""
    transposes = {}
    hosts = []
    for op in module.body.operations:
        if op.operation.name != "func.func" or not len(op.regions[0].blocks):
            continue
        name = ir.StringAttr(op.attributes["sym_name"]).value
        if "kiln.dispatch" not in op.attributes:
            hosts.append(op)
        elif "kiln.permutation" in op.attributes:
            transposes[name] = list(ir.DenseI64ArrayAttr(op.attributes["kiln.permutation"]))
    folded = 0
    for host in hosts:
        ops = [op.operation for op in host.regions[0].blocks[0].operations]
        position = {op: i for i, op in enumerate(ops)}
        for alloc in [op for op in ops if op.name == "memref.alloc"]:
            for call, copy, perm in _written_then_copied(alloc.result, ops, position, transposes):
                src = call.operands[0]
                if (_root(copy.operands[1]) == _root(src)  # the copy would overlap its own source
                        or not _untouched(_root(src), ops[position[call] + 1:position[copy]])
                        or not accepts(copy)):
                    continue
                src_type = ir.MemRefType(src.type)
                if [src_type.shape[p] for p in perm] != list(ir.MemRefType(alloc.result.type).shape):
                    continue
                strides, offset = src_type.get_strides_and_offset()
                view_type = ir.MemRefType.get([src_type.shape[p] for p in perm], src_type.element_type,
                                              ir.StridedLayoutAttr.get(offset, [strides[p] for p in perm]),
                                              src_type.memory_space)
                with ir.InsertionPoint(copy), copy.location:
                    view = memref.TransposeOp(view_type, src,
                                              ir.AffineMapAttr.get(ir.AffineMap.get_permutation(perm)))
                copy.operands[0] = view.result
                call.erase()
                folded += 1
            if not list(alloc.result.uses):
                alloc.erase()
    if folded:  # transpose kernels no host calls any more
        called = {ir.FlatSymbolRefAttr(op.attributes["callee"]).value
                  for host in hosts for op in host.regions[0].blocks[0].operations if op.name == "func.call"}
        for op in list(module.body.operations):
            if op.operation.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value in transposes \
                    and ir.StringAttr(op.attributes["sym_name"]).value not in called:
                op.operation.erase()
    return folded


def _written_then_copied(buffer, ops, position, transposes) -> list:
    """[(transpose kernel call, copy, permutation)] when every use of `buffer` (an alloc, which
    bufferization may reuse for every layer) is, in order, a transpose kernel writing it (its
    output, the last argument) and then one memref.copy reading it; else []."""
    uses = sorted({u.owner.operation for u in buffer.uses}, key=lambda op: position.get(op, -1))
    if any(op not in position for op in uses) or len(uses) % 2:
        return []
    pairs = []
    for call, copy in zip(uses[::2], uses[1::2]):
        if (call.name != "func.call" or len(call.operands) != 2 or len(call.results)
                or call.operands[1] != buffer or call.operands[0] == buffer):
            return []
        perm = transposes.get(ir.FlatSymbolRefAttr(call.attributes["callee"]).value)
        if (perm is None or copy.name != "memref.copy" or copy.operands[0] != buffer
                or copy.operands[1] == buffer):
            return []
        pairs.append((call, copy, perm))
    return pairs


def _untouched(buffer, between) -> bool:
    """No op of `between` uses `buffer` (or a view of it) other than to take a view."""
    for op in between:
        if _is_view(op):
            continue
        if any(isinstance(v.type, ir.MemRefType) and _root(v) == buffer for v in op.operands):
            return False
        if any(_touches(region, buffer) for region in op.regions):
            return False
    return True


def _touches(region, buffer) -> bool:
    for block in region.blocks:
        for op in block.operations:
            if any(isinstance(v.type, ir.MemRefType) and _root(v) == buffer for v in op.operation.operands):
                return True
            if any(_touches(r, buffer) for r in op.operation.regions):
                return True
    return False
