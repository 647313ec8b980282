"""The embedded default job of `make run`: a Llama-style decoder block, end to end.

Builds the block in the `transformer` dialect from Python (weights are function arguments, as in a
compiled model), compiles it stage by stage to a CPU artifact, runs it with Kiln's runtime on random
inputs and compares the result with the float64 numpy reference in `kiln.reference`.

    python -m kiln.demo [--seq 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from mlir import ir
from mlir.dialects import arith, func

from . import reference as ref
from .dialects import transformer
from .compiler import compile as kiln_compile
from .pipelines import STAGES


@dataclass(frozen=True)
class LlamaBlockConfig:
    """Shapes of one decoder block (defaults: a small GQA block like SmolLM's, scaled down)."""

    hidden: int = 256
    num_heads: int = 8
    num_kv_heads: int = 2
    ffn: int = 704
    seq: int = 32
    batch: int = 1
    rope_theta: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads

    def weight_shapes(self) -> dict:
        kv = self.num_kv_heads * self.head_dim
        return {
            "attn_norm": (self.hidden,),
            "wq": (self.hidden, self.hidden),
            "wk": (kv, self.hidden),
            "wv": (kv, self.hidden),
            "wo": (self.hidden, self.hidden),
            "mlp_norm": (self.hidden,),
            "w_gate": (self.ffn, self.hidden),
            "w_up": (self.ffn, self.hidden),
            "w_down": (self.hidden, self.ffn),
        }


def build_llama_block(cfg: LlamaBlockConfig) -> ir.Module:
    """`@block(x, positions, *weights) -> y` in the transformer dialect (in the current Context)."""
    f32 = ir.F32Type.get()
    x_type = ir.RankedTensorType.get((cfg.batch, cfg.seq, cfg.hidden), f32)
    pos_type = ir.RankedTensorType.get((cfg.seq,), ir.IntegerType.get_signless(64))
    weight_types = [ir.RankedTensorType.get(s, f32) for s in cfg.weight_shapes().values()]
    module = ir.Module.create()
    with ir.InsertionPoint(module.body):

        @func.FuncOp.from_py_func(x_type, pos_type, *weight_types, name="block")
        def block(x, positions, attn_norm, wq, wk, wv, wo, mlp_norm, w_gate, w_up, w_down):
            h = transformer.rms_norm(x, weight=attn_norm, eps=cfg.eps)
            q = transformer.split_heads(transformer.linear(h, wq), cfg.num_heads)
            k = transformer.split_heads(transformer.linear(h, wk), cfg.num_kv_heads)
            v = transformer.split_heads(transformer.linear(h, wv), cfg.num_kv_heads)
            q = transformer.rope(q, positions, theta=cfg.rope_theta)
            k = transformer.rope(k, positions, theta=cfg.rope_theta)
            o = transformer.attention(q, k, v, causal=True)
            x = arith.addf(x, transformer.linear(transformer.merge_heads(o), wo))
            h = transformer.rms_norm(x, weight=mlp_norm, eps=cfg.eps)
            return arith.addf(x, transformer.gated_mlp(h, w_gate, w_up, w_down))

    return module


def reference_llama_block(cfg: LlamaBlockConfig, x, positions, weights: dict) -> np.ndarray:
    w = weights
    h = ref.rms_norm(x, w["attn_norm"], cfg.eps)
    q = ref.rope(ref.split_heads(ref.linear(h, w["wq"]), cfg.num_heads), positions, theta=cfg.rope_theta)
    k = ref.rope(ref.split_heads(ref.linear(h, w["wk"]), cfg.num_kv_heads), positions, theta=cfg.rope_theta)
    v = ref.split_heads(ref.linear(h, w["wv"]), cfg.num_kv_heads)
    x = x + ref.linear(ref.merge_heads(ref.attention(q, k, v, causal=True)), w["wo"])
    h = ref.rms_norm(x, w["mlp_norm"], cfg.eps)
    return x + ref.gated_mlp(h, w["w_gate"], w["w_up"], w["w_down"])


def random_block_inputs(cfg: LlamaBlockConfig, rng: np.random.Generator):
    x = rng.standard_normal((cfg.batch, cfg.seq, cfg.hidden)).astype(np.float32)
    positions = np.arange(cfg.seq, dtype=np.int64)
    weights = {}
    for name, shape in cfg.weight_shapes().items():
        if name.endswith("norm"):
            weights[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:  # scaled like a trained layer so activations stay O(1)
            weights[name] = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
    return x, positions, weights


def _count_ops(module: ir.Module) -> int:
    count = 0

    def visit(op):
        nonlocal count
        count += 1
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    return count - 1  # the module itself


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = LlamaBlockConfig(seq=args.seq)

    print(
        f"Llama-style decoder block: hidden {cfg.hidden}, {cfg.num_heads} query heads / "
        f"{cfg.num_kv_heads} KV heads (head_dim {cfg.head_dim}), FFN {cfg.ffn}, seq {cfg.seq}, f32"
    )
    with ir.Context(), ir.Location.unknown():
        module = build_llama_block(cfg)
        stage_sizes = [("input", len(str(module)), _count_ops(module))]

        def record(stage, m):
            stage_sizes.append((stage, len(str(m)), _count_ops(m)))

        t0 = time.perf_counter()
        program = kiln_compile(module, target="cpu", on_stage=record)
        compile_s = time.perf_counter() - t0

    print(f"\n{'stage':<12} {'IR bytes':>10} {'ops':>7}")
    for stage, size, ops in stage_sizes:
        print(f"{stage:<12} {size:>10,} {ops:>7,}")
    assert [s for s, _, _ in stage_sizes[1:]] == list(STAGES[:-1])
    print(f"artifact: {len(program.manifest['kernels'])} kernels, entry points {program.entry_points}")
    print(f"\ncompiled in {compile_s:.2f} s; running on {program.device}")

    rng = np.random.default_rng(args.seed)
    x, positions, weights = random_block_inputs(cfg, rng)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        (y,) = program.block(x, positions, *weights.values())
        times.append(time.perf_counter() - t0)
    run_ms = sorted(times)[1] * 1e3
    expected = reference_llama_block(cfg, x, positions, weights)

    err = np.abs(y - expected)
    rel = err.max() / np.abs(expected).max()
    ok = np.allclose(y, expected, rtol=1e-4, atol=1e-4)
    print(f"forward: {run_ms:.1f} ms, median of 3 (workgroups tiled and run in parallel; kernels not yet "
          "register-tiled or vectorized by Kiln)")
    print(f"output {tuple(y.shape)}: max |kiln - numpy float64| = {err.max():.3e}, "
          f"relative to max |y| = {rel:.3e}, mean = {err.mean():.3e}")
    print("agreement with the float64 reference:", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
