"""Flash attention on GPUs: one kernel per attention, the scores never leave registers.

transformer-to-linalg gives f32 attention without a mask its flash form (one `scf.forall` kernel,
`kiln.flash_tile`, online softmax over key tiles). The CPU schedules that form's tile body; on GPUs
the kernel is written here instead, on buffers at the `loops` stage, from what the form records
(its operands, `kiln.flash_scale`, `kiln.flash_causal`, a constant `kiln.flash_offset`):

    row     a query row is (head g of the kv head's group, position p); the rows of one (batch, kv
            head) are ordered position-major, so neighbouring rows share keys and their causal ends
            are close
    slot    `lanes` consecutive lanes of a warp own one row; lane i of the slot holds head dims
            [i·c, i·c + c) (c = head_dim / lanes) of q and of the output accumulator, so every K
            and V row is read as contiguous vectors, and the slots of a warp (rows of one kv head)
            read the same key at the same time
    keys    a warp walks the keys `keys_per_step` at a time up to the last key its last row sees
            (offset + position + 1 when causal, the cache length otherwise): each key's dot product
            is the slot's partial sums added by a `gpu.shuffle xor` butterfly, then the running row
            max m, row sum l and accumulator are rescaled once per step (online softmax):
              s = q·k * scale (-inf past the row's end)    m' = max(m, max s)    p = e^(s - m')
              l' = l·e^(m - m') + Σ p                      acc' = acc·e^(m - m') + Σ p·v
            Keys past the warp's end are clamped to its last key (never unwritten cache rows) and
            masked, so no NaN or inf stored there reaches the sum.
    block   `warps` warps; a grid of blocks over (batch × kv head, row blocks)

Shuffles only (no shared memory), so the CPU emulation of the driver runs it (test/gpu_emulation.py).
"""

from __future__ import annotations

from mlir import ir

from ..errors import KilnError
from . import schedules

FLASH_ATTR = "kiln.gpu_flash"  # [lanes per row, keys per step, warps per block]
OPERANDS_ATTR = "kiln.gpu_flash_operands"  # kernel argument numbers: [q, k, v, offset, out]; offset -1:
# a constant (`kiln.flash_offset`)
WARP = 32
WARPS = 4  # per block, at most
DIMS_PER_LANE = 8  # target head dims per lane (fewer lanes per row: fewer shuffles per key)
KEYS_PER_STEP = 8  # keys per loop step (independent dot products in flight)


def lanes_per_row(head_dim: int) -> int:
    """Lanes sharing a query row: a power of two dividing head_dim, about head_dim / DIMS_PER_LANE
    (64 -> 8, 128 -> 16), 1 for an odd head_dim."""
    lanes = 1
    while lanes * 2 <= WARP and head_dim % (lanes * 2) == 0 and head_dim // (lanes * 2) >= DIMS_PER_LANE:
        lanes *= 2
    return lanes


def mark(kernel: schedules.Kernel, func) -> bool:
    """Gives an attention kernel in flash form (`kernel.tile_shape`) this kernel; True if it did.
    Records which kernel arguments are q, k, v, the offset and the output (traced on tensors, before
    bufferization keeps the argument order) and the block size."""
    from .gpu import BLOCK_DIM_ATTR

    if not kernel.tile_shape:
        return False
    forall = next(o for o in func.regions[0].blocks[0].operations if "kiln.root" in o.attributes)
    if "kiln.flash_scale" not in forall.attributes:
        raise KilnError(f"kernel {kernel.name}: a flash-attention form without `kiln.flash_scale`")
    block = func.regions[0].blocks[0]
    roles = {}
    _walk(forall, lambda o: roles.setdefault(ir.StringAttr(o.attributes["kiln.flash"]).value, o)
          if "kiln.flash" in o.attributes else None)
    q = _argument(roles["queries"].operands[0], block, kernel.name)
    k = _argument(roles["keys"].operands[0], block, kernel.name)
    v = _argument(roles["pv"].operands[1], block, kernel.name)
    out = _argument(forall.operands[len(forall.operands) - 1], block, kernel.name)
    indices = [a.arg_number for a in block.arguments if isinstance(a.type, ir.IndexType)]
    constant = "kiln.flash_offset" in forall.attributes  # else the offset is the index argument
    if len(indices) != (0 if constant else 1):
        raise KilnError(f"kernel {kernel.name}: a flash-attention kernel with {len(indices)} index "
                        "arguments; GPU targets need static shapes (one index: a runtime cache offset)")
    q_shape = ir.RankedTensorType(block.arguments[q].type).shape  # [batch, kv heads, group, q_len, d]
    if any(ir.ShapedType.is_dynamic_size(s) for s in q_shape):
        raise KilnError(f"kernel {kernel.name}: GPU targets need static shapes, the queries are {q_shape}")
    lanes = lanes_per_row(q_shape[4])
    rows = q_shape[2] * q_shape[3]
    warps = min(WARPS, -(-rows // (WARP // lanes)))
    func.attributes[OPERANDS_ATTR] = ir.DenseI64ArrayAttr.get([q, k, v, -1 if constant else indices[0], out])
    func.attributes[FLASH_ATTR] = ir.DenseI64ArrayAttr.get([lanes, KEYS_PER_STEP, warps])
    func.attributes[BLOCK_DIM_ATTR] = ir.DenseI64ArrayAttr.get([WARP * warps, 1, 1])
    for attr in ("kiln.flash_scale", "kiln.flash_causal", "kiln.flash_offset"):
        if attr in forall.attributes:
            func.attributes[attr] = forall.attributes[attr]
    return True


def build_kernels(module: ir.Module) -> list:
    """Rewrites every kernel marked `kiln.gpu_flash` (on buffers) into block and thread foralls
    around each warp's key loop; returns the kernels' names."""
    done = []
    for op in list(module.body.operations):
        if op.operation.name != "func.func" or FLASH_ATTR not in op.attributes:
            continue
        name = ir.StringAttr(op.attributes["sym_name"]).value
        new = ir.Module.parse(_kernel_text(op, name), context=module.context)
        (func,) = list(new.body.operations)
        func.operation.move_before(op)
        for attr in [op.attributes[i] for i in range(len(op.attributes))]:
            if attr.name not in ("function_type", "sym_name", "sym_visibility"):
                func.attributes[attr.name] = attr.attr
        op.operation.erase()
        done.append(name)
    return done


def _walk(op, fn) -> None:
    for region in op.regions:
        for block in region.blocks:
            for child in block.operations:
                fn(child)
                _walk(child, fn)


_VIEWS = ("tensor.extract_slice", "tensor.insert_slice", "tensor.collapse_shape", "tensor.expand_shape",
          "tensor.cast")


def _argument(value, block, name: str) -> int:
    """The kernel argument a tile is read from (through slices, reshapes and padding)."""
    while not isinstance(value.owner, ir.Block):
        if value.owner.name not in _VIEWS:
            raise KilnError(f"stage 'tiled': kernel {name}: a flash-attention operand comes from "
                            f"{value.owner.name}, not from a kernel argument")
        value = value.owner.operands[0]
    if ir.BlockArgument(value).owner != block:
        raise KilnError(f"stage 'tiled': kernel {name}: a flash-attention operand is not a kernel argument")
    return ir.BlockArgument(value).arg_number


def _kernel_text(func, name: str) -> str:
    from .gpu_matvec import _alignment

    block = func.regions[0].blocks[0]
    q_arg, k_arg, v_arg, offset_arg, out_arg = ir.DenseI64ArrayAttr(func.attributes[OPERANDS_ATTR])
    lanes, step, warps = ir.DenseI64ArrayAttr(func.attributes[FLASH_ATTR])
    scale = ir.FloatAttr(func.attributes["kiln.flash_scale"]).value
    causal = "kiln.flash_causal" in func.attributes
    types = [str(a.type) for a in block.arguments]
    batch, kv_heads, group, q_len, dim = ir.MemRefType(block.arguments[q_arg].type).shape
    keys = ir.MemRefType(block.arguments[k_arg].type).shape[2]
    if ir.MemRefType(block.arguments[v_arg].type).shape[3] != dim:
        raise KilnError(f"kernel {name}: flash attention needs value rows as wide as the queries")
    c = dim // lanes  # head dims per lane
    slots = WARP // lanes  # rows per warp
    rows = group * q_len  # rows per (batch, kv head)
    row_blocks = -(-rows // (slots * warps))
    vec = f"vector<{c}xf32>"
    align = {a: _alignment(block.arguments[a].type) for a in (q_arg, k_arg, v_arg, out_arg)}
    constants = {0, 1}

    def ci(v: int) -> str:
        constants.add(v)
        return f"%c{v}"

    def load(arg: int, indices: str, result: str) -> str:
        return (f"{result} = vector.load %arg{arg}[{indices}] {{alignment = {align[arg]} : i64}} "
                f": {types[arg]}, {vec}")

    offset = f"%arg{offset_arg}" if offset_arg >= 0 else \
        ci(ir.IntegerAttr(func.attributes["kiln.flash_offset"]).value)
    lines = [
        f"scf.forall (%gid) in ({batch * kv_heads * row_blocks}) {{",
        f"  scf.forall (%t) in ({WARP * warps}) {{",
        f"    %unit = affine.apply affine_map<(d0) -> (d0 floordiv {row_blocks})>(%gid)",
        f"    %b = affine.apply affine_map<(d0) -> (d0 floordiv {kv_heads})>(%unit)",
        f"    %h = affine.apply affine_map<(d0) -> (d0 mod {kv_heads})>(%unit)",
        f"    %first = affine.apply affine_map<(d0, d1) -> ((d0 mod {row_blocks}) * {slots * warps} "
        f"+ (d1 floordiv {WARP}) * {slots})>(%gid, %t)",
        f"    %active = arith.cmpi ult, %first, {ci(rows)} : index",
        "    scf.if %active {",
        f"      %slot_row = affine.apply affine_map<(d0, d1) -> (d0 + (d1 mod {WARP}) floordiv {lanes})>(%first, %t)",
        f"      %valid = arith.cmpi ult, %slot_row, {ci(rows)} : index",
        f"      %row = arith.minui %slot_row, {ci(rows - 1)} : index",
        f"      %last_row = affine.min affine_map<(d0) -> (d0 + {slots - 1}, {rows - 1})>(%first)",
        f"      %p = affine.apply affine_map<(d0) -> (d0 floordiv {group})>(%row)",
        f"      %g = affine.apply affine_map<(d0) -> (d0 mod {group})>(%row)",
        f"      %d0 = affine.apply affine_map<(d0) -> ((d0 mod {lanes}) * {c})>(%t)",
    ]
    warp_end = row_end = ci(keys)
    if causal:  # the keys a row sees: up to its position in the cache
        warp_end, row_end = "%warp_end", "%row_end"
        lines += [
            f"      %p_last = affine.apply affine_map<(d0) -> (d0 floordiv {group})>(%last_row)",
            f"      %see_last = affine.apply affine_map<(d0)[s0] -> (d0 + s0 + 1)>(%p_last)[{offset}]",
            f"      %warp_end = arith.minui %see_last, {ci(keys)} : index",
            f"      %see = affine.apply affine_map<(d0)[s0] -> (d0 + s0 + 1)>(%p)[{offset}]",
            f"      %row_end = arith.minui %see, {ci(keys)} : index",
        ]
    lines += [
        f"      %last_key = arith.subi {warp_end}, {ci(1)} : index",
        "      " + load(q_arg, "%b, %h, %g, %p, %d0", "%q"),
        *[f"      %q_{i} = vector.extract %q[{i}] : f32 from {vec}" for i in range(c)],
        f"      %res:3 = scf.for %key0 = {ci(0)} to {warp_end} step {ci(step)} "
        f"iter_args(%m = %ninf, %l = %fzero, %acc = %vzero) -> (f32, f32, {vec}) {{",
    ]
    for u in range(step):
        lines += [
            f"        %j{u} = arith.addi %key0, {ci(u)} : index",
            f"        %jc{u} = arith.minui %j{u}, %last_key : index",
            "        " + load(k_arg, f"%b, %h, %jc{u}, %d0", f"%k{u}"),
        ]
        dot = "%fzero"  # the lane's part of q·k: an FMA chain (the chains of a step's keys interleave)
        for i in range(c):
            lines += [f"        %k{u}_{i} = vector.extract %k{u}[{i}] : f32 from {vec}",
                      f"        %dot{u}_{0 if i == c - 1 else f'p{i}'} = math.fma %q_{i}, %k{u}_{i}, {dot} : f32"]
            dot = f"%dot{u}_p{i}"
    shuffle_steps = [lanes >> (i + 1) for i in range(lanes.bit_length() - 1)]  # lanes/2, ..., 1
    for i, off in enumerate(shuffle_steps, start=1):
        for u in range(step):
            lines += [
                f"        %sh{u}_{i}, %ok{u}_{i} = gpu.shuffle xor %dot{u}_{i - 1}, %o{off}, %width : f32",
                f"        %dot{u}_{i} = arith.addf %dot{u}_{i - 1}, %sh{u}_{i} : f32",
            ]
    n = len(shuffle_steps)
    tile_max = "%m"
    for u in range(step):
        lines += [
            f"        %ss{u} = arith.mulf %dot{u}_{n}, %scale : f32",
            f"        %past{u} = arith.cmpi uge, %j{u}, {row_end} : index",
            f"        %s{u} = arith.select %past{u}, %ninf, %ss{u} : f32",
            f"        %mx{u} = arith.maximumf {tile_max}, %s{u} : f32",
        ]
        tile_max = f"%mx{u}"
    lines += [
        # m' = -inf only while every key so far was masked: then subtract 0 (e^-inf = 0, no NaN)
        f"        %none = arith.cmpf oeq, {tile_max}, %ninf : f32",
        f"        %mref = arith.select %none, %fzero, {tile_max} : f32",
        "        %mdiff = arith.subf %m, %mref : f32",
        "        %alpha = math.exp %mdiff : f32",
        "        %l_scaled = arith.mulf %l, %alpha : f32",
        f"        %alpha_v = vector.broadcast %alpha : f32 to {vec}",
        f"        %acc_scaled = arith.mulf %acc, %alpha_v : {vec}",
    ]
    total, acc = "%l_scaled", "%acc_scaled"
    for u in range(step):
        lines += [
            f"        %sd{u} = arith.subf %s{u}, %mref : f32",
            f"        %e{u} = math.exp %sd{u} : f32",
            f"        %sum{u} = arith.addf {total}, %e{u} : f32",
            "        " + load(v_arg, f"%b, %h, %jc{u}, %d0", f"%v{u}"),
            f"        %ev{u} = vector.broadcast %e{u} : f32 to {vec}",
            f"        %acc{u} = vector.fma %ev{u}, %v{u}, {acc} : {vec}",
        ]
        total, acc = f"%sum{u}", f"%acc{u}"
    lines += [
        f"        scf.yield {tile_max}, {total}, {acc} : f32, f32, {vec}",
        "      }",
        f"      %l_v = vector.broadcast %res#1 : f32 to {vec}",
        f"      %o = arith.divf %res#2, %l_v : {vec}",
        "      scf.if %valid {",
        f"        vector.store %o, %arg{out_arg}[%b, %h, %g, %p, %d0] {{alignment = {align[out_arg]} : i64}} "
        f": {types[out_arg]}, {vec}",
        "      }",
        "    }",
        "  } {mapping = [#gpu.thread<x>]}",
        "} {mapping = [#gpu.block<x>]}",
        "return",
    ]
    header = [f"%c{v} = arith.constant {v} : index" for v in sorted(constants)]
    header += [f"%o{o} = arith.constant {o} : i32" for o in shuffle_steps]
    header += [
        f"%width = arith.constant {WARP} : i32",
        "%ninf = arith.constant 0xFF800000 : f32",
        "%fzero = arith.constant 0.0 : f32",
        f"%scale = arith.constant {scale!r} : f32",
        f"%vzero = arith.constant dense<0.0> : {vec}",
    ]
    args = ", ".join(f"%arg{i}: {t}" for i, t in enumerate(types))
    return "\n".join([f"func.func private @{name}({args}) {{", *header, *lines, "}"])
