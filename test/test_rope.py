"""rope (rotate-half rotary embeddings) against float64 numpy (Hugging Face apply_rotary_pos_emb)."""

import functools

import numpy as np
import pytest

from kiln.dialects import transformer
from kiln import reference as ref
from reference import NP_DTYPES, T, check, jit, randn, run


@functools.lru_cache(maxsize=None)
def rope_fn(shape, pos_rank, rotary_dim, theta, inv_freq, dtype, pos_dtype="i64", dynamic=None, scaling=None):
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
    if scaling is not None:
        kwargs["attention_scaling"] = scaling
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


@pytest.mark.parametrize("shape,rotary_dim,dtype", [((2, 3, 7, 16), None, "f32"), ((1, 2, 5, 13), 6, "f32"),
                                                    ((1, 4, 7, 32), 16, "f16")])
def test_rope_attention_scaling(rng, shape, rotary_dim, dtype):
    """YaRN's attention factor scales the rotated features' cos and sin; pass-through features stay."""
    scaling = float(rng.uniform(0.5, 2.0))
    jm = rope_fn(shape, 2, rotary_dim, None, "f32", dtype, scaling=scaling)
    rd = rotary_dim or shape[-1]
    x, pos = randn(rng, shape, dtype), positions_for(rng, shape, 2)
    inv_freq = (ref.rope_inv_freq(10000.0, rd) / rng.uniform(1, 8, size=rd // 2)).astype(np.float32)
    out = run(jm, x, pos, inv_freq)
    check(out, ref.rope(x, pos, rotary_dim, inv_freq=inv_freq, attention_scaling=scaling), dtype)
    np.testing.assert_array_equal(out[..., rd:], x[..., rd:])


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


@pytest.mark.parametrize("scaling", [
    {"factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 4.0, "beta_slow": 0.25},
    {"factor": 8.0, "original_max_position_embeddings": 512},  # default betas: a ramp of its own
    {"factor": 4.0, "original_max_position_embeddings": 64, "mscale": 1.0, "mscale_all_dim": 0.707},
    {"factor": 2.0, "original_max_position_embeddings": 64, "attention_factor": 0.9, "truncate": False},
    {"factor": None, "original_max_position_embeddings": 128},  # DeepSeek style: the contexts' ratio
])
def test_yarn_frequencies_and_attention_factor_match_transformers(scaling):
    """models/rope.py's YaRN against transformers' own: the frequencies to float32 rounding (numpy's
    and torch's powf can differ by an ulp), the attention factor exactly."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from kiln.models import rope

    head_dim, theta, max_pos = 64, 500000.0, 1024
    params = {"rope_type": "yarn", "rope_theta": theta, **scaling}
    hf_config = transformers.LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4,
                                         max_position_embeddings=max_pos, rope_parameters=dict(params))
    want_freq, want_scaling = ROPE_INIT_FUNCTIONS["yarn"](hf_config, "cpu")
    config = {"max_position_embeddings": max_pos, "rope_theta": theta, "rope_scaling": params}
    got = rope.inv_freq(config, head_dim, 256)
    np.testing.assert_allclose(got, want_freq.numpy(), rtol=3e-7, atol=0)
    assert rope.attention_scaling(config) == want_scaling != 1.0
