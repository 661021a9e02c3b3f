"""Shared fixtures of the kvq_jit tests: tiny randomly initialised models
(no download), seeded."""

import pytest
import torch

import kvq_jit.hf  # noqa: F401  (registers the "kvq" attention)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=64, max_position_embeddings=4096)
    return LlamaForCausalLM(config).to(torch.float16).eval()


def tiny_llama_128():
    """Llama's real head_dim (128), 8 query heads over 2 kv heads."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1024,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                         head_dim=128, max_position_embeddings=4096)
    return LlamaForCausalLM(config).to(torch.float16).eval()


def tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=512, hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                         max_position_embeddings=4096)
    return Qwen2ForCausalLM(config).to(torch.float16).eval()


def tiny_mistral():
    from transformers import MistralConfig, MistralForCausalLM
    torch.manual_seed(2)
    config = MistralConfig(vocab_size=512, hidden_size=256, intermediate_size=512,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=64, max_position_embeddings=4096, sliding_window=None)
    return MistralForCausalLM(config).to(torch.float16).eval()


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
