"""BERT encoders (model_type "bert"), e.g. all-MiniLM-L6-v2.

Embeddings: word + absolute position + token type, then LayerNorm. Post-LayerNorm encoder layers:
bidirectional attention (with an additive padding mask) -> residual -> LayerNorm, GELU MLP -> residual
-> LayerNorm. The entry point returns the last hidden states (no pooler): sentence-transformers' mean
pooling and normalisation happen in `CompiledModel.embed`, over the real tokens only.

Entry points `encode_<S>(ids[1,S] i64, token_types[1,S] i64, mask[1,S] f32, *params) -> hidden[1,S,H]`, one
per padded length S (a few buckets up to max_seq_len): a sequence is padded to the smallest S it fits and `mask` (1 for real tokens, 0 for padding) becomes the attention mask
`(1 - mask) * -1e30` of shape `[1,1,1,S]` in the IR, so padded keys get zero weight (exp underflows
to exactly 0, as with Hugging Face's `finfo.min` mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlir import ir
from mlir.dialects import arith, func, tensor

from kiln.dialects import transformer
from kiln.errors import KilnError

from .graph import ModelGraph, Param, config_int, f32_tensor, i64_tensor

MODEL_TYPES = ("bert",)

# hidden_act -> transformer.gelu's `approximate` (transformers' ACT2FN names).
ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
MASKED = -1e30


@dataclass(frozen=True)
class BertShape:
    hidden: int
    heads: int
    ffn: int
    layers: int
    vocab: int
    positions: int
    type_vocab: int
    eps: float
    approximate: str

    @staticmethod
    def of(config: dict) -> "BertShape":
        hidden, heads = config_int(config, "hidden_size"), config_int(config, "num_attention_heads")
        layers, ffn = config_int(config, "num_hidden_layers"), config_int(config, "intermediate_size")
        vocab = config_int(config, "vocab_size")
        if hidden % heads:
            raise KilnError(f"bert config: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        act = config.get("hidden_act", "gelu")
        if act not in ACTIVATIONS:
            raise KilnError(f"bert config has hidden_act '{act}'; Kiln's BERT supports "
                            f"{', '.join(sorted(ACTIVATIONS))}")
        kind = config.get("position_embedding_type", "absolute") or "absolute"
        if kind != "absolute":
            raise KilnError(f"bert config has position_embedding_type '{kind}'; Kiln's BERT supports 'absolute'")
        if config.get("is_decoder") or config.get("add_cross_attention"):
            raise KilnError("bert config is a decoder (is_decoder/add_cross_attention); Kiln's BERT is an encoder")
        return BertShape(
            hidden=hidden,
            heads=heads,
            ffn=ffn,
            layers=layers,
            vocab=vocab,
            positions=int(config.get("max_position_embeddings", 512)),
            type_vocab=int(config.get("type_vocab_size", 2)),
            eps=float(config.get("layer_norm_eps", 1e-12)),
            approximate=ACTIVATIONS[act],
        )


def build(config: dict, seq_len: int, buckets=None) -> ModelGraph:
    """IR for `config`: one entry point `encode_<L>` per padded length L in `buckets` (default: 16,
    64, 256, ... below `seq_len`, and `seq_len`), so a short text is not computed at the longest length."""
    shape = BertShape.of(config)
    if seq_len > shape.positions:
        raise KilnError(f"sequence length {seq_len} exceeds BERT's learned positions (max_position_embeddings "
                        f"{shape.positions}): compile with max_seq_len <= {shape.positions}")
    if buckets is None:
        buckets = [b for b in (16, 64, 256, 1024) if b < seq_len]
    lengths = sorted({int(b) for b in buckets if 0 < int(b) <= seq_len} | {int(seq_len)})
    params = _params(shape)
    module = ir.Module.create()
    with ir.InsertionPoint(module.body):
        for length in lengths:
            _entry_point(f"encode_{length}", shape, params, length)
    return ModelGraph(
        kind="encoder",
        module=module,
        params=params,
        entry_points={f"encode_{length}": length for length in lengths},
        max_seq_len=seq_len,
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
    )


def _params(s: BertShape) -> list:
    h, f = s.hidden, s.ffn
    params = [
        Param("word_embed", "embeddings.word_embeddings.weight", (s.vocab, h)),
        Param("pos_embed", "embeddings.position_embeddings.weight", (s.positions, h)),
        Param("type_embed", "embeddings.token_type_embeddings.weight", (s.type_vocab, h)),
        Param("embed_norm.w", "embeddings.LayerNorm.weight", (h,)),
        Param("embed_norm.b", "embeddings.LayerNorm.bias", (h,)),
    ]
    for i in range(s.layers):
        p = f"encoder.layer.{i}."
        layer = [
            ("wq", "attention.self.query.weight", (h, h)), ("bq", "attention.self.query.bias", (h,)),
            ("wk", "attention.self.key.weight", (h, h)), ("bk", "attention.self.key.bias", (h,)),
            ("wv", "attention.self.value.weight", (h, h)), ("bv", "attention.self.value.bias", (h,)),
            ("wo", "attention.output.dense.weight", (h, h)), ("bo", "attention.output.dense.bias", (h,)),
            ("attn_norm.w", "attention.output.LayerNorm.weight", (h,)),
            ("attn_norm.b", "attention.output.LayerNorm.bias", (h,)),
            ("w_in", "intermediate.dense.weight", (f, h)), ("b_in", "intermediate.dense.bias", (f,)),
            ("w_out", "output.dense.weight", (h, f)), ("b_out", "output.dense.bias", (h,)),
            ("mlp_norm.w", "output.LayerNorm.weight", (h,)), ("mlp_norm.b", "output.LayerNorm.bias", (h,)),
        ]
        params += [Param(f"layers.{i}.{n}", p + src, shp) for n, src, shp in layer]
    return params


def _splat(shape, value: float):
    t = f32_tensor(shape)
    return arith.constant(t, ir.DenseElementsAttr.get_splat(t, ir.FloatAttr.get(ir.F32Type.get(), value)))


def _entry_point(name, s: BertShape, params, seq):
    arg_types = [i64_tensor((1, seq)), i64_tensor((1, seq)), f32_tensor((1, seq))]
    arg_types += [f32_tensor(p.shape) for p in params]

    @func.FuncOp.from_py_func(*arg_types, name=name)
    def entry(ids, token_types, mask, *rest):
        weights = dict(zip((p.name for p in params), rest))
        positions = arith.constant(i64_tensor((1, seq)),
                                   ir.DenseElementsAttr.get(np.arange(seq, dtype=np.int64).reshape(1, seq)))
        x = arith.addf(transformer.embedding(weights["word_embed"], ids),
                       transformer.embedding(weights["type_embed"], token_types))
        x = arith.addf(x, transformer.embedding(weights["pos_embed"], positions))
        x = transformer.layer_norm(x, weight=weights["embed_norm.w"], bias=weights["embed_norm.b"], eps=s.eps)
        # (1 - mask) * MASKED, as [1, 1, 1, S]: broadcast over heads and query rows.
        additive = arith.mulf(arith.subf(_splat((1, seq), 1.0), mask), _splat((1, seq), MASKED))
        additive = tensor.expand_shape(f32_tensor((1, 1, 1, seq)), additive, [[0, 1, 2], [3]],
                                       output_shape=[], static_output_shape=[1, 1, 1, seq])
        for i in range(s.layers):
            w = {n.split(".", 2)[2]: v for n, v in weights.items() if n.startswith(f"layers.{i}.")}
            x = _layer(s, x, additive, w)
        return x


def _layer(s: BertShape, x, mask, w):
    q = transformer.split_heads(transformer.linear(x, w["wq"], bias=w["bq"]), s.heads)
    k = transformer.split_heads(transformer.linear(x, w["wk"], bias=w["bk"]), s.heads)
    v = transformer.split_heads(transformer.linear(x, w["wv"], bias=w["bv"]), s.heads)
    o = transformer.attention(q, k, v, mask=mask)
    x = arith.addf(x, transformer.linear(transformer.merge_heads(o), w["wo"], bias=w["bo"]))
    x = transformer.layer_norm(x, weight=w["attn_norm.w"], bias=w["attn_norm.b"], eps=s.eps)
    h = transformer.gelu(transformer.linear(x, w["w_in"], bias=w["b_in"]), approximate=s.approximate)
    x = arith.addf(x, transformer.linear(h, w["w_out"], bias=w["b_out"]))
    return transformer.layer_norm(x, weight=w["mlp_norm.w"], bias=w["mlp_norm.b"], eps=s.eps)
