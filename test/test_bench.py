"""`kiln bench` end to end on the tiny `smoke` suite: report fields, ratios, output cross-check, plot."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from kiln import KilnError, bench
from kiln.bench import iree_peer


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    plot = str(d / "bench.png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plot = None
    rep = bench.run("smoke", threads=(1,), rounds=1, reps=2, output=str(d / "bench.json"), plot=plot)
    return rep, d, plot


def test_report_has_every_workload_and_peer(report):
    rep, d, _ = report
    on_disk = json.loads((d / "bench.json").read_text())
    assert on_disk["settings"]["suite"] == "smoke"
    names = {r["workload"] for r in on_disk["results"]}
    assert names == {w.name for w in bench.make_suite("smoke")}
    for r in on_disk["results"]:
        assert r["median_ms"]["kiln"] > 0
        assert len(r["samples_ms"]["kiln"]) == 2
        for peer, ratio in r["speedup"].items():
            assert ratio == pytest.approx(r["median_ms"][peer] / r["median_ms"]["kiln"])


def test_outputs_agree_with_the_peers(report):
    rep, _, _ = report
    peers_of = {w.name: set(w.peers) & set(rep["settings"]["peers"]) for w in bench.make_suite("smoke")}
    for r in rep["results"]:
        assert set(r["output_check"]) == peers_of[r["workload"]]
        for peer, rel in r["output_check"].items():
            assert rel < 1e-3, f"{r['workload']}: Kiln's output differs from {peer} by {rel}"
    assert any(r["output_check"] for r in rep["results"])  # numpy is always there


@pytest.mark.parametrize("peer", ["onnxruntime", "iree"])
def test_optional_peer_times_every_workload_and_agrees(report, peer):
    # Not importorskip: iree.compiler's MLIR bindings fail to load next to Kiln's, which would skip silently.
    if peer not in bench.available_peers():
        pytest.skip(f"{peer} is not installed (see benchmarks/README.md)")
    rep, _, _ = report
    assert peer in rep["settings"]["peers"]
    assert {r["workload"] for r in rep["results"] if peer in r["median_ms"]} == \
        {w.name for w in bench.make_suite("smoke")}
    for r in rep["results"]:
        assert len(r["samples_ms"][peer]) == 2
        assert r["output_check"][peer] < 1e-3, r["workload"]


def test_onnxruntime_is_optional(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    assert "onnxruntime" not in bench.available_peers()
    assert "numpy" in bench.available_peers()


def test_iree_compile_errors_name_the_stage(monkeypatch):
    if "iree" not in bench.available_peers():
        pytest.skip("IREE is not installed (see benchmarks/README.md)")
    monkeypatch.setattr(iree_peer, "COMPILE_FLAGS", (*iree_peer.COMPILE_FLAGS, "--no-such-flag"))
    gemm = bench.make_suite("smoke")[0]
    with pytest.raises(KilnError, match=r"compiling the model \(iree-compile\) failed: .*no-such-flag"):
        gemm.peers["iree"](gemm.make_inputs(np.random.default_rng(0)))


def test_iree_is_optional(monkeypatch):
    def find_spec(name, *a):  # as with no `iree` package at all: its submodules' parent is missing
        if name.startswith("iree."):
            raise ModuleNotFoundError("No module named 'iree'")
        return real_find_spec(name, *a)

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert "iree" not in bench.available_peers()
    assert "numpy" in bench.available_peers()


def test_plot_is_a_png(report):
    _, _, plot = report
    if plot is None:
        pytest.skip("matplotlib is not installed")
    with open(plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_bad_threads():
    proc = subprocess.run([sys.executable, "-m", "kiln.cli", "bench", "--threads", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "kiln: error: --threads must be positive" in proc.stderr


def test_a_peer_that_cannot_run_a_workload_leaves_the_others(monkeypatch, capsys):
    """The peer worker reports a peer's failure (IREE cannot compile some workloads) and still times
    the other peers, so one peer never aborts a whole benchmark."""
    import io

    import torch

    from kiln.bench import peers, workloads

    w = workloads.suite("smoke")[0]

    def broken(inputs):
        raise RuntimeError("cannot compile this workload")

    w.peers = {"numpy": w.peers["numpy"], "iree": broken}
    monkeypatch.setattr(workloads, "suite", lambda name: [w])
    request = {"suite": "smoke", "workload": w.name, "seed": 0, "reps": 2, "peers": ["numpy", "iree"]}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(request) + "\n"))
    peers.serve(torch.get_num_threads())
    reply = json.loads(capsys.readouterr().out)
    assert len(reply["numpy"]) == 2 and "iree" not in reply and "error" not in reply
    assert reply["failed"] == {"iree": "RuntimeError: cannot compile this workload"}
