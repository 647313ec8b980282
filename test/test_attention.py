"""attention (scaled dot-product, GQA, causal with offset, additive masks) against float64 numpy."""

import functools

import numpy as np
import pytest

from kiln.dialects import transformer
from kiln import reference as ref
from reference import INDEX, NP_DTYPES, T, check, jit, randn, run

NEG = float(np.finfo(np.float32).min)  # the additive mask value Hugging Face uses for f32


@functools.lru_cache(maxsize=None)
def attention_fn(q_spec, k_spec, v_spec, mask_spec, offset, causal, scale, dtype, static=None):
    """Specs are shapes (None: dynamic dim); `offset`: pass an index argument; `static`: the result
    shape when q or v has dynamic dims."""
    specs = [T(q_spec, dtype), T(k_spec, dtype), T(v_spec, dtype)]
    if mask_spec is not None:
        specs.append(T(mask_spec, dtype))
    if offset:
        specs.append(INDEX)

    def body(q, k, v, *rest):
        rest = list(rest)
        mask = rest.pop(0) if mask_spec is not None else None
        off = rest.pop(0) if offset else None
        return transformer.attention(q, k, v, mask=mask, offset=off, causal=causal, scale=scale)

    return jit(specs, body, static=[static] if static else None)


def qkv(rng, b, heads, kv_heads, q_len, kv_len, head_dim, v_dim=None, dtype="f32", magnitude=1.0):
    q = randn(rng, (b, heads, q_len, head_dim), dtype, scale=magnitude)
    k = randn(rng, (b, kv_heads, kv_len, head_dim), dtype, scale=magnitude)
    v = randn(rng, (b, kv_heads, kv_len, v_dim or head_dim), dtype)
    return q, k, v


def padding_mask(rng, b, kv_len, dtype="f32", value=NEG):
    """A BERT-style [b, 1, 1, kv] mask: 0 where attended, `value` on padded (right-most) keys;
    every row keeps at least two keys."""
    mask = np.zeros((b, 1, 1, kv_len), dtype=NP_DTYPES[dtype])
    for i in range(b):
        valid = rng.integers(2, kv_len + 1)
        mask[i, ..., valid:] = value
    return mask


# ----------------------------------------------------------------------------------------------
# Prefill / encoder attention
# ----------------------------------------------------------------------------------------------

# name: (b, heads, kv_heads, q_len, kv_len, head_dim, v_dim, causal, scale)
PLAIN = {
    "mha": (2, 4, 4, 7, 7, 16, None, False, None),
    "mha_causal": (2, 4, 4, 7, 7, 16, None, True, None),
    "gqa_9_3_causal_prefill": (2, 9, 3, 7, 7, 8, None, True, None),
    "gqa_9_3_noncausal": (1, 9, 3, 13, 13, 8, None, False, None),
    "mqa_4_1_causal": (2, 4, 1, 5, 5, 16, None, True, None),
    "cross_attention_q5_kv13": (2, 3, 3, 5, 13, 8, None, False, None),
    "causal_q_shorter_than_kv_no_offset": (1, 2, 2, 5, 11, 8, None, True, None),
    "v_head_dim_differs": (2, 6, 2, 7, 9, 8, 13, False, None),
    "explicit_scale": (1, 4, 2, 7, 7, 16, None, True, 0.3),
    "odd_sizes": (3, 3, 1, 13, 33, 7, 5, True, None),
    "single_query_single_key": (1, 2, 2, 1, 1, 4, None, True, None),
}


@pytest.mark.parametrize("case", list(PLAIN))
def test_attention(rng, case):
    b, h, hkv, lq, lk, d, dv, causal, scale = PLAIN[case]
    dv = dv or d
    jm = attention_fn((b, h, lq, d), (b, hkv, lk, d), (b, hkv, lk, dv), None, False, causal, scale, "f32")
    q, k, v = qkv(rng, b, h, hkv, lq, lk, d, dv)
    out = run(jm, q, k, v)
    check(out, ref.attention(q, k, v, causal=causal, scale=scale))


def test_attention_gqa_head_mapping(rng):
    """Query head h reads kv head h // 3 (not h % 3): each kv head has a constant, distinct value."""
    b, h, hkv, l, d = 1, 9, 3, 4, 8
    jm = attention_fn((b, h, l, d), (b, hkv, l, d), (b, hkv, l, d), None, False, False, None, "f32")
    q, k, _ = qkv(rng, b, h, hkv, l, l, d)
    v = np.broadcast_to(np.arange(hkv, dtype=np.float32)[None, :, None, None], (b, hkv, l, d)).copy()
    out = run(jm, q, k, v)
    np.testing.assert_allclose(out[0, :, 0, 0], np.arange(h) // 3, atol=1e-6)
    check(out, ref.attention(q, k, v))


@pytest.mark.parametrize("magnitude", [4.0, 30.0])
def test_attention_large_scores_are_stable(rng, magnitude):
    """Scores up to ~1e4 overflow exp() unless the row max is subtracted."""
    b, h, hkv, l, d = 1, 4, 2, 7, 16
    jm = attention_fn((b, h, l, d), (b, hkv, l, d), (b, hkv, l, d), None, False, True, None, "f32")
    q, k, v = qkv(rng, b, h, hkv, l, l, d, magnitude=magnitude)
    out = run(jm, q, k, v)
    assert np.all(np.isfinite(out))
    check(out, ref.attention(q, k, v, causal=True), scale=magnitude**2)


# ----------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------

# name: (b, heads, kv_heads, q_len, kv_len, mask_shape, causal)
MASKED = {
    "bert_padding_b1_1_kv": (2, 4, 4, 13, 13, (2, 1, 1, 13), False),
    "padding_gqa_causal": (2, 9, 3, 7, 7, (2, 1, 1, 7), True),
    "full_mask_gqa": (2, 9, 3, 7, 9, (2, 9, 7, 9), False),
    "full_mask_causal": (1, 4, 2, 5, 5, (1, 4, 5, 5), True),
    "mask_1_1_q_kv": (2, 3, 3, 5, 7, (1, 1, 5, 7), False),
    "mask_b_h_1_kv": (2, 6, 2, 5, 7, (2, 6, 1, 7), False),
    "mask_1_h_q_kv_mqa": (3, 4, 1, 3, 7, (1, 4, 3, 7), False),
    "mask_b_1_q_kv_one_head": (2, 1, 1, 5, 7, (2, 1, 5, 7), True),
}


@pytest.mark.parametrize("case", list(MASKED))
def test_attention_mask(rng, case):
    b, h, hkv, lq, lk, mshape, causal = MASKED[case]
    d = 8
    jm = attention_fn((b, h, lq, d), (b, hkv, lk, d), (b, hkv, lk, d), mshape, False, causal, None, "f32")
    q, k, v = qkv(rng, b, h, hkv, lq, lk, d)
    # Random additive biases (ALiBi-like) plus masked-out keys; key 0 always stays visible.
    mask = randn(rng, mshape, scale=2.0)
    hidden = rng.random(mshape) < 0.3
    hidden[..., 0] = False
    mask[hidden] = NEG
    out = run(jm, q, k, v, mask)
    check(out, ref.attention(q, k, v, mask=mask, causal=causal))


@pytest.mark.parametrize("value", [NEG, -1e9, -np.inf])
def test_attention_padding_mask_values(rng, value):
    """BERT padding mask [b,1,1,kv] with the usual "minus infinity" stand-ins: padded keys get
    zero weight, so their values do not matter."""
    b, h, l, d = 3, 4, 9, 16
    jm = attention_fn((b, h, l, d), (b, h, l, d), (b, h, l, d), (b, 1, 1, l), False, False, None, "f32")
    q, k, v = qkv(rng, b, h, h, l, l, d)
    mask = padding_mask(rng, b, l, value=value)
    out = run(jm, q, k, v, mask)
    check(out, ref.attention(q, k, v, mask=mask))
    # Changing padded values leaves the result unchanged.
    v2 = v.copy()
    v2[np.broadcast_to(mask[:, :, 0, :, None] != 0, v.shape)] = 1e3
    np.testing.assert_allclose(run(jm, q, k, v2, mask), out, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Decoding: a short query block at a runtime offset into a longer kv sequence
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "b,h,hkv,q_len,kv_len,d,offsets",
    [
        (1, 9, 3, 1, 33, 8, [0, 1, 5, 17, 32]),  # decode, GQA
        (2, 4, 4, 1, 16, 16, [0, 7, 15]),  # decode, MHA
        (2, 4, 1, 1, 13, 8, [3, 12]),  # decode, MQA
        (1, 6, 2, 4, 16, 8, [0, 5, 12]),  # chunked prefill
        (2, 9, 3, 7, 7, 8, [0]),  # prefill: q_len == kv_len with an explicit zero offset
    ],
)
def test_attention_offset(rng, b, h, hkv, q_len, kv_len, d, offsets):
    jm = attention_fn((b, h, q_len, d), (b, hkv, kv_len, d), (b, hkv, kv_len, d), None, True, True,
                      None, "f32")
    q, k, v = qkv(rng, b, h, hkv, q_len, kv_len, d)
    for offset in offsets:
        assert offset + q_len <= kv_len
        out = run(jm, q, k, v, offset)
        check(out, ref.attention(q, k, v, causal=True, offset=offset), err_msg=f"offset {offset}")


def test_attention_offset_with_padding_mask(rng):
    """Decoding a left-padded batch: causal + offset + a [b,1,1,kv] padding mask."""
    b, h, hkv, kv_len, d = 2, 9, 3, 12, 8
    jm = attention_fn((b, h, 1, d), (b, hkv, kv_len, d), (b, hkv, kv_len, d), (b, 1, 1, kv_len), True,
                      True, None, "f32")
    q, k, v = qkv(rng, b, h, hkv, 1, kv_len, d)
    mask = np.zeros((b, 1, 1, kv_len), np.float32)
    mask[1, ..., :3] = NEG  # the second sequence is left-padded by 3
    for offset in [3, 6, 11]:
        out = run(jm, q, k, v, mask, offset)
        check(out, ref.attention(q, k, v, mask=mask, causal=True, offset=offset), err_msg=f"offset {offset}")


@pytest.mark.parametrize("garbage", [np.nan, np.inf, 1e30])
def test_attention_never_reads_future_cache_rows(rng, garbage):
    """Keys past the last query position are never read into the result (documented), so unwritten
    cache rows (uninitialized memory: NaN, inf, huge values) cannot leak into it."""
    b, h, hkv, q_len, kv_len, d = 1, 9, 3, 2, 16, 8
    jm = attention_fn((b, h, q_len, d), (b, hkv, kv_len, d), (b, hkv, kv_len, d), None, True, True,
                      None, "f32")
    check_future_rows_unread(jm, *qkv(rng, b, h, hkv, q_len, kv_len, d), [0, 4, 9], garbage)


def check_future_rows_unread(jm, q, k, v, offsets, garbage):
    """Causal attention of q at each offset into k, v whose rows past the queries hold `garbage`:
    finite, and equal to the reference on the clean k, v."""
    q_len = q.shape[2]
    for offset in offsets:
        k2, v2 = k.copy(), v.copy()
        k2[:, :, offset + q_len :] = garbage
        v2[:, :, offset + q_len :] = garbage
        out = run(jm, q, k2, v2, offset)
        assert np.all(np.isfinite(out)), f"offset {offset}"
        check(out, ref.attention(q, k, v, causal=True, offset=offset), err_msg=f"offset {offset}")


# ----------------------------------------------------------------------------------------------
# f16 and dynamic shapes
# ----------------------------------------------------------------------------------------------


def test_attention_f16(rng):
    b, h, hkv, l, d = 2, 4, 2, 7, 16
    jm = attention_fn((b, h, l, d), (b, hkv, l, d), (b, hkv, l, d), (b, 1, 1, l), False, True, None, "f16")
    q, k, v = qkv(rng, b, h, hkv, l, l, d, dtype="f16")
    mask = padding_mask(rng, b, l, "f16", value=-np.inf)
    mask[:, ..., :2] = 0
    check(run(jm, q, k, v, mask), ref.attention(q, k, v, mask=mask, causal=True), "f16")


def test_attention_f16_decode(rng):
    b, h, hkv, kv_len, d = 1, 9, 3, 20, 8
    jm = attention_fn((b, h, 1, d), (b, hkv, kv_len, d), (b, hkv, kv_len, d), None, True, True, None, "f16")
    q, k, v = qkv(rng, b, h, hkv, 1, kv_len, d, dtype="f16")
    for offset in [0, 10, 19]:
        check(run(jm, q, k, v, offset), ref.attention(q, k, v, causal=True, offset=offset), "f16")


def test_attention_dynamic_kv_len_decode(rng):
    """A kv cache of runtime length (tensor<1x3x?x8>) with a runtime offset; one compile serves all."""
    b, h, hkv, d = 1, 9, 3, 8
    jm = attention_fn((b, h, 1, d), (b, hkv, None, d), (b, hkv, None, d), None, True, True, None, "f32")
    q = randn(rng, (b, h, 1, d))
    for kv_len, offset in [(1, 0), (7, 6), (16, 9), (33, 32)]:
        k, v = randn(rng, (b, hkv, kv_len, d)), randn(rng, (b, hkv, kv_len, d))
        check(run(jm, q, k, v, offset), ref.attention(q, k, v, causal=True, offset=offset),
              err_msg=f"kv_len {kv_len} offset {offset}")


def test_attention_dynamic_seq_prefill_with_mask(rng):
    """q_len and kv_len dynamic (prefill, causal, padding mask [b,1,1,?]); result cast to static."""
    b, h, hkv, l, d = 2, 9, 3, 7, 8
    jm = attention_fn((b, h, None, d), (b, hkv, None, d), (b, hkv, None, d), (b, 1, 1, None), False, True,
                      None, "f32", static=(b, h, l, d))
    q, k, v = qkv(rng, b, h, hkv, l, l, d)
    mask = padding_mask(rng, b, l)
    check(run(jm, q, k, v, mask), ref.attention(q, k, v, mask=mask, causal=True))


def test_attention_all_dims_dynamic(rng):
    """Every dim dynamic (heads == kv heads at runtime); a dynamic head_dim needs an explicit scale."""
    b, h, lq, lk, d = 2, 3, 5, 9, 8
    dyn = (None,) * 4
    jm = attention_fn(dyn, dyn, dyn, None, True, True, 0.25, "f32", static=(b, h, lq, d))
    q, k, v = qkv(rng, b, h, h, lq, lk, d)
    for offset in [0, 4]:
        check(run(jm, q, k, v, offset), ref.attention(q, k, v, causal=True, offset=offset, scale=0.25))


# ----------------------------------------------------------------------------------------------
# Flash attention (the CPU form of f32 attention without a mask: one kernel, online softmax)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def flash_fn(q_spec, kv_spec, offset, causal, static=None):
    """Like attention_fn (no mask), and checks that the CPU pipeline made the attention one flash
    kernel (an `attention`-class dispatch) rather than the decomposed scores/softmax/product."""
    from kiln.jit import jit_compile
    from reference import build_module

    specs = [T(q_spec, "f32"), T(kv_spec, "f32"), T(kv_spec, "f32")] + ([INDEX] if offset else [])

    def body(q, k, v, *off):
        return transformer.attention(q, k, v, offset=off[0] if off else None, causal=causal)

    stages = {}
    jm = jit_compile(build_module(specs, body, [static] if static else None),
                     on_stage=lambda name, m: stages.setdefault(name, str(m)))
    assert 'kiln.kernel_class = "attention"' in stages["dispatch"]
    assert "_softmax" not in stages["dispatch"] and "_contraction" not in stages["dispatch"]
    return jm


# name: (b, heads, kv_heads, q_len, kv_len, head_dim, causal): query tiles of 32 rows (G x positions),
# key tiles of 32 (cpu.FLASH_*), so these cover whole and partial tiles of both.
FLASH = {
    "gqa_9_3_causal_five_query_tiles": (1, 9, 3, 40, 40, 16, True),
    "mha_whole_tiles": (2, 4, 4, 64, 64, 16, True),
    "gqa_noncausal_cross_q19_kv77": (1, 6, 2, 19, 77, 8, False),
    "mqa_8_1_partial_query_tile": (1, 8, 1, 5, 50, 32, True),
    # one sequence, one kv head, one query tile: a 1x1x1 grid, kept by its workgroup mapping
    "mqa_one_tile_grid_of_one": (1, 4, 1, 3, 40, 16, True),
    "odd_head_dim_13": (2, 6, 3, 21, 21, 13, True),
    "smollm2_heads_prefill": (1, 9, 3, 128, 128, 64, True),
}


@pytest.mark.parametrize("case", list(FLASH))
def test_flash_attention(rng, case):
    b, h, hkv, lq, lk, d, causal = FLASH[case]
    jm = flash_fn((b, h, lq, d), (b, hkv, lk, d), False, causal)
    q, k, v = qkv(rng, b, h, hkv, lq, lk, d)
    check(run(jm, q, k, v), ref.attention(q, k, v, causal=causal))


@functools.lru_cache(maxsize=None)
def merged_flash_fn(q_spec, kv_spec, causal):
    """attention, then merge_heads ([b, h, s, d] -> [b, s, h*d]); checks that the merge costs no
    kernel: the flash kernel writes its output position-major and the merge is a reshape."""
    from kiln.jit import jit_compile
    from reference import build_module

    def body(q, k, v):
        return transformer.merge_heads(transformer.attention(q, k, v, causal=causal))

    stages = {}
    jm = jit_compile(build_module([T(q_spec, "f32"), T(kv_spec, "f32"), T(kv_spec, "f32")], body),
                     on_stage=lambda name, m: stages.setdefault(name, str(m)))
    assert 'kiln.kernel_class = "attention"' in stages["dispatch"]
    assert 'kiln.kernel_class = "transpose"' not in stages["dispatch"]
    return jm


@pytest.mark.parametrize("case", ["gqa_9_3_causal_five_query_tiles", "gqa_noncausal_cross_q19_kv77",
                                  "mqa_8_1_partial_query_tile", "odd_head_dim_13", "mha_whole_tiles"])
def test_flash_attention_writes_merged_heads(rng, case):
    """The heads merged right after attention: [b, s, h*d] against float64, and bitwise the
    [b, h, s, d] kernel's output transposed (the same arithmetic, only written elsewhere)."""
    b, h, hkv, lq, lk, d, causal = FLASH[case]
    q, k, v = qkv(rng, b, h, hkv, lq, lk, d)
    out = run(merged_flash_fn((b, h, lq, d), (b, hkv, lk, d), causal), q, k, v)
    check(out, ref.merge_heads(ref.attention(q, k, v, causal=causal)))
    unmerged = run(flash_fn((b, h, lq, d), (b, hkv, lk, d), False, causal), q, k, v)
    np.testing.assert_array_equal(out, unmerged.transpose(0, 2, 1, 3).reshape(b, lq, h * d))


def test_flash_attention_large_scores_are_stable(rng):
    """Scores of ~1e3 across many key tiles: each tile's rescaling by e^(m - m') must keep the
    running sums finite and exact."""
    b, h, hkv, l, d = 1, 4, 2, 100, 16
    jm = flash_fn((b, h, l, d), (b, hkv, l, d), False, True)
    q, k, v = qkv(rng, b, h, hkv, l, l, d, magnitude=8.0)
    out = run(jm, q, k, v)
    assert np.all(np.isfinite(out))
    check(out, ref.attention(q, k, v, causal=True), scale=64.0)


@pytest.mark.parametrize("garbage", [np.nan, np.inf])
def test_flash_attention_chunk_at_cache_offset(rng, garbage):
    """A chunk of 10 queries (partial query tile) at runtime offsets into a 100-row cache whose rows
    past the chunk are unwritten: never read, so nothing non-finite reaches the result."""
    b, h, hkv, q_len, kv_len, d = 1, 9, 3, 10, 100, 16
    jm = flash_fn((b, h, q_len, d), (b, hkv, kv_len, d), True, True)
    check_future_rows_unread(jm, *qkv(rng, b, h, hkv, q_len, kv_len, d), [0, 13, 31, 54, 90], garbage)


def test_flash_attention_dynamic_lengths(rng):
    """q_len and kv_len dynamic (a prefill of any length): one compiled program, tiles padded at
    runtime, results into caller-provided buffers."""
    import kiln

    b, h, hkv, d = 1, 6, 2, 16
    q_t, kv_t = f"tensor<{b}x{h}x?x{d}xf32>", f"tensor<{b}x{hkv}x?x{d}xf32>"
    text = (f"func.func @f(%q: {q_t}, %k: {kv_t}, %v: {kv_t}) -> {q_t} {{\n"
            f"  %o = transformer.attention %q, %k, %v {{causal}} : ({q_t}, {kv_t}, {kv_t}) -> {q_t}\n"
            f"  return %o : {q_t}\n}}")
    assert 'kiln.kernel_class = "attention"' in kiln.compile(text, compile_to="dispatch")
    program = kiln.compile(text)
    for length in (1, 9, 32, 33, 70):
        q, k, v = qkv(rng, b, h, hkv, length, length, d)
        out = np.empty_like(q)
        program.f(q, k, v, out=[out])
        check(out, ref.attention(q, k, v, causal=True), err_msg=f"length {length}")


def test_flash_attention_every_tuning_candidate_is_correct(rng):
    """`kiln tune` may pick any candidate register tiling of the flash schedule: each must be exact."""
    import dataclasses
    import json

    import kiln
    from mlir import ir
    from kiln.pipelines import schedules

    b, h, hkv, l, d = 1, 6, 2, 40, 16
    q_t, kv_t = f"tensor<{b}x{h}x{l}x{d}xf32>", f"tensor<{b}x{hkv}x{l}x{d}xf32>"
    text = (f"func.func @f(%q: {q_t}, %k: {kv_t}, %v: {kv_t}) -> {q_t} {{\n"
            f"  %o = transformer.attention %q, %k, %v {{causal}} : ({q_t}, {kv_t}, {kv_t}) -> {q_t}\n"
            f"  return %o : {q_t}\n}}")
    dispatch = kiln.compile(text, compile_to="dispatch")
    with ir.Context():
        (kernel,) = [k for k in schedules.kernels_of(ir.Module.parse(dispatch)) if k.kernel_class == "attention"]
    assert kernel.tile_shape == (48, 32, 16)  # 16 positions x 3 heads per kv head
    candidates = schedules.candidates(kernel)
    assert candidates[0] == schedules.default_schedule(kernel) and len(candidates) > 1
    assert all(c.kind == "flash_attention" for c in candidates)
    q, k, v = qkv(rng, b, h, hkv, l, l, d)
    for sched in candidates:
        with ir.Context():
            module = ir.Module.parse(dispatch)
            func = next(op for op in module.body.operations if op.operation.name == "func.func"
                        and ir.StringAttr(op.attributes["sym_name"]).value == kernel.name)
            func.attributes["kiln.schedule"] = ir.StringAttr.get(json.dumps(dataclasses.asdict(sched)))
            program = kiln.compile(module, compile_from="dispatch")
        check(program.f(q, k, v)[0], ref.attention(q, k, v, causal=True), err_msg=str(sched))
