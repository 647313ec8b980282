"""Llama-family decoders: Llama, Mistral, SmolLM (model_type "llama"), Qwen2 (QKV bias), Qwen3 (QK-norm).

Pre-norm blocks: RMSNorm -> GQA attention with RoPE -> residual, RMSNorm -> SwiGLU MLP -> residual;
final RMSNorm and an output head (tied to the embedding table or separate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from mlir import ir
from mlir.dialects import arith, func, tensor

from kiln.dialects import transformer
from kiln.errors import KilnError

from . import rope
from .graph import (DECODER_INPUTS, ModelGraph, Param, cache_rows, config_int, decoder_arg_types, decoder_graph,
                    f32_tensor, linear_weight, panel_params, quantized_params, set_cache_aliases, split_decoder_args,
                    without_unused)

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    layers: int
    vocab: int
    eps: float
    rotary_dim: int
    qkv_bias: bool
    qk_norm: bool
    tied: bool
    rope_scaling: float = 1.0  # what RoPE's cos and sin are multiplied by (YaRN's attention factor)

    @staticmethod
    def of(config: dict) -> "LlamaShape":
        model_type = config.get("model_type")
        hidden, heads = config_int(config, "hidden_size"), config_int(config, "num_attention_heads")
        layers, ffn = config_int(config, "num_hidden_layers"), config_int(config, "intermediate_size")
        vocab = config_int(config, "vocab_size")
        head_dim = int(config.get("head_dim") or hidden // heads)
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise KilnError(f"{model_type} config has hidden_act '{act}'; Kiln's Llama family supports 'silu'")
        if config.get("mlp_bias"):
            raise KilnError(f"{model_type} config has mlp_bias=true, which Kiln's Llama family does not support")
        rotary_dim = int(head_dim * float(config.get("partial_rotary_factor", 1.0)))
        return LlamaShape(
            hidden=hidden,
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            ffn=ffn,
            layers=layers,
            vocab=vocab,
            eps=float(config.get("rms_norm_eps", 1e-6)),
            rotary_dim=rotary_dim - rotary_dim % 2,
            qkv_bias=model_type == "qwen2" or bool(config.get("attention_bias", False)),
            qk_norm=model_type == "qwen3",
            tied=bool(config.get("tie_word_embeddings", False)),
            rope_scaling=rope.attention_scaling(config),
        )


def build(config: dict, max_seq_len: int, chunks=(1, 128), logits_chunk: int = 128,
          quantized: Optional[dict] = None, panels: bool = False) -> ModelGraph:
    """IR for `config`: `decode` (one token), `prefill_<C>` per chunk size C, `logits_<C>` (every
    row's logits, for `forward`). `quantized` maps linear weights (HF names) to the block format
    they are stored in ("q4_1", ...): linears over a few rows (decode steps, the output head of a
    prefill) read those blocks through transformer.dequantize instead of a float32 copy. With
    `panels`, GEMM-shaped linears (prefill) read weights packed once at load (graph.panel_params)."""
    shape = LlamaShape.of(config)
    window = config.get("sliding_window")
    if config.get("model_type") == "mistral" and window and max_seq_len > int(window):
        raise KilnError(f"Mistral's sliding window ({window}) is shorter than max_seq_len ({max_seq_len}): "
                        f"compile with max_seq_len <= {window}")
    params = _params(shape)
    linears = [p for p in params if p.name != "embed"]
    params += quantized_params(linears, quantized or {})
    if panels:
        params = without_unused(params + panel_params(linears))
    cache_shape = (1, shape.kv_heads, cache_rows(max_seq_len), shape.head_dim)
    inv_freq = rope.inv_freq(config, shape.rotary_dim, max_seq_len)
    return decoder_graph(
        params, cache_shape, shape.layers, max_seq_len, shape.vocab, shape.hidden, chunks, logits_chunk,
        lambda name, chunk, rows: _entry_point(name, shape, params, cache_shape, chunk, rows, inv_freq))


def _params(s: LlamaShape) -> list:
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    params = [Param("embed", "model.embed_tokens.weight", (s.vocab, s.hidden))]
    for i in range(s.layers):
        p = f"model.layers.{i}."
        layer = [
            ("attn_norm", "input_layernorm.weight", (s.hidden,)),
            ("wq", "self_attn.q_proj.weight", (q, s.hidden)),
            ("wk", "self_attn.k_proj.weight", (kv, s.hidden)),
            ("wv", "self_attn.v_proj.weight", (kv, s.hidden)),
        ]
        if s.qkv_bias:
            layer += [("bq", "self_attn.q_proj.bias", (q,)), ("bk", "self_attn.k_proj.bias", (kv,)),
                      ("bv", "self_attn.v_proj.bias", (kv,))]
        if s.qk_norm:
            layer += [("q_norm", "self_attn.q_norm.weight", (s.head_dim,)),
                      ("k_norm", "self_attn.k_norm.weight", (s.head_dim,))]
        layer += [
            ("wo", "self_attn.o_proj.weight", (s.hidden, q)),
            ("mlp_norm", "post_attention_layernorm.weight", (s.hidden,)),
            ("w_gate", "mlp.gate_proj.weight", (s.ffn, s.hidden)),
            ("w_up", "mlp.up_proj.weight", (s.ffn, s.hidden)),
            ("w_down", "mlp.down_proj.weight", (s.hidden, s.ffn)),
        ]
        params += [Param(f"layers.{i}.{n}", p + src, shp) for n, src, shp in layer]
    params.append(Param("final_norm", "model.norm.weight", (s.hidden,)))
    head = "model.embed_tokens.weight" if s.tied else "lm_head.weight"
    params.append(Param("lm_head", head, (s.vocab, s.hidden)))
    return params


def _entry_point(name, s: LlamaShape, params, cache_shape, chunk, rows, inv_freq_values):
    @func.FuncOp.from_py_func(*decoder_arg_types(params, cache_shape, s.layers, chunk, rows), name=name)
    def entry(ids, positions, start, row_ids, *rest):
        weights, caches = split_decoder_args(params, rest)
        inv_freq = arith.constant(f32_tensor(inv_freq_values.shape),
                                  ir.DenseElementsAttr.get(np.ascontiguousarray(inv_freq_values)))
        x = transformer.embedding(weights["embed"], ids)
        for i in range(s.layers):
            w = {n.split(".", 2)[2]: v for n, v in weights.items() if n.startswith(f"layers.{i}.")}
            x, caches[2 * i], caches[2 * i + 1] = _block(
                s, x, positions, start, inv_freq, w, caches[2 * i], caches[2 * i + 1], chunk)
        x = transformer.rms_norm(x, weight=weights["final_norm"], eps=s.eps)
        flat = tensor.collapse_shape(f32_tensor((chunk, s.hidden)), x, [[0, 1], [2]])
        picked = transformer.embedding(flat, row_ids) if rows != chunk else flat
        return (transformer.linear(picked, linear_weight(weights, "lm_head", rows)), *caches)

    set_cache_aliases(entry.func_op, DECODER_INPUTS + len(params), 1, 2 * s.layers)


def _block(s: LlamaShape, x, positions, start, inv_freq, w, k_cache, v_cache, rows):
    def weight(name):
        return linear_weight(w, name, rows)

    h = transformer.rms_norm(x, weight=w["attn_norm"], eps=s.eps)
    q = transformer.split_heads(transformer.linear(h, weight("wq"), bias=w.get("bq")), s.heads)
    k = transformer.split_heads(transformer.linear(h, weight("wk"), bias=w.get("bk")), s.kv_heads)
    v = transformer.split_heads(transformer.linear(h, weight("wv"), bias=w.get("bv")), s.kv_heads)
    if s.qk_norm:
        q = transformer.rms_norm(q, weight=w["q_norm"], eps=s.eps)
        k = transformer.rms_norm(k, weight=w["k_norm"], eps=s.eps)
    rotary = s.rotary_dim if s.rotary_dim != s.head_dim else None
    scaling = {"attention_scaling": s.rope_scaling} if s.rope_scaling != 1.0 else {}
    q = transformer.rope(q, positions, inv_freq=inv_freq, rotary_dim=rotary, **scaling)
    k = transformer.rope(k, positions, inv_freq=inv_freq, rotary_dim=rotary, **scaling)
    k_cache = transformer.kv_cache_update(k_cache, k, start)
    v_cache = transformer.kv_cache_update(v_cache, v, start)
    o = transformer.attention(q, k_cache, v_cache, offset=start, causal=True)
    x = arith.addf(x, transformer.linear(transformer.merge_heads(o), weight("wo")))
    h = transformer.rms_norm(x, weight=w["mlp_norm"], eps=s.eps)
    mlp = transformer.gated_mlp(h, weight("w_gate"), weight("w_up"), weight("w_down"))
    return arith.addf(x, mlp), k_cache, v_cache
