"""A small Llama-style decoder block built from transformer ops vs a float64 numpy reference.

    h  = rms_norm(x)                      q/k/v = linear(h) -> split_heads -> rope (q, k)
    a  = attention(q, k, v, causal, GQA)  x1 = x + linear(merge_heads(a), wo)   (arith.addf)
    y  = x1 + gated_mlp(rms_norm(x1))
"""

import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
from mlir.dialects import arith

from kiln.dialects import transformer
from kiln import reference as ref
from reference import INDEX, T, check, jit, randn, run


@dataclass(frozen=True)
class Config:
    batch: int = 2
    seq: int = 7
    heads: int = 9
    kv_heads: int = 3
    head_dim: int = 8
    ffn: int = 97
    qkv_bias: bool = False
    rotary_dim: Optional[int] = None
    theta: float = 10000.0
    eps: float = 1e-5
    pos_rank: int = 2
    dynamic_seq: bool = False

    @property
    def hidden(self):
        return self.heads * self.head_dim


WEIGHTS = ["w_in", "wq", "wk", "wv", "bq", "bk", "bv", "wo", "w_post", "wg", "wu", "wd"]


def weight_shapes(c: Config):
    hd, kvd = c.hidden, c.kv_heads * c.head_dim
    return {
        "w_in": (hd,), "wq": (hd, hd), "wk": (kvd, hd), "wv": (kvd, hd),
        "bq": (hd,), "bk": (kvd,), "bv": (kvd,), "wo": (hd, hd),
        "w_post": (hd,), "wg": (c.ffn, hd), "wu": (c.ffn, hd), "wd": (hd, c.ffn),
    }


def make_weights(rng, c: Config):
    weights = {}
    for name, shape in weight_shapes(c).items():
        if name in ("w_in", "w_post"):
            weights[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            fan_in = shape[-1] if len(shape) == 2 else 1
            weights[name] = randn(rng, shape, scale=1 / math.sqrt(fan_in))
    return weights


def block_ir(c: Config, x, pos, w, k_in=None, v_in=None, cache_pos=None):
    """The block with builders. With caches (`k_in`, `v_in`, `cache_pos`), the new k/v rows are written
    into them at `cache_pos` and attention runs over the caches with that offset."""
    h = transformer.rms_norm(x, weight=w["w_in"], eps=c.eps)
    bias = (lambda n: w[n]) if c.qkv_bias else (lambda n: None)
    q = transformer.split_heads(transformer.linear(h, w["wq"], bias=bias("bq")), c.heads)
    k = transformer.split_heads(transformer.linear(h, w["wk"], bias=bias("bk")), c.kv_heads)
    v = transformer.split_heads(transformer.linear(h, w["wv"], bias=bias("bv")), c.kv_heads)
    q = transformer.rope(q, pos, theta=c.theta, rotary_dim=c.rotary_dim)
    k = transformer.rope(k, pos, theta=c.theta, rotary_dim=c.rotary_dim)
    if k_in is not None:
        k = transformer.kv_cache_update(k_in, k, cache_pos)
        v = transformer.kv_cache_update(v_in, v, cache_pos)
    a = transformer.attention(q, k, v, offset=cache_pos, causal=True)
    x1 = arith.addf(x, transformer.linear(transformer.merge_heads(a), w["wo"]))
    m = transformer.gated_mlp(transformer.rms_norm(x1, weight=w["w_post"], eps=c.eps), w["wg"], w["wu"], w["wd"])
    y = arith.addf(x1, m)
    return (y, k, v) if k_in is not None else y


def weight_specs(c: Config):
    return [T(s) for s in weight_shapes(c).values()]


@functools.lru_cache(maxsize=None)
def block_fn(c: Config):
    seq = None if c.dynamic_seq else c.seq
    pos_shape = (seq,) if c.pos_rank == 1 else (c.batch, seq)
    specs = [T((c.batch, seq, c.hidden)), T(pos_shape, "i64")] + weight_specs(c)

    def body(x, pos, *ws):
        return block_ir(c, x, pos, dict(zip(WEIGHTS, ws)))

    return jit(specs, body, static=[(c.batch, c.seq, c.hidden)] if c.dynamic_seq else None)


def ref_block(c: Config, x, pos, w, k_cache=None, v_cache=None, cache_pos=0):
    h = ref.rms_norm(x, w["w_in"], c.eps)
    b = (lambda n: w[n]) if c.qkv_bias else (lambda n: None)
    q = ref.split_heads(ref.linear(h, w["wq"], b("bq")), c.heads)
    k = ref.split_heads(ref.linear(h, w["wk"], b("bk")), c.kv_heads)
    v = ref.split_heads(ref.linear(h, w["wv"], b("bv")), c.kv_heads)
    q = ref.rope(q, pos, c.rotary_dim, c.theta)
    k = ref.rope(k, pos, c.rotary_dim, c.theta)
    if k_cache is not None:
        k = ref.kv_cache_update(k_cache, k, cache_pos)
        v = ref.kv_cache_update(v_cache, v, cache_pos)
    a = ref.attention(q, k, v, causal=True, offset=cache_pos)
    x1 = np.asarray(x, np.float64) + ref.linear(ref.merge_heads(a), w["wo"])
    y = x1 + ref.gated_mlp(ref.rms_norm(x1, w["w_post"], c.eps), w["wg"], w["wu"], w["wd"])
    return (y, k, v) if k_cache is not None else y


CONFIGS = {
    "llama_gqa": Config(),
    "qwen_qkv_bias_rank1_positions": Config(qkv_bias=True, pos_rank=1, theta=1e6, eps=1e-6),
    "partial_rotary_odd_seq": Config(batch=1, seq=13, heads=4, kv_heads=2, head_dim=16, ffn=33, rotary_dim=8),
    "mha_dynamic_seq": Config(batch=2, seq=5, heads=4, kv_heads=4, head_dim=8, ffn=40, dynamic_seq=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decoder_block(rng, name):
    c = CONFIGS[name]
    w = make_weights(rng, c)
    x = randn(rng, (c.batch, c.seq, c.hidden))
    if c.pos_rank == 1:
        pos = np.arange(c.seq, dtype=np.int64)
    else:  # left-padded batch: each row starts at its own position
        pos = rng.integers(0, 5, size=(c.batch, 1)) + np.arange(c.seq)[None, :]
    out = run(block_fn(c), x, pos, *w.values())
    check(out, ref_block(c, x, pos, w), scale=5)


def test_decoder_block_decode_matches_prefill(rng):
    """Token-by-token decoding with kv caches (kv_cache_update + attention offset) reproduces each row
    of the full causal prefill, and both match the numpy reference."""
    c = Config(batch=2, seq=6, heads=9, kv_heads=3, head_dim=8, ffn=33)
    max_seq = 10
    w = make_weights(rng, c)
    x = randn(rng, (c.batch, c.seq, c.hidden))
    pos = np.broadcast_to(np.arange(c.seq), (c.batch, c.seq)).copy()
    prefill = run(block_fn(c), x, pos, *w.values())
    check(prefill, ref_block(c, x, pos, w), scale=5)

    cache_shape = (c.batch, c.kv_heads, max_seq, c.head_dim)
    specs = [T((c.batch, 1, c.hidden)), T((c.batch, 1), "i64"), T(cache_shape), T(cache_shape), INDEX]
    specs += weight_specs(c)

    def body(x, p, kc, vc, cache_pos, *ws):
        return block_ir(c, x, p, dict(zip(WEIGHTS, ws)), kc, vc, cache_pos)

    jm = jit(specs, body)
    # Unwritten cache rows hold garbage (NaN), which decoding must never read.
    kc = np.full(cache_shape, np.nan, np.float32)
    vc = np.full(cache_shape, np.nan, np.float32)
    kr, vr = kc.astype(np.float64), vc.astype(np.float64)
    for t in range(c.seq):
        xt, pt = x[:, t : t + 1], pos[:, t : t + 1]
        y, kc, vc = run(jm, xt, pt, kc, vc, t, *w.values())
        ey, kr, vr = ref_block(c, xt, pt, w, kr, vr, t)
        check(y, ey, scale=5, err_msg=f"step {t}")
        check(y[:, 0], prefill[:, t].astype(np.float64), scale=5, err_msg=f"step {t} vs prefill")
        np.testing.assert_allclose(kc[:, :, : t + 1], kr[:, :, : t + 1], rtol=2e-5, atol=2e-5)
