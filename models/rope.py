"""RoPE inverse frequencies as Hugging Face computes them, for every supported `rope_type`.

They become a constant operand of `transformer.rope`, computed in float32 exactly as transformers does
(greedy token parity depends on the last bit of the angles).
"""

from __future__ import annotations

import math

import numpy as np

from kiln.errors import KilnError

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "dynamic (up to the original context)")


def rope_parameters(config: dict) -> dict:
    """theta and scaling of `config`, from transformers 5's `rope_parameters` or the older
    `rope_theta` + `rope_scaling` keys."""
    params = dict(config.get("rope_parameters") or {})
    scaling = config.get("rope_scaling") or {}
    params = {**scaling, **params}
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    params["rope_type"] = params.get("rope_type", params.get("type", "default"))
    return params


def inv_freq(config: dict, rotary_dim: int, max_seq_len: int) -> np.ndarray:
    """float32 inverse frequencies `[rotary_dim // 2]` for the config's RoPE variant."""
    params = rope_parameters(config)
    base = float(params["rope_theta"])
    kind = params["rope_type"]
    exponent = np.arange(0, rotary_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(rotary_dim)
    freq = (np.float32(1.0) / (np.float32(base) ** exponent)).astype(np.float32)
    if kind == "default":
        return freq
    if kind == "linear":
        return (freq / np.float32(params["factor"])).astype(np.float32)
    if kind == "dynamic":
        original = params.get("original_max_position_embeddings", config.get("max_position_embeddings"))
        if max_seq_len > original:
            raise KilnError(f"rope_type 'dynamic' rescales past {original} positions, and max_seq_len is "
                            f"{max_seq_len}: compile with max_seq_len <= {original}")
        return freq
    if kind == "llama3":
        factor = float(params["factor"])
        low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
        original = float(params["original_max_position_embeddings"])
        low_wavelen, high_wavelen = original / low, original / high
        wavelen = np.float32(2 * math.pi) / freq
        scaled = np.where(wavelen > low_wavelen, freq / np.float32(factor), freq).astype(np.float32)
        smooth = ((original / wavelen - low) / (high - low)).astype(np.float32)
        smoothed = ((1 - smooth) * scaled / np.float32(factor) + smooth * scaled).astype(np.float32)
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise KilnError(f"unsupported rope_type '{kind}'; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
