// safetensors: reading (memory-mapped, single file or sharded through
// model.safetensors.index.json) and writing.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/formats/mapped_file.h"
#include "core/tensor.h"

namespace llm {

// One .safetensors file. Tensors point into the mapping.
class SafetensorsFile {
 public:
  // Validates the header (JSON, dtypes, offsets inside the file, sizes matching
  // shapes); throws llm::Error naming the file and the problem. U8 tensors that
  // the metadata marks as packed q8_0/q4_0 blocks come back with that dtype and
  // their logical shape (see write_safetensors).
  explicit SafetensorsFile(const std::string& path);

  const std::map<std::string, HostTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::map<std::string, HostTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All weight tensors of a model, gathered from one or more files.
class WeightStore {
 public:
  // Opens DIR/model.safetensors.index.json (sharded) if present, else every
  // DIR/*.safetensors file. Throws when none is found or a shard is missing.
  static std::unique_ptr<WeightStore> open_dir(const std::string& dir);

  void add_file(std::unique_ptr<SafetensorsFile> f);
  // nullptr when absent.
  const HostTensor* find(const std::string& name) const;
  std::vector<std::string> names() const;
  // Adds a tensor whose storage the store keeps (converted or synthesized data).
  void add_owned(const std::string& name, DType dtype, Shape shape, std::vector<uint8_t> data);
  // Frees what add_owned stored under name (a no-op for other tensors), once a
  // device holds its own copy; the entry keeps dtype and shape, data becomes nullptr.
  void release_owned(const std::string& name);
  // Adds a tensor whose memory `keep_alive` owns (e.g. a memory-mapped GGUF file).
  void add_external(const std::string& name, const HostTensor& t,
                    std::shared_ptr<const void> keep_alive);

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, HostTensor> tensors_;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> owned_;
  std::vector<std::shared_ptr<const void>> external_;
};

// Writes tensors to a .safetensors file (data section 64-byte aligned, keys sorted).
// Supported dtypes: f32, f16, bf16, i32, i64, and q8_0/q4_0 stored as U8
// [rows, row_bytes] with "llmrt.dtype.NAME" / "llmrt.shape.NAME" metadata
// (SafetensorsFile reads them back as the quantized dtype and logical shape).
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, HostTensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace llm
