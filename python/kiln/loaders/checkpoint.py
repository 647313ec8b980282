"""A model checkpoint on disk, whatever its format: config, HF-named tensors, tokenizer, and the files it came
from. `load_checkpoint` picks the reader (HF safetensors directory, sharded or not, or a GGUF file)."""

from __future__ import annotations

import difflib
import glob
import json
import os

import numpy as np

from kiln.errors import KilnError
from kiln.loaders.safetensors import SafetensorsFile
from kiln.loaders.tokenizer import Tokenizer, tokenizer_from_gguf_metadata, tokenizer_from_hf_dir

SAFETENSORS_INDEX = "model.safetensors.index.json"


class Checkpoint:
    """Tensors by Hugging Face name, the HF-shaped config dict, and the tokenizer (or None).

    `tensor(name)` returns numpy arrays in HF layout: for safetensors, read-only views of the memory-mapped
    file (BF16 excepted: a float32 copy); for GGUF, float32 dequantized on each call (F32 tensors are views).
    """

    def __init__(self, path: str, config: dict, sources: dict, files: list[str], tokenizer: Tokenizer | None,
                 fmt: str):
        self.path = path
        self.config = config
        self._sources = sources  # HF name -> reader object with .tensor(name) and .path
        self.files = files
        self.tokenizer = tokenizer
        self.format = fmt

    def names(self) -> list[str]:
        return list(self._sources)

    def __contains__(self, name: str) -> bool:
        return name in self._sources

    def source_file(self, name: str) -> str:
        return self._reader(name).path

    def _reader(self, name):
        try:
            return self._sources[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._sources, n=5, cutoff=0.6)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise KilnError(f"{self.path}: no tensor named {name!r} in the checkpoint "
                            f"({len(self._sources)} tensors){hint}") from None

    def tensor(self, name: str) -> np.ndarray:
        return self._reader(name).tensor(name)

    def expect(self, name: str, shape, role: str = "") -> np.ndarray:
        """The tensor as float32, checked against the shape the model needs: a KilnError naming the file and
        tensor for a missing tensor, a wrong shape, or a non-float dtype (F16/BF16/F64 are converted)."""
        reader = self._reader(name)
        where = f"{reader.path}: tensor {name!r}" + (f" ({role})" if role else "")
        got = tuple(reader.shape(name))
        if got != tuple(shape):
            raise KilnError(f"{where} has shape {list(got)}, but the model's config needs {list(shape)}")
        stored = reader.dtype_name(name)
        array = reader.tensor(name)
        if not np.issubdtype(array.dtype, np.floating):
            raise KilnError(f"{where} is stored as {stored}, but the model needs floating-point weights")
        return array if array.dtype == np.float32 else array.astype(np.float32)

    def blocks(self, name: str):
        """The tensor's stored quantized blocks (GGUF Q4_0/Q4_1/Q8_0, see gguf.QuantizedBlocks), or None
        when the file stores it as plain floats."""
        reader = self._reader(name)
        return reader.blocks(name) if hasattr(reader, "blocks") else None

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's HF shape, without reading or dequantizing it."""
        return self._reader(name).shape(name)

    def stored_dtype(self, name: str) -> str:
        """How the file stores the tensor ('F32', 'BF16', 'Q4_1', ...); `tensor()` gives F32 for BF16 and GGUF."""
        return self._reader(name).dtype_name(name)

    def __repr__(self):
        return (f"Checkpoint({self.path!r}, {self.format}, {len(self._sources)} tensors, "
                f"model_type={self.config.get('model_type')!r})")


def load_checkpoint(path) -> Checkpoint:
    """Open a checkpoint: a HF directory (config.json + *.safetensors, sharded via model.safetensors.index.json
    too), a .gguf file, or a directory holding exactly one .gguf file and no config.json."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise KilnError(f"{path}: no such file or directory")
    if os.path.isfile(path):
        if path.endswith(".gguf"):
            return _load_gguf(path)
        raise KilnError(f"{path}: not a model checkpoint (expected a .gguf file or a Hugging Face model directory)")
    if not os.path.isfile(os.path.join(path, "config.json")):
        ggufs = sorted(glob.glob(os.path.join(path, "*.gguf")))
        if len(ggufs) == 1:
            return _load_gguf(ggufs[0])
        found = f"{len(ggufs)} .gguf files" if ggufs else "no .gguf file"
        raise KilnError(f"{path}: no config.json in this directory (and {found}), so it is not a Hugging Face model "
                        "directory; pass the .gguf file itself")
    return _load_hf_dir(path)


def _load_gguf(path: str) -> Checkpoint:
    from kiln.loaders.gguf import GGUFFile

    g = GGUFFile(path)
    tokenizer = tokenizer_from_gguf_metadata(g.metadata, path)
    return Checkpoint(path, normalize_config(g.config), {n: g for n in g.names()}, [os.path.abspath(path)],
                      tokenizer, "gguf")


def _read_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KilnError(f"{path}: cannot read model config: {e}") from e
    if not isinstance(config, dict):
        raise KilnError(f"{path}: model config is not a JSON object")
    return normalize_config(config)


# GPT-2's config.json spells the common keys its own way (transformers maps them with `attribute_map`).
GPT2_ALIASES = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
                "max_position_embeddings": "n_positions", "layer_norm_eps": "layer_norm_epsilon"}


def normalize_config(config: dict) -> dict:
    """Add the canonical spellings of keys a config.json may spell differently, keeping the originals:
    transformers 5 writes RoPE settings as `rope_parameters`, older files as `rope_theta` + `rope_scaling`
    (both made present); GPT-2 writes `n_embd`, `n_layer`, ... (`hidden_size`, `num_hidden_layers`, ... added)."""
    config = dict(config)
    if config.get("model_type") == "gpt2":
        for canonical, own in GPT2_ALIASES.items():
            if own in config:
                config.setdefault(canonical, config[own])
        if "n_embd" in config:
            config.setdefault("intermediate_size", config.get("n_inner") or 4 * config["n_embd"])
    params = config.get("rope_parameters")
    if isinstance(params, dict):
        config.setdefault("rope_theta", params.get("rope_theta"))
        if "rope_scaling" not in config or config["rope_scaling"] is None:
            kind = params.get("rope_type", params.get("type", "default"))
            config["rope_scaling"] = None if kind == "default" else {
                k: v for k, v in params.items() if k != "rope_theta"}
    else:
        config.setdefault("rope_scaling", None)
        if "rope_theta" in config:
            config["rope_parameters"] = {"rope_theta": config["rope_theta"],
                                         **(config["rope_scaling"] or {"rope_type": "default"})}
    return config


def _load_hf_dir(directory: str) -> Checkpoint:
    config_path = os.path.join(directory, "config.json")
    config = _read_config(config_path)
    index_path = os.path.join(directory, SAFETENSORS_INDEX)
    files = [os.path.abspath(config_path)]
    sources: dict[str, SafetensorsFile] = {}
    if os.path.isfile(index_path):
        try:
            with open(index_path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise KilnError(f"{index_path}: cannot read the shard index: {e}") from e
        shards: dict[str, SafetensorsFile] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(directory, shard)
            if not os.path.isfile(shard_path):
                users = [n for n, s in weight_map.items() if s == shard]
                raise KilnError(f"{index_path}: shard {shard!r} (holding {users[0]!r} and {len(users) - 1} more "
                                f"tensors) is missing from {directory}")
            shards[shard] = SafetensorsFile(shard_path)
        for name, shard in weight_map.items():
            if name not in shards[shard].entries:
                raise KilnError(f"{index_path}: says tensor {name!r} is in {shard}, "
                                f"but {shards[shard].path} has no such tensor")
            sources[name] = shards[shard]
        files += [os.path.abspath(index_path)] + [os.path.abspath(s.path) for s in shards.values()]
    else:
        paths = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
        if not paths:
            extra = " (it has PyTorch .bin weights, which Kiln does not read; re-save with safe_serialization)" \
                if glob.glob(os.path.join(directory, "*.bin")) else ""
            raise KilnError(f"{directory}: no *.safetensors weights in this model directory{extra}")
        for p in paths:
            st = SafetensorsFile(p)
            for name in st.names():
                if name in sources:
                    raise KilnError(f"{directory}: tensor {name!r} is in both {sources[name].path} and {p}")
                sources[name] = st
            files.append(os.path.abspath(p))
    for extra in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                  "chat_template.jinja"):
        p = os.path.join(directory, extra)
        if os.path.isfile(p):
            files.append(os.path.abspath(p))
    tokenizer = tokenizer_from_hf_dir(directory, config)
    return Checkpoint(directory, config, sources, files, tokenizer, "safetensors")
