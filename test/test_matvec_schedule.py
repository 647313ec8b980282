"""The `matvec` schedule: decode-shaped linears x[b.., m, K]·W[N, K]ᵀ with few rows (m < 16).

Numerics against float64 `kiln.reference` at odd sizes (N and K not multiples of the register tile
or the vector width, so the leftover rows and columns are exercised), and checks that the schedule
is the one chosen and applied (split reduction into vector FMAs inside a workgroup grid).
"""

import dataclasses
import functools
import json

import numpy as np
import pytest
from mlir import ir

import kiln
from kiln import reference as ref
from kiln.pipelines import schedules


@pytest.fixture(autouse=True)
def empty_tuning_cache(tmp_path, monkeypatch):
    """Default schedules only: no tuned winner from the user's cache."""
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))


def linear_module(x_shape, n, bias=False):
    """@f(x, w[, b]) = transformer.linear; None in `x_shape` is a dynamic dim."""
    def ty(shape):
        return "tensor<" + "x".join("?" if d is None else str(d) for d in shape) + "xf32>"

    xt, wt, bt, yt = ty(x_shape), ty((n, x_shape[-1])), ty((n,)), ty(x_shape[:-1] + (n,))
    args, operands, types = f"%x: {xt}, %w: {wt}", "%x, %w", f"{xt}, {wt}"
    if bias:
        args, operands, types = args + f", %b: {bt}", operands + ", %b", types + f", {bt}"
    return (f"func.func @f({args}) -> {yt} {{\n"
            f"  %y = transformer.linear {operands} : ({types}) -> {yt}\n"
            f"  return %y : {yt}\n}}\n")


@functools.lru_cache(maxsize=None)
def program(x_shape, n, bias=False):
    return kiln.compile(linear_module(x_shape, n, bias))


def contraction_kernel(text):
    """The contraction dispatch function's IR in a stage's printed module."""
    (kernel,) = [chunk for chunk in text.split("\n  func.func ")
                 if chunk.startswith("private @") and 'kiln.kernel_class = "contraction"' in chunk]
    return kernel


def check_linear(prog, rng, x_shape, n, bias):
    k = x_shape[-1]
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    args = [x, w] + ([rng.standard_normal(n).astype(np.float32)] if bias else [])
    (y,) = prog.f(*args)
    expected = ref.linear(*args)
    assert y.shape == expected.shape
    # f32 sums of K products of unit normals: error grows like sqrt(K) * eps.
    np.testing.assert_allclose(y.astype(np.float64), expected, rtol=2e-5, atol=2e-5 * np.sqrt(k))


@pytest.mark.parametrize(
    "x_shape,n,bias",
    [
        ((1, 577), 1000, False),  # K % 16 = 1, N % 8 = 0
        ((1, 64), 1003, False),  # N % 8 = 3: leftover rows after the workgroups
        ((3, 577), 1001, True),  # m = 3, leftover rows and columns, bias
        ((1, 1, 576), 1536, False),  # leading batch dim
        ((2, 5, 33), 13, True),  # batch 2 x m 5; N < 2 register tiles, K % 16 = 1
        ((4, 130), 67, False),  # m = 4: two rows of x per register tile
        ((1, 3, 1000), 17, False),
        ((15, 130), 67, False),  # largest m that gets the schedule
        ((7, 48), 5, False),  # N below the register tile
        ((2, 9), 11, False),  # K below the vector width: only the leftover columns
        ((1, 16), 16, False),
    ],
)
def test_matvec_numerics(rng, x_shape, n, bias):
    check_linear(program(x_shape, n, bias), rng, x_shape, n, bias)


@pytest.mark.parametrize("m", range(1, 16))
def test_matvec_every_small_m(rng, m):
    check_linear(program((m, 83), 37), rng, (m, 83), 37, False)


@pytest.mark.parametrize("x_shape,n", [((1, 577), 1000), ((1, 1, 576), 1536), ((3, 577), 1001), ((6, 40), 24)])
def test_matvec_schedule_is_applied(x_shape, n):
    tiled = kiln.compile(linear_module(x_shape, n), compile_to="tiled")
    kernel = contraction_kernel(tiled)
    assert 'kiln.schedule_source = "default"' in kernel
    assert "scf.forall" in kernel  # workgroups over N
    assert "vector.fma" in kernel  # vectorized partial sums along K
    assert "vector.reduction <add>" in kernel  # one horizontal sum per output
    assert "linalg.generic" not in kernel  # everything was vectorized
    # The inner loop: wide loads of W rows, FMAs into accumulators carried in registers.
    assert "iter_args(%arg" in kernel and "-> (vector<" in kernel


def test_default_schedule_choice():
    mod = kiln.compile(linear_module((1, 1, 576), 1536), compile_to="dispatch")
    with ir.Context():
        kernels = schedules.kernels_of(ir.Module.parse(mod))
    (kernel,) = [k for k in kernels if k.kernel_class == "contraction"]
    sched = schedules.default_schedule(kernel)
    assert sched.kind == "matvec"
    mr, nr = sched.register_tile
    assert (mr, nr) == (1, 8) and sched.k_tile % sched.vector_width == 0
    assert sched.workgroup_tiles[0] % nr == 0
    cands = schedules.candidates(kernel)
    assert cands[0] == sched and len(cands) > 1 and all(c.kind == "matvec" for c in cands)
    # 16 or more rows: the packed GEMM schedule; dynamic rows stay there too.
    big = dataclasses.replace(kernel, loop_ranges=(1, 16, 1536, 576))
    assert schedules.default_schedule(big).kind == "packed_gemm"
    # Not a linear's weight layout (matmul W[K, N]) or not f32: not a matvec.
    assert schedules.default_schedule(dataclasses.replace(kernel, gemm_rhs="kn")).kind != "matvec"
    assert schedules.default_schedule(dataclasses.replace(kernel, f32=False)).kind != "matvec"


@pytest.mark.parametrize("x_shape,n", [((1, 577), 203), ((4, 100), 37)])
def test_every_candidate_is_correct(rng, x_shape, n):
    dispatch = kiln.compile(linear_module(x_shape, n), compile_to="dispatch")
    with ir.Context():
        kernels = schedules.kernels_of(ir.Module.parse(dispatch))
    (kernel,) = [k for k in kernels if k.kernel_class == "contraction"]
    for sched in schedules.candidates(kernel):
        with ir.Context():
            module = ir.Module.parse(dispatch)
            with module.context:
                func = next(op for op in module.body.operations
                            if op.operation.name == "func.func"
                            and ir.StringAttr(op.attributes["sym_name"]).value == kernel.name)
                func.attributes["kiln.schedule"] = ir.StringAttr.get(json.dumps(dataclasses.asdict(sched)))
            prog = kiln.compile(module, compile_from="dispatch")
        check_linear(prog, rng, x_shape, n, False)


@pytest.mark.parametrize("x_shape,n", [((3, 2, 64), 40), ((5, 3, 577), 1001)])
def test_matvec_dynamic_batch(rng, x_shape, n):
    """Leading batch dims unknown at compile time (m static): workgroups over N, batch looped inside."""
    from reference import T, jit, run
    from kiln.dialects import transformer

    spec = (None,) + x_shape[1:]
    jm = jit([T(spec), T((n, x_shape[-1]))], lambda x, w: transformer.linear(x, w),
             static=[x_shape[:-1] + (n,)])
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((n, x_shape[-1])).astype(np.float32)
    np.testing.assert_allclose(run(jm, x, w).astype(np.float64), ref.linear(x, w), rtol=2e-5,
                               atol=2e-5 * np.sqrt(x_shape[-1]))
    text = linear_module(spec, n)
    kernel = contraction_kernel(kiln.compile(text, compile_to="tiled"))
    assert "scf.forall" in kernel and "vector.fma" in kernel
