"""GPU flash attention (pipelines/gpu_flash.py) without a GPU: f32 attention is one kernel whose warps
walk the keys with an online softmax (a decode step's few rows split the keys into phases merged at
the end); run through the GPU runtime on the CPU emulation of the driver
(test/gpu_emulation.py), it matches float64 references for GQA, MHA and MQA, causal and not, at
runtime cache offsets (with NaN and inf in the cache rows no query sees), odd head dims and query
counts that leave warps and slots idle.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest

import kiln
from kiln import reference as ref
from kiln.pipelines import gpu_flash

sys.path.insert(0, os.path.dirname(__file__))
from gpu_emulation import emulated_device  # noqa: E402


def _attention(batch, heads, kv_heads, q_len, keys, dim, causal=True, offset=None):
    """IR of one attention; offset None: a runtime index argument %pos (a KV cache), else a constant."""
    q = f"tensor<{batch}x{heads}x{q_len}x{dim}xf32>"
    kv = f"tensor<{batch}x{kv_heads}x{keys}x{dim}xf32>"
    attrs = " {causal}" if causal else ""
    if offset is None:
        return (f"func.func @f(%q: {q}, %k: {kv}, %v: {kv}, %pos: index) -> {q} {{\n"
                f"  %o = transformer.attention %q, %k, %v offset(%pos){attrs} : ({q}, {kv}, {kv}, index) -> {q}\n"
                f"  return %o : {q}\n}}")
    return (f"func.func @f(%q: {q}, %k: {kv}, %v: {kv}) -> {q} {{\n  %off = arith.constant {offset} : index\n"
            f"  %o = transformer.attention %q, %k, %v offset(%off){attrs} : ({q}, {kv}, {kv}, index) -> {q}\n"
            f"  return %o : {q}\n}}")


def _program(text):
    loops = kiln.compile(text, target="cuda", compile_to="loops")
    device = emulated_device(loops)
    return kiln.runtime.load_artifact(kiln.compile(text, target="cuda"), device), device, loops


def _flash_params(text):
    """The kernel's [lanes per slot, keys per step, warps, slots per row] (`kiln.gpu_flash`)."""
    tiled = kiln.compile(text, target="cuda", compile_to="tiled")
    return tuple(map(int, re.search(gpu_flash.FLASH_ATTR + r" = array<i64: ([\d, ]+)>", tiled).group(1).split(", ")))


def _inputs(rng, batch, heads, kv_heads, q_len, keys, dim, scale=1.0):
    q = (rng.standard_normal((batch, heads, q_len, dim)) * scale).astype(np.float32)
    k = (rng.standard_normal((batch, kv_heads, keys, dim)) * scale).astype(np.float32)
    v = rng.standard_normal((batch, kv_heads, keys, dim)).astype(np.float32)
    return q, k, v


def _check(out, expected):
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-5 * max(1.0, np.abs(expected).max()))


def test_lanes_per_row_and_key_split():
    assert [gpu_flash.lanes_per_row(d) for d in (64, 128, 96, 32, 16, 13, 8, 256)] == [8, 16, 8, 4, 2, 1, 1, 32]
    # (head_dim, rows per kv head) -> (lanes per slot, slots per row): rows that fill a warp keep one
    # slot each; a decode step's few rows trade lanes (up to 32 dims per lane) for key phases
    cases = {(64, 1536): (8, 1), (64, 15): (8, 1), (64, 3): (2, 4), (64, 1): (4, 8), (13, 3): (1, 8),
             (128, 3): (16, 1), (16, 2): (2, 8)}
    assert {k: gpu_flash.split(*k) for k in cases} == cases


@pytest.mark.parametrize("batch,heads,kv_heads,q_len,keys,dim", [
    (1, 9, 3, 1, 40, 64),    # SmolLM2's decode step: 3 rows of 4 key phases (2 lanes each), merged
    (1, 9, 3, 5, 40, 64),    # a prefill chunk at an offset: 15 rows over 4 warps
    (2, 4, 1, 3, 24, 32),    # MQA, two batches: 12 rows, 8 slots per warp
    (1, 2, 2, 2, 20, 16),    # MHA, head_dim 16: 2 rows of 8 key phases
])
def test_kv_cache_attention_at_runtime_offsets(batch, heads, kv_heads, q_len, keys, dim, rng):
    """One program, several offsets; cache rows past offset + q_len hold NaN and inf, never read."""
    text = _attention(batch, heads, kv_heads, q_len, keys, dim)
    program, device, loops = _program(text)
    assert loops.count("gpu.func") == 1 and "gpu.shuffle  xor" in loops
    lanes, _, _, key_split = _flash_params(text)
    assert (lanes, key_split) == gpu_flash.split(dim, heads // kv_heads * q_len)
    for offset in sorted({0, 3, keys // 2, keys - q_len}):
        q, k, v = _inputs(rng, batch, heads, kv_heads, q_len, keys, dim)
        k[:, :, offset + q_len:], v[:, :, offset + q_len:] = np.nan, np.inf
        (out,) = program.f(q, k, v, offset)
        assert np.isfinite(out).all()
        _check(out, ref.attention(q, k, v, causal=True, offset=offset))


@pytest.mark.parametrize("batch,heads,kv_heads,q_len,keys,dim,causal,offset", [
    (1, 4, 2, 16, 16, 32, True, 0),      # a whole prompt: rows end at different keys
    (2, 3, 1, 7, 19, 13, False, 0),      # cross-attention, odd head_dim (a row per lane), keys % 8 != 0
    (1, 3, 1, 7, 19, 13, False, 0),      # MQA of one sequence: the flash form has one workgroup
    (2, 2, 2, 33, 45, 128, True, 12),    # head_dim 128 (16 lanes), a constant offset, a partial block
    (1, 8, 2, 4, 12, 64, False, 8),      # not causal: every key, whatever the offset
])
def test_attention_shapes(batch, heads, kv_heads, q_len, keys, dim, causal, offset, rng):
    program, device, _ = _program(_attention(batch, heads, kv_heads, q_len, keys, dim, causal, offset))
    q, k, v = _inputs(rng, batch, heads, kv_heads, q_len, keys, dim)
    (out,) = program.f(q, k, v)
    _check(out, ref.attention(q, k, v, causal=causal, offset=offset))
    assert len(device.gpu.launches) == 1


def test_large_scores_across_steps(rng):
    """Scores of ~1e3 whose maximum moves between key steps: the running max rescales exactly."""
    program, _, _ = _program(_attention(1, 2, 1, 6, 30, 32, True, 24))
    q, k, v = _inputs(rng, 1, 2, 1, 6, 30, 32, scale=6.0)
    k[:, :, 20] *= 3.0  # a late key that dominates
    (out,) = program.f(q, k, v)
    _check(out, ref.attention(q, k, v, causal=True, offset=24))


def test_masked_and_low_precision_attention_stay_decomposed():
    """A mask (BERT's padding) keeps the decomposed kernels; so does a mask-free bf16 GEMM precision
    for everything but the attention, which stays one flash kernel."""
    q, m = "tensor<1x2x8x16xf32>", "tensor<1x1x8x8xf32>"
    masked = (f"func.func @f(%q: {q}, %k: {q}, %v: {q}, %m: {m}) -> {q} {{\n"
              f"  %o = transformer.attention %q, %k, %v mask(%m) : ({q}, {q}, {q}, {m}) -> {q}\n"
              f"  return %o : {q}\n}}")
    tiled = kiln.compile(masked, target="cuda", compile_to="tiled")
    assert gpu_flash.FLASH_ATTR not in tiled and 'kiln.kernel_class = "contraction"' in tiled
    tiled = kiln.compile(_attention(1, 4, 2, 4, 8, 16), target="cuda", compile_to="tiled", precision="bf16")
    assert tiled.count(gpu_flash.FLASH_ATTR + " = ") == 1


def _prefill_block(heads, kv_heads, q_len, cache, dim):
    """Projections -> heads -> KV caches at a runtime offset -> attention -> merged heads."""
    x = lambda n: f"tensor<1x{q_len}x{n * dim}xf32>"  # noqa: E731
    h = lambda n, s: f"tensor<1x{n}x{s}x{dim}xf32>"  # noqa: E731
    c = h(kv_heads, cache)
    return "\n".join([
        f"func.func @f(%q: {x(heads)}, %k: {x(kv_heads)}, %v: {x(kv_heads)}, %kc: {c}, %vc: {c}, %pos: index)",
        f"    -> ({x(heads)}, {c} {{kiln.updates_arg = 3 : i64}}, {c} {{kiln.updates_arg = 4 : i64}}) {{",
        f"  %qh = transformer.split_heads %q {{num_heads = {heads} : i64}} : {x(heads)} -> {h(heads, q_len)}",
        f"  %kh = transformer.split_heads %k {{num_heads = {kv_heads} : i64}} : {x(kv_heads)} -> {h(kv_heads, q_len)}",
        f"  %vh = transformer.split_heads %v {{num_heads = {kv_heads} : i64}} : {x(kv_heads)} -> {h(kv_heads, q_len)}",
        f"  %kc2 = transformer.kv_cache_update %kc, %kh at %pos : {c}, {h(kv_heads, q_len)} -> {c}",
        f"  %vc2 = transformer.kv_cache_update %vc, %vh at %pos : {c}, {h(kv_heads, q_len)} -> {c}",
        f"  %o = transformer.attention %qh, %kc2, %vc2 offset(%pos) {{causal}} : ({h(heads, q_len)}, {c}, {c}, index)"
        f" -> {h(heads, q_len)}",
        f"  %m = transformer.merge_heads %o : {h(heads, q_len)} -> {x(heads)}",
        f"  return %m, %kc2, %vc2 : {x(heads)}, {c}, {c}",
        "}",
    ])


def test_prefill_block_splits_and_merges_heads_without_kernels(rng):
    """A prefill chunk at runtime offsets: the cache updates read K and V from the projections at
    permuted indices (their split_heads transposes fold into the copies, copy_views.py), and
    attention writes [b, s, h, d] (merge_heads is a reshape). Launches: q's split (attention reads
    it) and the two cache updates, independent, in one launch (launch_merging.py), attention.
    Output and caches match float64 (the caches exactly), on the emulated GPU and on the CPU."""
    from collections import Counter

    heads, kv_heads, q_len, cache, dim = 9, 3, 5, 24, 16
    text = _prefill_block(heads, kv_heads, q_len, cache, dim)
    program, device, _ = _program(text)
    art = kiln.compile(text, target="cuda")
    classes = {k["name"]: k["class"] for k in art.manifest["kernels"]}
    launched = Counter(classes[c["kernel"]] for c in art.manifest["programs"]["f"]["commands"] if c["op"] == "launch")
    assert launched == Counter({"transpose+copy+copy": 1, "attention": 1}), launched
    cpu = kiln.compile(text)
    for pos in (0, 7, cache - q_len):
        q = rng.standard_normal((1, q_len, heads * dim)).astype(np.float32)
        k, v = (rng.standard_normal((1, q_len, kv_heads * dim)).astype(np.float32) for _ in range(2))
        kc, vc = (rng.standard_normal((1, kv_heads, cache, dim)).astype(np.float32) for _ in range(2))
        want_k, want_v = kc.copy(), vc.copy()
        want_k[:, :, pos:pos + q_len] = ref.split_heads(k, kv_heads)
        want_v[:, :, pos:pos + q_len] = ref.split_heads(v, kv_heads)
        expected = ref.merge_heads(ref.attention(ref.split_heads(q, heads), np.repeat(want_k, 3, axis=1),
                                                 np.repeat(want_v, 3, axis=1), causal=True, offset=pos))
        out, got_k, got_v = program.f(q, k, v, kc.copy(), vc.copy(), pos)
        _check(out, expected)
        np.testing.assert_array_equal(got_k, want_k)
        np.testing.assert_array_equal(got_v, want_v)
        cpu_out, cpu_k, cpu_v = cpu.f(q, k, v, kc.copy(), vc.copy(), pos)
        _check(cpu_out, expected)
        np.testing.assert_array_equal(cpu_k, want_k)
        np.testing.assert_array_equal(cpu_v, want_v)
