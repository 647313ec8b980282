"""Row reductions on GPUs (pipelines/gpu_reduction.py) without a GPU: RMSNorm's sum of squares,
LayerNorm's mean and variance and softmax's max and exp-sum get a warp per output with a shuffle
butterfly; run through the GPU runtime on the CPU emulation of the driver (test/gpu_emulation.py), they
match float64 references on fresh random inputs. Short rows keep the thread-per-output schedule.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest

import kiln
from kiln import reference as ref
from kiln.pipelines import gpu_reduction

sys.path.insert(0, os.path.dirname(__file__))
from gpu_emulation import emulated_device  # noqa: E402


def _t(shape):
    return "tensor<" + "x".join(map(str, shape)) + "xf32>"


def _rms_norm(shape):
    x, w = _t(shape), _t(shape[-1:])
    return (f"func.func @f(%x: {x}, %w: {w}) -> {x} {{\n  %y = transformer.rms_norm %x, %w {{eps = 1.0e-05 : f64}} "
            f": ({x}, {w}) -> {x}\n  return %y : {x}\n}}")


def _layer_norm(shape):
    x, w = _t(shape), _t(shape[-1:])
    return (f"func.func @f(%x: {x}, %g: {w}, %b: {w}) -> {x} {{\n  %y = transformer.layer_norm %x weight(%g) bias(%b) "
            f"{{eps = 1.0e-05 : f64}} : ({x}, {w}, {w}) -> {x}\n  return %y : {x}\n}}")


def _softmax(shape):
    x = _t(shape)
    return (f"func.func @f(%x: {x}) -> {x} {{\n  %y = transformer.softmax %x {{axis = -1 : i64}} : {x}\n"
            f"  return %y : {x}\n}}")


def _run(text, inputs):
    loops = kiln.compile(text, target="cuda", compile_to="loops")
    device = emulated_device(loops)
    program = kiln.runtime.load_artifact(kiln.compile(text, target="cuda"), device)
    (y,) = program.f(*inputs)
    return y, loops, device


def _warp_kernels(loops):
    """Block sizes of the kernels that shuffle (the warp reductions)."""
    found = []
    for kernel in loops.split("gpu.func @")[1:]:
        if "gpu.shuffle  xor" in kernel:
            found.append(int(re.search(r"known_block_size = array<i32: (\d+),", kernel).group(1)))
    return found


@pytest.mark.parametrize("shape,warps", [((1, 1, 576), 1), ((3, 7, 576), 4), ((2, 130), 1)])
def test_rms_norm(shape, warps, rng):
    """A decode step's row (one warp), 21 rows over 6 blocks, and a row of 130 (lanes past it idle)."""
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    w = rng.standard_normal(shape[-1:]).astype(np.float32)
    y, loops, _ = _run(_rms_norm(shape), [x, w])
    np.testing.assert_allclose(y, ref.rms_norm(x, w, eps=1e-5), rtol=2e-5, atol=2e-5)
    assert _warp_kernels(loops) == [32 * warps]


def test_layer_norm(rng):
    x = (rng.standard_normal((2, 9, 384)) + 2).astype(np.float32)
    g, b = (rng.standard_normal(384).astype(np.float32) for _ in range(2))
    y, loops, _ = _run(_layer_norm((2, 9, 384)), [x, g, b])
    np.testing.assert_allclose(y, ref.layer_norm(x, g, b, eps=1e-5), rtol=5e-5, atol=5e-5)
    assert len(_warp_kernels(loops)) >= 1


@pytest.mark.parametrize("shape", [(3, 5, 131), (1, 9, 1, 264)])
def test_softmax_max_and_sum(shape, rng):
    """The max (fill -inf, maximumf) and the exp-sum (two inputs, addf) both get a warp per row."""
    x = (rng.standard_normal(shape) * 8).astype(np.float32)
    x[..., 5] = 60.0  # a row maximum far above the rest
    y, loops, _ = _run(_softmax(shape), [x])
    np.testing.assert_allclose(y, ref.softmax(x), rtol=2e-5, atol=1e-7)
    assert len(_warp_kernels(loops)) == 2


def test_short_rows_keep_the_thread_schedule():
    loops = kiln.compile(_softmax((4, 16, gpu_reduction.MIN_EXTENT - 1)), target="cuda", compile_to="loops")
    assert "gpu.shuffle" not in loops


def test_ptx_and_rocdl_of_a_warp_reduction():
    text = _rms_norm((1, 1, 576))
    art = kiln.compile(text, target="cuda", chip="sm_90")
    ptx = [art.blobs[k["blobs"]["ptx"]].decode() for k in art.manifest["kernels"] if k["class"] == "reduction"]
    assert len(ptx) == 1 and ptx[0].count("shfl.sync.bfly.b32") == 5
    assert kiln.compile(text, target="rocm", compile_to="llvm").count("rocdl.ds_bpermute") == 5
