"""embedding, linear, matmul, split_heads and merge_heads against float64 numpy."""

import functools
import math

import numpy as np
import pytest
from mlir import ir
from mlir.dialects import arith

from kiln.dialects import transformer
from kiln import reference as ref
from reference import NP_DTYPES, T, check, jit, randn, run, tensor_type

# ----------------------------------------------------------------------------------------------
# embedding
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def embedding_fn(vocab, dim, ids_shape, ids_dtype, dtype, dynamic):
    ids_spec = tuple(None for _ in ids_shape) if dynamic else ids_shape
    return jit([T((vocab, dim), dtype), T(ids_spec, ids_dtype)],
               lambda table, ids: transformer.embedding(table, ids),
               static=[ids_shape + (dim,)] if dynamic else None)


@pytest.mark.parametrize(
    "vocab,dim,ids_shape,ids_dtype,dtype,dynamic",
    [
        (50, 13, (7,), "i64", "f32", False),
        (33, 8, (2, 7), "i64", "f32", False),
        (17, 5, (2, 3, 4), "i32", "f32", False),
        (40, 16, (3, 5), "i64", "f16", False),
        (29, 7, (2, 9), "i64", "f32", True),
    ],
)
def test_embedding(rng, vocab, dim, ids_shape, ids_dtype, dtype, dynamic):
    jm = embedding_fn(vocab, dim, ids_shape, ids_dtype, dtype, dynamic)
    table = randn(rng, (vocab, dim), dtype)
    ids = rng.integers(0, vocab, size=ids_shape).astype(NP_DTYPES[ids_dtype])
    ids.flat[0], ids.flat[-1] = 0, vocab - 1  # both ends of the table
    out = run(jm, table, ids)
    # A gather is exact.
    np.testing.assert_array_equal(out, table[ids])
    check(out, ref.embedding(table, ids), dtype)


# ----------------------------------------------------------------------------------------------
# linear
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def linear_fn(x_shape, out_features, bias, dtype, dynamic=False):
    in_features = x_shape[-1]
    x_spec = tuple(None for _ in x_shape[:-1]) + (in_features,) if dynamic else x_shape
    w_spec = (None, None) if dynamic else (out_features, in_features)
    specs = [T(x_spec, dtype), T(w_spec, dtype)] + ([T((out_features,), dtype)] if bias else [])
    static = [x_shape[:-1] + (out_features,)] if dynamic else None
    return jit(specs, lambda x, w, *b: transformer.linear(x, w, bias=b[0] if b else None), static)


@pytest.mark.parametrize(
    "x_shape,out_features,bias,dtype,dynamic",
    [
        ((7, 13), 5, False, "f32", False),
        ((2, 7, 13), 33, True, "f32", False),
        ((33,), 7, True, "f32", False),
        ((2, 3, 5, 16), 9, True, "f32", False),
        ((1, 1, 64), 96, False, "f32", False),
        ((2, 7, 33), 13, True, "f16", False),
        ((3, 7, 13), 5, True, "f32", True),
        ((2, 9, 33), 17, False, "f32", True),
        # GEMM-sized, panels without padding: the weight is packed by 16x16 shuffle transposes.
        ((1, 20, 48), 64, False, "f32", False),
        ((2, 40, 32), 96, True, "f32", False),
        ((128, 576), 192, False, "f32", False),
    ],
)
def test_linear(rng, x_shape, out_features, bias, dtype, dynamic):
    jm = linear_fn(x_shape, out_features, bias, dtype, dynamic)
    x = randn(rng, x_shape, dtype)
    w = randn(rng, (out_features, x_shape[-1]), dtype)
    b = [randn(rng, (out_features,), dtype)] if bias else []
    out = run(jm, x, w, *b)
    check(out, ref.linear(x, w, *b), dtype, scale=math.sqrt(x_shape[-1]))


@pytest.mark.parametrize("bias_value", [0.0, 0.5])
def test_linear_constant_bias(rng, bias_value):
    """A zero constant bias is dropped by canonicalization; any other splat must still be added."""

    def body(x, w):
        btype = tensor_type((9,), "f32")
        b = arith.constant(btype, ir.DenseElementsAttr.get_splat(btype, ir.FloatAttr.get_f32(bias_value)))
        return transformer.linear(x, w, bias=b)

    jm = jit([T((3, 11)), T((9, 11))], body)
    x, w = randn(rng, (3, 11)), randn(rng, (9, 11))
    check(run(jm, x, w), ref.linear(x, w) + bias_value, scale=4)


# ----------------------------------------------------------------------------------------------
# matmul
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def matmul_fn(lhs_shape, rhs_shape, transpose_rhs, dtype, dynamic_batch=False):
    batch = len(lhs_shape) - 2
    if dynamic_batch:
        lhs_spec = (None,) * batch + lhs_shape[batch:]
        rhs_spec = (None,) * batch + rhs_shape[batch:]
    else:
        lhs_spec, rhs_spec = lhs_shape, rhs_shape
    n = rhs_shape[-2] if transpose_rhs else rhs_shape[-1]
    static = [lhs_shape[:-1] + (n,)] if dynamic_batch else None
    return jit([T(lhs_spec, dtype), T(rhs_spec, dtype)],
               lambda a, b: transformer.matmul(a, b, transpose_rhs=transpose_rhs), static)


@pytest.mark.parametrize(
    "lhs_shape,rhs_shape,transpose_rhs,dtype,dynamic_batch",
    [
        ((7, 13), (13, 5), False, "f32", False),
        ((7, 13), (5, 13), True, "f32", False),
        ((1, 33), (33, 1), False, "f32", False),
        ((2, 3, 7, 13), (2, 3, 13, 33), False, "f32", False),
        ((2, 9, 7, 8), (2, 9, 13, 8), True, "f32", False),
        ((2, 4, 7, 16), (2, 4, 16, 7), False, "f16", False),
        ((3, 7, 13), (3, 13, 5), False, "f32", True),
        ((2, 5, 1, 12), (2, 5, 9, 12), True, "f32", True),
    ],
)
def test_matmul(rng, lhs_shape, rhs_shape, transpose_rhs, dtype, dynamic_batch):
    jm = matmul_fn(lhs_shape, rhs_shape, transpose_rhs, dtype, dynamic_batch)
    a, b = randn(rng, lhs_shape, dtype), randn(rng, rhs_shape, dtype)
    check(run(jm, a, b), ref.matmul(a, b, transpose_rhs), dtype, scale=math.sqrt(lhs_shape[-1]))


# ----------------------------------------------------------------------------------------------
# split_heads / merge_heads
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,num_heads,dynamic",
    [
        ((2, 7, 72), 9, False),
        ((1, 13, 12), 3, False),
        ((3, 1, 8), 1, False),
        ((2, 5, 39), 13, False),
        ((2, 7, 72), 9, True),
    ],
)
def test_split_heads(rng, shape, num_heads, dynamic):
    b, s, f = shape
    expected_shape = (b, num_heads, s, f // num_heads)
    spec = (None, None, None) if dynamic else shape
    jm = jit([T(spec)], lambda x: transformer.split_heads(x, num_heads),
             static=[expected_shape] if dynamic else None)
    x = randn(rng, shape)
    out = run(jm, x)
    np.testing.assert_array_equal(out, ref.split_heads(x, num_heads).astype(np.float32))


@pytest.mark.parametrize(
    "shape,dynamic",
    [((2, 9, 7, 8), False), ((1, 3, 13, 4), False), ((2, 1, 5, 7), False), ((2, 9, 7, 8), True)],
)
def test_merge_heads(rng, shape, dynamic):
    b, h, s, d = shape
    spec = (None, None, None, None) if dynamic else shape
    jm = jit([T(spec)], lambda x: transformer.merge_heads(x), static=[(b, s, h * d)] if dynamic else None)
    x = randn(rng, shape)
    np.testing.assert_array_equal(run(jm, x), ref.merge_heads(x).astype(np.float32))


def test_split_then_merge_heads_f16(rng):
    """Both ops in one function with f16 data and a (non-folded) linear in between."""

    def body(x, w):
        h = transformer.split_heads(x, 3)
        y = transformer.merge_heads(h)
        return h, transformer.linear(y, w)

    jm = jit([T((2, 5, 12), "f16"), T((7, 12), "f16")], body)
    x, w = randn(rng, (2, 5, 12), "f16"), randn(rng, (7, 12), "f16")
    h, y = run(jm, x, w)
    np.testing.assert_array_equal(h, x.reshape(2, 5, 3, 4).transpose(0, 2, 1, 3))
    check(y, ref.linear(x, w), "f16", scale=math.sqrt(12))
