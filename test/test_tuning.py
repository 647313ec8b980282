"""`kiln tune`: the persistent tuning cache (atomic, safe with concurrent writers) and tuned compiles."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kiln
from kiln import KilnError
from kiln import reference as ref
from kiln import tuning

MODULE = """
func.func @f(%x: tensor<40x72xf32>, %w: tensor<56x72xf32>) -> tensor<40x56xf32> {
  %y = transformer.linear %x, %w : (tensor<40x72xf32>, tensor<56x72xf32>) -> tensor<40x56xf32>
  %s = transformer.silu %y : tensor<40x56xf32>
  return %s : tensor<40x56xf32>
}
"""


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "tuning.json"
    writer = textwrap.dedent(f"""
        import sys
        from kiln.tuning import TuningCache
        cache = TuningCache({str(path)!r})
        for i in range(40):
            cache.put(f"{{sys.argv[1]}}-{{i}}", {{"schedule": {{"workgroup_tiles": [i]}}, "ms": i}})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer, name]) for name in ("a", "b")]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    data = json.loads(path.read_text())
    assert len(data) == 80
    assert data["b-39"]["ms"] == 39


def test_unreadable_cache_is_reported(cache_dir):
    (cache_dir / "tuning.json").write_text("{not json")
    with pytest.raises(KilnError, match="tuning cache .* is unreadable"):
        kiln.compile(MODULE, compile_to="tiled")


def test_tune_stores_winners_that_compiles_use(cache_dir, capsys):
    results = tuning.tune(MODULE, reps=2, progress=False)
    assert {r["kernel"].split("_dispatch_")[1] for r in results} == {"0_contraction", "1_elementwise"}
    entries = tuning.TuningCache().entries()
    assert len(entries) == 2
    for r in results:
        assert r["ms"] <= r["default_ms"] + 1e-9  # the default is one of the candidates
    tiled = kiln.compile(MODULE, compile_to="tiled")
    assert tiled.count('kiln.schedule_source = "tuned"') == 2
    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, 72)).astype(np.float32)
    w = rng.standard_normal((56, 72)).astype(np.float32)
    (y,) = kiln.compile(MODULE).f(x, w)
    np.testing.assert_allclose(y, ref.silu(ref.linear(x, w)), rtol=2e-5, atol=2e-5)


def test_without_cache_entries_compiles_use_defaults(cache_dir):
    tiled = kiln.compile(MODULE, compile_to="tiled")
    assert tiled.count('kiln.schedule_source = "default"') == 2


# ---- GPU targets: tensor-core tiles ------------------------------------------------------------

BF16_MATMUL = """
func.func @f(%a: tensor<256x128xbf16>, %b: tensor<128x256xbf16>) -> tensor<256x256xbf16> {
  %c = transformer.matmul %a, %b : (tensor<256x128xbf16>, tensor<128x256xbf16>) -> tensor<256x256xbf16>
  return %c : tensor<256x256xbf16>
}
"""


class _FakeGpu:
    """What the GPU tuner reads of a device, with no GPU: its chip and name."""

    def __init__(self, chip):
        self.gpu = type("Gpu", (), {"chip": chip, "device_name": "a GPU that is not there"})()


def test_gpu_tune_stores_the_fastest_right_tile_that_compiles_use(cache_dir, monkeypatch, rng):
    """`kiln tune --target cuda` times every tile candidate of each tensor-core GEMM on the GPU (here a
    stand-in clock: tiles with more warps are faster) and stores the fastest whose result agrees with
    the default tile's under the chip (the fastest of all computes garbage here: it is refused and
    recorded); compiles for that chip then take the winner, other chips keep the default."""
    from kiln.pipelines import gpu_mma

    timed = []
    product = rng.standard_normal((64, 64)).astype(np.float32)

    def clock(tile):
        return 1.0 / tile.threads + tile.kt * 1e-6 + tile.stages * 1e-7

    def garbage(tile):  # the fastest tiles (8 warps, K steps of 16, no ring) compute nonsense
        return tile.threads == 256 and tile.kt == 16 and tile.stages == 1

    def fake_time(text, tile, target, chip, device, reps):
        timed.append(tile)
        # the default's result (4 buffers) or within a bf16 rounding step of it, or a wrong layout
        return clock(tile), product.T.copy() if garbage(tile) else product * (1 + 2.0 ** -9 * (tile.stages % 2))

    monkeypatch.setattr(tuning, "_time_tile", fake_time)
    (result,) = tuning.tune(BF16_MATMUL, reps=1, progress=False, target="cuda", device=_FakeGpu("sm_90"))
    assert result["candidates"] == len(timed) > 20 and len(set(timed)) == len(timed)
    assert result["wrong"] == [t.attribute() for t in timed if garbage(t)] and len(result["wrong"]) == 4
    assert min(timed, key=clock).attribute() in result["wrong"]
    best = min((t for t in timed if not garbage(t)), key=clock)
    assert best.threads == 256 and result["mma_tile"] == best.attribute()
    assert result["default_ms"] is not None and result["ms"] < result["default_ms"]
    tiled = kiln.compile(BF16_MATMUL, target="cuda", chip="sm_90", compile_to="tiled")
    assert f"kiln.mma_tile = array<i64: {', '.join(map(str, best.attribute()))}>" in tiled
    assert 'kiln.schedule_source = "tuned"' in tiled
    assert 'kiln.schedule_source = "default"' in kiln.compile(BF16_MATMUL, target="cuda", chip="sm_80",
                                                              compile_to="tiled")
    assert gpu_mma.MmaTile(*result["mma_tile"]) in timed


def test_gpu_tune_needs_a_gpu_and_a_gemm(cache_dir, capsys):
    from kiln import cli

    path = cache_dir / "mm.mlir"
    path.write_text(BF16_MATMUL)
    assert cli.main(["tune", str(path), "--target", "cuda"]) == 1
    assert "no CUDA driver" in capsys.readouterr().err
    with pytest.raises(KilnError, match="needs the GPU's chip"):
        tuning.tune(BF16_MATMUL, target="rocm", device=_FakeGpu(None), progress=False)
    assert tuning.tune(MODULE, target="cuda", device=_FakeGpu("sm_90"), progress=False) == []  # f32: SIMT

