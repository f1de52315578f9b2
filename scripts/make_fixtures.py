#!/usr/bin/env python3
"""Makes extra random-weight checkpoints of the llama family in sizes the shared
fixtures do not cover, with reference outputs from Hugging Face transformers.

Runs where torch + transformers are installed (the GPU machine has them):
    python3 scripts/make_fixtures.py OUT_DIR
Each OUT_DIR/<name>/ holds config.json, the weights (safetensors, possibly
sharded or in f16/bf16) and reference.safetensors: input_ids [24] i64,
logits [24, vocab] f32 (one forward pass, float32, eager attention) and
greedy_ids [16] i64 (greedy decoding with the KV cache).
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

VARIANTS = {
    # hidden not a multiple of 64, GQA 3:1, three layers
    "llama_gqa3": (LlamaConfig, dict(hidden_size=72, num_attention_heads=6, num_key_value_heads=2,
                                     intermediate_size=200, num_hidden_layers=3, rms_norm_eps=1e-5,
                                     rope_theta=10000.0), "float32", None),
    # MQA, explicit head_dim != hidden/heads, llama3 rope scaling, biases everywhere
    "llama_mqa_bias": (LlamaConfig, dict(hidden_size=80, num_attention_heads=4, num_key_value_heads=1,
                                         head_dim=32, intermediate_size=136, num_hidden_layers=2,
                                         attention_bias=True, mlp_bias=True,
                                         rope_scaling={"rope_type": "llama3", "factor": 4.0,
                                                       "low_freq_factor": 1.0, "high_freq_factor": 2.0,
                                                       "original_max_position_embeddings": 16},
                                         rope_theta=50000.0), "float32", None),
    # bf16 weights, sharded into several files with an index
    "llama_bf16_sharded": (LlamaConfig, dict(hidden_size=64, num_attention_heads=8, num_key_value_heads=8,
                                             intermediate_size=96, num_hidden_layers=2),
                           "bfloat16", "60KB"),
    # untied qwen2 with 8 heads / 4 kv heads, f16 weights
    "qwen2_f16_untied": (Qwen2Config, dict(hidden_size=96, num_attention_heads=8, num_key_value_heads=4,
                                           intermediate_size=176, num_hidden_layers=2,
                                           tie_word_embeddings=False), "float16", None),
    # mistral with a sliding window of 5 and a single kv head of 3 query heads
    "mistral_w5": (MistralConfig, dict(hidden_size=48, num_attention_heads=3, num_key_value_heads=1,
                                       head_dim=16, intermediate_size=100, num_hidden_layers=2,
                                       sliding_window=5), "float32", None),
}

VOCAB = 300


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                base = 1.0 if "norm" in name else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[1] ** 0.5))


def round_params(model, dtype):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(getattr(torch, dtype)).float())


def main(out_dir):
    torch.manual_seed(0)
    for i, (name, (cls, kw, dtype, shard)) in enumerate(VARIANTS.items()):
        cfg = cls(vocab_size=VOCAB, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
                  **kw)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
        randomize(model, 100 + i)
        ids = torch.randint(3, VOCAB, (1, 24), generator=torch.Generator().manual_seed(i))
        # Round the weights (not buffers such as rope's inv_freq, which
        # transformers recomputes in float32 at load) to the stored dtype, so the
        # reference is what the stored checkpoint computes in float32.
        round_params(model, dtype)
        with torch.no_grad():
            logits = model(ids).logits[0]
            scale = 1.0 / float(logits.std())
            head = model.get_output_embeddings().weight
            head.mul_(scale)
            round_params(model, dtype)
            logits = model(ids).logits[0].float()
            out = model.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
        greedy = out[0, 24:]
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        model.to(getattr(torch, dtype)).save_pretrained(d, max_shard_size=shard or "1GB")
        save_file({"input_ids": ids[0].to(torch.int64).contiguous(), "logits": logits.contiguous(),
                   "greedy_ids": greedy.to(torch.int64).contiguous()},
                  os.path.join(d, "reference.safetensors"))
        for f in ("generation_config.json",):
            p = os.path.join(d, f)
            if os.path.exists(p):
                os.remove(p)
        print(open(os.path.join(d, "config.json")).read())
        print(name, "logit std", float(logits.std()), "greedy", greedy.tolist(), sorted(os.listdir(d)))


if __name__ == "__main__":
    main(sys.argv[1])
