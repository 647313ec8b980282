"""Reading GGUF files (llama.cpp's format) as Hugging Face checkpoints: HF tensor names and layouts, weights
dequantized to float32, and a config dict rebuilt from the metadata the way transformers rebuilds it.

The `gguf` package (from the llama.cpp project) memory-maps the file and dequantizes blocks. Two things
differ from HF and are undone here: tensor names (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`)
and, for the `llama` architecture, the row order of the Q and K projections, which llama.cpp's converter
permutes for its interleaved RoPE (HF rotates the two halves of each head instead).
"""

from __future__ import annotations

import os
import re

import numpy as np

from kiln.errors import KilnError

# Quantization types dequantized at load. Others (K-quants, IQ*) are refused by name at load time.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")

# GGUF architecture -> HF model_type; metadata key suffix -> HF config key (as transformers' GGUF_CONFIG_MAPPING).
ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "rope.freq_base": "rope_theta",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}

# GGUF tensor name -> HF tensor name.
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Tensors llama.cpp stores that HF models do not have as parameters (precomputed RoPE frequency factors).
_SKIPPED = {"rope_freqs.weight"}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")


def hf_tensor_name(gguf_name: str) -> str | None:
    """The HF name of a GGUF tensor of a Llama-family model, or None if unknown."""
    if m := _BLOCK_RE.match(gguf_name):
        block, kind, suffix = m.groups()
        if kind in _BLOCK_NAMES:
            return f"model.layers.{block}.{_BLOCK_NAMES[kind]}.{suffix}"
        return None
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _GLOBAL_NAMES and suffix in ("weight", "bias"):
        return f"{_GLOBAL_NAMES[stem]}.{suffix}"
    return None


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation: within each head, rows were reordered from [half0, half1] to
    interleaved pairs; this restores HF's order (inverse of convert_hf_to_gguf.py's `permute`)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFFile:
    """One GGUF file: metadata as a dict of Python values, HF-named tensors, HF-shaped config."""

    def __init__(self, path: str):
        import gguf

        self.path = os.fspath(path)
        try:
            self.reader = gguf.GGUFReader(self.path)
        except Exception as e:  # the reader raises ValueError/struct.error/... on corrupt input
            raise KilnError(f"{self.path}: cannot read GGUF file: {e}") from e
        self.metadata = {key: field.contents() for key, field in self.reader.fields.items()}
        arch = self.metadata.get("general.architecture")
        if arch not in ARCHITECTURES:
            raise KilnError(f"{self.path}: GGUF architecture {arch!r} is not supported; "
                            f"Kiln reads {', '.join(sorted(ARCHITECTURES))}")
        self.architecture = arch
        self._tensors = {}
        for t in self.reader.tensors:
            qtype = t.tensor_type.name
            if qtype not in SUPPORTED_TYPES:
                raise KilnError(f"{self.path}: tensor {t.name!r} uses GGUF quantization type {qtype}, which Kiln "
                                f"does not dequantize (supported: {', '.join(SUPPORTED_TYPES)})")
            if t.name in _SKIPPED:
                continue
            hf = hf_tensor_name(t.name)
            if hf is None:
                raise KilnError(f"{self.path}: tensor {t.name!r} has no Hugging Face counterpart for architecture {arch!r}")
            self._tensors[hf] = t
        self.config = self._config()

    def _config(self) -> dict:
        meta, arch = self.metadata, self.architecture
        config = {"model_type": ARCHITECTURES[arch]}
        name = meta.get("general.name") or ""
        if arch == "llama" and "mistral" in name.lower():
            config["model_type"] = "mistral"  # llama.cpp files Mistral under llama, as transformers notes
        for suffix, key in CONFIG_KEYS.items():
            if f"{arch}.{suffix}" in meta:
                config[key] = meta[f"{arch}.{suffix}"]
        if arch == "llama" and f"{arch}.rope.dimension_count" in meta:
            config["head_dim"] = meta[f"{arch}.rope.dimension_count"]
        if f"{arch}.attention.key_length" in meta:
            config["head_dim"] = meta[f"{arch}.attention.key_length"]
        config.setdefault("num_key_value_heads", config.get("num_attention_heads"))
        if "vocab_size" not in config and "tokenizer.ggml.tokens" in meta:
            config["vocab_size"] = len(meta["tokenizer.ggml.tokens"])
        config["tie_word_embeddings"] = "lm_head.weight" not in self._tensors
        config["hidden_act"] = "silu"
        config["attention_bias"] = "model.layers.0.self_attn.q_proj.bias" in self._tensors
        config.setdefault("rope_theta", 10000.0)
        scaling_type = meta.get(f"{arch}.rope.scaling.type")
        if scaling_type and scaling_type != "none":
            scaling = {"rope_type": scaling_type, "factor": meta.get(f"{arch}.rope.scaling.factor", 1.0)}
            if f"{arch}.rope.scaling.original_context_length" in meta:
                scaling["original_max_position_embeddings"] = meta[f"{arch}.rope.scaling.original_context_length"]
            config["rope_scaling"] = scaling
        else:
            config["rope_scaling"] = None
        for key, hf_key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                            ("padding_token_id", "pad_token_id"), ("unknown_token_id", "unk_token_id")):
            if f"tokenizer.ggml.{key}" in meta:
                config[hf_key] = meta[f"tokenizer.ggml.{key}"]
        return config

    def names(self) -> list[str]:
        return list(self._tensors)

    def gguf_name(self, name: str) -> str:
        return self._tensors[name].name

    def tensor(self, name: str) -> np.ndarray:
        """float32 in HF layout: F32 tensors are read-only views of the mapped file, others dequantized copies."""
        from gguf import GGMLQuantizationType, quants

        t = self._tensors[name]
        if t.tensor_type == GGMLQuantizationType.F32:
            w = t.data
        elif t.tensor_type == GGMLQuantizationType.F16:
            w = t.data.astype(np.float32)
        else:
            w = quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims innermost first
        if w.shape != shape:
            w = w.reshape(shape)
        if self.architecture == "llama":
            if ".attn_q." in t.name:
                w = unpermute_rows(w, self.config["num_attention_heads"])
            elif ".attn_k." in t.name:
                w = unpermute_rows(w, self.config["num_key_value_heads"])
        return w
