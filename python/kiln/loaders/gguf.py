"""Reading GGUF files (llama.cpp's format) as Hugging Face checkpoints: HF tensor names and layouts, weights
dequantized to float32, and a config dict rebuilt from the metadata the way transformers rebuilds it.

The header (metadata and tensor directory) is parsed here -- the `gguf` package's reader takes ~5 s on a
49k-token vocabulary, this takes a fraction of a second -- and the data is memory-mapped; the `gguf` package
(from the llama.cpp project) dequantizes the quantized blocks. Two things
differ from HF and are undone here: tensor names (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`)
and, for the `llama` architecture, the row order of the Q and K projections, which llama.cpp's converter
permutes for its interleaved RoPE (HF rotates the two halves of each head instead).
"""

from __future__ import annotations

import os
import re
import struct

from dataclasses import dataclass

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


# GGUF block formats Kiln's kernels read without dequantizing first -> transformer.dequantize's format.
BLOCK_FORMATS = {"Q4_0": "q4_0", "Q4_1": "q4_1", "Q8_0": "q8_0"}


@dataclass(frozen=True)
class QuantizedBlocks:
    """One block-quantized weight [N, K] as transformer.dequantize takes it: `data` int8
    [N, K/32, 32 (q8_0) or 16 (4-bit: value j low nibble, j + 16 high)], `scales` and `mins`
    (q4_1, else None) float16 [N, K/32]."""

    format: str
    data: np.ndarray
    scales: np.ndarray
    mins: np.ndarray | None

    def rows_unpermuted(self, n_head: int) -> "QuantizedBlocks":
        mins = None if self.mins is None else np.ascontiguousarray(unpermute_rows(self.mins, n_head))
        return QuantizedBlocks(self.format, np.ascontiguousarray(unpermute_rows(self.data, n_head)),
                               np.ascontiguousarray(unpermute_rows(self.scales, n_head)), mins)


GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# GGUF metadata value types -> struct format (8 string and 9 array are handled apart).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP_SCALARS = {k: np.dtype(v) for k, v in _SCALARS.items()}


class _HeaderReader:
    """Sequential little-endian reads over the file's bytes; reading past the end is a KilnError."""

    def __init__(self, buf, path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int):
        if self.pos + n > len(self.buf):
            raise KilnError(f"{self.path}: truncated GGUF header: needs {n} bytes at offset {self.pos}, "
                            f"file has {len(self.buf)}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.scalar("<Q"))
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise KilnError(f"{self.path}: GGUF string at offset {self.pos - len(raw)} is not UTF-8 ({e})") from e

    def strings(self, count: int) -> list[str]:
        """An array of strings (a vocabulary: ~10^5 of them), read in one tight loop."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        unpack = struct.Struct("<Q").unpack_from
        out = []
        try:
            for _ in range(count):
                if pos + 8 > end:
                    break
                (n,) = unpack(buf, pos)
                pos += 8
                if pos + n > end:
                    break
                out.append(str(buf[pos:pos + n], "utf-8"))
                pos += n
        except UnicodeDecodeError as e:
            raise KilnError(f"{self.path}: GGUF string at offset {pos} is not UTF-8 ({e})") from e
        if len(out) != count:
            raise KilnError(f"{self.path}: truncated GGUF header: a string array of {count} ends past the end "
                            f"of the file ({len(self.buf)} bytes)")
        self.pos = pos
        return out

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            item, count = self.scalar("<I"), self.scalar("<Q")
            if item in _NP_SCALARS:
                dt = _NP_SCALARS[item]
                return np.frombuffer(self.take(count * dt.itemsize), dt).tolist()
            if item == 8:
                return self.strings(count)
            return [self.value(item) for _ in range(count)]
        raise KilnError(f"{self.path}: corrupt GGUF metadata: unknown value type {vtype} at offset {self.pos - 4}")


class _TensorInfo:
    __slots__ = ("name", "dims", "qtype", "offset", "nbytes")

    def __init__(self, name, dims, qtype, offset, nbytes):
        self.name, self.dims, self.qtype, self.offset, self.nbytes = name, dims, qtype, offset, nbytes


class GGUFFile:
    """One GGUF file: metadata as a dict of Python values, HF-named tensors, HF-shaped config."""

    def __init__(self, path: str):
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        self.path = os.fspath(path)
        try:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise KilnError(f"{self.path}: cannot read GGUF file: {e}") from e
        r = _HeaderReader(memoryview(self._map), self.path)
        magic = bytes(r.take(4)) if len(self._map) >= 4 else bytes(self._map)
        if magic != GGUF_MAGIC:
            raise KilnError(f"{self.path}: not a GGUF file (starts with {magic!r}, not {GGUF_MAGIC!r})")
        version = r.scalar("<I")
        if version not in (2, 3):
            raise KilnError(f"{self.path}: GGUF version {version} is not supported (Kiln reads versions 2 and 3)")
        n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")
        self.metadata = {}
        for _ in range(n_kv):
            key = r.string()
            self.metadata[key] = r.value(r.scalar("<I"))
        infos = []
        for _ in range(n_tensors):
            name = r.string()
            dims = tuple(r.scalar("<Q") for _ in range(r.scalar("<I")))
            qtype_id, offset = r.scalar("<I"), r.scalar("<Q")
            infos.append((name, dims, qtype_id, offset))
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise KilnError(f"{self.path}: corrupt GGUF metadata: general.alignment is {alignment!r}")
        data_start = -(-r.pos // alignment) * alignment

        arch = self.metadata.get("general.architecture")
        if arch not in ARCHITECTURES:
            raise KilnError(f"{self.path}: GGUF architecture {arch!r} is not supported; "
                            f"Kiln reads {', '.join(sorted(ARCHITECTURES))}")
        self.architecture = arch
        self._tensors: dict[str, _TensorInfo] = {}
        for name, dims, qtype_id, offset in infos:
            try:
                qtype = GGMLQuantizationType(qtype_id)
            except ValueError:
                raise KilnError(f"{self.path}: tensor {name!r} has unknown GGUF type id {qtype_id}") from None
            if qtype.name not in SUPPORTED_TYPES:
                raise KilnError(f"{self.path}: tensor {name!r} uses GGUF quantization type {qtype.name}, which Kiln "
                                f"does not dequantize (supported: {', '.join(SUPPORTED_TYPES)})")
            block, block_bytes = GGML_QUANT_SIZES[qtype]
            count = int(np.prod(dims, dtype=np.int64))
            if dims and dims[0] % block:
                raise KilnError(f"{self.path}: tensor {name!r}: row length {dims[0]} is not a multiple of "
                                f"the {qtype.name} block size {block}")
            nbytes = count // block * block_bytes
            begin = data_start + offset
            if begin + nbytes > len(self._map):
                raise KilnError(f"{self.path}: tensor {name!r}: truncated file: its data ends at byte "
                                f"{begin + nbytes}, the file has {len(self._map)}")
            if name in _SKIPPED:
                continue
            hf = hf_tensor_name(name)
            if hf is None:
                raise KilnError(f"{self.path}: tensor {name!r} has no Hugging Face counterpart "
                                f"for architecture {arch!r}")
            self._tensors[hf] = _TensorInfo(name, dims, qtype, begin, nbytes)
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

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in reversed(self._tensors[name].dims))

    def dtype_name(self, name: str) -> str:
        return self._tensors[name].qtype.name

    def gguf_name(self, name: str) -> str:
        return self._tensors[name].name

    def blocks(self, name: str):
        """A block-quantized tensor as stored, or None (F32/F16/BF16): a `QuantizedBlocks` whose
        data, scales and mins are [rows, K/32, ...] arrays in HF row order (llama.cpp's Q/K
        permutation undone), for kernels that dequantize as they read."""
        from gguf import GGMLQuantizationType

        t = self._tensors[name]
        fmt = BLOCK_FORMATS.get(t.qtype.name)
        if fmt is None:
            return None
        shape = tuple(int(d) for d in reversed(t.dims))
        rows = int(np.prod(shape[:-1], dtype=np.int64))
        raw = self._map[t.offset:t.offset + t.nbytes].reshape(rows, shape[-1] // 32, -1)
        scales = raw[:, :, 0:2].copy().view(np.float16)[:, :, 0]
        if t.qtype == GGMLQuantizationType.Q4_1:
            mins, data = raw[:, :, 2:4].copy().view(np.float16)[:, :, 0], raw[:, :, 4:]
        else:
            mins, data = None, raw[:, :, 2:]
        blocks = QuantizedBlocks(fmt, np.ascontiguousarray(data).view(np.int8), scales, mins)
        if self.architecture == "llama":
            if ".attn_q." in t.name:
                return blocks.rows_unpermuted(self.config["num_attention_heads"])
            if ".attn_k." in t.name:
                return blocks.rows_unpermuted(self.config["num_key_value_heads"])
        return blocks

    def tensor(self, name: str) -> np.ndarray:
        """float32 in HF layout: F32 tensors are read-only views of the mapped file, others dequantized copies."""
        from gguf import GGMLQuantizationType, quants

        t = self._tensors[name]
        shape = tuple(int(d) for d in reversed(t.dims))  # GGUF lists dims innermost first
        raw = self._map[t.offset:t.offset + t.nbytes]
        if t.qtype == GGMLQuantizationType.F32:
            w = raw.view(np.float32).reshape(shape)
        elif t.qtype == GGMLQuantizationType.F16:
            w = raw.view(np.float16).reshape(shape).astype(np.float32)
        else:  # BF16 and block quantizations: rows of bytes -> rows of floats
            rows = shape[:-1] if shape else ()
            w = quants.dequantize(raw.reshape(*rows, -1), t.qtype).astype(np.float32, copy=False).reshape(shape)
        if self.architecture == "llama":
            if ".attn_q." in t.name:
                w = unpermute_rows(w, self.config["num_attention_heads"])
            elif ".attn_k." in t.name:
                w = unpermute_rows(w, self.config["num_key_value_heads"])
        return w
