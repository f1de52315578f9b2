// GGUF (v2/v3) reading: every metadata type, tensor infos, alignment, and
// tensor data memory-mapped. Writing lives in gguf_writer.h.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/formats/mapped_file.h"
#include "core/tensor.h"

namespace llm {

// GGUF metadata value types, numbered as in the file format.
enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

// One metadata value; arrays hold their element type and elements.
struct GgufValue {
  GgufType type = GgufType::U8;
  // Scalars: integers in i (unsigned values fit as they are), floats in f, bools in i.
  int64_t i = 0;
  uint64_t u = 0;  // the same integer as unsigned (exact for u64 values above INT64_MAX)
  double f = 0;
  std::string str;
  GgufType array_type = GgufType::U8;
  std::vector<GgufValue> array;

  bool is_int() const;  // any integer type or bool
};

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;  // ggml's type number (0 F32, 1 F16, 2 Q4_0, 8 Q8_0, 30 BF16, ...)
  Shape shape;             // outermost first (GGUF stores innermost first; reversed here)
  uint64_t offset = 0;     // relative to the start of the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
};

class GgufFile {
 public:
  // Validates the header, metadata and tensor infos (sizes inside the file);
  // throws llm::Error naming the file and the problem ("truncated", "not a GGUF file" ...).
  explicit GgufFile(const std::string& path);

  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const std::string& path() const { return file_.path(); }

  // Typed accessors; the get_* ones throw when the key is missing or of another type.
  const GgufValue* find(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  std::string get_string_or(const std::string& key, const std::string& def) const;
  int64_t get_int_or(const std::string& key, int64_t def) const;
  double get_float_or(const std::string& key, double def) const;
  // String / numeric arrays (throws when the key is missing or not such an array).
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<float> get_float_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;

 private:
  MappedFile file_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
};

// Maps a ggml type number to our DType; false for types we do not read.
bool dtype_from_ggml_type(uint32_t ggml_type, DType* out);

}  // namespace llm
