"""Models on GPU targets without a GPU: `kiln.compile_model(..., target="cuda")` on a tiny random Llama,
run through the real GPU runtime on the CPU emulation of the driver (test/gpu_emulation.py), gives Hugging
Face's greedy tokens; weights are uploaded once, the KV caches stay in device buffers, and a decode
step is one graph launch. Without a CUDA driver, compile_model and the CLI fail at once with a clear
error.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import kiln  # noqa: E402
from kiln import cli, model as kiln_model  # noqa: E402
from kiln.errors import KilnError  # noqa: E402
from kiln.runtime import cuda as cuda_driver  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from gpu_emulation import emulated_device  # noqa: E402
from test_gpu_compile import DECODE  # noqa: E402  (a decode step: cache updates + causal attention)
from tiny_llama import save_tiny_llama  # noqa: E402

VOCAB = 160
MAX_SEQ_LEN, CHUNK = 32, 8


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """(directory, HF model) of a tiny random Llama with GQA and tied embeddings (weights large enough
    that greedy decoding does not repeat one token)."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    hf = save_tiny_llama(directory, seed=5, vocab_size=VOCAB, initializer_range=0.2)
    return str(directory), hf


@pytest.fixture(scope="module")
def gpu_model(tiny_llama, tmp_path_factory):
    """The tiny Llama compiled for cuda (cached in a fresh cache dir) on an emulated device."""
    directory, _ = tiny_llama
    loops = kiln.compile(kiln_model.model_ir(directory, max_seq_len=MAX_SEQ_LEN, prefill_chunk=CHUNK),
                         target="cuda", compile_to="loops")
    device = emulated_device(loops)
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        _fixed_cache(patch, cache)
        compiled = kiln.compile_model(directory, target="cuda", device=device, max_seq_len=MAX_SEQ_LEN,
                                      prefill_chunk=CHUNK, progress=False)
    return compiled, device, cache


def _fixed_cache(patch, cache) -> None:
    """The artifact cache in `cache`, keyed by a fixed compiler fingerprint (others may edit the
    compiler's sources while the tests run)."""
    patch.setenv("KILN_CACHE_DIR", str(cache))
    patch.setattr(kiln_model, "_compiler_fingerprint", lambda: "test")


def test_greedy_tokens_match_hf(tiny_llama, gpu_model, rng):
    directory, hf = tiny_llama
    compiled, device, _ = gpu_model
    prompt = rng.integers(3, VOCAB, size=11)  # one whole prefill chunk, then a quarter-size one
    with torch.no_grad():
        want = hf.generate(torch.tensor(prompt[None]), max_new_tokens=12, do_sample=False, min_new_tokens=12,
                           pad_token_id=0)[0, len(prompt):].tolist()
    assert len(set(want)) > 4  # a comparison of varied tokens
    got = compiled.generate(prompt, max_new_tokens=12)
    assert got.ids == want
    # Logits agree with HF's too, not only their argmax.
    with torch.no_grad():
        ref = hf(torch.tensor(prompt[None])).logits[0].double().numpy()
    logits = compiled.forward(prompt)
    assert np.abs(logits - ref).max() / np.abs(ref).max() < 2e-5


def test_decode_step_is_one_graph_launch_on_device_buffers(gpu_model, rng):
    compiled, device, _ = gpu_model
    assert all(type(b).__name__ == "GpuBuffer" for b in compiled._params + compiled._caches)
    compiled.generate(rng.integers(3, VOCAB, size=4), max_new_tokens=2)  # binds the entry points
    gpu = device.gpu
    graphs, caches = gpu.graph_launches, [c.to_numpy() for c in compiled._caches]
    compiled._decode(7, 4)
    assert gpu.graph_launches == graphs + 1  # the new K/V rows are written by cache-update kernels
    changed = [not np.array_equal(c.to_numpy(), before) for c, before in zip(compiled._caches, caches)]
    assert all(changed)
    for c, before in zip(compiled._caches, caches):  # only row 4 of each cache changed
        after = c.to_numpy()
        np.testing.assert_array_equal(np.delete(after, 4, axis=-2), np.delete(before, 4, axis=-2))
    # The decode graph was captured once; the kernels read the position from device memory, so a new
    # position changes no node of it.
    bound = compiled._calls["decode"][1]
    assert bound.captures == 1 and bound._plan.dependent == []
    updates = gpu.node_updates
    compiled._decode(9, 5)
    assert bound.captures == 1 and gpu.node_updates == updates


def test_cached_and_saved_gpu_artifacts_reload(tiny_llama, gpu_model, tmp_path, monkeypatch, rng):
    directory, _ = tiny_llama
    compiled, device, cache = gpu_model
    _fixed_cache(monkeypatch, cache)
    (path,) = [os.path.join(cache, "models", f) for f in os.listdir(os.path.join(cache, "models"))]
    art = kiln.artifact.read(path)
    assert art.manifest["target"]["chip"] == "sm_80"
    assert art.manifest["model"]["options"]["chip"] == "sm_80"
    options = dict(art.manifest["model"]["options"])
    key = kiln_model._cache_key(compiled.checkpoint, options)
    assert key != kiln_model._cache_key(compiled.checkpoint, dict(options, chip="sm_90"))
    assert key != kiln_model._cache_key(compiled.checkpoint, dict(options, target="rocm"))
    assert os.path.basename(path) == f"{key}.kiln"

    prompt = rng.integers(3, VOCAB, size=5)
    want = compiled.generate(prompt, max_new_tokens=6).ids
    monkeypatch.setattr(kiln_model, "_compile_graph", _no_compile)
    again = kiln.compile_model(directory, target="cuda", device=device, max_seq_len=MAX_SEQ_LEN,
                               prefill_chunk=CHUNK, progress=False)
    assert again.generate(prompt, max_new_tokens=6).ids == want
    compiled.save(str(tmp_path / "m.kiln"))
    assert kiln.load(str(tmp_path / "m.kiln"), device=device).generate(prompt, max_new_tokens=6).ids == want


def test_bf16_precision_rounds_the_gemm_operands(tiny_llama, rng):
    """compile_model(precision="bf16") on a GPU target: the prefill GEMMs and decode matvecs multiply
    operands rounded to bf16, summing in f32 (a model's cache key, and its logits, differ from the
    f32 ones'); the CPU target refuses it. Against HF's float64 logits the rounding shows, within
    bf16's precision."""
    from kiln.pipelines.common import run_passes
    from mlir import ir

    directory, hf = tiny_llama
    loops = kiln.compile(kiln_model.model_ir(directory, max_seq_len=MAX_SEQ_LEN, prefill_chunk=CHUNK),
                         target="cuda", compile_to="loops", precision="bf16")
    assert "arith.truncf" in loops
    with ir.Context():  # the emulator's CPU code rounds to bf16 with integer ops
        module = ir.Module.parse(loops)
        run_passes(module, "gpu.module(arith-expand{include-bf16=true})", "test")
        loops = str(module)
    compiled = kiln.compile_model(directory, target="cuda", device=emulated_device(loops), max_seq_len=MAX_SEQ_LEN,
                                  prefill_chunk=CHUNK, cache=False, progress=False, precision="bf16")
    assert compiled.options["precision"] == "bf16"
    ids = rng.integers(3, VOCAB, size=11)
    with torch.no_grad():
        want = hf(torch.tensor(ids[None])).logits[0].double().numpy()
    err = np.abs(compiled.forward(ids) - want).max() / np.abs(want).max()
    assert 1e-4 < err < 3e-2, err
    with pytest.raises(KilnError, match="precision 'bf16' applies to the GPU targets"):
        kiln.compile_model(directory, precision="bf16", cache=False, progress=False)
    with pytest.raises(KilnError, match="unknown precision 'fp8'"):
        kiln.compile_model(directory, target="cuda", device=emulated_device(loops), precision="fp8")


def _no_compile(*args, **kwargs):
    raise AssertionError("compiled, though a cached artifact or a missing driver should have stopped it")


def test_missing_cuda_driver_fails_before_compiling(tiny_llama, monkeypatch, capsys):
    directory, _ = tiny_llama
    monkeypatch.setattr(cuda_driver, "LIBRARY", "libcuda-not-installed.so.1")
    monkeypatch.setattr(kiln_model, "_compile_graph", _no_compile)
    with pytest.raises(KilnError, match="no CUDA driver: libcuda-not-installed.so.1 not found"):
        kiln.compile_model(directory, target="cuda")
    assert cli.main(["run", directory, "--target", "cuda", "--max-new-tokens", "2"]) == 1
    assert "kiln: error: no CUDA driver" in capsys.readouterr().err


def test_target_device_mismatches_are_refused(tiny_llama, gpu_model):
    directory, _ = tiny_llama
    _, device, _ = gpu_model
    with pytest.raises(KilnError, match="chip= applies to the GPU targets"):
        kiln.compile_model(directory, chip="sm_90")
    with pytest.raises(KilnError, match="target 'rocm' runs on a 'hip' device, got a 'cuda' one"):
        kiln.compile_model(directory, target="rocm", device=device)


def test_decode_attention_stops_at_the_position(rng):
    """Decode attention is one flash kernel whose key loop ends at min(position + 1, cache rows)
    (gpu_flash.py; rounded up to whole steps of its key phases, the keys past it masked); every position of the cache, first to last, gives the float64 attention, and the
    rows not yet written (NaN here) are never read."""
    import re

    from kiln import reference as ref

    loops = kiln.compile(DECODE, target="cuda", compile_to="loops")
    assert loops.count("gpu.func") == 2  # the cache update and the attention
    end = re.search(r"(%\w+) = arith\.minui %\w+, %c8 : index", loops).group(1)  # min(position + 1, 8)
    # the key loop runs to it, rounded up to whole steps of the key phases
    loop_end = re.search(rf"(%\w+) = affine\.apply #\w+\(\)\[{end}\]", loops).group(1)
    assert re.search(rf"scf\.for %\w+ = %c0 to {loop_end} step", loops)
    device = emulated_device(loops)
    program = kiln.runtime.load_artifact(kiln.compile(DECODE, target="cuda"), device)
    kc, vc = np.full((1, 2, 8, 16), np.nan, np.float32), np.full((1, 2, 8, 16), np.nan, np.float32)
    bk, bv = device.upload(kc), device.upload(vc)
    for pos in range(8):
        q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((1, 4, 1, 16), (1, 2, 1, 16), (1, 2, 1, 16)))
        kc[:, :, pos], vc[:, :, pos] = k[:, :, 0], v[:, :, 0]
        o, _, _ = program.decode(q, k, v, bk, bv, pos)
        want = ref.attention(q, np.repeat(kc, 2, axis=1), np.repeat(vc, 2, axis=1), causal=True, offset=pos)
        np.testing.assert_allclose(o, want, rtol=2e-5, atol=2e-6)


def test_cross_compiled_model_loads_from_moved_weights_without_the_compiler(tiny_llama, gpu_model, tmp_path,
                                                                            monkeypatch, rng):
    """compile_model_to_file needs no device; kiln.load(checkpoint=...) binds the moved weights from the
    saved parameter list (no IR is rebuilt) and refuses weights whose content differs."""
    directory, _ = tiny_llama
    compiled, device, _ = gpu_model
    path = str(tmp_path / "tiny.kiln")
    kiln_model.compile_model_to_file(directory, path, target="cuda", chip="sm_80", max_seq_len=MAX_SEQ_LEN,
                                     prefill_chunk=CHUNK, progress=False)
    moved = tmp_path / "moved"
    shutil.copytree(directory, moved)
    monkeypatch.setattr(kiln_model, "_build_graph", _no_compile)
    prompt = rng.integers(3, VOCAB, size=9)
    loaded = kiln.load(path, device=device, checkpoint=str(moved))
    assert loaded.generate(prompt, max_new_tokens=6).ids == compiled.generate(prompt, max_new_tokens=6).ids
    weights = next(moved.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x40  # one bit of the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(KilnError, match="compiled from other weights than .*moved"):
        kiln.load(path, device=device, checkpoint=str(moved))
