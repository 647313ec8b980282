"""kiln.compile: stage control (compile_to, compile_from, dump_phases_to, on_stage), resuming from
dumped and edited IR (checked against float64 numpy), and the errors bad arguments and bad IR get.

AOT compiles cost ~1-3 s each: one full compile (with phase dumps and an on_stage hook) is shared by
the module; the compile_to tests stop before the artifact and are cheap.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from mlir import ir

import kiln
from kiln import KilnError
from kiln import reference as ref
from kiln.dialects import transformer
from kiln.pipelines import STAGES
from reference import MLP_AND_ARGMAX as SOURCE
from reference import T, build_module, check, randn

IR_STAGES = STAGES[:-1]


# What each stage's IR must (and must not) contain.
STAGE_MARKERS = {
    "transformer": (["transformer.linear", "transformer.silu", "transformer.argmax"], ["linalg."]),
    "linalg": (["linalg.generic", "linalg.fill"], ["transformer.", "kiln.dispatch"]),
    "dispatch": (["kiln.dispatch", 'kiln.kernel_class = "reduction"', "call @mlp_dispatch_"], ["transformer.", "scf.forall"]),
    "tiled": (["scf.forall", "kiln.dispatch"], ["transformer."]),
    "bufferized": (["memref<4x32xf32>", "memref.alloc"], ["tensor<", "tensor."]),
    "loops": (["omp.parallel", "omp.wsloop"], ["linalg.", "scf.forall"]),
    "llvm": (["llvm.func @_mlir_ciface_mlp", "llvm.func @_mlir_ciface_argmax"], ["func.func", "memref.", "scf."]),
}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """One full compile: (Program, {stage: IR text seen by on_stage}, phases directory, artifact path)."""
    root = tmp_path_factory.mktemp("compiler")
    phases, output = str(root / "phases"), str(root / "mlp.kiln")
    seen = {}
    program = kiln.compile(SOURCE, dump_phases_to=phases, output=output,
                           on_stage=lambda name, module: seen.setdefault(name, str(module)))
    return program, seen, phases, output


def mlp_inputs(rng):
    return randn(rng, (4, 32)), randn(rng, (48, 32), scale=0.3), randn(rng, (48,))


def check_program(program, rng, silu=ref.silu):
    x, w, b = mlp_inputs(rng)
    (y,) = program.mlp(x, w, b)
    check(y, silu(ref.linear(x, w, b)), scale=2)
    (t,) = program.argmax(y)
    np.testing.assert_array_equal(t, np.argmax(y, axis=-1))


# ----------------------------------------------------------------------------------------------
# A full compile
# ----------------------------------------------------------------------------------------------


def test_full_compile(full, rng):
    program, seen, _, _ = full
    assert isinstance(program, kiln.runtime.Program)
    assert program.entry_points == ["argmax", "mlp"]
    assert list(seen) == list(IR_STAGES)
    check_program(program, rng)


def test_dump_phases_to(full):
    _, seen, phases, _ = full
    names = [f"{i:02d}-{s}.mlir" for i, s in enumerate(("input",) + IR_STAGES)] + ["artifact.json"]
    assert sorted(os.listdir(phases)) == names
    for i, stage in enumerate(IR_STAGES, start=1):
        with open(os.path.join(phases, f"{i:02d}-{stage}.mlir")) as f:
            assert f.read() == seen[stage], stage
    with open(os.path.join(phases, "00-input.mlir")) as f:
        text = f.read()
    assert "transformer.linear %arg0, %arg1, %arg2" in text and "kiln.entry_points" in text
    with open(os.path.join(phases, "artifact.json")) as f:
        manifest = json.load(f)
    assert manifest["entry_points"] == full[0].manifest["entry_points"]
    assert [k["name"] for k in manifest["kernels"]] == [k["name"] for k in full[0].manifest["kernels"]]


def test_output_artifact_loads(full, rng):
    program = kiln.load(full[3])
    check_program(program, rng)


# ----------------------------------------------------------------------------------------------
# compile_to / compile_from
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", IR_STAGES)
def test_compile_to_returns_the_stage_ir(full, stage):
    text = kiln.compile(SOURCE, compile_to=stage)
    assert isinstance(text, str)
    assert text == full[1][stage], "compile_to gives what the stage gave in a full compile"
    must, must_not = STAGE_MARKERS[stage]
    for marker in must:
        assert marker in text, (stage, marker)
    for marker in must_not:
        assert marker not in text, (stage, marker)
    with ir.Context():
        ir.Module.parse(text)  # printed IR parses back


def test_compile_to_artifact_is_a_program(full, rng):
    """compile_to='artifact' (the last stage) compiles all the way, like compile_to=None."""
    program = kiln.compile(full[1]["llvm"], compile_from="llvm", compile_to="artifact")
    check_program(program, rng)


@pytest.mark.parametrize("stage", ["transformer", "dispatch", "tiled", "bufferized", "llvm"])
def test_compile_from_dumped_ir(full, rng, stage):
    program = kiln.compile(full[1][stage], compile_from=stage)
    assert program.manifest["entry_points"] == full[0].manifest["entry_points"]
    check_program(program, rng)


def test_compile_from_then_to(full):
    """Resuming from one stage and stopping at a later one reproduces a straight run."""
    assert kiln.compile(full[1]["linalg"], compile_from="linalg", compile_to="loops") == full[1]["loops"]
    assert kiln.compile(full[1]["tiled"], compile_from="tiled", compile_to="bufferized") == full[1]["bufferized"]


def test_compile_from_edited_ir(full, rng):
    """An edit of the dispatch IR is what gets compiled: silu's 1 + exp(-x) becomes 2 + exp(-x)."""
    text = full[1]["dispatch"]
    kernels = re.findall(r"func\.func private @mlp_dispatch_\d+_elementwise\(.*?\n  \}", text, re.S)
    (kernel,) = [k for k in kernels if "math.exp" in k]
    assert "arith.constant 1.000000e+00 : f32" in kernel
    edited = text.replace(kernel, kernel.replace("arith.constant 1.000000e+00 : f32", "arith.constant 2.000000e+00 : f32"))
    program = kiln.compile(edited, compile_from="dispatch")

    def silu2(h):
        return h / (2.0 + np.exp(-h))

    check_program(program, rng, silu=silu2)


def test_compile_from_needs_recorded_signatures_after_bufferization(full):
    stripped = re.sub(r"^module attributes \{kiln\.entry_points = .*\} \{$", "module {", full[1]["bufferized"],
                      count=1, flags=re.M)
    assert "kiln.entry_points" not in stripped
    with pytest.raises(KilnError, match="IR after stage 'bufferized' no longer shows the entry points' tensor "
                                        "signatures: it must carry the module attribute kiln.entry_points"):
        kiln.compile(stripped, compile_from="bufferized")


def test_compile_an_ir_module_in_place():
    module = build_module([T((4, 8))], lambda x: transformer.silu(x))
    stages = []
    text = kiln.compile(module, compile_to="dispatch", on_stage=lambda name, m: stages.append((name, m is module)))
    assert stages == [("transformer", True), ("linalg", True), ("dispatch", True)]
    assert text == str(module) and "kiln.dispatch" in text


def test_linalg_input_with_a_shared_fill(rng):
    """IR at the linalg level: one zero fill initializes two matmuls (dispatch formation clones it into
    each, so each matmul zeroes its own accumulator: no fill kernel). The two matmul kernels are
    identical, so the dispatch stage keeps one of them, called twice."""
    text = """
    func.func @two(%a: tensor<8x16xf32>, %b: tensor<16x32xf32>, %c: tensor<16x32xf32>) -> (tensor<8x32xf32>, tensor<8x32xf32>) {
      %cst = arith.constant 0.0 : f32
      %e = tensor.empty() : tensor<8x32xf32>
      %f = linalg.fill ins(%cst : f32) outs(%e : tensor<8x32xf32>) -> tensor<8x32xf32>
      %r1 = linalg.matmul ins(%a, %b : tensor<8x16xf32>, tensor<16x32xf32>) outs(%f : tensor<8x32xf32>) -> tensor<8x32xf32>
      %r2 = linalg.matmul ins(%a, %c : tensor<8x16xf32>, tensor<16x32xf32>) outs(%f : tensor<8x32xf32>) -> tensor<8x32xf32>
      return %r1, %r2 : tensor<8x32xf32>, tensor<8x32xf32>
    }
    """
    program = kiln.compile(text, compile_from="linalg")
    assert [k["class"] for k in program.manifest["kernels"]] == ["contraction"]
    a, b, c = randn(rng, (8, 16)), randn(rng, (16, 32)), randn(rng, (16, 32))
    r1, r2 = program.two(a, b, c)
    check(r1, ref.matmul(a, b), scale=4)
    check(r2, ref.matmul(a, c), scale=4)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------

STAGE_LIST = ", ".join(STAGES)


@pytest.mark.parametrize("kwargs, message", [
    ({"compile_to": "tile"}, f"unknown stage 'tile' for compile_to; stages are: {STAGE_LIST}"),
    ({"compile_from": "input"}, f"unknown stage 'input' for compile_from; stages are: {STAGE_LIST}"),
    ({"compile_from": "artifact"}, "cannot resume from 'artifact': it is the last stage"),
    ({"target": "vulkan"}, "unknown target 'vulkan'; targets: cpu, cuda, rocm"),
    ({"compile_from": "tiled", "compile_to": "dispatch"}, "compile_to 'dispatch' does not come after compile_from 'tiled'"),
    ({"compile_from": "tiled", "compile_to": "tiled"}, "compile_to 'tiled' does not come after compile_from 'tiled'"),
    ({"compile_to": "tiled", "output": "x.kiln"}, "output= writes an artifact, but compile_to 'tiled' stops before one is made"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(KilnError) as error:
        kiln.compile(SOURCE, **kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize("text, messages", [
    ("func.func @f(%x: tensor<2x7x13xf32>, %w: tensor<5x12xf32>) -> tensor<2x7x5xf32> {\n"
     "  %r = transformer.linear %x, %w : (tensor<2x7x13xf32>, tensor<5x12xf32>) -> tensor<2x7x5xf32>\n"
     "  return %r : tensor<2x7x5xf32>\n}",
     ["invalid input IR", "input feature dimension (13) does not match weight dimension 1 (in_features = 12)"]),
    ("func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> { return %y : tensor<2xf32> }",
     ["invalid input IR", "use of undeclared SSA value"]),
    ("func.func @f(%x: tensor<2x4xf32>) {\n  %r = transformer.frobnicate %x : tensor<2x4xf32>\n  return\n}",
     ["invalid input IR", "custom op 'transformer.frobnicate' is unknown"]),
    ("this is not MLIR", ["invalid input IR"]),
])
def test_invalid_input_ir(text, messages):
    for compile_to in (None, "linalg"):
        with pytest.raises(KilnError) as error:
            kiln.compile(text, compile_to=compile_to)
        for message in messages:
            assert message in str(error.value)


def test_invalid_module_built_in_python():
    """A Module built with the Python builders is verified before any pass runs on it."""
    module = build_module([T((1, 8, 7, 16)), T((1, 3, 7, 16))],
                          lambda q, k: transformer.attention(q, k, k, causal=True))
    with pytest.raises(KilnError) as error:
        kiln.compile(module)
    assert str(error.value).startswith("invalid input IR")
    assert "num_heads (8) is not a multiple of num_kv_heads (3)" in str(error.value)


def test_no_entry_point():
    with pytest.raises(KilnError, match="the module has no public function to use as an entry point"):
        kiln.compile("func.func private @f(%x: tensor<4xf32>) -> tensor<4xf32> { return %x : tensor<4xf32> }")


def test_external_tensor_function_is_refused():
    """A declared function on tensors has no definition to link (and used to abort the interpreter in
    the llvm stage, on the i1 ownership buffers the deallocation pipeline makes for its results)."""
    text = """
    func.func private @ext(tensor<4xf32>) -> tensor<4xf32>
    func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
      %y = call @ext(%x) : (tensor<4xf32>) -> tensor<4xf32>
      return %y : tensor<4xf32>
    }"""
    with pytest.raises(KilnError, match="function @ext is declared but not defined: Kiln cannot link external "
                                        "functions on tensors or buffers"):
        kiln.compile(text)


def test_external_scalar_function_links(rng):
    """Scalar declarations (libm's) are fine: the executable links against libm."""
    program = kiln.compile("""
    func.func private @expf(f32) -> f32
    #id = affine_map<(d0) -> (d0)>
    func.func @f(%x: tensor<8xf32>) -> tensor<8xf32> {
      %e = tensor.empty() : tensor<8xf32>
      %r = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
          ins(%x : tensor<8xf32>) outs(%e : tensor<8xf32>) {
      ^bb0(%a: f32, %o: f32):
        %v = func.call @expf(%a) : (f32) -> f32
        linalg.yield %v : f32
      } -> tensor<8xf32>
      return %r : tensor<8xf32>
    }""")
    x = randn(rng, (8,))
    check(program.f(x)[0], np.exp(x.astype(np.float64)))


def test_unsupported_boundary_type():
    with pytest.raises(KilnError, match="no numpy dtype for element type f8E4M3FN"):
        kiln.compile("func.func @f(%x: tensor<4xf8E4M3FN>) -> tensor<4xf8E4M3FN> { return %x : tensor<4xf8E4M3FN> }",
                     compile_to="transformer")


def test_dump_phases_to_a_file(tmp_path):
    blocker = tmp_path / "phases"
    blocker.write_text("not a directory")
    with pytest.raises(KilnError, match="cannot create the phase dump directory .*phases"):
        kiln.compile(SOURCE, compile_to="transformer", dump_phases_to=str(blocker))


def test_failing_stage_names_it():
    """IR that verifies but that a stage cannot handle: the error names the stage and the op."""
    text = """
    func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
      %i = gpu.thread_id x
      %v = arith.index_cast %i : index to i64
      %f = arith.sitofp %v : i64 to f32
      %c0 = arith.constant 0 : index
      %y = tensor.insert %f into %x[%c0] : tensor<4xf32>
      return %y : tensor<4xf32>
    }"""
    with pytest.raises(KilnError) as error:
        kiln.compile(text)
    assert str(error.value).startswith("stage 'artifact': mlir-translate failed")
    assert "unsupported GPU operation: gpu.thread_id" in str(error.value)


def test_same_value_returned_twice():
    code = textwrap.dedent("""
        import numpy as np, kiln
        p = kiln.compile('''
        func.func @dup(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
          %s = transformer.silu %x : tensor<4x8xf32>
          return %s, %s : tensor<4x8xf32>, tensor<4x8xf32>
        }''')
        x = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
        a, b = p.dup(x)
        assert np.array_equal(a, b) and np.allclose(a, x / (1 + np.exp(-x)))
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
