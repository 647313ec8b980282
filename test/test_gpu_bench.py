"""`kiln bench --target cuda` without a GPU: it stops at once with a message naming what is missing; its
Kiln side (a workload compiled, bound to device buffers, replayed) runs on the driver emulation; the
plot is drawn from a report. The timed comparison itself needs a CUDA GPU and a CUDA build of torch.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import kiln
from kiln import cli
from kiln.bench import gpu as gpu_bench, workloads
from kiln.errors import KilnError
from kiln.runtime import cuda as cuda_driver

sys.path.insert(0, os.path.dirname(__file__))
from gpu_emulation import emulated_device  # noqa: E402


def test_without_a_cuda_driver_the_bench_exits_with_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cuda_driver, "LIBRARY", "libcuda-not-installed.so.1")
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    assert cli.main(["bench", "--target", "cuda", "-o", str(out), "--plot", str(png)]) == 1
    err = capsys.readouterr().err
    assert "kiln: error: kiln bench --target cuda needs an NVIDIA GPU and its driver: no CUDA driver: " \
           "libcuda-not-installed.so.1 not found" in err
    assert not out.exists() and not png.exists()


def test_a_cpu_only_torch_is_named(monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA device here")
    import kiln.runtime

    monkeypatch.setattr(kiln.runtime, "Device", lambda driver: emulated_device("module {}", driver))
    with pytest.raises(KilnError, match=r"sees no CUDA device \(a CPU-only build\?\)"):
        gpu_bench.require_cuda()


def test_kiln_side_runs_bound_on_device_buffers(rng):
    w = workloads.linear(1, 96, 64)
    device = emulated_device(kiln.compile(w.kiln_ir(), target="cuda", compile_to="loops"))
    call, out, inputs = gpu_bench.kiln_call(w, "f32", device)
    for _ in range(3):
        call()
    assert device.gpu.graph_launches == 3
    np.testing.assert_allclose(out.to_numpy(), inputs[0] @ inputs[1].T, rtol=1e-5, atol=1e-5)


def test_bf16_inputs_reach_torch_bit_for_bit(rng):
    """The bf16 GEMM row feeds the same bf16 tensors (ml_dtypes arrays) to Kiln and to torch."""
    torch = pytest.importorskip("torch")
    w = workloads.gemm(32, 48, 16, "bf16")
    assert w.name == "gemm_32x48x16_bf16" and "tensor<32x16xbf16>" in w.kiln_ir()
    a, b = w.make_inputs(rng)
    assert a.dtype.name == "bfloat16" and b.shape == (16, 48)
    t = gpu_bench.torch_tensor(torch, a)
    assert t.dtype == torch.bfloat16
    np.testing.assert_array_equal(t.float().numpy(), a.astype(np.float32))


def test_compiled_ahead_programs_are_loaded_not_compiled(tmp_path, monkeypatch, capsys, rng):
    """--compile-only writes the suite's programs for the chip; a run with --artifacts loads them."""
    folder = str(tmp_path / "art")
    assert cli.main(["bench", "--target", "cuda", "--suite", "smoke", "--artifacts", folder, "--compile-only",
                     "--chip", "sm_80"]) == 0
    assert "compiled the 'smoke' suite for sm_80" in capsys.readouterr().out
    w = workloads.linear(1, 512, 256)
    path = os.path.join(folder, "linear_1x512x256-f32.kiln")
    assert kiln.artifact.read(path).manifest["target"]["chip"] == "sm_80"
    device = emulated_device(kiln.compile(w.kiln_ir(), target="cuda", compile_to="loops"))
    monkeypatch.setattr(kiln, "compile", lambda *a, **k: pytest.fail("compiled a program it was given"))
    call, out, inputs = gpu_bench.kiln_call(w, "f32", device, folder)
    call()
    np.testing.assert_allclose(out.to_numpy(), inputs[0] @ inputs[1].T, rtol=1e-5, atol=1e-5)


def test_cross_compiling_options_are_checked(capsys):
    assert cli.main(["bench", "--target", "cuda", "--compile-only"]) == 1
    assert "--compile-only writes the compiled programs to --artifacts DIR" in capsys.readouterr().err
    assert cli.main(["bench", "--suite", "check"]) == 1
    assert "--suite check, --artifacts and --compile-only are for --target cuda" in capsys.readouterr().err


def test_unknown_suite_is_refused():
    with pytest.raises(KilnError, match="unknown GPU benchmark suite 'huge'"):
        gpu_bench.kernel_suite("huge")


def test_plot_names_the_device_and_versions(tmp_path):
    pytest.importorskip("matplotlib")
    rep = {"device": {"name": "NVIDIA H100 80GB HBM3", "chip": "sm_90"},
           "versions": {"kiln": "0.1.0", "mlir": "22.1.8.4", "torch": "2.13.0", "torch_cuda": "13.0",
                        "cuda_driver": "13.0", "transformers": "4.60.0"},
           "kernels": [{"workload": "gemm_4096x4096x4096", "precision": "bf16", "speedup": 0.8},
                       {"workload": "linear_1x4096x4096", "precision": "f32", "speedup": 1.3}],
           "model": {"model": "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "kiln": {"decode_tok_s": 400.0},
                     "kiln_fp32": {"decode_tok_s": 350.0}, "hf": {"decode_tok_s": 60.0}}}
    gpu_bench.plot_report(str(tmp_path / "p.png"), rep)
    assert (tmp_path / "p.png").stat().st_size > 10000


def test_the_model_bench_runs_a_gguf_with_blocks_and_with_float32_weights(tmp_path):
    """A GGUF storing Q4/Q8 blocks is timed both ways (compile_model's default reads the blocks); a
    checkpoint of float32 tensors only once."""
    pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    from test_quantized_weights import _write_tiny_llama
    from tiny_llama import save_tiny_llama

    path = str(tmp_path / "tiny.gguf")
    _write_tiny_llama(path, np.random.default_rng(3))
    assert gpu_bench.model_systems(path) == {"kiln": "model.kiln", "kiln_fp32": "model-fp32.kiln"}
    save_tiny_llama(tmp_path / "hf", seed=3)
    assert gpu_bench.model_systems(str(tmp_path / "hf")) == {"kiln": "model.kiln"}
