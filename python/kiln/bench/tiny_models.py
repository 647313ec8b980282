"""Tiny random Hugging Face models of every decoder family Kiln supports (odd sizes, GQA, QKV bias,
QK-norm, llama3 and YaRN rope scaling, GPT-2's fused Conv1D), built from `transformers` config classes with
fixed seeds and saved as safetensors checkpoints. The model tests compare Kiln with them on the CPU;
`kiln bench --target cuda --suite check` on a GPU."""

from __future__ import annotations

VOCAB = 301
LLAMA_COMMON = dict(vocab_size=VOCAB, hidden_size=72, intermediate_size=100, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
                    rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)

# name -> (transformers config class, model class, config settings)
MODELS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(LLAMA_COMMON, rope_theta=10000.0, tie_word_embeddings=False)),
    "llama-tied-llama3-rope": ("LlamaConfig", "LlamaForCausalLM", dict(
        LLAMA_COMMON, tie_word_embeddings=True, num_key_value_heads=3,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16, "rope_theta": 500000.0})),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(LLAMA_COMMON, rope_theta=1000000.0, tie_word_embeddings=False)),
    # YaRN with betas that put some frequencies on each side of the ramp and two inside it
    "qwen2-yarn-rope": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        LLAMA_COMMON, max_position_embeddings=256, tie_word_embeddings=False,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                      "beta_fast": 4.0, "beta_slow": 0.25, "rope_theta": 10000.0})),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(LLAMA_COMMON, head_dim=16, num_key_value_heads=3,
                                                       tie_word_embeddings=True)),
    # no eos in the vocabulary: every comparison covers all requested tokens
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(vocab_size=VOCAB, n_embd=72, n_layer=2, n_head=3, n_positions=64,
                                                   n_inner=100, activation_function="gelu_new",
                                                   layer_norm_epsilon=1e-5, initializer_range=0.1,
                                                   bos_token_id=None, eos_token_id=None)),
}


def save_tiny_model(name: str, directory, seed: int):
    """Builds model `name` (weights from `seed`; biases and norm weights randomized too, as they start at
    0/1), saves it to `directory` and returns the HF model."""
    import torch
    import transformers

    config_cls, model_cls, settings = MODELS[name]
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**settings)).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("bias") or "norm" in pname or "ln" in pname:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(directory)
    return model
