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
