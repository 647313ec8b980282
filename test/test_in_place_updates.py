"""Results that update an argument in place (`kiln.updates_arg`, how KV caches stay in device buffers):
the compiler writes them into the argument's buffer, the runtime returns that argument, and an update
that cannot happen in place is a compile error rather than a silent copy."""

import numpy as np
import pytest

import kiln
from kiln.errors import KilnError

from reference import randn

CACHE = """
func.func @step(%cache: tensor<1x2x8x4xf32>, %new: tensor<1x2x1x4xf32>, %pos: index)
    -> (tensor<1x2x8x4xf32> {kiln.updates_arg = 0 : i64}, tensor<1x2x1x4xf32>) {
  %c = transformer.kv_cache_update %cache, %new at %pos : tensor<1x2x8x4xf32>, tensor<1x2x1x4xf32> -> tensor<1x2x8x4xf32>
  %q = transformer.silu %new : tensor<1x2x1x4xf32>
  %o = transformer.attention %q, %c, %c offset(%pos) {causal} : (tensor<1x2x1x4xf32>, tensor<1x2x8x4xf32>, tensor<1x2x8x4xf32>, index) -> tensor<1x2x1x4xf32>
  return %c, %o : tensor<1x2x8x4xf32>, tensor<1x2x1x4xf32>
}
"""


@pytest.fixture(scope="module")
def program():
    return kiln.compile(CACHE)


def test_signature_records_the_update(program):
    sig = program.entry_point("step").signature
    assert sig.updates == {0: 0}
    assert sig.returned_results == [1]


def test_cache_is_written_in_place_across_calls(program, rng):
    from kiln import reference as ref

    device = program.device
    cache = device.allocate((1, 2, 8, 4), np.float32)
    cache.host_view()[...] = np.nan  # unwritten rows must never reach a result
    expected = np.full((1, 2, 8, 4), np.nan)
    for pos in range(5):
        new = randn(rng, (1, 2, 1, 4))
        updated, out = program.step(cache, new, pos)
        assert updated is cache
        expected = ref.kv_cache_update(expected, new, pos)
        np.testing.assert_array_equal(cache.host_view()[:, :, : pos + 1], expected[:, :, : pos + 1])
        q = ref.silu(new)
        want = ref.attention(q, expected[:, :, : pos + 1], expected[:, :, : pos + 1], causal=True, offset=pos)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    assert np.isnan(cache.host_view()[:, :, 5:]).all()


def test_numpy_cache_is_updated_and_returned(program, rng):
    cache = np.zeros((1, 2, 8, 4), np.float32)
    new = randn(rng, (1, 2, 1, 4))
    updated, _ = program.step(cache, new, 3)
    assert updated is cache
    np.testing.assert_array_equal(cache[:, :, 3:4], new)


def test_read_only_or_copied_caches_are_refused(program, rng):
    new = randn(rng, (1, 2, 1, 4))
    frozen = np.zeros((1, 2, 8, 4), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(KilnError, match=r"argument 0 of 'step' \(updated in place\)"):
        program.step(frozen, new, 0)
    with pytest.raises(KilnError, match=r"argument 0 of 'step' \(updated in place\)"):
        program.step(np.zeros((1, 2, 8, 4), np.float64), new, 0)  # would be converted: a copy
    with pytest.raises(KilnError, match="has 1 results that need out buffers, got 2"):
        program.step(np.zeros((1, 2, 8, 4), np.float32), new, 0,
                     out=[np.zeros((1, 2, 1, 4), np.float32)] * 2)


def test_an_update_that_cannot_be_in_place_is_a_compile_error():
    # The old cache is returned too, so the update cannot overwrite it.
    text = """
    func.func @both(%cache: tensor<1x2x8x4xf32>, %new: tensor<1x2x1x4xf32>, %pos: index)
        -> (tensor<1x2x8x4xf32> {kiln.updates_arg = 0 : i64}, tensor<1x2x8x4xf32>) {
      %c = transformer.kv_cache_update %cache, %new at %pos : tensor<1x2x8x4xf32>, tensor<1x2x1x4xf32> -> tensor<1x2x8x4xf32>
      return %c, %cache : tensor<1x2x8x4xf32>, tensor<1x2x8x4xf32>
    }
    """
    with pytest.raises(KilnError, match="result 0 of @both updates argument 0 .* could not write it in place"):
        kiln.compile(text)


def test_updates_arg_must_name_an_argument_of_the_same_type():
    text = """
    func.func @bad(%a: tensor<4xf32>, %b: tensor<8xf32>) -> (tensor<4xf32> {kiln.updates_arg = 1 : i64}) {
      %c = arith.addf %a, %a : tensor<4xf32>
      return %c : tensor<4xf32>
    }
    """
    with pytest.raises(KilnError, match="result 0 of @bad is marked kiln.updates_arg = 1, which is not an argument"):
        kiln.compile(text)
