"""rms_norm and layer_norm against float64 numpy."""

import functools

import numpy as np
import pytest

from kiln.dialects import transformer
from kiln import reference as ref
from reference import NP_DTYPES, T, check, jit, randn, run


def _specs(shape, dtype, dynamic, n_params):
    spec = (None,) * len(shape) if dynamic else shape
    param = (None,) if dynamic else (shape[-1],)
    return [T(spec, dtype)] + [T(param, dtype)] * n_params


@functools.lru_cache(maxsize=None)
def rms_norm_fn(shape, weight, eps, dtype, dynamic):
    return jit(_specs(shape, dtype, dynamic, int(weight)),
               lambda x, *w: transformer.rms_norm(x, weight=w[0] if w else None, eps=eps),
               static=[shape] if dynamic else None)


@pytest.mark.parametrize(
    "shape,weight,eps,dtype,dynamic",
    [
        ((2, 7, 64), True, 1e-6, "f32", False),
        ((13,), True, 1e-5, "f32", False),
        ((3, 33), False, 1e-6, "f32", False),
        ((2, 3, 5, 7), True, 0.1, "f32", False),
        ((2, 7, 33), True, 1e-5, "f16", False),
        ((3, 7, 13), True, 1e-6, "f32", True),  # dynamic normalized dim: the mean divides by a runtime size
        ((5, 9), False, 1e-6, "f32", True),
    ],
)
def test_rms_norm(rng, shape, weight, eps, dtype, dynamic):
    jm = rms_norm_fn(shape, weight, eps, dtype, dynamic)
    x = randn(rng, shape, dtype, scale=3.0)
    x += np.asarray(rng.normal(0, 1), dtype=x.dtype)  # not zero-mean
    w = [randn(rng, shape[-1:], dtype)] if weight else []
    check(run(jm, x, *w), ref.rms_norm(x, *w, eps=eps), dtype)


def test_rms_norm_default_eps(rng):
    """eps defaults to 1e-6; visible on rows of tiny values."""
    jm = jit([T((4, 8)), T((8,))], lambda x, w: transformer.rms_norm(x, weight=w))
    x = randn(rng, (4, 8), scale=1e-3)
    w = randn(rng, (8,))
    out = run(jm, x, w)
    check(out, ref.rms_norm(x, w, eps=1e-6))
    assert not np.allclose(out, ref.rms_norm(x, w, eps=1e-5), rtol=1e-3)


@functools.lru_cache(maxsize=None)
def layer_norm_fn(shape, weight, bias, eps, dtype, dynamic):
    def body(x, *p):
        p = list(p)
        w = p.pop(0) if weight else None
        b = p.pop(0) if bias else None
        return transformer.layer_norm(x, weight=w, bias=b, eps=eps)

    return jit(_specs(shape, dtype, dynamic, int(weight) + int(bias)), body,
               static=[shape] if dynamic else None)


@pytest.mark.parametrize(
    "shape,weight,bias,eps,dtype,dynamic",
    [
        ((2, 9, 48), True, True, 1e-12, "f32", False),
        ((7,), True, True, 1e-5, "f32", False),
        ((3, 33), False, False, 1e-5, "f32", False),
        ((3, 13), True, False, 1e-5, "f32", False),
        ((3, 13), False, True, 1e-5, "f32", False),
        ((2, 3, 5, 7), True, True, 0.5, "f32", False),
        ((2, 7, 33), True, True, 1e-5, "f16", False),
        ((3, 7, 13), True, True, 1e-5, "f32", True),
    ],
)
def test_layer_norm(rng, shape, weight, bias, eps, dtype, dynamic):
    jm = layer_norm_fn(shape, weight, bias, eps, dtype, dynamic)
    # A large common offset checks the (two-pass) variance is not computed as E[x²] - E[x]².
    x = (randn(rng, shape, "f32", scale=2.0) + 100.0).astype(NP_DTYPES[dtype])
    w = [randn(rng, shape[-1:], dtype)] if weight else []
    b = [randn(rng, shape[-1:], dtype)] if bias else []
    out = run(jm, x, *w, *b)
    expected = ref.layer_norm(x, w[0] if w else None, b[0] if b else None, eps=eps)
    # f32 x ~ 100 carries absolute rounding 100 * 6e-8 into x - mean (std ~2): relative ~3e-6.
    check(out, expected, dtype, scale=2.0)
