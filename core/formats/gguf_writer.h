// GGUF (v3) writing, in llama.cpp's layout: header, metadata, tensor infos, then
// tensor data at 32-byte aligned offsets. Tensors are streamed one at a time so a
// model never has to be in memory as a whole.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/formats/gguf.h"
#include "core/models/model_config.h"
#include "core/tensor.h"

namespace llm {

// ggml type numbers of the dtypes we write.
uint32_t ggml_type_of(DType t);  // throws for i32/i64

// Metadata values, typed as llama.cpp's gguf-py writes them.
GgufValue gguf_u32(uint32_t v);
GgufValue gguf_i32(int32_t v);
GgufValue gguf_u64(uint64_t v);
GgufValue gguf_f32(float v);
GgufValue gguf_bool(bool v);
GgufValue gguf_string(const std::string& v);
GgufValue gguf_string_array(const std::vector<std::string>& v);

class GgufWriter {
 public:
  GgufWriter() = default;
  ~GgufWriter();  // removes the temporary file of an unfinished write
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // Sets (or replaces) a key; keys are written in the order first set.
  void set(const std::string& key, GgufValue v);
  // Declares the next tensor (shape outermost first, as in Shape).
  void add_tensor(const std::string& name, DType dtype, const Shape& shape);
  // Declares a tensor of a GGUF block type we read but do not run (Q4_1, Q5_0,
  // Q5_1, Q4_K, Q5_K, Q6_K: see gguf_quants.h); its blocks are written as given.
  void add_ggml_tensor(const std::string& name, uint32_t ggml_type, const Shape& shape);

  // Writes the header, metadata and tensor infos to PATH.tmpPID; then call
  // write_tensor once per declared tensor, in order, and finish() to move the
  // file into place.
  void begin(const std::string& path);
  void write_tensor(const void* data, size_t nbytes);
  void finish();

 private:
  struct Info {
    std::string name;
    uint32_t ggml_type;
    Shape shape;
    uint64_t offset;
    size_t nbytes;
  };
  void add_info(const std::string& name, uint32_t ggml_type, const Shape& shape, size_t nbytes);
  void put(const void* p, size_t n);
  void put_value(const GgufValue& v);
  void pad_to(uint64_t alignment);

  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Info> tensors_;
  std::string path_, tmp_;
  FILE* f_ = nullptr;
  uint64_t pos_ = 0;
  size_t next_ = 0;
};

// A tensor to write, its bytes produced on demand (quantized, generated,
// permuted ...) so that writers stream a model to disk.
struct TensorSource {
  std::string name;  // Hugging Face name ("model.layers.0.self_attn.q_proj.weight")
  DType dtype = DType::F32;
  Shape shape;
  // Writes tensor_bytes(dtype, shape) bytes to dst.
  std::function<void(uint8_t* dst)> fill;

  size_t nbytes() const { return tensor_bytes(dtype, shape); }
};

// Called after each tensor with the bytes written so far and in all.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

// llama.cpp's tensor name for a Hugging Face one of the llama family
// ("model.layers.3.mlp.up_proj.weight" -> "blk.3.ffn_up.weight"); empty if none.
std::string gguf_tensor_name(const std::string& hf_name);

// Reorders the rows of a Q or K projection (weight or bias, any dtype: whole rows
// move) between Hugging Face's rotate-half order and llama.cpp's interleaved one.
// to_gguf: HF -> GGUF; else GGUF -> HF. n_heads: heads of this projection.
void permute_qk_rows(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int n_heads,
                     bool to_gguf);

struct GgufModelOptions {
  std::string name;  // general.name
  // tokenizer.* keys are copied from here (nullptr: tokenizer.ggml.model "none").
  const GgufFile* vocab = nullptr;
  ProgressFn progress;
};

// Writes a llama-family model (cfg.model_type "llama" or "mistral", rope in
// Hugging Face order) as a GGUF file llama.cpp loads: general.* and llama.* keys,
// the vocab's tokenizer.* keys, tensors under llama.cpp's names with Q/K rows
// permuted. Tensors must be f32/f16/bf16/q8_0/q4_0 (norms are expected in f32).
void write_llama_gguf(const std::string& path, const ModelConfig& cfg,
                      const std::vector<TensorSource>& tensors, const GgufModelOptions& opts);

// Writes a vocab-only GGUF (no tensors): general.architecture and the
// hyper-parameters of cfg plus every tokenizer.* key of vocab, like llama.cpp's
// ggml-vocab-*.gguf files.
void write_vocab_gguf(const std::string& path, const ModelConfig& cfg, const GgufFile& vocab);

}  // namespace llm
