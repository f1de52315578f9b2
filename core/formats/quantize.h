// Quantization to the block formats of DType::Q8_0 / Q4_0 / Q4_1. All are
// GGUF's layouts (blocks of 32 along a row: an f16 scale d, then 32 int8 for
// Q8_0, or 16 bytes of nibbles for Q4_0: byte j holds element j in its low and
// element j+16 in its high nibble, value = (q - 8) * d; Q4_1 puts an f16 min m
// after d, value = q * d + m). MLC's q8f16_1 and q4f16_1 are Q8_0's and Q4_0's
// values. Rounding matches ggml's reference quantizers
// bit for bit, so GGUF files import losslessly and our files load in llama.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace llm {

// n must be a multiple of 32.
void quantize_row_q8_0(const float* src, void* dst, int64_t n);
void quantize_row_q4_0(const float* src, void* dst, int64_t n);
void dequantize_row_q8_0(const void* src, float* dst, int64_t n);
void dequantize_row_q4_0(const void* src, float* dst, int64_t n);
void quantize_row_q4_1(const float* src, void* dst, int64_t n);
void dequantize_row_q4_1(const void* src, float* dst, int64_t n);
// Any of the three by dtype.
void quantize_row(DType t, const float* src, void* dst, int64_t n);
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// Quantizes a tensor (f32/f16/bf16, or another quantized type, decoded first; rows
// a multiple of 32 long) to target (Q8_0, Q4_0 or Q4_1) with n_threads threads (0:
// all hardware threads).
std::vector<uint8_t> quantize_tensor(const HostTensor& src, DType target, int n_threads = 0);

// MLC-style scheme names: "q0f32", "q0f16", "q0bf16", "q8f16_1", "q4f16_1".
struct QuantScheme {
  std::string name;
  DType weight_dtype;  // what matrices become: F32, F16, BF16, Q8_0, Q4_0
};
// Throws llm::Error listing the known names.
QuantScheme parse_quant_scheme(const std::string& name);
// The known names, comma separated: "q0f32, q0f16, q0bf16, q8f16_1, q4f16_1".
std::string quant_scheme_names();

}  // namespace llm
