"""Model architectures: a Hugging Face config -> `transformer`-dialect IR plus a parameter map.

One module per architecture family; `build(config, ...)` picks it by `config["model_type"]`.
"""

from __future__ import annotations

from kiln.errors import KilnError

from . import bert, gpt2, llama
from .graph import ModelGraph, Param

_FAMILIES = {t: family for family in (llama, gpt2, bert) for t in family.MODEL_TYPES}


def supported_model_types() -> list:
    return sorted(_FAMILIES)


def build(config: dict, **options) -> ModelGraph:
    """The ModelGraph of `config` (in the current MLIR Context); `options` go to the family's builder."""
    model_type = config.get("model_type")
    family = _FAMILIES.get(model_type)
    if family is None:
        raise KilnError(f"unsupported model_type '{model_type}'; Kiln supports: {', '.join(supported_model_types())}")
    return family.build(config, **options)


__all__ = ["ModelGraph", "Param", "build", "supported_model_types"]
