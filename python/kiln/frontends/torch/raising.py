"""Raising at the FX level: find the patterns Kiln has kernels for in an exported graph and replace
each by one `kiln::raised<N>` placeholder node (see `_ops.py`).

Why FX and not the torch dialect: `torch.export` keeps `F.scaled_dot_product_attention`,
`aten.linear`, `aten.layer_norm`, `aten.rms_norm`, `aten.embedding` and the activations as single
nodes before decomposition, the graph is plain Python to pattern-match, and every node carries the
user's stack trace. The matched node's metadata (value, stack trace) moves to the placeholder, so
the FX importer and error messages still point at the user's line. What is not matched is left
alone and compiles through torch-mlir's linalg lowering.

Recognised (result -> `transformer` op):
  SDPA (causal, additive or boolean mask, scale, GQA; K/V repeated
        by repeat_kv or repeat_interleave are read unrepeated)        -> attention
  aten.rms_norm (nn.RMSNorm) and x * rsqrt(mean(x², -1) + eps) [* w] -> rms_norm
  aten.layer_norm over the last axis                                -> layer_norm
  linear(act(linear(x, Wg)) * linear(x, Wu), Wd), no biases          -> gated_mlp (silu, gelu, gelu_tanh)
  aten.linear -> linear;  aten.embedding -> embedding;  silu, gelu -> silu, gelu;  softmax -> softmax
  view(x, [b, s, h, d]).transpose(1, 2)  -> split_heads;  its inverse -> merge_heads
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import fx

from . import _ops

aten = torch.ops.aten
_ids = itertools.count(1)  # pattern ids are unique per process: _ops' output table is process-wide
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class Raised:
    """One recognised pattern: the transformer op it becomes, the roles of its tensor operands (in
    the order they are passed), its attributes, and where it came from (FX node, user source)."""

    id: int
    op: str
    operands: list
    attrs: dict = field(default_factory=dict)
    node: str = ""
    source: str = ""

    def to_json(self) -> dict:
        return {"id": self.id, "op": self.op, "operands": self.operands, "attrs": self.attrs,
                "node": self.node, "source": self.source}


def source_of(node: fx.Node) -> str:
    """'file:line' of the user's frame in the node's stack trace (innermost outside torch), or ''."""
    from ._child import user_frame

    frame = user_frame(node.meta.get("stack_trace"))
    return f"{frame[0]}:{frame[1]}" if frame else ""


def _val(node):
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def _shape(node):
    v = _val(node)
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _is_float(node) -> bool:
    v = _val(node)
    return isinstance(v, torch.Tensor) and v.dtype in _FLOATS


def _is(node, *targets) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in targets


def _arg(node: fx.Node, index: int, name: str, default=None):
    """Argument `index`/`name` of a call node, positional or keyword."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _only_user(node: fx.Node, user: fx.Node) -> bool:
    return list(node.users) == [user]


def _ungrouped(node):
    """The [batch, kv_heads, seq, dim] tensor that `node` repeats per query-head group, if it is
    Hugging Face's repeat_kv (unsqueeze(2) -> expand -> reshape) or repeat_interleave on axis 1
    (query head h then reads KV head h // n_rep, as transformer.attention does), else None."""
    if _is(node, aten.repeat_interleave.self_int) and len(_shape(node.args[0]) or ()) == 4 \
            and _arg(node, 2, "dim") in (1, -3) and isinstance(node.args[1], int):
        return node.args[0]
    if not _is(node, aten.reshape.default, aten.view.default, aten._unsafe_view.default):
        return None
    expand = node.args[0]
    if not (_is(expand, aten.expand.default) and len(_shape(expand)) == 5):
        return None
    unsq = expand.args[0]
    if not (_is(unsq, aten.unsqueeze.default) and unsq.args[1] in (2, -3)):
        return None
    x = unsq.args[0]
    b, kv, n, s, d = _shape(expand)
    if _shape(x) == (b, kv, s, d) and _shape(node) == (b, kv * n, s, d):
        return x
    return None


class _Raiser:
    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.graph = gm.graph
        self.raised: dict = {}

    # -- building ----------------------------------------------------------------------------

    def replace(self, root: fx.Node, op: str, operands: list, attrs: dict) -> None:
        """Replaces `root` (the pattern's last node) by a kiln::raised node of `operands`
        [(role, node)]; the pattern's other nodes die with it (dead-code elimination)."""
        ident = next(_ids)
        val = root.meta["val"]
        _ops.set_output(ident, val.shape, val.dtype)
        with self.graph.inserting_before(root):
            new = self.graph.call_function(_ops.op(len(operands)), (*[n for _, n in operands], ident))
        new.meta.update(root.meta)
        new.name = f"kiln_{op}_{ident}"
        root.replace_all_uses_with(new)
        self.graph.erase_node(root)
        self.raised[ident] = Raised(ident, op, [r for r, _ in operands], attrs, root.name, source_of(root))

    def call(self, before: fx.Node, target, args) -> fx.Node:
        """Inserts `target(*args)` before `before`, with its fake value computed."""
        fake_mode = before.meta["val"].fake_mode
        with fake_mode:
            val = target(*[a.meta["val"] if isinstance(a, fx.Node) else a for a in args])
        with self.graph.inserting_before(before):
            node = self.graph.call_function(target, tuple(args))
        node.meta.update({k: v for k, v in before.meta.items() if k in ("stack_trace", "nn_module_stack")})
        node.meta["val"] = val
        return node

    # -- patterns ------------------------------------------------------------------------------

    def gated_mlp(self, node) -> bool:
        """down(act(gate(x)) * up(x)) with three bias-free linears."""
        if not (_is(node, aten.linear.default) and _arg(node, 2, "bias") is None):
            return False
        mul = node.args[0]
        if not (_is(mul, aten.mul.Tensor) and _only_user(mul, node) and len(mul.args) == 2):
            return False
        for act, up in (mul.args, mul.args[::-1]):
            if not (isinstance(act, fx.Node) and isinstance(up, fx.Node)):
                continue
            if _is(act, aten.silu.default):
                activation = "silu"
            elif _is(act, aten.gelu.default):
                activation = {"none": "gelu", "tanh": "gelu_tanh"}.get(_arg(act, 1, "approximate", "none"))
            else:
                continue
            gate = act.args[0]
            if not (activation and _only_user(act, mul) and _is(gate, aten.linear.default)
                    and _is(up, aten.linear.default) and _only_user(gate, act) and _only_user(up, mul)):
                continue
            if _arg(gate, 2, "bias") is not None or _arg(up, 2, "bias") is not None:
                continue
            x = gate.args[0]
            if up.args[0] is not x or not all(_is_float(n) for n in (x, gate.args[1], up.args[1], node.args[1])):
                continue
            self.replace(node, "gated_mlp", [("input", x), ("gate_weight", gate.args[1]),
                                             ("up_weight", up.args[1]), ("down_weight", node.args[1])],
                         {"activation": activation})
            return True
        return False

    def attention(self, node) -> bool:
        if not _is(node, aten.scaled_dot_product_attention.default):
            return False
        q, k, v = node.args[:3]
        mask = _arg(node, 3, "attn_mask")
        dropout, causal = _arg(node, 4, "dropout_p", 0.0), _arg(node, 5, "is_causal", False)
        scale, gqa = _arg(node, 6, "scale"), _arg(node, 7, "enable_gqa", False)
        qs, ks, vs = _shape(q), _shape(k), _shape(v)
        if dropout != 0.0 or not all(s is not None and len(s) == 4 for s in (qs, ks, vs)):
            return False
        if not all(_is_float(n) for n in (q, k, v)) or qs[0] != ks[0] or ks[:3] != vs[:3]:
            return False
        if qs[1] != ks[1] and not (qs[1] % ks[1] == 0 and (gqa or ks[1] == 1)):
            return False
        k_kv, v_kv = _ungrouped(k), _ungrouped(v)
        if k_kv is not None and v_kv is not None and _shape(k_kv)[1] == _shape(v_kv)[1]:
            k, v = k_kv, v_kv  # repeat_kv undone: attention reads the shared KV heads itself
        operands = [("query", q), ("key", k), ("value", v)]
        if mask is not None:
            if causal:
                return False
            mask = self._additive_mask(node, mask, (qs[0], qs[1], qs[2], ks[2]), _val(q).dtype)
            if mask is None:
                return False
            operands.append(("mask", mask))
        attrs = {"causal": bool(causal)}
        if scale is not None:
            attrs["scale"] = float(scale)
        self.replace(node, "attention", operands, attrs)
        return True

    def _additive_mask(self, before, mask, full, dtype):
        """SDPA's mask as the rank-4 additive mask transformer.attention takes (a boolean mask,
        True = attend, becomes 0 / -inf), or None if its shape does not broadcast that way."""
        shape = _shape(mask)
        if shape is None or len(shape) > 4:
            return None
        shape = (1,) * (4 - len(shape)) + shape
        if any(d != 1 and d != f for d, f in zip(shape, full)):
            return None
        if _val(mask).dtype == torch.bool:  # where(mask, 0, -inf), in the default float dtype
            minus_inf = self.call(before, aten.full.default, (list(_shape(mask)), float("-inf")))
            mask = self.call(before, aten.where.ScalarSelf, (mask, 0.0, minus_inf))
        if _val(mask).dtype != dtype:
            mask = self.call(before, aten.to.dtype, (mask, dtype))
        if len(_shape(mask)) != 4:
            mask = self.call(before, aten.reshape.default, (mask, list(shape)))
        return mask

    def rms_norm(self, node) -> bool:
        if _is(node, aten.rms_norm.default):
            x, normalized, weight, eps = node.args[0], node.args[1], _arg(node, 2, "weight"), _arg(node, 3, "eps")
            xs = _shape(x)
            if not (_is_float(x) and xs and list(normalized) == [xs[-1]]):
                return False
            eps = torch.finfo(_val(x).dtype).eps if eps is None else eps
            operands = [("input", x)] + ([("weight", weight)] if weight is not None else [])
            self.replace(node, "rms_norm", operands, {"eps": float(eps)})
            return True
        # weight * (x * rsqrt(mean(x^2, -1, keepdim) + eps)), weight optional, either order.
        if not _is(node, aten.mul.Tensor) or len(node.args) != 2:
            return False
        match = self._rms_core(node)
        if match is not None:  # the un-weighted form; a weighted form would have matched at its mul
            x, eps = match
            if len(node.users) == 1 and self._rms_weight(next(iter(node.users)), node) is not None:
                return False  # raise at the weight multiply instead
            self.replace(node, "rms_norm", [("input", x)], {"eps": eps})
            return True
        for core, weight in (node.args, node.args[::-1]):
            if not isinstance(core, fx.Node) or not _only_user(core, node):
                continue
            match = self._rms_core(core)
            if match is not None and self._rms_weight(node, core) is weight:
                x, eps = match
                self.replace(node, "rms_norm", [("input", x), ("weight", weight)], {"eps": eps})
                return True
        return False

    def _rms_weight(self, mul, core):
        """The weight `mul` multiplies `core` by, if it is a vector of the last axis' size."""
        if not _is(mul, aten.mul.Tensor) or len(mul.args) != 2 or core not in mul.args:
            return None
        weight = mul.args[1] if mul.args[0] is core else mul.args[0]
        xs = _shape(core)
        if _is_float(weight) and _shape(weight) == (xs[-1],) and _val(weight).dtype == _val(core).dtype:
            return weight
        return None

    def _rms_core(self, mul):
        """(x, eps) if `mul` is x * rsqrt(mean(x^2, -1, keepdim=True) + eps) (either order)."""
        if not _is(mul, aten.mul.Tensor) or len(mul.args) != 2:
            return None
        for x, r in (mul.args, mul.args[::-1]):
            if not (isinstance(x, fx.Node) and _is(r, aten.rsqrt.default) and _only_user(r, mul)
                    and _is_float(x)):
                continue
            add = r.args[0]
            if not (_is(add, aten.add.Tensor, aten.add.Scalar) and _only_user(add, r)):
                continue
            mean, eps = add.args[0], add.args[1]
            if not isinstance(mean, fx.Node):
                mean, eps = eps, mean
            if not (isinstance(eps, (int, float)) and _is(mean, aten.mean.dim) and _only_user(mean, add)):
                continue
            rank = len(_shape(x))
            dims = list(mean.args[1]) if mean.args[1] is not None else []
            if not (dims in ([-1], [rank - 1]) and _arg(mean, 2, "keepdim", False)
                    and _arg(mean, 3, "dtype") is None):
                continue
            sq = mean.args[0]
            is_square = (_is(sq, aten.pow.Tensor_Scalar) and sq.args[0] is x and sq.args[1] == 2) or \
                (_is(sq, aten.mul.Tensor) and sq.args[0] is x and sq.args[1] is x)
            if is_square and _only_user(sq, mean):
                return x, float(eps)
        return None

    def layer_norm(self, node) -> bool:
        if not _is(node, aten.layer_norm.default):
            return False
        x, normalized = node.args[0], node.args[1]
        weight, bias, eps = _arg(node, 2, "weight"), _arg(node, 3, "bias"), _arg(node, 4, "eps", 1e-5)
        xs = _shape(x)
        if not (_is_float(x) and xs and list(normalized) == [xs[-1]]):
            return False
        operands = [("input", x)] + ([("weight", weight)] if weight is not None else []) + \
            ([("bias", bias)] if bias is not None else [])
        self.replace(node, "layer_norm", operands, {"eps": float(eps)})
        return True

    def heads(self, node) -> bool:
        """view(x, [b, s, h, d]).transpose(1, 2) -> split_heads; reshape(y.transpose(1, 2)
        [.contiguous()], [b, s, h*d]) -> merge_heads (the layouts transformer.attention uses)."""
        if _is(node, aten.transpose.int) and sorted(a % 4 for a in node.args[1:3]) == [1, 2]:
            view = node.args[0]
            if not (_is(view, aten.view.default, aten.reshape.default, aten._unsafe_view.default)
                    and _only_user(view, node)):
                return False
            x = view.args[0]
            xs, vs = _shape(x), _shape(view)
            if not (_is_float(x) and xs and len(xs) == 3 and len(vs) == 4
                    and xs[:2] == vs[:2] and xs[2] == vs[2] * vs[3]):
                return False
            self.replace(node, "split_heads", [("input", x)], {"num_heads": int(vs[2])})
            return True
        if _is(node, aten.view.default, aten.reshape.default, aten._unsafe_view.default):
            t = node.args[0]
            if _is(t, aten.clone.default, aten.contiguous.default) and _only_user(t, node):
                t = t.args[0]
            if not (_is(t, aten.transpose.int) and sorted(a % 4 for a in t.args[1:3]) == [1, 2]):
                return False
            y = t.args[0]
            ys, out = _shape(y), _shape(node)
            if not (_is_float(y) and ys and len(ys) == 4 and out == (ys[0], ys[2], ys[1] * ys[3])):
                return False
            self.replace(node, "merge_heads", [("input", y)], {})
            return True
        return False

    def linear(self, node) -> bool:
        if not _is(node, aten.linear.default):
            return False
        x, w, b = node.args[0], node.args[1], _arg(node, 2, "bias")
        if not (_is_float(x) and _is_float(w) and len(_shape(w)) == 2 and len(_shape(x)) >= 1):
            return False
        self.replace(node, "linear", [("input", x), ("weight", w)] + ([("bias", b)] if b is not None else []), {})
        return True

    def embedding(self, node) -> bool:
        if not _is(node, aten.embedding.default):
            return False
        table, ids = node.args[0], node.args[1]
        ids_val = _val(ids)
        if not (_is_float(table) and len(_shape(table)) == 2 and isinstance(ids_val, torch.Tensor)
                and ids_val.dtype in (torch.int32, torch.int64)):
            return False
        self.replace(node, "embedding", [("table", table), ("indices", ids)], {})
        return True

    def activation(self, node) -> bool:
        if _is(node, aten.silu.default) and _is_float(node.args[0]):
            self.replace(node, "silu", [("input", node.args[0])], {})
            return True
        if _is(node, aten.gelu.default) and _is_float(node.args[0]):
            self.replace(node, "gelu", [("input", node.args[0])],
                         {"approximate": _arg(node, 1, "approximate", "none")})
            return True
        if _is(node, aten.softmax.int) and _is_float(node.args[0]) and _arg(node, 2, "dtype") is None:
            self.replace(node, "softmax", [("input", node.args[0])], {"axis": int(node.args[1])})
            return True
        return False


def raise_graph(gm: fx.GraphModule) -> dict:
    """Rewrites `gm` in place; returns {id: Raised} for the placeholders it inserted."""
    raiser = _Raiser(gm)
    # Composite patterns first (they consume linears and activations), then single ops.
    for matcher in (raiser.gated_mlp, raiser.attention, raiser.rms_norm, raiser.layer_norm,
                    raiser.linear, raiser.embedding, raiser.activation, raiser.heads):
        for node in list(gm.graph.nodes):
            if node.graph is gm.graph and node.op == "call_function" and not _is_erased(node):
                if matcher(node):
                    gm.graph.eliminate_dead_code(is_impure_node=_is_impure)
    gm.graph.eliminate_dead_code(is_impure_node=_is_impure)
    gm.recompile()
    return raiser.raised


def _is_erased(node: fx.Node) -> bool:
    return getattr(node, "_erased", False)


def _is_impure(node: fx.Node) -> bool:
    # Keep what the default keeps (placeholders, outputs, side effects), but let metadata asserts on
    # dead values go: they would keep a raised pattern's intermediate nodes alive.
    if node.op == "call_function" and node.target is aten._assert_tensor_metadata.default:
        return False
    return node.is_impure()

