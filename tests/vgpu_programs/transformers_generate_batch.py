"""A user's transformers continuous-batching program, unmodified: no attention backend, cuDNN or
CUDA-graph setting is touched (run by tests/test_exec_transformers.py under `revati-tune exec`).
A tiny Llama with random weights is built here, so nothing is downloaded. Prints one JSON object."""
import json

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

config = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=2,
                     num_attention_heads=8, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096)
with torch.device("cuda"):
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()

prompts = [[(7 * i + j) % 31999 + 1 for j in range(16 + 24 * i)] for i in range(6)]
max_new_tokens = 12
# Greedy, and no end-of-sequence token: every request generates all of its tokens.
generation = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=-1)
outputs = model.generate_batch(prompts, generation_config=generation)

print(json.dumps({
    "attn_implementation": model.config._attn_implementation,
    "cudnn_sdp_enabled": torch.backends.cuda.cudnn_sdp_enabled(),
    "requests": len(outputs),
    "max_new_tokens": max_new_tokens,
    "generated": sorted(len(o.generated_tokens) for o in outputs.values()),
    "errors": [o.error for o in outputs.values() if getattr(o, "error", None)],
}), flush=True)
