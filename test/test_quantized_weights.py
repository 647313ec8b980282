"""Weights kept in GGUF's block formats (Q4_0, Q4_1, Q8_0) and dequantized inside the kernels.

`transformer.dequantize` must give exactly the float32 values the `gguf` package's numpy dequantizer
gives; a decode-shaped linear over it (fused: one kernel reading the blocks) must match a float64
product with those weights, on the CPU and on GPU targets (the dequantized matvec of
pipelines/gpu_matvec.py, run on the CPU emulation of the driver, test/gpu_emulation.py); and a GGUF
model compiled with `quantized_weights` must generate the same tokens as the same model dequantized
to float32 at load, on the CPU and on the emulated GPU (with as many launches per decode step).
"""

import os
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import kiln  # noqa: E402
from kiln.errors import KilnError  # noqa: E402
from kiln.loaders import load_checkpoint  # noqa: E402
from kiln import reference as ref  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from gpu_emulation import emulated_device  # noqa: E402

FORMATS = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0,
           "q4_1": gguf.GGMLQuantizationType.Q4_1}


def _ty(shape, elt):
    return f"tensor<{'x'.join(map(str, shape))}x{elt}>"


def _random_blocks(rng, fmt, n, k):
    """Random raw GGUF blocks for an [n, k] weight: (data, scales, mins or None, gguf's float32 weight)."""
    nb = k // 32
    data = rng.integers(-128, 128, (n, nb, 32 if fmt == "q8_0" else 16), dtype=np.int8)
    scales = (rng.standard_normal((n, nb)) * 0.02).astype(np.float16)
    mins = (rng.standard_normal((n, nb)) * 0.02).astype(np.float16) if fmt == "q4_1" else None
    parts = [scales.view(np.uint8).reshape(n, nb, 2)]
    if mins is not None:
        parts.append(mins.view(np.uint8).reshape(n, nb, 2))
    raw = np.concatenate(parts + [data.view(np.uint8)], axis=2).reshape(n, -1)
    return data, scales, mins, gguf.quants.dequantize(raw, FORMATS[fmt]).astype(np.float32)


def _program(fmt, lead, n, k, bias=False):
    """@dequantize (the weight alone) and @linear (x[lead.., k] by that weight, optionally + bias)."""
    nb = k // 32
    qs = _ty((n, nb, 32 if fmt == "q8_0" else 16), "i8")
    sc = _ty((n, nb), "f16")
    q_args = f"%qs: {qs}, %d: {sc}" + (f", %m: {sc}" if fmt == "q4_1" else "")
    q_vals = "%qs, %d" + (", %m" if fmt == "q4_1" else "")
    q_types = f"{qs}, {sc}" + (f", {sc}" if fmt == "q4_1" else "")
    w = _ty((n, k), "f32")
    deq = f'%w = transformer.dequantize {q_vals} {{format = "{fmt}"}} : ({q_types}) -> {w}'
    x, y, b = _ty((*lead, k), "f32"), _ty((*lead, n), "f32"), _ty((n,), "f32")
    bias_arg, bias_val, bias_ty = (f", %b: {b}", ", %b", f", {b}") if bias else ("", "", "")
    return f"""
func.func @dequantize({q_args}) -> {w} {{
  {deq}
  return %w : {w}
}}
func.func @linear(%x: {x}, {q_args}{bias_arg}) -> {y} {{
  {deq}
  %y = transformer.linear %x, %w{bias_val} : ({x}, {w}{bias_ty}) -> {y}
  return %y : {y}
}}"""


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("lead,n,k,bias", [((1, 1), 48, 64, False),  # a decode step
                                           ((2, 3), 40, 96, True),  # 6 rows: still the fused kernel
                                           ((20,), 24, 64, False)])  # 20 rows: dequantized, then a GEMM
def test_dequantize_and_linear_match_gguf_and_float64(fmt, lead, n, k, bias, rng):
    data, scales, mins, weight = _random_blocks(rng, fmt, n, k)
    program = kiln.compile(_program(fmt, lead, n, k, bias), target="cpu")
    quantized = [data, scales] + ([mins] if mins is not None else [])
    (dequantized,) = program.dequantize(*quantized)
    np.testing.assert_array_equal(dequantized, weight)  # bit for bit
    _check_linear(program, quantized, weight, lead, bias, rng, 1e-5)


def _check_linear(program, quantized, weight, lead, bias, rng, tolerance) -> None:
    """`program.linear` on fresh random x (and bias) against the float64 product with `weight`."""
    n, k = weight.shape
    x = rng.standard_normal((*lead, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    (got,) = program.linear(x, *quantized, *([b] if bias else []))
    want = x.astype(np.float64) @ weight.astype(np.float64).T + (b if bias else 0)
    assert got.shape == want.shape
    assert np.abs(got - want).max() / np.abs(want).max() < tolerance


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("lead,n,k,bias", [((1, 1), 48, 64, False),  # 2 blocks a row: lanes 2-31 idle
                                           ((2, 3), 40, 96, True),  # 6 rows of x: a block grid over them
                                           ((1,), 36, 1536, False)])  # 48 blocks: lanes 0-15 take two
def test_gpu_dequantized_matvec_matches_gguf_and_float64(fmt, lead, n, k, bias, rng):
    """On GPU targets the decode linear is one launch of the dequantized matvec (a warp per row of
    blocks; the bias is the output's start, filled before it), reading the blocks as stored."""
    data, scales, mins, weight = _random_blocks(rng, fmt, n, k)
    text = _program(fmt, lead, n, k, bias)
    loops = kiln.compile(text, target="cuda", compile_to="loops")
    assert loops.count("gpu.shuffle  xor") == 5
    assert "memref.copy" not in loops.split("func.func @linear")[1]  # x's halves are read in place
    device = emulated_device(loops)
    program = kiln.runtime.load_artifact(kiln.compile(text, target="cuda"), device)
    quantized = [data, scales] + ([mins] if mins is not None else [])
    _check_linear(program, quantized, weight, lead, bias, rng, 1e-6)
    assert device.gpu.launches[-1][2] == (128, 1, 1)  # 4 warps: 4 rows of W a block


def test_gpu_norm_and_residual_fuse_into_the_dequantized_matvec(rng):
    """h + RMSNorm(h)·Wᵀ with W in Q4_1 blocks: the norm's scaling is computed as the matvec reads
    x (through x's [.., K/32, 2, 16] view) and the residual is its accumulator's start, so a decode
    step runs the norm's sum and one matvec: 2 launches, against float64."""
    n = k = 96
    data, scales, mins, weight = _random_blocks(rng, "q4_1", n, k)
    h, g = _ty((1, 1, k), "f32"), _ty((k,), "f32")
    qs, sc = _ty((n, k // 32, 16), "i8"), _ty((n, k // 32), "f16")
    text = f"""
func.func @f(%h: {h}, %g: {g}, %qs: {qs}, %d: {sc}, %m: {sc}) -> {h} {{
  %x = transformer.rms_norm %h, %g {{eps = 1.0e-5 : f64}} : ({h}, {g}) -> {h}
  %w = transformer.dequantize %qs, %d, %m {{format = "q4_1"}} : ({qs}, {sc}, {sc}) -> {_ty((n, k), "f32")}
  %y = transformer.linear %x, %w : ({h}, {_ty((n, k), "f32")}) -> {h}
  %r = arith.addf %h, %y : {h}
  return %r : {h}
}}"""
    device = emulated_device(kiln.compile(text, target="cuda", compile_to="loops"))
    program = kiln.runtime.load_artifact(kiln.compile(text, target="cuda"), device)
    x = rng.standard_normal((1, 1, k)).astype(np.float32)
    gamma = (1 + 0.1 * rng.standard_normal(k)).astype(np.float32)
    (got,) = program.f(x, gamma, data, scales, mins)
    want = x + ref.rms_norm(x.astype(np.float64), gamma, eps=1e-5) @ weight.astype(np.float64).T
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5
    assert len(device.gpu.launches) == 2


def test_decode_linear_reads_the_blocks_in_one_kernel():
    ir = kiln.compile(_program("q4_1", (1, 1), 1536, 576), target="cpu", compile_to="tiled")
    linear_kernels = [line for line in ir.splitlines() if "func.func private @linear_dispatch" in line]
    assert len(linear_kernels) == 1 and "xi8>" in linear_kernels[0] and "1536x576xf32" not in linear_kernels[0]
    assert "vector<16xf32>" in ir and "vector.reduction <add>" in ir


# ----------------------------------------------------------------------------------------------
# A tiny Llama stored as GGUF blocks
# ----------------------------------------------------------------------------------------------

HIDDEN, FFN, HEADS, KV_HEADS, VOCAB, LAYERS = 64, 96, 4, 2, 97, 2


def _permute(w, n_head):
    """llama.cpp's Q/K row order (what its converter writes)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_tiny_llama(path, rng, weight_type="Q4_1"):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny quantized llama")
    w.add_block_count(LAYERS)
    w.add_context_length(128)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(VOCAB)
    kv = HIDDEN * KV_HEADS // HEADS

    def quantized(name, shape, qtype, permute_heads=None):
        array = (rng.standard_normal(shape) * 0.2).astype(np.float32)
        if permute_heads:
            array = _permute(array, permute_heads)
        t = gguf.GGMLQuantizationType[qtype]
        w.add_tensor(name, gguf.quants.quantize(array, t), raw_dtype=t)

    def norm(name):
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))

    quantized("token_embd.weight", (VOCAB, HIDDEN), "Q8_0")  # the tied output head too
    for i in range(LAYERS):
        norm(f"blk.{i}.attn_norm.weight")
        quantized(f"blk.{i}.attn_q.weight", (HIDDEN, HIDDEN), weight_type, HEADS)
        quantized(f"blk.{i}.attn_k.weight", (kv, HIDDEN), weight_type, KV_HEADS)
        quantized(f"blk.{i}.attn_v.weight", (kv, HIDDEN), weight_type)
        quantized(f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN), weight_type)
        norm(f"blk.{i}.ffn_norm.weight")
        quantized(f"blk.{i}.ffn_gate.weight", (FFN, HIDDEN), weight_type)
        quantized(f"blk.{i}.ffn_up.weight", (FFN, HIDDEN), weight_type)
        quantized(f"blk.{i}.ffn_down.weight", (HIDDEN, FFN), weight_type)
    norm("output_norm.weight")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module", params=["Q4_1", "Q4_0"])
def tiny_gguf(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / f"tiny-{request.param}.gguf"
    _write_tiny_llama(path, np.random.default_rng(7), request.param)
    return str(path)


def test_checkpoint_blocks_are_the_dequantized_tensor(tiny_gguf):
    ckpt = load_checkpoint(tiny_gguf)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                 "model.layers.0.mlp.down_proj.weight", "model.embed_tokens.weight"):
        blocks = ckpt.blocks(name)
        d = blocks.scales.astype(np.float32)[:, :, None]
        if blocks.format == "q8_0":
            w = d * blocks.data.astype(np.float32)
        else:
            u = blocks.data.view(np.uint8)
            q = np.concatenate([u & 15, u >> 4], axis=2).astype(np.float32)
            w = d * q + blocks.mins.astype(np.float32)[:, :, None] if blocks.format == "q4_1" else d * (q - 8)
        np.testing.assert_array_equal(w.reshape(ckpt.shape(name)), ckpt.tensor(name))  # Q/K rows un-permuted
    assert ckpt.blocks("model.norm.weight") is None  # stored as F32


def test_quantized_decode_generates_like_float32_weights(tiny_gguf, rng):
    quantized = kiln.compile_model(tiny_gguf, max_seq_len=64, prefill_chunk=16, cache=False, progress=False)
    dense = kiln.compile_model(tiny_gguf, max_seq_len=64, prefill_chunk=16, cache=False, progress=False,
                               quantized_weights=False)
    params = {p.name: p for p in quantized.graph.params}
    assert params["layers.0.wq.data"].dtype == np.int8 and params["lm_head.data"].shape == (VOCAB, 2, 32)
    assert not any(name.endswith(".data") for name in (p.name for p in dense.graph.params))
    # A decode step reads 4.5-8.5 bits per linear weight instead of 32.
    assert quantized.weight_bytes_per_token < dense.weight_bytes_per_token / 3
    prompt = rng.integers(3, VOCAB, size=13)
    a = quantized.generate(prompt, max_new_tokens=24)
    b = dense.generate(prompt, max_new_tokens=24)
    assert a.ids == b.ids and len(a.ids) == 24
    # Decode-step logits (the quantized kernels) against the float32 weights' logits.
    for model in (quantized, dense):
        model._reset_cache()
        model._prefill(list(prompt))
    for position, token in enumerate(a.ids[:6], start=len(prompt)):
        got, want = quantized._decode(token, position), dense._decode(token, position)
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


def test_quantized_decode_on_gpu_generates_like_float32_weights(tiny_gguf, rng):
    """The tiny GGUF Llama on the emulated cuda driver: decode steps read the blocks (6x fewer weight
    bytes) in as many launches as with float32 weights, and generate the same tokens."""
    from kiln import model as kiln_model

    models = {}
    for quantized in (True, False):
        text = kiln_model.model_ir(tiny_gguf, max_seq_len=64, prefill_chunk=16, quantized_weights=quantized,
                                   target="cuda")
        device = emulated_device(kiln.compile(text, target="cuda", compile_to="loops"))
        models[quantized] = (kiln.compile_model(tiny_gguf, target="cuda", device=device, max_seq_len=64,
                                                prefill_chunk=16, cache=False, progress=False,
                                                quantized_weights=quantized), device)
    quantized, dense = models[True][0], models[False][0]
    assert quantized.weight_bytes_per_token < dense.weight_bytes_per_token / 3
    prompt = rng.integers(3, VOCAB, size=13)
    launches = []
    for model, device in models.values():
        model.generate(prompt, max_new_tokens=2)
        before = len(device.gpu.launches)
        model._decode(int(prompt[0]), len(prompt) + 2)
        launches.append(len(device.gpu.launches) - before)
    assert launches[0] == launches[1] > 0
    a = quantized.generate(prompt, max_new_tokens=12)
    b = dense.generate(prompt, max_new_tokens=12)
    assert a.ids == b.ids and len(set(a.ids)) > 3


def test_blocks_needed_but_not_stored_is_an_error():
    from kiln.params import Param

    param = Param("layers.0.wq.data", "model.layers.0.self_attn.q_proj.weight", (64, 2, 16), part="data")
    with pytest.raises(KilnError, match="not stored in quantized blocks"):
        param.bind(lambda name: np.zeros((64, 64), np.float32), lambda name: None)
