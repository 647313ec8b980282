"""The benchmark workloads: each one a Kiln program (transformer IR) plus the same computation for the
peers (numpy, PyTorch eager, onnxruntime, IREE). Inputs are made from a seed, so every process builds identical
ones.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .iree_peer import iree_peer
from .onnx_peer import onnxruntime_peer


@dataclass
class Workload:
    name: str
    group: str  # gemm, matvec, attention, norm, block
    flops: float
    make_inputs: Callable[[np.random.Generator], list]
    kiln_ir: Callable[[], str]  # a module with one public function @f over the inputs
    peers: dict = field(default_factory=dict)  # peer name -> function(inputs) -> callable()
    # The inputs in the layout @f takes them, prepared once before timing, as compile_model does at
    # load (linear weights packed into the GEMM's panels); None: the inputs as they are.
    kiln_inputs: Optional[Callable[[list], list]] = None


def _t(shape, dtype="f32"):
    return "tensor<" + "x".join(map(str, shape)) + "x" + dtype + ">"


def _f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def gemm(m: int, n: int, k: int, dtype: str = "f32") -> Workload:
    """C[m, n] = A[m, k] @ B[k, n] (transformer.matmul) on f32 tensors, or on bf16/f16 ones (`dtype`;
    summed in f32, C rounded once: GPU suites only, no CPU peers)."""
    from ..signature import numpy_dtype

    def ir():
        a, b, c = _t((m, k), dtype), _t((k, n), dtype), _t((m, n), dtype)
        return (f"func.func @f(%a: {a}, %b: {b}) -> {c} {{\n"
                f"  %c = transformer.matmul %a, %b : ({a}, {b}) -> {c}\n  return %c : {c}\n}}")

    if dtype != "f32":
        return Workload(f"gemm_{m}x{n}x{k}_{dtype}", "gemm", 2.0 * m * n * k,
                        lambda rng: [x.astype(numpy_dtype(dtype)) for x in (_f32(rng, m, k), _f32(rng, k, n))], ir)
    return Workload(
        f"gemm_{m}x{n}x{k}", "gemm", 2.0 * m * n * k,
        lambda rng: [_f32(rng, m, k), _f32(rng, k, n)], ir,
        {"numpy": lambda i: (lambda: i[0] @ i[1]), **_torch_peers(lambda t, i: t.matmul, feeds=(0, 1))},
    )


def linear(m: int, out_features: int, in_features: int, panels: bool = False) -> Workload:
    """y[m, n] = x[m, k] · W[n, k]ᵀ (transformer.linear, HF weight layout); m = 1 is a decode matvec.
    With `panels` (CPU suites), GEMM-shaped ones (m >= 16, N a multiple of 32) take W as the [N/32, K, 32]
    panels compile_model binds at load."""
    from ..params import PANEL, QUANTIZED_MAX_ROWS, to_panels

    panels = panels and m >= QUANTIZED_MAX_ROWS and out_features % PANEL == 0

    def ir():
        x, w, y = _t((m, in_features)), _t((out_features, in_features)), _t((m, out_features))
        if not panels:
            return (f"func.func @f(%x: {x}, %w: {w}) -> {y} {{\n"
                    f"  %y = transformer.linear %x, %w : ({x}, {w}) -> {y}\n  return %y : {y}\n}}")
        p = _t((out_features // PANEL, in_features, PANEL))
        return (f"func.func @f(%x: {x}, %p: {p}) -> {y} {{\n"
                f"  %e = tensor.empty() : {w}\n"
                f"  %w = linalg.unpack %p inner_dims_pos = [0] inner_tiles = [{PANEL}] into %e : {p} -> {w}\n"
                f"  %y = transformer.linear %x, %w : ({x}, {w}) -> {y}\n  return %y : {y}\n}}")

    group = "matvec" if m == 1 else "gemm"
    return Workload(
        f"linear_{m}x{out_features}x{in_features}", group, 2.0 * m * out_features * in_features,
        lambda rng: [_f32(rng, m, in_features), _f32(rng, out_features, in_features, scale=0.05)], ir,
        {"numpy": lambda i: (lambda: i[0] @ i[1].T),
         **_torch_peers(lambda t, i: lambda x: t.nn.functional.linear(x, i[1]), feeds=(0,))},
        kiln_inputs=(lambda i: [i[0], to_panels(i[1], PANEL, "w")]) if panels else None,
    )


def attention(heads: int, kv_heads: int, q_len: int, kv_len: int, head_dim: int) -> Workload:
    """Causal GQA attention; q_len 1 with kv_len > 1 is a decode step at the last cache position."""
    offset = kv_len - q_len
    q_t, kv_t = _t((1, heads, q_len, head_dim)), _t((1, kv_heads, kv_len, head_dim))

    def ir():
        return (f"func.func @f(%q: {q_t}, %k: {kv_t}, %v: {kv_t}) -> {q_t} {{\n"
                f"  %off = arith.constant {offset} : index\n"
                f"  %o = transformer.attention %q, %k, %v offset(%off) {{causal}} "
                f": ({q_t}, {kv_t}, {kv_t}, index) -> {q_t}\n  return %o : {q_t}\n}}")

    def numpy_attention(i):
        q, k, v = i
        group = heads // kv_heads
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        mask = np.where(np.arange(kv_len)[None, :] > np.arange(q_len)[:, None] + offset, -np.inf, 0.0)
        mask = mask.astype(np.float32)

        def run():
            s = q @ np.swapaxes(k, -1, -2) * np.float32(1 / math.sqrt(head_dim)) + mask
            e = np.exp(s - s.max(-1, keepdims=True))
            return (e / e.sum(-1, keepdims=True)) @ v

        return run

    def torch_attention(t, i):
        mask = t.from_numpy(np.arange(kv_len)[None, :] <= np.arange(q_len)[:, None] + offset)
        return lambda q, k, v: t.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                            enable_gqa=True)

    name = "decode" if q_len == 1 else "prefill"
    return Workload(
        f"attention_{name}_h{heads}kv{kv_heads}_q{q_len}_kv{kv_len}_d{head_dim}", "attention",
        4.0 * heads * q_len * kv_len * head_dim,
        lambda rng: [_f32(rng, 1, heads, q_len, head_dim), _f32(rng, 1, kv_heads, kv_len, head_dim),
                     _f32(rng, 1, kv_heads, kv_len, head_dim)],
        ir, {"numpy": numpy_attention, **_torch_peers(torch_attention, feeds=(0, 1, 2))},
    )


def rms_norm(rows: int, hidden: int, eps: float = 1e-5) -> Workload:
    def ir():
        x, w = _t((rows, hidden)), _t((hidden,))
        return (f"func.func @f(%x: {x}, %w: {w}) -> {x} {{\n"
                f"  %y = transformer.rms_norm %x, %w {{eps = {eps:e} : f64}} : ({x}, {w}) -> {x}\n"
                f"  return %y : {x}\n}}")

    def numpy_rms(i):
        x, w = i
        return lambda: x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * w

    def torch_rms(t, i):
        return lambda x: t.nn.functional.rms_norm(x, (hidden,), i[1], eps)

    return Workload(f"rms_norm_{rows}x{hidden}", "norm", 4.0 * rows * hidden,
                    lambda rng: [_f32(rng, rows, hidden), _f32(rng, hidden)], ir,
                    {"numpy": numpy_rms, **_torch_peers(torch_rms, feeds=(0,))})


def llama_block(num_layers=4, hidden=512, heads=8, kv_heads=8, ffn=1376, seq=128, panels: bool = False) -> Workload:
    """A Llama-style decoder stack (kiln.examples) vs the same blocks in PyTorch eager."""
    from ..examples import LlamaStackConfig
    from ..params import QUANTIZED_MAX_ROWS

    cfg = LlamaStackConfig(hidden=hidden, num_heads=heads, num_kv_heads=kv_heads, ffn=ffn, seq=seq,
                           num_layers=num_layers)

    # Prefill-sized GEMMs read weights as packed at load, as compile_model binds them.
    panels = panels and seq >= QUANTIZED_MAX_ROWS

    def make_inputs(rng):
        from ..examples import flat_weights, random_stack_inputs

        x, positions, layers = random_stack_inputs(cfg, rng)
        return [x, positions, *flat_weights(layers)]

    def ir():
        from mlir import ir as mlir_ir

        from ..examples import build_llama_stack

        with mlir_ir.Context(), mlir_ir.Location.unknown():
            text = str(build_llama_stack(cfg, panels=panels))
        return text.replace("@forward", "@f")

    def kiln_inputs(inputs):
        from ..examples import stored_weights

        x, positions, *weights = inputs
        return [x, positions, *stored_weights(weights, panels)]

    per_layer = 2 * seq * (2 * hidden * hidden + 2 * hidden * kv_heads * (hidden // heads) + 3 * hidden * ffn)
    return Workload(f"llama_block_{num_layers}L_h{hidden}_s{seq}", "block", float(num_layers * per_layer),
                    make_inputs, ir, _torch_peers(lambda t, i: _torch_llama(t, cfg, i[2:]), feeds=(0, 1)),
                    kiln_inputs=kiln_inputs)


def _torch_llama(torch, cfg, weights):
    """forward(x, positions) of the stack; RoPE's cos/sin are computed per call, as Kiln does."""
    F = torch.nn.functional
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))

    def rope(t, cos, sin):
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + cfg.eps) * w

    def heads(t, n):
        return t.view(cfg.batch, cfg.seq, n, d).transpose(1, 2)

    def forward(x, positions):
        angles = positions.float()[:, None] * inv_freq[None, :]
        cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
        h = x
        for layer in range(cfg.num_layers):
            an, wq, wk, wv, wo, mn, wg, wu, wd = weights[layer * 9 : (layer + 1) * 9]
            n = rms(h, an)
            q, k, v = heads(F.linear(n, wq), cfg.num_heads), heads(F.linear(n, wk), cfg.num_kv_heads), \
                heads(F.linear(n, wv), cfg.num_kv_heads)
            o = F.scaled_dot_product_attention(rope(q, cos, sin), rope(k, cos, sin), v, is_causal=True,
                                               enable_gqa=True)
            h = h + F.linear(o.transpose(1, 2).reshape(cfg.batch, cfg.seq, cfg.hidden), wo)
            n = rms(h, mn)
            h = h + F.linear(F.silu(F.linear(n, wg)) * F.linear(n, wu), wd)
        return h

    return forward


def _torch_peers(make, feeds):
    """The PyTorch eager peer and the onnxruntime and IREE peers (the same computation, exported to ONNX).

    make(torch, tensors) -> forward(*activations): the computation over the inputs at `feeds`, with the
    other inputs (weights, which onnxruntime and IREE hold as initializers) closed over.
    """

    def torch_peer(inputs):
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
        return functools.partial(make(torch, tensors), *[tensors[i] for i in feeds])

    return {"torch": torch_peer, "onnxruntime": onnxruntime_peer(make, feeds), "iree": iree_peer(make, feeds)}


def suite(name: str) -> list:
    """The workloads of a named suite: `full` (the issue's list) or `smoke` (tiny, for tests). CPU
    suites: prefill-sized linears read weights packed at load (`panels`)."""
    if name == "smoke":
        return [gemm(64, 48, 32), linear(1, 96, 64), linear(16, 64, 48, panels=True), attention(4, 2, 8, 8, 16),
                rms_norm(8, 64), llama_block(num_layers=1, hidden=64, heads=4, kv_heads=2, ffn=96, seq=16, panels=True)]
    if name == "full":
        return [
            gemm(1024, 1024, 1024),
            linear(128, 1536, 576, panels=True), linear(512, 1536, 576, panels=True),
            linear(2048, 1536, 576, panels=True), linear(128, 4096, 4096, panels=True),
            linear(1, 4096, 4096), linear(1, 1536, 576), linear(1, 576, 1536),
            attention(9, 3, 128, 128, 64), attention(9, 3, 1, 512, 64),
            rms_norm(128, 4096),
            llama_block(panels=True),
        ]
    from ..errors import KilnError

    raise KilnError(f"unknown benchmark suite '{name}'; suites: full, smoke")
