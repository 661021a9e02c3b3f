"""Shared fixtures of the kvq_jit tests: tiny randomly initialised models
(no download), seeded."""

import pytest
import torch

import kvq_jit.hf  # noqa: F401  (registers the "kvq" attention)


def tiny(family, seed, **shape):
    """A 2-layer `family` model (llama, qwen2, mistral) of vocabulary 512,
    randomly initialised from `seed`, in fp16."""
    import transformers
    name = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}[family]
    torch.manual_seed(seed)
    config = getattr(transformers, f"{name}Config")(
        vocab_size=512, num_hidden_layers=2, max_position_embeddings=4096, **shape)
    return getattr(transformers, f"{name}ForCausalLM")(config).to(torch.float16).eval()


def tiny_llama():
    """GQA 2: 4 query heads over 2 kv heads, head_dim 64."""
    return tiny("llama", 0, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                num_key_value_heads=2, head_dim=64)


def tiny_llama_128():
    """Llama's real head_dim (128), GQA 4: 4 query heads over 1 kv head."""
    return tiny("llama", 3, hidden_size=512, intermediate_size=1024, num_attention_heads=4,
                num_key_value_heads=1, head_dim=128)


def tiny_qwen2():
    """GQA 4: 4 query heads over 1 kv head, head_dim 64."""
    return tiny("qwen2", 1, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                num_key_value_heads=1)


def tiny_mistral():
    """GQA 2, no sliding window."""
    return tiny("mistral", 2, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                num_key_value_heads=2, head_dim=64, sliding_window=None)


MODELS = {"llama": tiny_llama, "llama-d128": tiny_llama_128, "qwen2": tiny_qwen2,
          "mistral": tiny_mistral}


@pytest.fixture(scope="session")
def models():
    built = {}

    def get(name):
        if name not in built:
            built[name] = MODELS[name]()
        return built[name]
    return get
