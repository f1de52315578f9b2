// Decoding of the GGUF block types that no backend runs directly (Q4_1, Q5_0,
// Q5_1, Q4_K, Q5_K, Q6_K): ggml's block layouts, dequantized exactly to floats.
// At load such tensors are transcoded to a type the backends run (see
// gguf_model.cpp): Q4_1 and Q4_K to Q4_1 where the backend runs it, the others (and
// those elsewhere) to Q8_0 (q8f16_1), all to F16 / BF16 / F32 under --quantization
// q0f16 / q0bf16 / q0f32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace llm {

// ggml type numbers of the block types decoded here.
enum GgmlBlockType : uint32_t {
  kGgmlQ4_1 = 3,
  kGgmlQ5_0 = 6,
  kGgmlQ5_1 = 7,
  kGgmlQ4_K = 12,
  kGgmlQ5_K = 13,
  kGgmlQ6_K = 14,
};

struct GgmlBlockLayout {
  const char* name;
  int64_t block_elems;
  size_t block_bytes;
};

// nullptr for a type not decoded here.
const GgmlBlockLayout* ggml_block_layout(uint32_t ggml_type);

// Dequantizes n values (a multiple of the block size) of one of the types above.
void dequantize_ggml_row(uint32_t ggml_type, const void* src, float* dst, int64_t n);

// Transcodes a whole tensor of one of the types above (rows of shape.row_len()
// values, nbytes of blocks) to target: F32, F16 or BF16 (exact values, F16 / BF16
// rounded to nearest even), Q8_0 (the exact values requantized per block of 32,
// ggml's rounding) or, for Q4_1 and Q4_K only, Q4_1 (Q4_1 copied; each Q4_K
// sub-block of 32 becomes a Q4_1 block with the same 4-bit values, its scale d*sc and
// min -dmin*mn rounded to f16: each value within 2^-11 (|d*sc| * 15 + |dmin*mn|);
// throws if one leaves f16's range). Rows are split over n_threads threads (0: all
// hardware threads).
// Q4_1 and Q4_K: what transcode_ggml_tensor takes to Q4_1.
bool ggml_to_q4_1(uint32_t ggml_type);

std::vector<uint8_t> transcode_ggml_tensor(uint32_t ggml_type, const void* src, const Shape& shape,
                                           DType target, int n_threads = 0);

}  // namespace llm
