// Random-weight llama models of real shapes, for benchmarks and for end-to-end
// tests that need a model with a real tokenizer. Speed does not depend on the
// values, but the values are scaled like a trained model's so that activations
// stay O(1) and logits spread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/formats/gguf_writer.h"
#include "core/models/model_config.h"

namespace llm {

// "tiny", "llama-1b", "llama-7b", "llama-8b".
std::vector<std::string> synth_shape_names();

// The llama config of a shape; vocab_size > 0 replaces the shape's (a real
// vocab decides it). Throws llm::Error listing the shapes for an unknown name.
ModelConfig synth_config(const std::string& shape, int vocab_size = 0);

// The tensors of cfg under Hugging Face names, in Hugging Face row order, filled
// on demand: matrices normal(0, 1/sqrt(fan_in)) stored as weight_dtype
// (f32/f16/bf16/q8_0/q4_0), the embedding normal(0, 1), norms 1 + normal(0, 0.1) in
// f32. Values depend only on (seed, tensor name, row), never on n_threads
// (0: all hardware threads).
std::vector<TensorSource> synth_tensors(const ModelConfig& cfg, DType weight_dtype, uint64_t seed,
                                        int n_threads = 0);

struct SynthOptions {
  std::string shape = "tiny";
  std::string quantization = "q4f16_1";  // q0f32, q0f16, q0bf16, q8f16_1, q4f16_1
  std::string vocab;                     // a GGUF vocab or tokenizer.json; empty: none
  std::string format = "native";         // "native" (a folder) or "gguf" (a file)
  std::string out;
  uint64_t seed = 0;
  int threads = 0;
  size_t shard_bytes = 0;  // native: bytes per safetensors shard (0: the default)
  ProgressFn progress;
};

// Writes a synthetic model: a native folder (weights, llm-config.json, tokenizer
// files) or a llama.cpp-compatible GGUF file. Streams tensor by tensor (GGUF) or
// shard by shard (native). The same seed gives the same weights in both formats.
void synth_model(const SynthOptions& opts);

}  // namespace llm
