"""GPT-2 decoders (model_type "gpt2").

Pre-LayerNorm blocks: LayerNorm -> multi-head causal attention -> residual, LayerNorm -> GELU MLP ->
residual; learned absolute position embeddings (`wpe`) added to the token embeddings, a final LayerNorm
and an output head tied to the token embeddings (`transformer.wte.weight`, which is also why
`lm_head.weight` is absent from GPT-2 safetensors files).

Weight layout: GPT-2's `Conv1D` stores weights as `[in, out]` and fuses Q, K and V into one `c_attn`
of shape `[hidden, 3*hidden]`. Each is bound through `Param.prepare` as a transposed `[out, in]` copy
(and `c_attn` split into q/k/v), so the IR uses the same `transformer.linear` ops (in the layout the CPU
and GPU matvec schedules are tuned for) as every other family, instead of a transposed or fused matmul
that would need its own lowering. The price is one copy of those matrices at bind time rather than a
view of the mmapped file; the embeddings and norms stay views.

Entry points follow the convention of `models.llama` (`decode`, `prefill_<C>`, `logits_<C>`), so
`CompiledModel.generate/forward` work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlir import ir
from mlir.dialects import arith, func, tensor

from kiln.dialects import transformer
from kiln.errors import KilnError
from kiln.params import Conv1DColumns

from .graph import (DECODER_INPUTS, ModelGraph, Param, cache_rows, config_int, decoder_arg_types, decoder_graph,
                    f32_tensor, i64_tensor, linear_weight, panel_params, set_cache_aliases, split_decoder_args)

MODEL_TYPES = ("gpt2",)

# activation_function -> transformer.gelu's `approximate` (transformers' ACT2FN names).
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}


@dataclass(frozen=True)
class GPT2Shape:
    hidden: int
    heads: int
    head_dim: int
    ffn: int
    layers: int
    vocab: int
    positions: int
    eps: float
    approximate: str
    tied: bool
    scales: tuple  # attention scale per layer

    @staticmethod
    def of(config: dict) -> "GPT2Shape":
        hidden = config_int(config, "n_embd", "hidden_size")
        heads = config_int(config, "n_head", "num_attention_heads")
        layers = config_int(config, "n_layer", "num_hidden_layers")
        vocab = config_int(config, "vocab_size")
        positions = config_int(config, "n_positions", "max_position_embeddings")
        if hidden % heads:
            raise KilnError(f"gpt2 config: n_embd {hidden} is not a multiple of n_head {heads}")
        act = config.get("activation_function", "gelu_new")
        if act not in ACTIVATIONS:
            raise KilnError(f"gpt2 config has activation_function '{act}'; Kiln's GPT-2 supports "
                            f"{', '.join(sorted(ACTIVATIONS))}")
        if config.get("add_cross_attention"):
            raise KilnError("gpt2 config has add_cross_attention=true (an encoder-decoder), which Kiln does not support")
        head_dim = hidden // heads
        base = 1.0 / float(np.sqrt(head_dim)) if config.get("scale_attn_weights", True) else 1.0
        by_layer = bool(config.get("scale_attn_by_inverse_layer_idx", False))
        scales = tuple(base / (i + 1) if by_layer else base for i in range(layers))
        return GPT2Shape(
            hidden=hidden,
            heads=heads,
            head_dim=head_dim,
            ffn=int(config.get("n_inner") or 4 * hidden),
            layers=layers,
            vocab=vocab,
            positions=positions,
            eps=float(config.get("layer_norm_epsilon", config.get("layer_norm_eps", 1e-5))),
            approximate=ACTIVATIONS[act],
            tied=bool(config.get("tie_word_embeddings", True)),
            scales=scales,
        )


def build(config: dict, max_seq_len: int, chunks=(1, 128), logits_chunk: int = 128,
          panels: bool = False) -> ModelGraph:
    """IR for `config`: `decode` (one token), `prefill_<C>` per chunk size C, `logits_<C>` (every
    row's logits, for `forward`). With `panels`, GEMM-shaped linears (prefill) read weights packed
    once at load (graph.panel_params); decode steps read the float32 weights."""
    shape = GPT2Shape.of(config)
    if max_seq_len > shape.positions:
        raise KilnError(f"max_seq_len {max_seq_len} exceeds GPT-2's learned positions (n_positions "
                        f"{shape.positions}): compile with max_seq_len <= {shape.positions}")
    params = _params(shape)
    if panels:
        params += panel_params([p for p in params if p.name not in ("embed", "pos_embed")])
    cache_shape = (1, shape.heads, cache_rows(max_seq_len), shape.head_dim)
    return decoder_graph(
        params, cache_shape, shape.layers, max_seq_len, shape.vocab, shape.hidden, chunks, logits_chunk,
        lambda name, chunk, rows: _entry_point(name, shape, params, cache_shape, chunk, rows))


def _params(s: GPT2Shape) -> list:
    h, f = s.hidden, s.ffn
    params = [Param("embed", "transformer.wte.weight", (s.vocab, h)),
              Param("pos_embed", "transformer.wpe.weight", (s.positions, h))]
    for i in range(s.layers):
        p = f"transformer.h.{i}."

        def conv(name, src, rows, cols, start, stop, transpose=True):
            shape = (stop - start, rows) if transpose else (stop - start,)
            prepare = Conv1DColumns(p + src, rows, cols, start, stop, transpose)
            return Param(f"layers.{i}.{name}", p + src, shape, prepare)

        def plain(name, src, shape):
            return Param(f"layers.{i}.{name}", p + src, shape)

        params += [
            plain("ln_1.w", "ln_1.weight", (h,)),
            plain("ln_1.b", "ln_1.bias", (h,)),
            conv("wq", "attn.c_attn.weight", h, 3 * h, 0, h),
            conv("wk", "attn.c_attn.weight", h, 3 * h, h, 2 * h),
            conv("wv", "attn.c_attn.weight", h, 3 * h, 2 * h, 3 * h),
            conv("bq", "attn.c_attn.bias", h, 3 * h, 0, h, transpose=False),
            conv("bk", "attn.c_attn.bias", h, 3 * h, h, 2 * h, transpose=False),
            conv("bv", "attn.c_attn.bias", h, 3 * h, 2 * h, 3 * h, transpose=False),
            conv("wo", "attn.c_proj.weight", h, h, 0, h),
            plain("bo", "attn.c_proj.bias", (h,)),
            plain("ln_2.w", "ln_2.weight", (h,)),
            plain("ln_2.b", "ln_2.bias", (h,)),
            conv("w_fc", "mlp.c_fc.weight", h, f, 0, f),
            plain("b_fc", "mlp.c_fc.bias", (f,)),
            conv("w_proj", "mlp.c_proj.weight", f, h, 0, h),
            plain("b_proj", "mlp.c_proj.bias", (h,)),
        ]
    params += [Param("final_norm.w", "transformer.ln_f.weight", (h,)),
               Param("final_norm.b", "transformer.ln_f.bias", (h,))]
    head = "transformer.wte.weight" if s.tied else "lm_head.weight"
    params.append(Param("lm_head", head, (s.vocab, h)))
    return params


def _entry_point(name, s: GPT2Shape, params, cache_shape, chunk, rows):
    @func.FuncOp.from_py_func(*decoder_arg_types(params, cache_shape, s.layers, chunk, rows), name=name)
    def entry(ids, positions, start, row_ids, *rest):
        weights, caches = split_decoder_args(params, rest)
        # Rows past the prompt in a padded chunk may carry positions beyond the table: clamp them (their
        # outputs are never read) so the gather stays in bounds.
        last = arith.constant(i64_tensor((chunk,)), ir.DenseElementsAttr.get_splat(
            i64_tensor((chunk,)), ir.IntegerAttr.get(ir.IntegerType.get_signless(64), s.positions - 1)))
        pos = tensor.expand_shape(i64_tensor((1, chunk)), arith.minsi(positions, last), [[0, 1]],
                                  output_shape=[], static_output_shape=[1, chunk])
        x = arith.addf(transformer.embedding(weights["embed"], ids),
                       transformer.embedding(weights["pos_embed"], pos))
        for i in range(s.layers):
            w = {n.split(".", 2)[2]: v for n, v in weights.items() if n.startswith(f"layers.{i}.")}
            x, caches[2 * i], caches[2 * i + 1] = _block(
                s, x, start, s.scales[i], w, caches[2 * i], caches[2 * i + 1], chunk)
        x = transformer.layer_norm(x, weight=weights["final_norm.w"], bias=weights["final_norm.b"], eps=s.eps)
        flat = tensor.collapse_shape(f32_tensor((chunk, s.hidden)), x, [[0, 1], [2]])
        picked = transformer.embedding(flat, row_ids) if rows != chunk else flat
        return (transformer.linear(picked, linear_weight(weights, "lm_head", rows)), *caches)

    set_cache_aliases(entry.func_op, DECODER_INPUTS + len(params), 1, 2 * s.layers)


def _block(s: GPT2Shape, x, start, scale, w, k_cache, v_cache, rows):
    def weight(name):
        return linear_weight(w, name, rows)

    h = transformer.layer_norm(x, weight=w["ln_1.w"], bias=w["ln_1.b"], eps=s.eps)
    q = transformer.split_heads(transformer.linear(h, weight("wq"), bias=w["bq"]), s.heads)
    k = transformer.split_heads(transformer.linear(h, weight("wk"), bias=w["bk"]), s.heads)
    v = transformer.split_heads(transformer.linear(h, weight("wv"), bias=w["bv"]), s.heads)
    k_cache = transformer.kv_cache_update(k_cache, k, start)
    v_cache = transformer.kv_cache_update(v_cache, v, start)
    default_scale = abs(scale - 1.0 / float(np.sqrt(s.head_dim))) < 1e-12
    o = transformer.attention(q, k_cache, v_cache, offset=start, causal=True,
                              scale=None if default_scale else ir.FloatAttr.get(ir.F64Type.get(), scale))
    x = arith.addf(x, transformer.linear(transformer.merge_heads(o), weight("wo"), bias=w["bo"]))
    h = transformer.layer_norm(x, weight=w["ln_2.w"], bias=w["ln_2.b"], eps=s.eps)
    h = transformer.gelu(transformer.linear(h, weight("w_fc"), bias=w["b_fc"]), approximate=s.approximate)
    return arith.addf(x, transformer.linear(h, weight("w_proj"), bias=w["b_proj"])), k_cache, v_cache
