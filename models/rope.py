"""RoPE inverse frequencies (and YaRN's cos/sin scaling) as Hugging Face computes them, for every
supported `rope_type`.

They become a constant operand (and the `attention_scaling` attribute) of `transformer.rope`, computed
in float32 with transformers' order of operations (greedy token parity depends on the last bits of the
angles). One difference remains: numpy's float32 pow and torch's differ by an ulp for some exponents,
so a few frequencies can be an ulp off HF's.
"""

from __future__ import annotations

import math

import numpy as np

from kiln.errors import KilnError

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn", "dynamic (up to the original context)")


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
    freq = (np.float32(1.0) / (np.float32(base) ** _exponents(rotary_dim))).astype(np.float32)
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
    if kind == "yarn":
        return _yarn_inv_freq(config, params, rotary_dim)
    raise KilnError(f"unsupported rope_type '{kind}'; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")


def _exponents(rotary_dim: int) -> np.ndarray:
    """2i / rotary_dim in float32, as transformers computes them."""
    return np.arange(0, rotary_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(rotary_dim)


def attention_scaling(config: dict) -> float:
    """What Hugging Face multiplies RoPE's cos and sin by: YaRN's attention factor, else 1."""
    params = rope_parameters(config)
    if params["rope_type"] != "yarn":
        return 1.0
    if params.get("attention_factor") is not None:
        return float(params["attention_factor"])
    factor = _yarn_factor(config, params)

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if params.get("mscale") and params.get("mscale_all_dim"):
        return float(mscale(factor, params["mscale"]) / mscale(factor, params["mscale_all_dim"]))
    return mscale(factor)


def _original_context(config: dict, params: dict) -> int:
    """The pretraining context YaRN extends: transformers prefers a top-level
    `original_max_position_embeddings` (Phi-3 style) to the one in the rope parameters."""
    return (config.get("original_max_position_embeddings") or params.get("original_max_position_embeddings")
            or config["max_position_embeddings"])


def _yarn_factor(config: dict, params: dict) -> float:
    if params.get("factor") is None:  # DeepSeek-V3 style: the ratio of the two contexts
        return config["max_position_embeddings"] / _original_context(config, params)
    return float(params["factor"])


def _yarn_inv_freq(config: dict, params: dict, rotary_dim: int) -> np.ndarray:
    """YaRN (arXiv 2309.00071): a per-frequency blend of the scaled (interpolated) and original
    (extrapolated) frequencies, ramping between the dims that turn `beta_fast` and `beta_slow` times
    in the original context."""
    base = float(params["rope_theta"])
    factor = _yarn_factor(config, params)
    original = _original_context(config, params)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def correction_dim(rotations):
        return rotary_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001  # as transformers does, against a zero-width ramp
    pos_freqs = (np.float32(base) ** _exponents(rotary_dim)).astype(np.float32)
    extrapolated = (np.float32(1.0) / pos_freqs).astype(np.float32)
    interpolated = (np.float32(1.0) / (np.float32(factor) * pos_freqs)).astype(np.float32)
    ramp = np.clip((np.arange(rotary_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)
    keep = (np.float32(1.0) - ramp).astype(np.float32)  # the share of the original frequency
    return (interpolated * (np.float32(1.0) - keep) + extrapolated * keep).astype(np.float32)
