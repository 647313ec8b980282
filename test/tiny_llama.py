"""A tiny random Hugging Face Llama saved as a safetensors checkpoint, for tests that compare Kiln with
HF end to end: GQA, every linear a whole number of 32-row panels, norms randomized too."""

from __future__ import annotations


def save_tiny_llama(directory, seed: int, **config):
    """Builds the model (config overrides the defaults below), saves it to `directory`, returns it."""
    import torch
    import transformers

    settings = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
                    rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    settings.update(config)
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**settings)).eval()
    with torch.no_grad():  # norm weights start at 1: make them random too
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(directory)
    return hf
