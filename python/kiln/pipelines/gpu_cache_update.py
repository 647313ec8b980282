"""KV-cache writes on GPUs: one kernel per cache update instead of a copy per row.

A decode step writes its new K and V rows into the caches at the position (`kv_cache_update`,
bufferized to a `memref.copy` into a view of the cache at a runtime offset). As host copies, each
head's row is a copy of its own (the rows of one position are not contiguous in a [b, heads, rows,
d] cache) whose address depends on the position: SmolLM2 has 180 such copies per step, and a graph
replayed at a new position must update every one of them. Here each such copy becomes a kernel
that takes the position as a scalar operand (one thread per element: the view is rebuilt in the
kernel at the runtime offset), so a step has one position-dependent launch per cache update.

A copy may read a transposed view of its source (`memref.transpose`: a prefill's V, split into
heads, copy_views.py): the kernel then takes the untransposed buffer and reads it at the permuted
indices, so the split costs no kernel of its own.

Written on buffers at the start of the `loops` stage, before the foralls are mapped to blocks and
threads; copies from a view at a runtime offset, views that drop dims, or dynamic sizes stay host
copies.
"""

from __future__ import annotations

import math

from mlir import ir
from mlir.dialects import func as func_d

BLOCK = 128  # threads per block
CLASS = "copy"


def build_kernels(module: ir.Module) -> list:
    """Replaces every host `memref.copy` into a view at a runtime offset by a call to a new kernel;
    returns the kernels' names."""
    from .gpu import BLOCK_DIM_ATTR

    done, by_text = [], {}  # identical updates (every layer's K, and V) share one kernel
    hosts = [op for op in module.body.operations
             if op.operation.name == "func.func" and "kiln.dispatch" not in op.attributes
             and len(op.regions[0].blocks)]
    for host in hosts:
        host_name = ir.StringAttr(host.attributes["sym_name"]).value
        for op in list(host.regions[0].blocks[0].operations):
            view = _dynamic_view(op)
            if view is None:
                continue
            offsets = list(view.operands[1:])
            src, perm = op.operands[0], None
            if not isinstance(src.owner, ir.Block) and src.owner.name == "memref.transpose":
                perm = _permutation(src.owner)
                src = src.owner.operands[0]
            text = _kernel_text("NAME", src.type, view, len(offsets), perm)
            name = by_text.get(text)
            if name is None:
                name = by_text[text] = f"{host_name}_cache_update_{len(done)}"
                parsed = ir.Module.parse(text.replace("@NAME", f"@{name}", 1), context=module.context)
                (func,) = list(parsed.body.operations)
                func.operation.move_before(host)
                func.attributes[BLOCK_DIM_ATTR] = ir.DenseI64ArrayAttr.get([_threads(view), 1, 1])
                func.attributes["kiln.scalar_bounds"] = ir.DenseI64ArrayAttr.get(_bounds(view))
                done.append(name)
            with ir.InsertionPoint(op), op.location:
                func_d.CallOp([], ir.FlatSymbolRefAttr.get(name), [src, view.operands[0], *offsets])
            transposed = op.operands[0].owner
            op.operation.erase()
            if not list(view.result.uses):
                view.operation.erase()
            if perm is not None and not list(transposed.result.uses):
                transposed.erase()
    return done


def is_cache_update(copy) -> bool:
    """Whether a host memref.copy becomes a cache-update kernel here."""
    return _dynamic_view(copy) is not None


def _permutation(transpose) -> list:
    """[source dim of each result dim] of a memref.transpose."""
    m = ir.AffineMapAttr(transpose.attributes["permutation"]).value
    return [ir.AffineDimExpr(e).position for e in m.results]


def _dynamic_view(op):
    """The destination view of `op` when it is a memref.copy into a memref.subview of a buffer at a
    runtime offset (static sizes and strides, no dropped dims), else None."""
    if op.operation.name != "memref.copy":
        return None
    dst = op.operands[1].owner
    if isinstance(dst, ir.Block) or dst.name != "memref.subview":
        return None
    dynamic = ir.ShapedType.get_dynamic_size()
    sizes = list(ir.DenseI64ArrayAttr(dst.attributes["static_sizes"]))
    strides = list(ir.DenseI64ArrayAttr(dst.attributes["static_strides"]))
    source, result = ir.MemRefType(dst.operands[0].type), ir.MemRefType(dst.result.type)
    src = ir.MemRefType(op.operands[0].type)
    if (len(dst.operands) < 2 or dynamic in sizes or dynamic in strides or source.rank != result.rank
            or not src.has_static_shape or list(src.shape) != sizes):
        return None
    return dst


def _bounds(view) -> list:
    """[kernel argument, largest valid value] of each runtime offset (arguments 2, 3, ...): the
    view must stay inside the buffer."""
    dynamic = ir.ShapedType.get_dynamic_stride_or_offset()
    shape = ir.MemRefType(view.operands[0].type).shape
    sizes = list(ir.DenseI64ArrayAttr(view.attributes["static_sizes"]))
    strides = list(ir.DenseI64ArrayAttr(view.attributes["static_strides"]))
    pairs, k = [], 0
    for d, o in enumerate(ir.DenseI64ArrayAttr(view.attributes["static_offsets"])):
        if o == dynamic:
            pairs += [2 + k, shape[d] - 1 - (sizes[d] - 1) * strides[d]]
            k += 1
    return pairs


def _elements(view) -> int:
    return math.prod(ir.DenseI64ArrayAttr(view.attributes["static_sizes"]))


def _threads(view) -> int:
    return min(BLOCK, _elements(view))


def _kernel_text(name: str, src_type, view, n_offsets: int, perm=None) -> str:
    """The kernel; with `perm`, it copies the transpose of `src` (view index i reads source dim
    perm[i])."""
    dynamic = ir.ShapedType.get_dynamic_stride_or_offset()
    sizes = list(ir.DenseI64ArrayAttr(view.attributes["static_sizes"]))
    strides = list(ir.DenseI64ArrayAttr(view.attributes["static_strides"]))
    offsets, k = [], 0
    for o in ir.DenseI64ArrayAttr(view.attributes["static_offsets"]):
        if o == dynamic:
            offsets.append(f"%o{k}")
            k += 1
        else:
            offsets.append(str(o))
    total, threads = _elements(view), _threads(view)
    blocks = -(-total // threads)
    dst_type, view_type = view.operands[0].type, view.result.type
    indices = [f"%i{d}" for d in range(len(sizes))]
    lines = [
        f"func.func private @{name}(%src: {src_type}, %dst: {dst_type}"
        + "".join(f", %o{i}: index" for i in range(n_offsets)) + ") attributes {kiln.dispatch, "
        f'kiln.kernel_class = "{CLASS}", kiln.iterator_types = "p", kiln.loop_ranges = array<i64: {total}>}} {{',
        f"  %total = arith.constant {total} : index",
        f"  scf.forall (%g) in ({blocks}) {{",
        f"    scf.forall (%t) in ({threads}) {{",
        f"      %e = affine.apply affine_map<(d0, d1) -> (d0 * {threads} + d1)>(%g, %t)",
        "      %inside = arith.cmpi ult, %e, %total : index",
        "      scf.if %inside {",
    ]
    stride = 1
    for d in reversed(range(len(sizes))):
        lines.append(f"        %i{d} = affine.apply affine_map<(d0) -> ((d0 floordiv {stride}) mod {sizes[d]})>(%e)")
        stride *= sizes[d]
    idx = ", ".join(indices)
    src_idx = idx
    if perm is not None:
        by_dim = [None] * len(perm)
        for i, p in enumerate(perm):
            by_dim[p] = indices[i]
        src_idx = ", ".join(by_dim)
    lines += [
        f"        %view = memref.subview %dst[{', '.join(offsets)}] [{', '.join(map(str, sizes))}] "
        f"[{', '.join(map(str, strides))}] : {dst_type} to {view_type}",
        f"        %v = memref.load %src[{src_idx}] : {src_type}",
        f"        memref.store %v, %view[{idx}] : {view_type}",
        "      }",
        "    } {mapping = [#gpu.thread<x>]}",
        "  } {mapping = [#gpu.block<x>]}",
        "  return",
        "}",
    ]
    return "\n".join(lines)
