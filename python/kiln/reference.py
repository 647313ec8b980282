"""float64 numpy reference semantics of every `transformer` op.

These are the definitions Kiln's compiled code is checked against (tests, the demo, benchmarks). They
follow Hugging Face / PyTorch conventions: HF [out, in] weight layout, rotate-half RoPE, grouped KV heads
where query head h reads KV head h // (num_heads // num_kv_heads). Inputs are promoted to float64.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def embedding(table, indices):
    return _f64(table)[np.asarray(indices)]


def linear(x, weight, bias=None):
    y = _f64(x) @ _f64(weight).T
    return y if bias is None else y + _f64(bias)


def matmul(lhs, rhs, transpose_rhs=False):
    rhs = _f64(rhs)
    return _f64(lhs) @ (np.swapaxes(rhs, -1, -2) if transpose_rhs else rhs)


def rms_norm(x, weight=None, eps=1e-6):
    x = _f64(x)
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if weight is None else y * _f64(weight)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    x = _f64(x)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * _f64(weight)
    if bias is not None:
        y = y + _f64(bias)
    return y


def rope_inv_freq(theta: float, rotary_dim: int) -> np.ndarray:
    """inv_freq[i] = theta^(-2i/rotary_dim), computed in f32 as Hugging Face does (the op's definition)."""
    exponent = np.arange(0, rotary_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(rotary_dim)
    return _f64(np.float32(1.0) / (np.float32(theta) ** exponent))


def rope(x, positions, rotary_dim=None, theta=10000.0, inv_freq=None, attention_scaling=1.0):
    """x: [batch, heads, seq, head_dim]; positions: [seq] or [batch, seq]; partial rotary; cos and sin
    of the rotated features times `attention_scaling` (YaRN)."""
    x = _f64(x)
    rotary_dim = x.shape[-1] if rotary_dim is None else rotary_dim
    freqs = rope_inv_freq(theta, rotary_dim) if inv_freq is None else _f64(inv_freq)
    pos = _f64(positions)
    pos = pos[None, :] if pos.ndim == 1 else pos  # [batch or 1, seq]
    angle = pos[:, None, :, None] * np.concatenate([freqs, freqs])  # [b, 1, s, rot]
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated_half = np.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
    cos, sin = np.cos(angle) * attention_scaling, np.sin(angle) * attention_scaling
    return np.concatenate([rot * cos + rotated_half * sin, rest], axis=-1)


def softmax(x, axis=-1):
    x = _f64(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention(q, k, v, mask=None, causal=False, offset=0, scale: Optional[float] = None):
    """q: [b, H, sq, d]; k, v: [b, Hkv, skv, d|dv]; mask broadcastable to [b, H, sq, skv].

    Causal: query row i sits at position offset + i and sees keys j <= offset + i; keys past the last
    query position never reach the result, even when they hold NaN (an unwritten KV-cache row).
    """
    q, k, v = _f64(q), _f64(k), _f64(v)
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        scores = scores + _f64(mask)
    if causal:
        i = np.arange(q.shape[2])[:, None]
        j = np.arange(k.shape[2])[None, :]
        scores = np.where(j > i + offset, -np.inf, scores)
        last = offset + q.shape[2]
        scores, v = scores[..., :last], v[:, :, :last]
    return softmax(scores, axis=-1) @ v


def silu(x):
    x = _f64(x)
    return x / (1.0 + np.exp(-x))


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x, approximate="none"):
    x = _f64(x)
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


ACTIVATIONS = {
    "silu": silu,
    "gelu": gelu,
    "gelu_tanh": lambda x: gelu(x, "tanh"),
}


def gated_mlp(x, gate_weight, up_weight, down_weight, activation="silu"):
    act = ACTIVATIONS[activation]
    return linear(act(linear(x, gate_weight)) * linear(x, up_weight), down_weight)


def kv_cache_update(cache, update, position):
    out = _f64(cache).copy()
    out[:, :, position : position + update.shape[2]] = _f64(update)
    return out


def split_heads(x, num_heads):
    x = _f64(x)
    b, s, f = x.shape
    return x.reshape(b, s, num_heads, f // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    x = _f64(x)
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def argmax(x):
    return np.argmax(np.asarray(x), axis=-1).astype(np.int64)
