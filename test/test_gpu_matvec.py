"""The GPU matvec schedule (pipelines/gpu_matvec.py) without a GPU: decode-shaped linears get a warp per
row of W with a shuffle reduction, and their kernels, run through the GPU runtime on the CPU emulation
(whose shuffles run the lanes to a lock-step fixed point, test/gpu_emulation.py), match float64
references; other shapes keep the generic schedules.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import kiln
from kiln import reference as ref

sys.path.insert(0, os.path.dirname(__file__))
from gpu_emulation import emulated_device  # noqa: E402


def _linear(x_shape, n):
    k = x_shape[-1]
    x = "tensor<" + "x".join(map(str, x_shape)) + "xf32>"
    w = f"tensor<{n}x{k}xf32>"
    y = "tensor<" + "x".join(map(str, (*x_shape[:-1], n))) + "xf32>"
    return (f"func.func @f(%x: {x}, %w: {w}) -> {y} {{\n  %y = transformer.linear %x, %w : ({x}, {w}) -> {y}\n"
            f"  return %y : {y}\n}}")


@pytest.mark.parametrize("x_shape,n,warps", [
    ((1, 1, 256), 64, 4),   # a decode step: K a multiple of a warp's 128-element stride
    ((3, 68), 30, 2),       # 3 rows of x; K = 68: lanes past K idle; N % 4 != 0
    ((2, 2, 132), 40, 4),   # a batch dim (a block dim); K = 132: one more step for lane 0
    ((1, 4, 96), 37, 1),    # N prime: a warp per block
])
def test_matvec_kernels_match_reference(x_shape, n, warps, rng):
    text = _linear(x_shape, n)
    loops = kiln.compile(text, target="cuda", compile_to="loops")
    assert loops.count("gpu.shuffle  xor") == 5 * int(np.prod(x_shape[-2:-1]))
    assert f"known_block_size = array<i32: {32 * warps}, 1, 1>" in loops
    device = emulated_device(loops)
    program = kiln.runtime.load_artifact(kiln.compile(text, target="cuda"), device)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (0.1 * rng.standard_normal((n, x_shape[-1]))).astype(np.float32)
    (y,) = program.f(x, w)
    np.testing.assert_allclose(y, ref.linear(x, w), rtol=2e-5, atol=2e-5)
    assert [block for _, _, block in device.gpu.launches] == [(32 * warps, 1, 1)]


@pytest.mark.parametrize("x_shape,n,precision", [
    ((1, 66), 32, "f32"),   # K % 4 != 0: no 16-byte loads
    ((8, 64), 32, "f32"),   # 8 rows of x: the register-tiled GEMM schedule
    ((1, 66), 32, "bf16"),  # rounded operands: the SIMT GEMM path of that precision
])
def test_other_shapes_keep_the_generic_schedules(x_shape, n, precision):
    loops = kiln.compile(_linear(x_shape, n), target="cuda", compile_to="loops", precision=precision)
    assert "gpu.shuffle" not in loops


@pytest.mark.parametrize("precision", ["bf16", "f16"])
@pytest.mark.parametrize("x_shape,n", [((1, 1, 256), 64), ((3, 132), 40)])
def test_matvec_rounds_its_operands_to_the_precision(x_shape, n, precision, rng):
    """With --precision bf16|f16, a decode-shaped linear keeps the warp-per-row schedule and rounds x
    and W to that type in the lanes (W once for all rows of x) before the FMA: the float64 product of
    the rounded operands, which differs from the f32 one."""
    from kiln.pipelines.common import run_passes
    from kiln.signature import numpy_dtype
    from mlir import ir

    text = _linear(x_shape, n)
    loops = kiln.compile(text, target="cuda", compile_to="loops", precision=precision)
    assert "gpu.shuffle" in loops and "kiln.matvec_warps" in loops
    assert loops.count("arith.truncf") == 1 + x_shape[-2] and f"vector<4x{precision}>" in loops
    with ir.Context():  # the emulator's CPU code rounds to bf16 with integer ops
        module = ir.Module.parse(loops)
        run_passes(module, "gpu.module(arith-expand{include-bf16=true})", "test")
        loops = str(module)
    program = kiln.runtime.load_artifact(kiln.compile(text, target="cuda", precision=precision),
                                         emulated_device(loops))
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (0.1 * rng.standard_normal((n, x_shape[-1]))).astype(np.float32)
    (y,) = program.f(x, w)
    low = numpy_dtype(precision)
    expected = x.astype(low).astype(np.float64) @ w.astype(low).astype(np.float64).T
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected - ref.linear(x, w)).max() > 1e-4  # 10x the tolerance: the rounding shows


def test_llama_decode_graph_uses_the_matvec_kernels():
    """Every linear of a tiny Llama's decode step (QKV, output, MLP and the logits head) is a matvec."""
    import json
    import tempfile

    from kiln import model

    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
              "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
              "num_hidden_layers": 1, "vocab_size": 128, "max_position_embeddings": 32,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        text = model.model_ir(path, max_seq_len=16, prefill_chunk=8)
    tiled = kiln.compile(text, target="cuda", compile_to="tiled")
    decode = [line for line in tiled.split("\n") if "func.func private @decode_dispatch" in line]
    contractions = [line for line in decode if 'kiln.kernel_class = "contraction"' in line
                    and "kiln.loop_ranges = array<i64: 1, 1, " in line]
    assert contractions and all("kiln.matvec_warps" in line for line in contractions)


def _norm_then_mlp(rows, d, f):
    """h -> RMSNorm -> (q projection, gated MLP + residual), decode-shaped: `rows` rows of h."""
    h, y = f"tensor<1x{rows}x{d}xf32>", f"tensor<1x{rows}x{f}xf32>"
    return (f"func.func @f(%h: {h}, %g: tensor<{d}xf32>, %wq: tensor<{f}x{d}xf32>, %wg: tensor<{f}x{d}xf32>, "
            f"%wu: tensor<{f}x{d}xf32>, %wd: tensor<{d}x{f}xf32>) -> ({y}, {h}) {{\n"
            f"  %n = transformer.rms_norm %h, %g {{eps = 1.0e-5 : f64}} : ({h}, tensor<{d}xf32>) -> {h}\n"
            f"  %q = transformer.linear %n, %wq : ({h}, tensor<{f}x{d}xf32>) -> {y}\n"
            f"  %m = transformer.gated_mlp %n, %wg, %wu, %wd : ({h}, tensor<{f}x{d}xf32>, tensor<{f}x{d}xf32>, "
            f"tensor<{d}x{f}xf32>) -> {h}\n"
            f"  %r = arith.addf %h, %m : {h}\n"
            f"  return %q, %r : {y}, {h}\n}}")


@pytest.mark.parametrize("rows,d,f", [(1, 256, 96), (3, 132, 68), (4, 64, 200)])
def test_fused_matvecs_match_reference(rows, d, f, rng):
    """RMSNorm's scaling fused into the q and gate/up matvecs, SiLU(gate)·up into the down matvec and
    the residual into its accumulator (kiln-fuse-into-matvecs, kiln-accumulate-residuals): 5 kernels,
    all but the norm's sum with the matvec schedule, against float64 references; q, gate and up run
    as one launch (launch_merging.py), so 3 launches."""
    text = _norm_then_mlp(rows, d, f)
    device = emulated_device(kiln.compile(text, target="cuda", compile_to="loops"))
    program = kiln.runtime.load_artifact(kiln.compile(text, target="cuda"), device)
    h = rng.standard_normal((1, rows, d)).astype(np.float32)
    g = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
    wq, wg, wu = ((0.1 * rng.standard_normal((f, d))).astype(np.float32) for _ in range(3))
    wd = (0.1 * rng.standard_normal((d, f))).astype(np.float32)
    q, r = program.f(h, g, wq, wg, wu, wd)
    n = ref.rms_norm(h, g, eps=1e-5)
    np.testing.assert_allclose(q, ref.linear(n, wq), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(r, h + ref.gated_mlp(n, wg, wu, wd), rtol=2e-5, atol=2e-5)
    assert len(device.gpu.launches) == 3
    kernels = [line for line in kiln.compile(text, target="cuda", compile_to="tiled").splitlines()
               if line.lstrip().startswith("func.func private @")]
    # all but the norm's sum: q, gate/up (and q when it has their shape), down
    assert sum("kiln.matvec_warps" in line for line in kernels) == len(kernels) - 1 >= 2


@pytest.mark.parametrize("rows,d,f", [(1, 256, 96), (2, 66, 40)])
def test_fused_matvecs_round_to_the_precision(rows, d, f, rng):
    """With --precision bf16 the producers still fuse into the matvecs (a decode step launches what it
    does in f32), and the factors of each product -- the vector computed in the kernel and W -- are
    rounded to bf16: by the matvec kernel's lanes, or (d = 66: K % 4 != 0, the generic schedules) in
    the fused kernel's body. The results are much closer to the float64 model with bf16-rounded
    factors than to the unrounded one."""
    from kiln.pipelines.common import run_passes
    from kiln.signature import numpy_dtype
    from mlir import ir

    text = _norm_then_mlp(rows, d, f)
    f32_launches = len([c for c in kiln.compile(text, target="cuda").manifest["programs"]["f"]["commands"]
                        if c["op"] == "launch"])
    art = kiln.compile(text, target="cuda", precision="bf16")
    assert len([c for c in art.manifest["programs"]["f"]["commands"] if c["op"] == "launch"]) == f32_launches
    with ir.Context():  # the emulator's CPU code rounds to bf16 with integer ops
        module = ir.Module.parse(kiln.compile(text, target="cuda", precision="bf16", compile_to="loops"))
        run_passes(module, "gpu.module(arith-expand{include-bf16=true})", "test")
        loops = str(module)
    program = kiln.runtime.load_artifact(art, emulated_device(loops))
    h = rng.standard_normal((1, rows, d)).astype(np.float32)
    g = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
    wq, wg, wu = ((0.1 * rng.standard_normal((f, d))).astype(np.float32) for _ in range(3))
    wd = (0.1 * rng.standard_normal((d, f))).astype(np.float32)
    q, r = program.f(h, g, wq, wg, wu, wd)

    def low(x):
        return np.asarray(x, np.float32).astype(numpy_dtype("bf16")).astype(np.float64)

    n = ref.rms_norm(h, g, eps=1e-5)
    gate, up = low(n) @ low(wg).T, low(n) @ low(wu).T
    rounded = (low(n) @ low(wq).T, h + low(gate / (1 + np.exp(-gate)) * up) @ low(wd).T)
    exact = (ref.linear(n, wq), h + ref.gated_mlp(n, wg, wu, wd))
    for got, want, unrounded in zip((q, r), rounded, exact):
        assert np.abs(got - want).max() * 4 < np.abs(got - unrounded).max()
