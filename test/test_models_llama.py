"""Llama-family models end to end against Hugging Face transformers: tiny random Llama (GQA, separate
and tied heads, llama3 rope scaling), Qwen2 (QKV bias; YaRN rope scaling) and Qwen3 (QK-norm, head_dim != hidden/heads),
saved as safetensors checkpoints and compiled with kiln.compile_model.

Logits must match HF's fp32 forward closely, and greedy generation must give identical token ids.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import kiln  # noqa: E402
from kiln.errors import KilnError  # noqa: E402

from kiln.bench.tiny_models import MODELS, VOCAB, save_tiny_model  # noqa: E402

LLAMA_FAMILY = [name for name in MODELS if name != "gpt2"]


@pytest.fixture(scope="module", params=LLAMA_FAMILY)
def pair(request, tmp_path_factory):
    """(HF model, Kiln CompiledModel) for one tiny architecture."""
    directory = tmp_path_factory.mktemp(request.param)
    hf = save_tiny_model(request.param, directory, seed=len(request.param))
    compiled = kiln.compile_model(str(directory), max_seq_len=64, cache=False, prefill_chunk=16,
                                  progress=False)
    return hf, compiled


def test_forward_logits_match_hf(pair, rng):
    hf, compiled = pair
    ids = rng.integers(3, VOCAB, size=37)  # more than two prefill chunks
    with torch.no_grad():
        want = hf(torch.tensor(ids[None])).logits[0].double().numpy()
    got = compiled.forward(ids)
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 2e-5, err


def test_greedy_generation_matches_hf(pair, rng):
    hf, compiled = pair
    prompt = rng.integers(3, VOCAB, size=11)
    with torch.no_grad():
        want = hf.generate(torch.tensor(prompt[None]), max_new_tokens=32, do_sample=False,
                           pad_token_id=0)[0, len(prompt):].tolist()
    got = compiled.generate(prompt, max_new_tokens=32)
    assert got.ids == want
    assert got.stopped_by == ("eos" if len(want) < 32 else "max_new_tokens")


def test_generation_streams_every_token_and_stops_on_request(pair, rng):
    hf, compiled = pair
    prompt = rng.integers(3, VOCAB, size=5)
    seen = []
    full = compiled.generate(prompt, max_new_tokens=8, callback=lambda t, piece: seen.append(t))
    assert seen == full.ids
    stop_at = full.ids[3]
    first = full.ids.index(stop_at)
    stopped = compiled.generate(prompt, max_new_tokens=8, stop=[stop_at])
    assert stopped.ids == full.ids[: first + 1] and stopped.stopped_by in ("stop", "eos")


def test_sampling_is_seeded(pair, rng):
    _, compiled = pair
    prompt = rng.integers(3, VOCAB, size=6)
    a = compiled.generate(prompt, max_new_tokens=10, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=7)
    b = compiled.generate(prompt, max_new_tokens=10, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=7)
    assert a.ids == b.ids
    assert all(0 <= t < VOCAB for t in a.ids)


def test_prompt_longer_than_max_seq_len_is_refused(pair):
    _, compiled = pair
    with pytest.raises(KilnError, match="do not fit in max_seq_len 64"):
        compiled.generate(list(range(3, 70)), max_new_tokens=1)
    with pytest.raises(KilnError, match="outside the vocabulary"):
        compiled.forward([5, VOCAB + 4])


def test_generation_stops_at_max_seq_len(pair, rng):
    _, compiled = pair
    out = compiled.generate(rng.integers(3, VOCAB, size=60), max_new_tokens=20)
    assert len(out.ids) <= 5
    assert out.stopped_by in ("max_seq_len", "eos")


def test_save_and_load_round_trip(pair, tmp_path, rng):
    _, compiled = pair
    path = str(tmp_path / "m.kiln")
    compiled.save(path)
    loaded = kiln.load(path)
    ids = rng.integers(3, VOCAB, size=9)
    np.testing.assert_array_equal(loaded.forward(ids), compiled.forward(ids))


def _rewrite_config(directory, **changes):
    import json

    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_bad_models_are_refused_before_compiling(tmp_path):
    save_tiny_model("llama", tmp_path, seed=3)
    with pytest.raises(KilnError, match="dtype 'bfloat16' is not supported yet"):
        kiln.compile_model(str(tmp_path), dtype="bfloat16", cache=False)
    with pytest.raises(KilnError, match="unknown target 'tpu'"):
        kiln.compile_model(str(tmp_path), target="tpu", cache=False)
    _rewrite_config(tmp_path, num_hidden_layers=3)  # the checkpoint has 2 layers
    with pytest.raises(KilnError, match="model.layers.2"):
        kiln.compile_model(str(tmp_path), max_seq_len=32, cache=False)
    _rewrite_config(tmp_path, num_hidden_layers=2, intermediate_size=99)  # the weights have 100
    with pytest.raises(KilnError, match="mlp.gate_proj.weight.* 100x72.* 99x72"):
        kiln.compile_model(str(tmp_path), max_seq_len=32, cache=False)
    _rewrite_config(tmp_path, intermediate_size=100, hidden_act="gelu")
    with pytest.raises(KilnError, match="hidden_act 'gelu'"):
        kiln.compile_model(str(tmp_path), max_seq_len=32, cache=False)
    _rewrite_config(tmp_path, hidden_act="silu", model_type="mamba")
    with pytest.raises(KilnError, match="unsupported model_type 'mamba'; Kiln supports: .*llama.*qwen3"):
        kiln.compile_model(str(tmp_path), max_seq_len=32, cache=False)


def test_prompt_tails_run_in_quarter_size_chunks(tmp_path, rng):
    """With prefill_chunk 32 a prompt runs as whole 32-token chunks, then a tail of at most 16 tokens
    as 8-token chunks (and a last single token as a decode step); generation still matches HF."""
    hf = save_tiny_model("qwen2", tmp_path, seed=5)
    compiled = kiln.compile_model(str(tmp_path), max_seq_len=96, cache=False, prefill_chunk=32, progress=False)
    assert set(compiled.graph.entry_points) == {"decode", "prefill_8", "prefill_32", "logits_32"}
    for length in (41, 17, 9, 33):  # 32 + 8 + 1, 8 + 8 + 1, 8 + 1, 32 + 1
        prompt = rng.integers(3, VOCAB, size=length)
        with torch.no_grad():
            want = hf.generate(torch.tensor(prompt[None]), max_new_tokens=12, do_sample=False,
                               pad_token_id=0)[0, length:].tolist()
        assert compiled.generate(prompt, max_new_tokens=12).ids == want, length
