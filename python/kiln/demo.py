"""The embedded default job of `make run`: a Llama-style decoder block, end to end.

Builds the block (`kiln.examples`) in the `transformer` dialect from Python (weights are function arguments, as in a
compiled model), compiles it stage by stage to a CPU artifact, runs it with Kiln's runtime on random
inputs and compares the result with the float64 numpy reference in `kiln.reference`.

    python -m kiln.demo [--seq 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mlir import ir

from .compiler import compile as kiln_compile
from .examples import (
    LlamaStackConfig,
    build_llama_stack,
    flat_weights,
    random_stack_inputs,
    reference_llama_stack,
)
from .pipelines import STAGES


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
    cfg = LlamaStackConfig(seq=args.seq)

    print(
        f"Llama-style decoder block: hidden {cfg.hidden}, {cfg.num_heads} query heads / "
        f"{cfg.num_kv_heads} KV heads (head_dim {cfg.head_dim}), FFN {cfg.ffn}, seq {cfg.seq}, f32"
    )
    with ir.Context(), ir.Location.unknown():
        module = build_llama_stack(cfg)
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
    x, positions, layers = random_stack_inputs(cfg, rng)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        (y,) = program.forward(x, positions, *flat_weights(layers))
        times.append(time.perf_counter() - t0)
    run_ms = sorted(times)[1] * 1e3
    expected = reference_llama_stack(cfg, x, positions, layers)

    err = np.abs(y - expected)
    rel = err.max() / np.abs(expected).max()
    ok = np.allclose(y, expected, rtol=1e-4, atol=1e-4)
    print(f"forward: {run_ms:.2f} ms (median of 3 calls)")
    print(f"output {tuple(y.shape)}: max |kiln - numpy float64| = {err.max():.3e}, "
          f"relative to max |y| = {rel:.3e}, mean = {err.mean():.3e}")
    print("agreement with the float64 reference:", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
