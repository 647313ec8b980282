"""Plain `nn.Module`s in the styles users write by hand: a Llama decoder block, a GPT-2 block, a BERT
layer and a small gated-MLP language model head. They are what the PyTorch frontend's tests, lit test
and timings compile, so they use odd sizes and every pattern the raising recognises (and some it
leaves to linalg, such as RoPE through slices and `cat`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ExplicitRMSNorm(nn.Module):
    """RMSNorm written out the way Llama's reference code does (pow, mean, rsqrt, mul)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaBlock(nn.Module):
    """Pre-norm decoder block: RMSNorm, RoPE from non-persistent cos/sin tables, grouped-query causal
    SDPA (enable_gqa, or K/V repeated first as Hugging Face's repeat_kv does), SwiGLU MLP.
    Input `[batch, seq, hidden]`."""

    def __init__(self, hidden=120, heads=6, kv_heads=2, ffn=328, max_seq=64, theta=10000.0, repeat_kv=False):
        super().__init__()
        self.repeat_kv = repeat_kv  # Hugging Face style: repeat K/V heads before a plain SDPA
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)
        self.gate_proj = nn.Linear(hidden, ffn, bias=False)
        self.up_proj = nn.Linear(hidden, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, hidden, bias=False)
        self.input_norm = ExplicitRMSNorm(hidden, eps=1e-5)
        self.post_attention_norm = nn.RMSNorm(hidden, eps=1e-5)
        inv_freq = 1.0 / theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim)
        angles = torch.outer(torch.arange(max_seq, dtype=torch.float32), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)

    def forward(self, x):
        b, s, _ = x.shape
        h = self.input_norm(x)
        q = self.q_proj(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.cos_cached[:s], self.sin_cached[:s]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.repeat_kv:
            n_rep = self.heads // self.kv_heads
            k, v = (t[:, :, None].expand(b, self.kv_heads, n_rep, s, self.head_dim)
                    .reshape(b, self.heads, s, self.head_dim) for t in (k, v))
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o_proj(attn.transpose(1, 2).reshape(b, s, -1))
        h = self.post_attention_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class GPT2Block(nn.Module):
    """Pre-LN GPT-2 block: fused QKV projection with bias, causal SDPA, GELU-tanh MLP."""

    def __init__(self, hidden=84, heads=6, ffn=None):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(hidden, eps=1e-5)
        self.c_attn = nn.Linear(hidden, 3 * hidden)
        self.c_proj = nn.Linear(hidden, hidden)
        self.ln_2 = nn.LayerNorm(hidden, eps=1e-5)
        self.c_fc = nn.Linear(hidden, ffn or 4 * hidden)
        self.mlp_proj = nn.Linear(ffn or 4 * hidden, hidden)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=-1)
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(attn.transpose(1, 2).reshape(b, s, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class BertLayer(nn.Module):
    """Post-LN BERT encoder layer: self-attention with an additive padding mask built from a 0/1
    attention mask `[batch, seq]`, exact GELU MLP."""

    def __init__(self, hidden=72, heads=4, ffn=200, eps=1e-12):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, ffn)
        self.output = nn.Linear(ffn, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x, attention_mask):
        b, s, d = x.shape
        split = lambda t: t.view(b, s, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        attn = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)),
                                              split(self.value(x)), attn_mask=mask)
        x = self.attn_norm(x + self.attn_out(attn.transpose(1, 2).reshape(b, s, d)))
        return self.out_norm(x + self.output(F.gelu(self.intermediate(x))))


class TinyGeGLULM(nn.Module):
    """Token ids -> embedding -> RMSNorm -> GELU-gated MLP (residual) -> explicit softmax attention-free
    head with tied-free logits: covers embedding, GeGLU and a softmax."""

    def __init__(self, vocab=97, hidden=56, ffn=150):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.norm = nn.RMSNorm(hidden, eps=1e-6)
        self.gate = nn.Linear(hidden, ffn, bias=False)
        self.up = nn.Linear(hidden, ffn, bias=False)
        self.down = nn.Linear(ffn, hidden, bias=False)
        self.head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, ids):
        h = self.embed(ids)
        n = self.norm(h)
        h = h + self.down(F.gelu(self.gate(n)) * self.up(n))
        return torch.softmax(self.head(h), dim=-1)


def seeded(module_cls, seed: int = 0, **kwargs) -> nn.Module:
    """`module_cls(**kwargs)` with fixed-seed random weights (norm gains and biases too, so a
    mis-bound parameter shows up numerically), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    module = module_cls(**kwargs)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen)) if "norm" in name or "ln" in name \
                    else p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
    return module.eval()


def _bert_inputs(gen, batch: int, seq: int, hidden: int):
    """Hidden states and a 0/1 padding mask: row b keeps its first seq - 2b positions."""
    lengths = torch.tensor([max(1, seq - 2 * b) for b in range(batch)])
    return torch.randn(batch, seq, hidden, generator=gen), (torch.arange(seq)[None, :] < lengths[:, None]).long()


def _measure(sizes: str = "small", threads: int = 0, reps: int = 21) -> None:
    """Compiles the three blocks, prints each one's max relative error against PyTorch in float64 on
    fresh random inputs and the median forward time of Kiln and of PyTorch eager (f32), measured
    alternately in this one process (`threads` > 0: both sides use that many threads)."""
    import copy
    import os
    import statistics
    import time

    import numpy as np

    if threads > 0:
        os.environ["KILN_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    print(f"sizes {sizes}, threads: kiln {os.environ.get('KILN_NUM_THREADS', 'default')}, "
          f"torch {torch.get_num_threads()}, median of {reps}")

    from .importer import compile_module

    big = sizes == "large"
    cases = [
        ("llama", LlamaBlock, dict(hidden=576, heads=9, kv_heads=3, ffn=1536, max_seq=256) if big else {},
         lambda g: (torch.randn(1 if big else 2, 128 if big else 13, 576 if big else 120, generator=g),)),
        ("gpt2", GPT2Block, dict(hidden=768, heads=12) if big else {},
         lambda g: (torch.randn(1 if big else 2, 128 if big else 11, 768 if big else 84, generator=g),)),
        ("bert", BertLayer, dict(hidden=384, heads=12, ffn=1536) if big else {},
         lambda g: _bert_inputs(g, *((2, 128, 384) if big else (3, 9, 72)))),
    ]
    for name, cls, kwargs, make in cases:
        module = seeded(cls, seed=7, **kwargs)
        gen = torch.Generator().manual_seed(11)
        start = time.perf_counter()
        compiled = compile_module(module, make(gen))
        compile_s = time.perf_counter() - start
        inputs = make(gen)  # fresh inputs, not the example ones
        ref = copy.deepcopy(module).double()
        with torch.no_grad():
            want = ref(*[t.double() if t.is_floating_point() else t for t in inputs]).numpy()
        got = compiled(*inputs)
        err = float(np.abs(got - want).max() / np.abs(want).max())
        arrays = [t.numpy() for t in inputs]
        kiln_t, torch_t = [], []
        with torch.no_grad():
            for _ in range(3):
                compiled(*arrays), module(*inputs)
            for _ in range(reps):
                t0 = time.perf_counter()
                compiled(*arrays)
                t1 = time.perf_counter()
                module(*inputs)
                t2 = time.perf_counter()
                kiln_t.append(t1 - t0)
                torch_t.append(t2 - t1)
        k, p = statistics.median(kiln_t) * 1e3, statistics.median(torch_t) * 1e3
        shapes = ", ".join("x".join(map(str, t.shape)) for t in inputs)
        print(f"{name:6s} inputs {shapes:22s} raised {len(compiled.raised):2d} ops  max rel err {err:.2e}  "
              f"kiln {k:8.3f} ms  torch eager {p:8.3f} ms  kiln/torch {k / p:5.2f}x  (compile {compile_s:.0f} s)")


if __name__ == "__main__":
    import sys

    # python -m kiln.frontends.torch.examples [small|large] [threads]
    _measure(sys.argv[1] if len(sys.argv) > 1 else "small", int(sys.argv[2]) if len(sys.argv) > 2 else 0)
