"""rope (rotate-half rotary embeddings) against float64 numpy (Hugging Face apply_rotary_pos_emb)."""

import functools

import numpy as np
import pytest

from kiln.dialects import transformer
from kiln import reference as ref
from reference import NP_DTYPES, T, check, jit, randn, run


@functools.lru_cache(maxsize=None)
def rope_fn(shape, pos_rank, rotary_dim, theta, inv_freq, dtype, pos_dtype="i64", dynamic=None):
    """`dynamic`: None, "seq" (seq dims dynamic) or "all" (every dim of input and positions)."""
    b, h, s, d = shape
    pos_shape = (s,) if pos_rank == 1 else (b, s)
    x_spec, pos_spec = shape, pos_shape
    if dynamic == "seq":
        x_spec, pos_spec = (b, h, None, d), pos_shape[:-1] + (None,)
    elif dynamic == "all":
        x_spec, pos_spec = (None,) * 4, (None,) * pos_rank
    specs = [T(x_spec, dtype), T(pos_spec, pos_dtype)]
    if inv_freq:  # the element type of the inv_freq operand
        specs.append(T(((rotary_dim or d) // 2,), inv_freq))
    kwargs = {}
    if theta is not None:
        kwargs["theta"] = theta
    if rotary_dim is not None:
        kwargs["rotary_dim"] = rotary_dim
    return jit(specs,
               lambda x, p, *f: transformer.rope(x, p, inv_freq=f[0] if f else None, **kwargs),
               static=[shape] if dynamic else None)


def positions_for(rng, shape, pos_rank, max_start=40):
    b, _, s, _ = shape
    if pos_rank == 1:
        return rng.integers(0, max_start) + np.arange(s)
    # Per-row starts (e.g. left padding), each row increasing.
    return rng.integers(0, max_start, size=(b, 1)) + np.arange(s)[None, :]


CASES = {
    # name: (shape, pos_rank, rotary_dim, theta, dtype)
    "full_rank1": ((2, 3, 7, 16), 1, None, None, "f32"),
    "full_rank2": ((2, 3, 7, 16), 2, None, None, "f32"),
    "theta1e5_rank2": ((1, 9, 7, 64), 2, None, 100000.0, "f32"),
    "partial_half": ((2, 4, 5, 16), 1, 8, None, "f32"),
    "partial_odd_head_dim": ((1, 2, 13, 13), 2, 8, None, "f32"),
    "partial_rank2_small": ((3, 2, 3, 12), 2, 4, 500.0, "f32"),
    "rotary_dim_equals_head_dim": ((1, 3, 5, 10), 1, 10, None, "f32"),
    "single_token": ((2, 9, 1, 8), 2, None, None, "f32"),
    "f16": ((1, 4, 7, 32), 1, None, None, "f16"),
    "f16_partial_rank2": ((2, 2, 5, 24), 2, 16, None, "f16"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rope(rng, case):
    shape, pos_rank, rotary_dim, theta, dtype = CASES[case]
    jm = rope_fn(shape, pos_rank, rotary_dim, theta, None, dtype)
    x = randn(rng, shape, dtype)
    pos = positions_for(rng, shape, pos_rank)
    out = run(jm, x, pos)
    expected = ref.rope(x, pos, rotary_dim, 10000.0 if theta is None else theta)
    check(out, expected, dtype)
    rd = shape[-1] if rotary_dim is None else rotary_dim
    np.testing.assert_array_equal(out[..., rd:], x[..., rd:])  # pass-through features are untouched


def test_rope_position_zero_is_identity(rng):
    jm = rope_fn((2, 3, 4, 16), 1, None, None, None, "f32")
    x = randn(rng, (2, 3, 4, 16))
    np.testing.assert_array_equal(run(jm, x, np.zeros(4, np.int64)), x)


@pytest.mark.parametrize("max_start", [200, 3000])
def test_rope_long_positions(rng, max_start):
    """Decode-like positions deep into a context: f32 angles (as in HF) lose ~ulp(angle)."""
    shape = (1, 4, 3, 32)
    jm = rope_fn(shape, 2, None, None, None, "f32")
    x = randn(rng, shape)
    pos = positions_for(rng, shape, 2, max_start=max_start)
    # |angle| <= max position: the f32 rounding of the angle is up to 6e-8 * angle.
    check(run(jm, x, pos), ref.rope(x, pos), scale=1 + pos.max() / 50)


@pytest.mark.parametrize(
    "shape,pos_rank,rotary_dim,dtype,freq_dtype",
    [
        ((2, 3, 7, 16), 1, None, "f32", "f32"),
        ((2, 3, 7, 16), 2, 8, "f32", "f32"),
        ((1, 2, 5, 13), 2, 6, "f32", "f32"),
        ((1, 4, 7, 32), 1, None, "f16", "f32"),
        ((1, 4, 7, 32), 2, 16, "f16", "f16"),
    ],
)
def test_rope_explicit_inv_freq(rng, shape, pos_rank, rotary_dim, dtype, freq_dtype):
    jm = rope_fn(shape, pos_rank, rotary_dim, None, freq_dtype, dtype)
    rd = rotary_dim or shape[-1]
    x = randn(rng, shape, dtype)
    pos = positions_for(rng, shape, pos_rank)
    # A llama3/linear-scaling-like spectrum: the defaults divided by random factors in [1, 8].
    inv_freq = ref.rope_inv_freq(10000.0, rd) / rng.uniform(1, 8, size=rd // 2)
    inv_freq = inv_freq.astype(NP_DTYPES[freq_dtype])
    out = run(jm, x, pos, inv_freq)
    check(out, ref.rope(x, pos, rotary_dim, inv_freq=inv_freq), dtype)
    # The operand is used instead of theta's frequencies.
    assert not np.allclose(out, ref.rope(x, pos, rotary_dim), atol=1e-2)


@pytest.mark.parametrize("pos_dtype", ["i32", "i64"])
def test_rope_position_dtypes(rng, pos_dtype):
    shape = (2, 2, 5, 8)
    jm = rope_fn(shape, 2, None, None, None, "f32", pos_dtype)
    x = randn(rng, shape)
    pos = positions_for(rng, shape, 2).astype(NP_DTYPES[pos_dtype])
    check(run(jm, x, pos), ref.rope(x, pos))


@pytest.mark.parametrize(
    "shape,pos_rank,rotary_dim,dynamic",
    [
        ((2, 3, 7, 16), 1, None, "seq"),
        ((2, 3, 7, 16), 2, 8, "seq"),
        ((2, 3, 7, 16), 2, 16, "all"),  # a dynamic head_dim needs rotary_dim
        ((1, 5, 9, 13), 1, 8, "all"),
    ],
)
def test_rope_dynamic(rng, shape, pos_rank, rotary_dim, dynamic):
    jm = rope_fn(shape, pos_rank, rotary_dim, None, None, "f32", dynamic=dynamic)
    x = randn(rng, shape)
    pos = positions_for(rng, shape, pos_rank)
    check(run(jm, x, pos), ref.rope(x, pos, rotary_dim))
