// The native model folder (written by `llmcli convert`, `gen-config` and `synth`):
//
//   llm-config.json                    what the runtime needs besides weights (below)
//   model.safetensors.index.json       weight_map: tensor -> shard
//   model-0000K-of-0000N.safetensors   weights; q8_0/q4_0 matrices as U8 [rows, row_bytes]
//                                      GGUF blocks, their dtype and logical shape in the
//                                      header metadata (see write_safetensors)
//   tokenizer files                    copied from the source (tokenizer.json, ...), or
//                                      tokenizer.gguf: a vocab-only GGUF for GGUF sources
//
// llm-config.json (MLC's mlc-chat-config.json in spirit):
//   version               format version (1)
//   model_type            "llama", "mistral", "qwen2"
//   quantization          q0f32, q0f16, q0bf16, q8f16_1, q4f16_1 (what float matrices became)
//   model_config          a Hugging Face config.json object (+ llmrt_* extensions for
//                         what config.json cannot say: llmrt_rope_freq_factors)
//   context_window_size, prefill_chunk_size, sliding_window_size (-1: none)
//   temperature, top_p, repetition_penalty, presence_penalty, frequency_penalty
//   conv_template         built-in conversation template name
//   tokenizer_files       file names in the folder
//   bos_token_id, eos_token_id (a list), pad_token_id (-1: none)
//   source                where it was made from (informational)
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/formats/gguf_writer.h"
#include "core/formats/safetensors.h"
#include "core/models/model_config.h"

namespace llm {

inline constexpr int kNativeFormatVersion = 1;
inline constexpr const char* kNativeConfigName = "llm-config.json";

struct NativeConfig {
  int version = kNativeFormatVersion;
  std::string model_type;
  std::string quantization;
  std::string model_config_json;  // the model_config object as JSON text
  ModelConfig model;              // model_config parsed (read_native_config fills it)
  int context_window_size = 0;
  int prefill_chunk_size = 0;
  int sliding_window_size = -1;
  float temperature = 1.f;
  float top_p = 1.f;
  float repetition_penalty = 1.f;
  float presence_penalty = 0.f;
  float frequency_penalty = 0.f;
  std::string conv_template;
  std::vector<std::string> tokenizer_files;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
  int pad_token_id = -1;
  std::string source;
};

// DIR/llm-config.json exists.
bool is_native_folder(const std::string& dir);
// Reads and checks DIR/llm-config.json; messages name the file and the field.
NativeConfig read_native_config(const std::string& dir);
void write_native_config(const std::string& dir, const NativeConfig& c);

// The weights of a native folder, memory-mapped; quantized tensors come back as
// q8_0/q4_0 with their logical shapes. Truncated or corrupted shards fail with a
// message naming the file and the tensor.
std::unique_ptr<WeightStore> open_native_weights(const std::string& dir);

// config.json text for c that parse_model_config reads back to the same config.
std::string model_config_to_json(const ModelConfig& c);
// parse_hf_config plus the llmrt_* extensions.
ModelConfig parse_model_config(const std::string& json_text);

inline constexpr size_t kDefaultShardBytes = size_t{1} << 30;

struct NativeWriteOptions {
  std::string quantization;  // recorded in each shard's metadata
  size_t shard_bytes = kDefaultShardBytes;
  ProgressFn progress;
};
// Writes tensors as DIR/model-0000K-of-0000N.safetensors (one shard in memory at
// a time) and DIR/model.safetensors.index.json. DIR must exist.
void write_native_weights(const std::string& dir, const std::vector<TensorSource>& tensors,
                          const NativeWriteOptions& opts);

// Copies the tokenizer files that exist in the Hugging Face folder src to dir;
// returns their names.
std::vector<std::string> copy_tokenizer_files(const std::string& src, const std::string& dir);

// A conversation template for a model with no --conv-template: from the special
// tokens of its vocab (tokens: every token's text; may be empty) or its type.
std::string guess_conv_template(const ModelConfig& c, const std::vector<std::string>& tokens);

struct GenConfigOptions {
  std::string quantization;     // required
  std::string conv_template;    // empty: guessed
  int context_window_size = 0;  // 0: the model's max_position_embeddings
  int prefill_chunk_size = 0;   // 0: min(2048, context window)
  int sliding_window_size = 0;  // 0: the model's (-1 when it has none)
  int threads = 0;              // convert only
  size_t shard_bytes = kDefaultShardBytes;
  ProgressFn progress;  // convert only
};

// `llmcli gen-config`: reads the source (a Hugging Face folder or a .gguf file),
// writes DIR/llm-config.json and the tokenizer files, returns the config.
NativeConfig gen_native_config(const std::string& src, const std::string& dir,
                               const GenConfigOptions& opts);

// `llmcli convert`: the weights of src with float matrices converted to the
// scheme exactly as Model::load(src, {quantization}) converts them (same
// quantizer, same rules), plus gen_native_config. GGUF llama Q/K rows are put
// back in Hugging Face order.
void convert_model(const std::string& src, const std::string& dir, const GenConfigOptions& opts);

}  // namespace llm
