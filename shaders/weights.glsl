// Element access to a weight matrix [N, K] or table [V, D] of any dtype, stored as the
// CPU stores it (f32/f16/bf16 rows; q8_0/q4_0 as GGUF blocks of 32: f16 scale, then
// 32 int8 or 16 bytes of nibbles, low nibbles first). The including shader declares
// `uint wts[]` and the specialization constant WDT. Values are exact (q * d).
#ifndef LLM_WEIGHTS_GLSL
#define LLM_WEIGHTS_GLSL

uint quant_row_bytes(uint K) { return WDT == DT_Q8_0 ? K / 32u * 34u : K / 32u * 18u; }

// Element i of row `row`; off is the tensor's word offset.
float weight_at(uint off, uint row, uint K, uint i) {
  if (WDT == DT_F32 || WDT == DT_F16 || WDT == DT_BF16) return LOAD_FLOAT(wts, WDT, off, row * K + i);
  const uint a = off * 4u + row * quant_row_bytes(K) + (i / 32u) * (WDT == DT_Q8_0 ? 34u : 18u);
  const float d = f16_bits_to_f32(LOAD_U16(wts, a));
  const uint j = i % 32u;
  if (WDT == DT_Q8_0) return float(int(LOAD_BYTE(wts, a + 2u + j) << 24) >> 24) * d;
  const uint q = (LOAD_BYTE(wts, a + 2u + (j & 15u)) >> ((j >> 4) * 4u)) & 15u;
  return float(int(q) - 8) * d;
}

#endif
