"""Flash attention on GPUs: one kernel per attention, the scores never leave registers.

transformer-to-linalg gives f32 attention without a mask its flash form (one `scf.forall` kernel,
`kiln.flash_tile`, online softmax over key tiles). The CPU schedules that form's tile body; on GPUs
the kernel is written here instead, on buffers at the `loops` stage, from what the form records
(its operands, `kiln.flash_scale`, `kiln.flash_causal`, a constant `kiln.flash_offset`, and
`kiln.flash_position_major`: the output is stored [b, s, kv head, group, d] when the heads are merged
next, so that the merge is a reshape):

    row     a query row is (head g of the kv head's group, position p); the rows of one (batch, kv
            head) are ordered position-major, so neighbouring rows share keys and their causal ends
            are close
    slot    `lanes` consecutive lanes of a warp own one row; lane i of the slot holds head dims
            [i·c, i·c + c) (c = head_dim / lanes) of q and of the output accumulator, so every K
            and V row is read as contiguous vectors, and the slots of a warp (rows of one kv head)
            read the same key at the same time
    split   when a kv head has fewer rows than a warp has slots (decode: the G heads of one
            position), each row gets `key_split` slots (fewer lanes per slot, more dims per lane),
            and slot phase p takes key steps p, p + key_split, ... (every phase runs the same
            number of steps, masked past the end: a shuffle needs the whole warp); the phases'
            (max, sum, accumulator) are merged by shuffles after the loop, and phase 0 stores
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
from .common import find_ops
from .written_kernels import WARP, constant_lines, marked_functions, replace_function

FLASH_ATTR = "kiln.gpu_flash"  # [lanes per slot, keys per step, warps per block, slots per row]
OPERANDS_ATTR = "kiln.gpu_flash_operands"  # kernel argument numbers: [q, k, v, offset, out]; offset -1:
# a constant (`kiln.flash_offset`)
POSITION_MAJOR_ATTR = "kiln.flash_position_major"  # the output is [batch, q_len, kv heads, group, d]
# (its heads are merged next), not [batch, kv heads, group, q_len, d]
WARPS = 4  # per block, at most
DIMS_PER_LANE = 8  # target head dims per lane (fewer lanes per row: fewer shuffles per key)
KEYS_PER_STEP = 8  # keys per loop step (independent dot products in flight)
MAX_DIMS_PER_LANE = 32  # when trading lanes for a key split (registers: q and the accumulator)
MAX_KEY_SPLIT = 8  # slots per row (each merge round costs head_dim / lanes + 2 shuffles)


def lanes_per_row(head_dim: int) -> int:
    """Lanes sharing a query row: a power of two dividing head_dim, about head_dim / DIMS_PER_LANE
    (64 -> 8, 128 -> 16), 1 for an odd head_dim."""
    lanes = 1
    while lanes * 2 <= WARP and head_dim % (lanes * 2) == 0 and head_dim // (lanes * 2) >= DIMS_PER_LANE:
        lanes *= 2
    return lanes


def split(head_dim: int, rows: int) -> tuple:
    """(lanes per slot, slots per row) for `rows` query rows per kv head: `lanes_per_row` and one
    slot per row when the rows fill a warp's slots (prefill); otherwise (decode) fewer lanes per slot (at most
    MAX_DIMS_PER_LANE dims per lane), and each row gets the slots the warp has to spare (at most
    MAX_KEY_SPLIT)."""
    lanes = lanes_per_row(head_dim)
    rows_per_warp = 1 << max(0, rows - 1).bit_length()  # rows rounded up to a power of two
    if rows >= WARP // lanes:
        return lanes, 1
    while (lanes > 1 and head_dim // (lanes // 2) <= MAX_DIMS_PER_LANE
           and (WARP // lanes) // rows_per_warp < MAX_KEY_SPLIT):
        lanes //= 2
    return lanes, min(MAX_KEY_SPLIT, (WARP // lanes) // rows_per_warp)


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
    for o in find_ops(forall, lambda o: "kiln.flash" in o.attributes):
        roles.setdefault(ir.StringAttr(o.attributes["kiln.flash"]).value, o)
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
    rows = q_shape[2] * q_shape[3]
    lanes, key_split = split(q_shape[4], rows)
    warps = min(WARPS, -(-rows // (WARP // lanes // key_split)))
    func.attributes[OPERANDS_ATTR] = ir.DenseI64ArrayAttr.get([q, k, v, -1 if constant else indices[0], out])
    func.attributes[FLASH_ATTR] = ir.DenseI64ArrayAttr.get([lanes, KEYS_PER_STEP, warps, key_split])
    func.attributes[BLOCK_DIM_ATTR] = ir.DenseI64ArrayAttr.get([WARP * warps, 1, 1])
    for attr in ("kiln.flash_scale", "kiln.flash_causal", "kiln.flash_offset", POSITION_MAJOR_ATTR):
        if attr in forall.attributes:
            func.attributes[attr] = forall.attributes[attr]
    return True


def build_kernels(module: ir.Module) -> list:
    """Rewrites every kernel marked `kiln.gpu_flash` (on buffers) into block and thread foralls
    around each warp's key loop; returns the kernels' names."""
    done = []
    for op in marked_functions(module, FLASH_ATTR):
        name = ir.StringAttr(op.attributes["sym_name"]).value
        replace_function(op, _kernel_text(op, name))
        done.append(name)
    return done

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
    lanes, step, warps, key_split = ir.DenseI64ArrayAttr(func.attributes[FLASH_ATTR])
    scale = ir.FloatAttr(func.attributes["kiln.flash_scale"]).value
    causal = "kiln.flash_causal" in func.attributes
    types = [str(a.type) for a in block.arguments]
    batch, kv_heads, group, q_len, dim = ir.MemRefType(block.arguments[q_arg].type).shape
    keys = ir.MemRefType(block.arguments[k_arg].type).shape[2]
    if ir.MemRefType(block.arguments[v_arg].type).shape[3] != dim:
        raise KilnError(f"kernel {name}: flash attention needs value rows as wide as the queries")
    c = dim // lanes  # head dims per lane
    slots = WARP // lanes // key_split  # rows per warp
    rows = group * q_len  # rows per (batch, kv head)
    row_blocks = -(-rows // (slots * warps))
    stride = step * key_split  # keys per loop step of the whole row
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
        f"      %slot_row = affine.apply affine_map<(d0, d1) -> (d0 + (d1 mod {WARP}) floordiv {lanes * key_split})>"
        "(%first, %t)",
        f"      %phase = affine.apply affine_map<(d0) -> (((d0 mod {WARP}) floordiv {lanes}) mod {key_split})>(%t)",
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
    ]
    if key_split == 1:
        lines.append(f"      %res:3 = scf.for %key0 = {ci(0)} to {warp_end} step {ci(step)} "
                     f"iter_args(%m = %ninf, %l = %fzero, %acc = %vzero) -> (f32, f32, {vec}) {{")
    else:  # every phase runs the same number of steps (shuffles need the whole warp), masked past the end
        lines += [
            f"      %loop_end = affine.apply affine_map<(d0) -> ((d0 ceildiv {stride}) * {stride})>({warp_end})",
            f"      %res:3 = scf.for %kb = {ci(0)} to %loop_end step {ci(stride)} "
            f"iter_args(%m = %ninf, %l = %fzero, %acc = %vzero) -> (f32, f32, {vec}) {{",
            f"        %key0 = affine.apply affine_map<(d0, d1) -> (d0 + d1 * {step})>(%kb, %phase)",
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
    ]
    m, l, acc = "%res#0", "%res#1", "%res#2"
    merges = [lanes << i for i in range(key_split.bit_length() - 1)]  # lanes, 2·lanes, ...: other phases
    for i, off in enumerate(merges):
        lines += [
            f"      %m_o{i}, %m_ok{i} = gpu.shuffle xor {m}, %o{off}, %width : f32",
            f"      %l_o{i}, %l_ok{i} = gpu.shuffle xor {l}, %o{off}, %width : f32",
        ]
        for e in range(c):
            lines += [
                f"      %a{i}_{e} = vector.extract {acc}[{e}] : f32 from {vec}",
                f"      %a_o{i}_{e}, %a_ok{i}_{e} = gpu.shuffle xor %a{i}_{e}, %o{off}, %width : f32",
            ]
        lines += [f"      %acc_o{i} = vector.from_elements {', '.join(f'%a_o{i}_{e}' for e in range(c))} : {vec}"]
        lines += [  # the larger max rescales both; a phase that saw no key (max -inf) weighs 0
            f"      %mm{i} = arith.maximumf {m}, %m_o{i} : f32",
        ]
        for side, mv in (("s", m), ("t", f"%m_o{i}")):
            lines += [
                f"      %w{side}d{i} = arith.subf {mv}, %mm{i} : f32",
                f"      %w{side}e{i} = math.exp %w{side}d{i} : f32",
                f"      %w{side}none{i} = arith.cmpf oeq, {mv}, %ninf : f32",
                f"      %w{side}{i} = arith.select %w{side}none{i}, %fzero, %w{side}e{i} : f32",
                f"      %w{side}v{i} = vector.broadcast %w{side}{i} : f32 to {vec}",
            ]
        lines += [
            f"      %ls{i} = arith.mulf {l}, %ws{i} : f32",
            f"      %lm{i} = math.fma %l_o{i}, %wt{i}, %ls{i} : f32",
            f"      %as{i} = arith.mulf {acc}, %wsv{i} : {vec}",
            f"      %am{i} = vector.fma %acc_o{i}, %wtv{i}, %as{i} : {vec}",
        ]
        m, l, acc = f"%mm{i}", f"%lm{i}", f"%am{i}"
    store_if = "%valid"
    out_indices = "%b, %p, %h, %g, %d0" if POSITION_MAJOR_ATTR in func.attributes else "%b, %h, %g, %p, %d0"
    if key_split > 1:
        lines.append(f"      %phase0 = arith.cmpi eq, %phase, {ci(0)} : index")
        lines.append("      %store = arith.andi %valid, %phase0 : i1")
        store_if = "%store"
    lines += [
        f"      %l_v = vector.broadcast {l} : f32 to {vec}",
        f"      %o = arith.divf {acc}, %l_v : {vec}",
        f"      scf.if {store_if} {{",
        f"        vector.store %o, %arg{out_arg}[{out_indices}] {{alignment = {align[out_arg]} : i64}} "
        f": {types[out_arg]}, {vec}",
        "      }",
        "    }",
        "  } {mapping = [#gpu.thread<x>]}",
        "} {mapping = [#gpu.block<x>]}",
        "return",
    ]
    header = constant_lines(constants, shuffle_steps + merges)
    header += [
        "%ninf = arith.constant 0xFF800000 : f32",
        "%fzero = arith.constant 0.0 : f32",
        f"%scale = arith.constant {scale!r} : f32",
        f"%vzero = arith.constant dense<0.0> : {vec}",
    ]
    args = ", ".join(f"%arg{i}: {t}" for i, t in enumerate(types))
    return "\n".join([f"func.func private @{name}({args}) {{", *header, *lines, "}"])
