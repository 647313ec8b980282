"""kv_cache_update against float64 numpy, alone and feeding decode attention."""

import functools

import numpy as np
import pytest

from kiln.dialects import transformer
from kiln import reference as ref
from reference import INDEX, T, check, jit, randn, run


@functools.lru_cache(maxsize=None)
def update_fn(cache_spec, update_spec, dtype, static=None):
    return jit([T(cache_spec, dtype), T(update_spec, dtype), INDEX],
               lambda c, u, p: transformer.kv_cache_update(c, u, p),
               static=[static] if static else None)


@pytest.mark.parametrize(
    "cache_shape,new_len,positions,dtype",
    [
        ((1, 3, 16, 8), 1, [0, 1, 7, 15], "f32"),  # decode: one row, up to the last slot
        ((2, 2, 33, 7), 5, [0, 13, 28], "f32"),  # prefill chunk, odd sizes, ending at max_seq
        ((2, 4, 9, 16), 9, [0], "f32"),  # the whole cache
        ((1, 3, 20, 8), 4, [0, 3, 16], "f16"),
    ],
)
def test_kv_cache_update(rng, cache_shape, new_len, positions, dtype):
    b, hkv, max_seq, d = cache_shape
    jm = update_fn(cache_shape, (b, hkv, new_len, d), dtype)
    cache = randn(rng, cache_shape, dtype)
    cache_before = cache.copy()
    for pos in positions:
        update = randn(rng, (b, hkv, new_len, d), dtype)
        out = run(jm, cache, update, pos)
        # A row copy is exact.
        np.testing.assert_array_equal(out, ref.kv_cache_update(cache, update, pos).astype(out.dtype),
                                      err_msg=f"position {pos}")
        # The argument is read-only: the caller's array is not written.
        np.testing.assert_array_equal(cache, cache_before)


@pytest.mark.parametrize(
    "dynamic", ["new_len", "max_seq", "all"],
)
def test_kv_cache_update_dynamic(rng, dynamic):
    b, hkv, max_seq, d = 2, 3, 17, 8
    if dynamic == "new_len":
        cache_spec, update_spec = (b, hkv, max_seq, d), (b, hkv, None, d)
        static = None
    elif dynamic == "max_seq":
        cache_spec, update_spec = (b, hkv, None, d), (b, hkv, 1, d)
        static = (b, hkv, max_seq, d)
    else:
        cache_spec, update_spec = (None,) * 4, (None,) * 4
        static = (b, hkv, max_seq, d)
    jm = update_fn(cache_spec, update_spec, "f32", static)
    cache = randn(rng, (b, hkv, max_seq, d))
    for new_len, pos in [(1, 0), (1, 16), (3, 5), (17, 0)]:
        if dynamic == "max_seq" and new_len != 1:
            continue
        update = randn(rng, (b, hkv, new_len, d))
        out = run(jm, cache, update, pos)
        np.testing.assert_array_equal(out, ref.kv_cache_update(cache, update, pos).astype(np.float32),
                                      err_msg=f"new_len {new_len} position {pos}")


def test_decode_step_with_cache(rng):
    """One decode step as a model runs it: write the new k/v row at `pos`, then attend with
    offset `pos` over the whole cache (rows past `pos` hold stale data that must be ignored)."""
    b, h, hkv, max_seq, d = 2, 9, 3, 24, 8

    def body(q, kc, vc, kn, vn, pos):
        kc2 = transformer.kv_cache_update(kc, kn, pos)
        vc2 = transformer.kv_cache_update(vc, vn, pos)
        return transformer.attention(q, kc2, vc2, offset=pos, causal=True), kc2, vc2

    jm = jit([T((b, h, 1, d)), T((b, hkv, max_seq, d)), T((b, hkv, max_seq, d)), T((b, hkv, 1, d)),
              T((b, hkv, 1, d)), INDEX], body)
    kc, vc = randn(rng, (b, hkv, max_seq, d)), randn(rng, (b, hkv, max_seq, d))
    for pos in [0, 1, 11, 23]:
        q, kn, vn = randn(rng, (b, h, 1, d)), randn(rng, (b, hkv, 1, d)), randn(rng, (b, hkv, 1, d))
        out, kc2, vc2 = run(jm, q, kc, vc, kn, vn, pos)
        ek, ev = ref.kv_cache_update(kc, kn, pos), ref.kv_cache_update(vc, vn, pos)
        np.testing.assert_array_equal(kc2, ek.astype(np.float32))
        np.testing.assert_array_equal(vc2, ev.astype(np.float32))
        check(out, ref.attention(q, ek, ev, causal=True, offset=pos), err_msg=f"pos {pos}")
        kc, vc = kc2, vc2
