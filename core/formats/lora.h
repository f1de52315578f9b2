// LoRA adapters merged into a model's weights at load: W += scale * B A for every
// adapted matrix, so decoding runs at the base model's speed on every backend. Reads
// PEFT folders (adapter_config.json + adapter_model.safetensors) and llama.cpp's GGUF
// adapters (general.type "adapter", adapter.type "lora").
#pragma once

#include <string>
#include <vector>

#include "core/formats/safetensors.h"
#include "core/models/model_config.h"

namespace llm {

struct LoraSpec {
  std::string path;    // a PEFT folder, its adapter_model.safetensors, or a GGUF adapter
  float scale = 1.0f;  // times the adapter's own alpha / r
};

// Merges each adapter, in order, into the matching weights of `store` (a model of
// `config`). A merged matrix keeps its stored dtype (quantized ones are dequantized,
// merged and quantized again). Q and K deltas are reordered where the adapter's row order
// differs from the model's (a PEFT adapter on a llama GGUF, or the reverse). Throws
// llm::Error naming the adapter and the problem: a missing file, a weight the model does
// not have, shapes that do not match, DoRA or other PEFT types.
void apply_lora_adapters(const std::vector<LoraSpec>& adapters, const ModelConfig& config,
                         WeightStore& store, int n_threads = 0);

}  // namespace llm
