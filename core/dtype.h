// Element types of tensors. Quantized types are stored in blocks: a row of
// n elements takes (n / block_elems) * block_bytes bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace llm {

enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  I32,
  I64,
  Q8_0,  // 32 int8 + f16 scale per block (GGUF Q8_0, MLC q8f16_1 values)
  Q4_0,  // 32 nibbles + f16 scale per block (GGUF Q4_0, MLC q4f16_1 values)
  // 32 nibbles + f16 scale + f16 min per block (GGUF Q4_1): what Q4_K GGUF tensors
  // load as on backends that run it (Backend::runs_weight_dtype), else q8_0.
  Q4_1,
};

struct DTypeInfo {
  const char* name;
  int64_t block_elems;
  size_t block_bytes;
  bool is_float;  // f32/f16/bf16
};

const DTypeInfo& dtype_info(DType t);
inline const char* dtype_name(DType t) { return dtype_info(t).name; }
// f32/f16/bf16.
inline bool is_float(DType t) { return dtype_info(t).is_float; }
// The block-quantized types (matmul weights and get_rows tables only).
inline bool is_quant(DType t) { return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_1; }
// Bytes of a row of n elements; n must be a multiple of the block size.
size_t dtype_row_bytes(DType t, int64_t n);
// Parses names as written by safetensors ("F32", "BF16") or ours ("f32").
bool dtype_from_name(const std::string& name, DType* out);

// Scalar conversions (bit exact, round-to-nearest-even).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
inline float bf16_to_f32(uint16_t h) {
  union {
    uint32_t u;
    float f;
  } v;
  v.u = static_cast<uint32_t>(h) << 16;
  return v.f;
}
uint16_t f32_to_bf16(float f);

// Converts n elements of a float type (f32/f16/bf16) to f32.
void convert_to_f32(DType t, const void* src, float* dst, int64_t n);
// Converts n f32 values to a float type (f32/f16/bf16), rounding to nearest even.
// dst needs no alignment.
void convert_from_f32(DType t, const float* src, void* dst, int64_t n);

}  // namespace llm
