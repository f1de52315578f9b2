// A model loaded onto a backend: its config and its weights in device memory.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/formats/lora.h"
#include "core/formats/safetensors.h"
#include "core/models/architecture.h"
#include "core/models/model_config.h"

namespace llm {

struct LoadOptions {
  LoadOptions() = default;
  LoadOptions(std::string q) : quantization(std::move(q)) {}  // NOLINT: {scheme} reads well
  // MLC-style scheme applied to float matrices at load ("q4f16_1", "q8f16_1",
  // "q0f16", "q0bf16", "q0f32"); empty: keep the stored dtypes.
  std::string quantization;
  // LoRA adapters merged into the weights before they go to the device, in order.
  std::vector<LoraSpec> loras;
};

class Model {
 public:
  // Loads a Hugging Face folder (config.json + safetensors). Every weight the
  // architecture needs is checked (present, shape, dtype) and put on the backend.
  static std::unique_ptr<Model> load(const std::string& path, Backend& backend,
                                     const LoadOptions& opts = {});

  const ModelConfig& config() const { return config_; }
  Backend& backend() const { return backend_; }
  const std::string& path() const { return path_; }
  // Bytes of weights on the device, and by the dtype they run in (a GGUF's Q5_K / Q6_K
  // matrices show up as q8_0: what they cost in memory).
  size_t weight_bytes() const;
  const std::map<DType, size_t>& weight_bytes_by_dtype() const { return dtype_bytes_; }

  // dtype of a stored weight matrix as the graph should use it.
  DType weight_dtype(const std::string& name) const;
  // Where a Weight tensor of a graph lives; throws when it does not match.
  TensorRef resolve(const TensorInfo& t) const;

 private:
  Model(std::string path, Backend& backend) : path_(std::move(path)), backend_(backend) {}
  void upload(const Graph& g);

  std::string path_;
  Backend& backend_;
  ModelConfig config_;
  std::unique_ptr<WeightStore> store_;
  std::map<std::string, std::unique_ptr<DeviceBuffer>> weights_;
  std::vector<std::vector<uint8_t>> converted_;  // host copies that device buffers may alias
  std::map<DType, size_t> dtype_bytes_;
  bool has_target_ = false;
  DType target_dtype_ = DType::F32;
};

}  // namespace llm
