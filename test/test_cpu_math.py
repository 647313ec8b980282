"""Inline f32 exp on the CPU (kiln.pipelines.cpu.inline_exp): accuracy against float64 over the whole
input range, the special values, and that no libm/libmvec exp call is left in the built kernels."""

import functools

import numpy as np
import pytest

import kiln
from kiln import reference as ref
from kiln.pipelines import cpu
from mlir import ir

N = 1 << 16


def _ir(body: str, t: str) -> str:
    return f"func.func @f(%x: {t}) -> {t} {{\n  %y = {body} : {t}\n  return %y : {t}\n}}"


@functools.lru_cache(maxsize=None)
def _program(body: str, shape: tuple):
    return kiln.compile(_ir(body, "tensor<" + "x".join(map(str, shape)) + "xf32>"), target="cpu").f


def _ulps(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Distance in f32 steps from the correctly rounded f32 result (both are >= 0 here)."""
    with np.errstate(over="ignore"):
        want = expected.astype(np.float32)
    return np.abs(actual.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))


@pytest.mark.parametrize("lo,hi", [(-110.0, 90.0), (-1.0, 1.0), (-104.0, -85.0), (85.0, 89.0), (-1e-6, 1e-6)])
def test_exp_within_one_ulp(rng, lo, hi):
    """Within 1 ulp of the correctly rounded exp, subnormal results, overflow to inf and underflow
    to +0 included."""
    x = rng.uniform(lo, hi, N).astype(np.float32)
    with np.errstate(over="ignore"):
        expected = np.exp(x.astype(np.float64))
    ulps = _ulps(_program("math.exp %x", (N,))(x)[0], expected)
    assert ulps.max() <= 1, f"{ulps.max()} ulp at x = {x[np.argmax(ulps)]!r}"


def test_exp_special_values():
    x = np.zeros(N, np.float32)
    special = [np.inf, -np.inf, np.nan, 0.0, -0.0, 88.72283, 88.72284, 1e30, -1e30, -87.33655,
               -103.0, -103.97, -103.98, 1e-45, -1e-45, 3.4e38, -3.4e38]
    x[: len(special)] = special
    y = _program("math.exp %x", (N,))(x)[0][: len(special)]
    xs = x[: len(special)]
    with np.errstate(over="ignore"):
        want = np.exp(xs.astype(np.float64)).astype(np.float32)
    assert np.isnan(y[2]) and np.all(np.isnan(y) == np.isnan(want))
    assert np.array_equal(y == 0, want == 0) and np.array_equal(np.isinf(y), np.isinf(want))
    finite = ~np.isnan(want)
    assert _ulps(y[finite], want[finite].astype(np.float64)).max() <= 1
    assert not np.signbit(y[[1, 8, 12, 16]]).any(), "underflow must give +0"


def test_softmax_and_silu_wide_range(rng):
    """The kernels that use exp, on inputs spread over f32's exp range (masked -inf scores
    included), against float64 with a few ulps' tolerance."""
    x = (rng.standard_normal((64, 257)) * 40).astype(np.float32)
    x[::3, ::5] = -np.inf
    got = _program("transformer.softmax %x", x.shape)(x)[0]
    np.testing.assert_allclose(got, ref.softmax(x, -1), rtol=4e-6, atol=1e-30)
    s = rng.uniform(-100, 100, (64, 257)).astype(np.float32)
    np.testing.assert_allclose(_program("transformer.silu %x", s.shape)(s)[0], ref.silu(s),
                               rtol=4e-7, atol=1e-30)


def test_no_exp_calls_left():
    """The llvm stage has no exp left (no intrinsic that LLVM would turn into expf/_ZGV*_expf), and
    neither has the optimized LLVM IR; sin/cos still go to libm (RoPE's large angles)."""
    body = "math.exp %x"
    llvm = kiln.compile(_ir(body, "tensor<1000xf32>"), target="cpu", compile_to="llvm")
    assert "math.exp" not in llvm and "llvm.intr.exp" not in llvm and "expf" not in llvm
    assert "llvm.intr.fma" in llvm
    llvm = kiln.compile(_ir("math.sin %x", "tensor<1000xf32>"), target="cpu", compile_to="llvm")
    assert "llvm.intr.sin" in llvm or "sinf" in llvm


def test_vector_exp_is_inlined():
    """Vector math.exp (what vectorized schedules produce) is rewritten too, f64 exp is left alone."""
    with ir.Context(), ir.Location.unknown():
        module = ir.Module.parse(
            "func.func @v(%x: vector<16xf32>, %d: f64) -> (vector<16xf32>, f64) {\n"
            "  %y = math.exp %x : vector<16xf32>\n  %e = math.exp %d : f64\n"
            "  return %y, %e : vector<16xf32>, f64\n}")
        cpu.inline_exp(module)
        assert module.operation.verify()
        text = str(module)
    assert "math.exp %arg0" not in text and "math.fma" in text and "vector<16xi32>" in text
    assert text.count("math.exp") == 1 and "math.exp %arg1 : f64" in text
