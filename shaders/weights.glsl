// Element access to a weight matrix [N, K] or table [V, D] of any dtype, stored as the
// CPU stores it (f32/f16/bf16 rows; q8_0/q4_0/q4_1 as GGUF blocks of 32: f16 scale (q4_1:
// and f16 min), then 32 int8 or 16 bytes of nibbles, low nibbles first). The including
// shader declares `uint wts[]` and the specialization constants WDT and SPLIT. Values
// are exact (q * d; q4_1: q * d + m, rounded once).
#ifndef LLM_WEIGHTS_GLSL
#define LLM_WEIGHTS_GLSL

// Quantized matrices come in one of two layouts (specialization constant SPLIT):
//  0: GGUF blocks as stored (18 / 34 / 20 bytes per block of 32);
//  1: the backend's rows (VulkanBackend::upload_weight): the row's K/32 f16 scales
//     (q4_1: (scale, min) pairs, one 32-bit word a block), padded to 16 bytes, then its quants,
//     16 bytes per block (q4_0/q4_1, GGUF's nibble order) or 32 (q8_0), so every row and
//     every block of quants is 16-byte aligned.
uint quant_block_bytes() { return WDT == DT_Q8_0 ? 32u : 16u; }
uint gguf_block_bytes() { return WDT == DT_Q8_0 ? 34u : WDT == DT_Q4_1 ? 20u : 18u; }
// Bytes of a block's scale in a split row: f16, or q4_1's (scale, min) pair.
uint split_scale_stride() { return WDT == DT_Q4_1 ? 4u : 2u; }
// Where a split row's quants start: after the scales.
uint split_meta_bytes(uint K) { return (K / 32u * split_scale_stride() + 15u) / 16u * 16u; }
uint quant_row_bytes(uint K) {
  if (SPLIT != 0) return split_meta_bytes(K) + K / 32u * quant_block_bytes();
  return K / 32u * gguf_block_bytes();
}

// Element i of row `row`; off is the tensor's word offset.
float weight_at(uint off, uint row, uint K, uint i) {
  if (WDT == DT_F32 || WDT == DT_F16 || WDT == DT_BF16) return LOAD_FLOAT(wts, WDT, off, row * K + i);
  const uint blk = i / 32u, j = i % 32u;
  const uint r = off * 4u + row * quant_row_bytes(K);
  uint scale_at, min_at, q_at;
  if (SPLIT != 0) {
    scale_at = r + blk * split_scale_stride();
    min_at = scale_at + 2u;
    q_at = r + split_meta_bytes(K) + blk * quant_block_bytes();
  } else {
    scale_at = r + blk * gguf_block_bytes();
    min_at = scale_at + 2u;
    q_at = scale_at + (WDT == DT_Q4_1 ? 4u : 2u);
  }
  const float d = f16_bits_to_f32(LOAD_U16(wts, scale_at));
  if (WDT == DT_Q8_0) return float(int(LOAD_BYTE(wts, q_at + j) << 24) >> 24) * d;
  const uint q = (LOAD_BYTE(wts, q_at + (j & 15u)) >> ((j >> 4) * 4u)) & 15u;
  if (WDT == DT_Q4_1) return float(q) * d + f16_bits_to_f32(LOAD_U16(wts, min_at));
  return float(int(q) - 8) * d;
}

#endif
