"""Independent launches side by side (`pipelines/launch_merging.py`): which consecutive launches
merge (hazards through views of one allocation, block shapes, host ops between them), and merged
programs on the emulated GPU against numpy on fresh random inputs."""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest
from mlir import ir

import kiln
from kiln.pipelines import launch_merging

sys.path.insert(0, os.path.dirname(__file__))
from gpu_emulation import emulated_device  # noqa: E402


def _kernel(name: str, block: int, store: bool, synced: bool = False) -> str:
    """A dispatch function and its kernel on a memref<64xf32>: it stores into it (`store`) or only
    loads from it; with `synced` its threads meet at a barrier first."""
    body = ("%v = arith.constant 1.0 : f32\n memref.store %v, %arg0[%t] : memref<64xf32>" if store
            else "%v = memref.load %arg0[%t] : memref<64xf32>")
    if synced:
        body = "gpu.barrier\n      " + body
    return f"""
  gpu.module @{name}_kernel {{
    gpu.func @{name}_kernel(%arg0: memref<64xf32>) kernel attributes {{known_block_size = array<i32: {block}, 1, 1>, known_grid_size = array<i32: 2, 1, 1>}} {{
      %t = gpu.thread_id x
      {body}
      gpu.return
    }}
  }}
  func.func private @{name}(%arg0: memref<64xf32>) attributes {{kiln.dispatch, kiln.kernel_class = "elementwise"}} {{
    %c1 = arith.constant 1 : index
    %c2 = arith.constant 2 : index
    %cb = arith.constant {block} : index
    gpu.launch_func @{name}_kernel::@{name}_kernel blocks in (%c2, %c1, %c1) threads in (%cb, %c1, %c1) args(%arg0 : memref<64xf32>)
    return
  }}"""


def _host(first: int, second: int, between: str = "") -> str:
    """An entry point calling `read` on the 256 bytes at byte `first` of an allocation, then `write`
    on those at byte `second` (`between`: host ops between the calls)."""
    return f"""
module attributes {{gpu.container_module}} {{
  {_kernel("read", 32, False)}
  {_kernel("write", 32, True)}
  {_kernel("write_wide", 64, True)}
  {_kernel("read_synced", 32, False, synced=True)}
  func.func @entry(%other: memref<64xf32>) {{
    %c{first} = arith.constant {first} : index
    %c{second}_ = arith.constant {second} : index
    %alloc = memref.alloc() : memref<1024xi8>
    %a = memref.view %alloc[%c{first}][] : memref<1024xi8> to memref<64xf32>
    %b = memref.view %alloc[%c{second}_][] : memref<1024xi8> to memref<64xf32>
    call @read(%a) : (memref<64xf32>) -> ()
    {between}
    call @write(%b) : (memref<64xf32>) -> ()
    return
  }}
}}"""


def _merged(text: str) -> tuple:
    with ir.Context():
        module = ir.Module.parse(text)
        gone = launch_merging.merge_launches(module)
        return gone, str(module)


@pytest.mark.parametrize("first, second, merges", [(0, 256, True), (0, 128, False), (512, 0, True), (256, 0, True),
                                                   (0, 252, False)])
def test_a_write_merges_only_with_launches_that_do_not_touch_its_bytes(first, second, merges):
    """A kernel writing bytes [second, second + 256) of an allocation merges with one reading
    [first, first + 256) of it only when the ranges are disjoint."""
    gone, text = _merged(_host(first, second))
    assert gone == (1 if merges else 0)
    assert ("call @entry_merged_0(" in text) == merges
    assert ('kiln.kernel_class = "elementwise+elementwise"' in text) == merges
    if merges:  # the members are gone; the merged kernel runs read's 2 blocks, then write's
        assert "gpu.module @read_kernel" not in text and "known_grid_size = array<i32: 4, 1, 1>" in text


def test_buffers_the_tracing_cannot_name_are_taken_to_overlap():
    """A view at a runtime offset may be anywhere in its allocation; a buffer from an op the tracing
    does not know (memref.reinterpret_cast here) may be anywhere at all: a write there merges with
    no neighbour."""
    text = _host(0, 512).replace(
        "%b = memref.view %alloc[%c512_][] : memref<1024xi8> to memref<64xf32>",
        "%n = memref.dim %other, %c0x : memref<64xf32>\n"
        "    %b = memref.view %alloc[%n][] : memref<1024xi8> to memref<64xf32>").replace(
        "%alloc = memref.alloc()", "%c0x = arith.constant 0 : index\n    %alloc = memref.alloc()")
    assert _merged(text)[0] == 0
    text = _host(0, 512).replace(
        "%b = memref.view %alloc[%c512_][] : memref<1024xi8> to memref<64xf32>",
        "%b = memref.reinterpret_cast %other to offset: [0], sizes: [64], strides: [1] "
        ": memref<64xf32> to memref<64xf32>")
    assert _merged(text)[0] == 0
    assert _merged(_host(0, 512))[0] == 1


@pytest.mark.parametrize("between, merges", [
    ("%zero = arith.constant 0 : index", True),
    ("memref.copy %other, %a : memref<64xf32> to memref<64xf32>", False),  # a host copy orders them
])
def test_host_ops_between_launches(between, merges):
    gone, text = _merged(_host(0, 256, between))
    assert (gone >= 1) == merges, text


def test_smaller_blocks_are_padded_unless_their_threads_meet():
    """A launch with 64-thread blocks between two with 32: the merged kernel has 64-thread blocks, and
    the 32-thread members' code runs in threads 0-31 only (each member's trailing barrier, a no-op,
    dropped). A smaller kernel whose threads meet at a barrier keeps its own blocks: it ends the run."""
    wide = "call @write_wide(%other) : (memref<64xf32>) -> ()"
    gone, text = _merged(_host(0, 256, wide))
    assert gone == 2 and "known_block_size = array<i32: 64, 1, 1>, known_grid_size = array<i32: 6, 1, 1>" in text
    assert text.count("scf.if") == 4  # two member branches, two thread guards
    # read's and write's guards: thread x below 32 (y and z are not padded)
    assert len(re.findall(r"= arith.cmpi ult, %thread_id_x[\w]*, %c32[\w]* : index\n\s*scf.if", text)) == 2
    assert "thread_id  y" not in text and "arith.andi" not in text
    gone, text = _merged(_host(0, 256, wide).replace("call @read(%a)", "call @read_synced(%a)"))
    assert gone == 1 and "call @read_synced(" in text and 'kiln.kernel_class = "elementwise+elementwise"' in text


def test_padded_launches_run_in_their_own_threads(rng):
    """Three independent elementwise ops on 9, 3 and 5 rows of 32: 2 blocks of 32 x 8 threads (the
    second masked), one of 32 x 3 and one of 32 x 5; one launch of 4 blocks of 32 x 8. On the
    emulated GPU the results are numpy's (a thread outside its member's block shape writing
    anything would show)."""
    shapes = ((9, 32), (3, 32), (5, 32))
    types = [f"tensor<{r}x{c}xf32>" for r, c in shapes]
    text = (f"func.func @f(%a: {types[0]}, %b: {types[1]}, %c: {types[2]}) -> ({', '.join(types)}) {{\n"
            f"  %x = transformer.silu %a : {types[0]}\n"
            f"  %y = transformer.silu %b : {types[1]}\n"
            f"  %z = transformer.silu %c : {types[2]}\n"
            f"  return %x, %y, %z : {', '.join(types)}\n}}")
    inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    loops, outputs = _run(text, inputs)
    assert loops.count("gpu.launch_func") == 1
    assert "known_block_size = array<i32: 32, 8, 1>, known_grid_size = array<i32: 4, 1, 1>" in loops
    for got, x in zip(outputs, inputs):
        np.testing.assert_allclose(got, x / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6, atol=1e-6)


def _run(text: str, inputs: list) -> tuple:
    loops = kiln.compile(text, target="cuda", compile_to="loops")
    program = kiln.runtime.load_artifact(kiln.compile(text, target="cuda"), emulated_device(loops))
    return loops, program.f(*inputs)


def test_independent_projections_run_as_one_launch(rng):
    """k, v and a third projection of one position read x and write their own outputs: one launch of
    their three kernels' blocks; SiLU(k) reads k's output: a launch after it. On the emulated GPU the
    results are numpy's, for fresh random inputs."""
    t = "tensor<1x96xf32>"
    text = (f"func.func @f(%x: {t}, %wk: tensor<32x96xf32>, %wv: tensor<32x96xf32>, %wo: tensor<64x96xf32>) "
            "-> (tensor<1x32xf32>, tensor<1x32xf32>, tensor<1x64xf32>) {\n"
            f"  %k = transformer.linear %x, %wk : ({t}, tensor<32x96xf32>) -> tensor<1x32xf32>\n"
            f"  %v = transformer.linear %x, %wv : ({t}, tensor<32x96xf32>) -> tensor<1x32xf32>\n"
            f"  %o = transformer.linear %x, %wo : ({t}, tensor<64x96xf32>) -> tensor<1x64xf32>\n"
            "  %s = transformer.silu %k : tensor<1x32xf32>\n"
            "  return %s, %v, %o : tensor<1x32xf32>, tensor<1x32xf32>, tensor<1x64xf32>\n}")
    x, wk, wv, wo = (rng.standard_normal(s).astype(np.float32) for s in ((1, 96), (32, 96), (32, 96), (64, 96)))
    loops, (s, v, o) = _run(text, [x, wk, wv, wo])
    assert loops.count("gpu.launch_func") == 2 and 'kiln.kernel_class = "contraction+contraction+contraction"' in loops
    k = x.astype(np.float64) @ wk.T.astype(np.float64)
    np.testing.assert_allclose(s, k / (1 + np.exp(-k)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v, x.astype(np.float64) @ wv.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(o, x.astype(np.float64) @ wo.T, rtol=1e-5, atol=1e-5)


def test_dependent_projections_stay_apart(rng):
    """y = (x W1ᵀ) W2ᵀ: the second matvec reads what the first writes, so they stay two launches."""
    text = ("func.func @f(%x: tensor<1x64xf32>, %w1: tensor<64x64xf32>, %w2: tensor<32x64xf32>) -> tensor<1x32xf32> {\n"
            "  %h = transformer.linear %x, %w1 : (tensor<1x64xf32>, tensor<64x64xf32>) -> tensor<1x64xf32>\n"
            "  %y = transformer.linear %h, %w2 : (tensor<1x64xf32>, tensor<32x64xf32>) -> tensor<1x32xf32>\n"
            "  return %y : tensor<1x32xf32>\n}")
    x, w1, w2 = (rng.standard_normal(s).astype(np.float32) for s in ((1, 64), (64, 64), (32, 64)))
    loops, (y,) = _run(text, [x, w1, w2])
    assert loops.count("gpu.launch_func") == 2 and "merged" not in loops
    np.testing.assert_allclose(y, (x.astype(np.float64) @ w1.T) @ w2.T, rtol=1e-4, atol=1e-4)
