"""softmax, silu, gelu (exact and tanh), gated_mlp and argmax against float64 numpy."""

import functools
import math

import numpy as np
import pytest

from kiln.dialects import transformer
from kiln import reference as ref
from reference import NP_DTYPES, T, check, jit, randn, run

# ----------------------------------------------------------------------------------------------
# softmax
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def softmax_fn(shape, axis, dtype, dynamic):
    spec = (None,) * len(shape) if dynamic else shape
    kwargs = {} if axis is None else {"axis": axis}
    return jit([T(spec, dtype)], lambda x: transformer.softmax(x, **kwargs),
               static=[shape] if dynamic else None)


@pytest.mark.parametrize(
    "shape,axis,dtype,dynamic",
    [
        ((7, 13, 5), None, "f32", False),  # default: the last axis
        ((7, 13, 5), -1, "f32", False),
        ((7, 13, 5), 0, "f32", False),
        ((7, 13, 5), 1, "f32", False),
        ((7, 13, 5), -2, "f32", False),
        ((7, 13, 5), -3, "f32", False),
        ((33,), 0, "f32", False),
        ((2, 3, 4, 9), 2, "f32", False),
        ((2, 9, 33), -1, "f16", False),
        ((3, 7, 13), 1, "f32", True),
    ],
)
@pytest.mark.parametrize("magnitude", [1.0, 60.0])
def test_softmax(rng, shape, axis, dtype, dynamic, magnitude):
    jm = softmax_fn(shape, axis, dtype, dynamic)
    # Magnitude 60 overflows exp() in f32 (and f16) unless the row max is subtracted.
    x = randn(rng, shape, dtype, scale=magnitude)
    out = run(jm, x)
    assert np.all(np.isfinite(out))
    check(out, ref.softmax(x, -1 if axis is None else axis), dtype)


# ----------------------------------------------------------------------------------------------
# silu / gelu
# ----------------------------------------------------------------------------------------------

ELEMENTWISE = {
    "silu": (lambda x: transformer.silu(x), ref.silu),
    "gelu": (lambda x: transformer.gelu(x), lambda x: ref.gelu(x, "none")),
    "gelu_none": (lambda x: transformer.gelu(x, approximate="none"), lambda x: ref.gelu(x, "none")),
    "gelu_tanh": (lambda x: transformer.gelu(x, approximate="tanh"), lambda x: ref.gelu(x, "tanh")),
}


@functools.lru_cache(maxsize=None)
def elementwise_fn(name, shape, dtype, dynamic):
    spec = (None,) * len(shape) if dynamic else shape
    return jit([T(spec, dtype)], ELEMENTWISE[name][0], static=[shape] if dynamic else None)


@pytest.mark.parametrize("name", list(ELEMENTWISE))
@pytest.mark.parametrize(
    "shape,dtype,dynamic",
    [((7, 13), "f32", False), ((2, 3, 33), "f32", False), ((2, 7, 16), "f16", False), ((5, 9), "f32", True)],
)
def test_elementwise_activation(rng, name, shape, dtype, dynamic):
    jm = elementwise_fn(name, shape, dtype, dynamic)
    x = randn(rng, shape, dtype, scale=3.0)
    x.flat[:4] = [0.0, -12.0, 12.0, -0.5]  # zero, saturated tails
    check(run(jm, x), ELEMENTWISE[name][1](x), dtype)


def test_gelu_variants_differ(rng):
    """approximate="tanh" is a different function from the exact GELU (by ~1e-4 near |x| ~ 2)."""
    jm = jit([T((64,))], lambda x: (transformer.gelu(x), transformer.gelu(x, approximate="tanh")))
    x = np.linspace(-4, 4, 64).astype(np.float32)
    exact, approx = run(jm, x)
    check(exact, ref.gelu(x, "none"))
    check(approx, ref.gelu(x, "tanh"))
    assert np.max(np.abs(exact - approx)) > 1e-4


# ----------------------------------------------------------------------------------------------
# gated_mlp
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def gated_mlp_fn(x_shape, ffn, activation, dtype, dynamic):
    hidden = x_shape[-1]
    x_spec = (None,) * (len(x_shape) - 1) + (hidden,) if dynamic else x_shape
    specs = [T(x_spec, dtype), T((ffn, hidden), dtype), T((ffn, hidden), dtype), T((hidden, ffn), dtype)]
    kwargs = {} if activation is None else {"activation": activation}
    return jit(specs, lambda x, g, u, d: transformer.gated_mlp(x, g, u, d, **kwargs),
               static=[x_shape] if dynamic else None)


@pytest.mark.parametrize(
    "x_shape,ffn,activation,dtype,dynamic",
    [
        ((2, 7, 16), 33, None, "f32", False),  # default: silu
        ((2, 7, 16), 33, "silu", "f32", False),
        ((13, 24), 40, "gelu", "f32", False),
        ((1, 1, 24), 7, "gelu_tanh", "f32", False),
        ((3, 20), 33, "silu", "f16", False),
        ((2, 5, 16), 24, "gelu_tanh", "f16", False),
        ((2, 9, 12), 13, "silu", "f32", True),
    ],
)
def test_gated_mlp(rng, x_shape, ffn, activation, dtype, dynamic):
    jm = gated_mlp_fn(x_shape, ffn, activation, dtype, dynamic)
    hidden = x_shape[-1]
    # Weights scaled as in a trained model so intermediate values stay O(1).
    x = randn(rng, x_shape, dtype)
    wg = randn(rng, (ffn, hidden), dtype, scale=1 / math.sqrt(hidden))
    wu = randn(rng, (ffn, hidden), dtype, scale=1 / math.sqrt(hidden))
    wd = randn(rng, (hidden, ffn), dtype, scale=1 / math.sqrt(ffn))
    out = run(jm, x, wg, wu, wd)
    check(out, ref.gated_mlp(x, wg, wu, wd, activation or "silu"), dtype)


# ----------------------------------------------------------------------------------------------
# argmax
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def argmax_fn(shape, dtype, dynamic):
    spec = (None,) * len(shape) if dynamic else shape
    return jit([T(spec, dtype)], lambda x: transformer.argmax(x), static=[shape[:-1]] if dynamic else None)


@pytest.mark.parametrize(
    "shape,dtype,dynamic",
    [((33,), "f32", False), ((7, 13), "f32", False), ((2, 3, 97), "f32", False),
     ((4, 50), "f16", False), ((5, 13), "f32", True)],
)
@pytest.mark.parametrize("ties", [False, True])
def test_argmax(rng, shape, dtype, dynamic, ties):
    jm = argmax_fn(shape, dtype, dynamic)
    if ties:  # few distinct values: most rows have several maxima; the first one wins
        x = rng.integers(-3, 3, size=shape).astype(NP_DTYPES[dtype])
    else:
        x = randn(rng, shape, dtype)
    out = run(jm, x)
    assert out.dtype == np.int64 and out.shape == shape[:-1]
    np.testing.assert_array_equal(out, ref.argmax(x))


def test_argmax_edge_rows():
    """Maximum at the first and the last position, a row of -inf (index 0) and a single max of -inf rows."""
    jm = argmax_fn((4, 6), "f32", False)
    x = np.array(
        [
            [9.0, 1.0, 2.0, 9.0, 3.0, 4.0],
            [-5.0, -4.0, -3.0, -2.0, -1.0, -0.5],
            [-np.inf] * 6,
            [-np.inf, -np.inf, -1e30, -np.inf, -1e30, -np.inf],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(run(jm, x), [0, 5, 0, 2])
