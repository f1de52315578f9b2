// Models from GGUF files: the config from the metadata and the weights under
// the Hugging Face names the graph builders use.
#pragma once

#include <memory>

#include "core/formats/gguf.h"
#include "core/formats/safetensors.h"
#include "core/models/model_config.h"

namespace llm {

// Reads the hyper-parameters of general.architecture; throws for an
// architecture this build cannot run.
ModelConfig config_from_gguf(const GgufFile& f);

// Adds f's tensors to store under Hugging Face names (token_embd.weight ->
// model.embed_tokens.weight ...). The store keeps `f` alive.
void add_gguf_weights(std::shared_ptr<const GgufFile> f, WeightStore& store);

}  // namespace llm
