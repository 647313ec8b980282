"""One small case of every GPU kernel class: its IR, seeded-or-fresh random inputs and a float64
reference. The GPU tests compile each for every chip and run them on the emulated driver; `kiln bench
--target cuda --suite check` runs them on a real GPU against PyTorch there."""

from __future__ import annotations

import numpy as np

from .. import reference as ref
from . import workloads


def tensor_type(shape, dtype="f32"):
    return "tensor<" + "x".join(map(str, shape)) + "x" + dtype + ">"


def _unary(op, shape, attrs=""):
    t = tensor_type(shape)
    return f"func.func @f(%x: {t}) -> {t} {{\n  %y = transformer.{op} %x{attrs} : {t}\n  return %y : {t}\n}}"


def _split_heads(shape, heads):
    b, s, f = shape
    x, y = tensor_type(shape), tensor_type((b, heads, s, f // heads))
    return (f"func.func @f(%x: {x}) -> {y} {{\n  %y = transformer.split_heads %x {{num_heads = {heads} : i64}} "
            f": {x} -> {y}\n  return %y : {y}\n}}")


def _rope(shape):
    x, p = tensor_type(shape), tensor_type((shape[2],), "i64")
    return (f"func.func @f(%x: {x}, %p: {p}) -> {x} {{\n  %y = transformer.rope %x, %p : ({x}, {p}) -> {x}\n"
            f"  return %y : {x}\n}}")


def _split_heads_rope(shape, heads):
    """split_heads then RoPE: the split's transpose folds into the rotation (one kernel)."""
    b, s, f = shape
    x, y, p = tensor_type(shape), tensor_type((b, heads, s, f // heads)), tensor_type((s,), "i64")
    return (f"func.func @f(%x: {x}, %p: {p}) -> {y} {{\n"
            f"  %h = transformer.split_heads %x {{num_heads = {heads} : i64}} : {x} -> {y}\n"
            f"  %y = transformer.rope %h, %p : ({y}, {p}) -> {y}\n  return %y : {y}\n}}")


def _argmax(shape):
    x, y = tensor_type(shape), tensor_type(shape[:-1], "i64")
    return f"func.func @f(%x: {x}) -> {y} {{\n  %y = transformer.argmax %x : {x} -> {y}\n  return %y : {y}\n}}"


def _attention_ref(heads, kv_heads, q_len, kv_len):
    def run(q, k, v):
        g = heads // kv_heads
        return ref.attention(q, np.repeat(k, g, axis=1), np.repeat(v, g, axis=1), causal=True,
                             offset=kv_len - q_len)
    return run


def random_f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _q4_1_linear(n, k):
    """x[1, 1, k] · Wᵀ with W [n, k] in GGUF Q4_1 blocks (a decode step's linear over the blocks)."""
    x, y, w = tensor_type((1, 1, k)), tensor_type((1, 1, n)), tensor_type((n, k))
    qs, sc = tensor_type((n, k // 32, 16), "i8"), tensor_type((n, k // 32), "f16")
    return (f"func.func @f(%x: {x}, %qs: {qs}, %d: {sc}, %m: {sc}) -> {y} {{\n"
            f'  %w = transformer.dequantize %qs, %d, %m {{format = "q4_1"}} : ({qs}, {sc}, {sc}) -> {w}\n'
            f"  %y = transformer.linear %x, %w : ({x}, {w}) -> {y}\n  return %y : {y}\n}}")


def random_q4_1(rng, n, k):
    """Random Q4_1 blocks of an [n, k] weight: bytes [n, k/32, 16] (two 4-bit values each), f16
    scales and mins [n, k/32]."""
    data = rng.integers(-128, 128, (n, k // 32, 16), dtype=np.int8)
    scales, mins = ((rng.standard_normal((n, k // 32)) * 0.02).astype(np.float16) for _ in range(2))
    return [data, scales, mins]


def dequantized_q4_1(data, scales, mins):
    """The float64 [n, k] weight of Q4_1 blocks: block value j is the low nibble of byte j, value
    16 + j its high nibble, each times the scale plus the min."""
    u = data.view(np.uint8)
    q = np.concatenate([u & 15, u >> 4], axis=2).astype(np.float64)
    w = scales.astype(np.float64)[:, :, None] * q + mins.astype(np.float64)[:, :, None]
    return w.reshape(data.shape[0], -1)


# name -> (a kernel class it must produce, IR, inputs(rng), float64 reference(*inputs)); f32 attention
# is one flash-attention kernel
CASES = {
    "matmul": ("contraction", workloads.gemm(64, 96, 80).kiln_ir(),
               lambda r: [random_f32(r, 64, 80), random_f32(r, 80, 96)], lambda a, b: ref.matmul(a, b)),
    "linear": ("contraction", workloads.linear(32, 48, 64).kiln_ir(),
               lambda r: [random_f32(r, 32, 64), random_f32(r, 48, 64, scale=0.1)], ref.linear),
    "matvec": ("contraction", workloads.linear(1, 256, 128).kiln_ir(),
               lambda r: [random_f32(r, 1, 128), random_f32(r, 256, 128, scale=0.1)], ref.linear),
    "q4_1_matvec": ("reduction", _q4_1_linear(96, 256),
                    lambda r: [random_f32(r, 1, 1, 256)] + random_q4_1(r, 96, 256),
                    lambda x, *blocks: ref.linear(x, dequantized_q4_1(*blocks))),
    "rms_norm": ("reduction", workloads.rms_norm(8, 128).kiln_ir(),
                 lambda r: [random_f32(r, 8, 128), random_f32(r, 128)], lambda x, w: ref.rms_norm(x, w, eps=1e-5)),
    "softmax": ("reduction", _unary("softmax", (2, 4, 16, 24), " {axis = -1 : i64}"),
                lambda r: [random_f32(r, 2, 4, 16, 24, scale=3.0)], ref.softmax),
    "argmax": ("reduction", _argmax((3, 5, 40)), lambda r: [random_f32(r, 3, 5, 40)], ref.argmax),
    "attention_prefill": ("attention", workloads.attention(4, 2, 16, 16, 32).kiln_ir(),
                          lambda r: [random_f32(r, 1, 4, 16, 32), random_f32(r, 1, 2, 16, 32), random_f32(r, 1, 2, 16, 32)],
                          _attention_ref(4, 2, 16, 16)),
    "attention_decode": ("attention", workloads.attention(4, 2, 1, 24, 32).kiln_ir(),
                         lambda r: [random_f32(r, 1, 4, 1, 32), random_f32(r, 1, 2, 24, 32), random_f32(r, 1, 2, 24, 32)],
                         _attention_ref(4, 2, 1, 24)),
    "silu": ("elementwise", _unary("silu", (4, 7, 96)), lambda r: [random_f32(r, 4, 7, 96, scale=3.0)], ref.silu),
    "gelu": ("elementwise", _unary("gelu", (4, 7, 96)), lambda r: [random_f32(r, 4, 7, 96, scale=3.0)], ref.gelu),
    "rope": ("generic", _rope((1, 4, 12, 32)),
             lambda r: [random_f32(r, 1, 4, 12, 32), r.permutation(64)[:12].astype(np.int64)],
             lambda x, p: ref.rope(x, p)),
    "split_heads_rope": ("generic", _split_heads_rope((1, 12, 96), 3),
                         lambda r: [random_f32(r, 1, 12, 96), r.permutation(64)[:12].astype(np.int64)],
                         lambda x, p: ref.rope(ref.split_heads(x, 3), p)),
    # extents with no power-of-two tile: edge blocks and threads are guarded
    "ragged_linear": ("contraction", workloads.linear(13, 100, 70).kiln_ir(),
                      lambda r: [random_f32(r, 13, 70), random_f32(r, 100, 70, scale=0.1)], ref.linear),
    "ragged_softmax": ("reduction", _unary("softmax", (7, 3, 131), " {axis = -1 : i64}"),
                       lambda r: [random_f32(r, 7, 3, 131, scale=3.0)], ref.softmax),
    "split_heads": ("transpose", _split_heads((2, 12, 96), 3), lambda r: [random_f32(r, 2, 12, 96)],
                    lambda x: ref.split_heads(x, 3)),
}
