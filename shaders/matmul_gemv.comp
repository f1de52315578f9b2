// y[T, N] = x[T, K] · Wᵀ (+ bias) for few tokens (T <= 8): a workgroup per output row
// n reads the row once and keeps T sums; quantized rows go block by block (one scale
// load per 32 weights). Partial sums meet in shared memory.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define WG 128
#define MAX_T 8
layout(local_size_x = WG) in;
layout(constant_id = 0) const int WDT = DT_F32;
layout(constant_id = 1) const int BDT = DT_F32;
layout(constant_id = 2) const int SPLIT = 0;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { uint wts[]; };
layout(std430, binding = 2) readonly buffer Bias { uint bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint x_off, w_off, b_off, y_off, T, K, N, has_bias;
} p;
#include "weights.glsl"

shared float red[MAX_T][WG];

void main() {
  const uint n = flat_group();
  if (n >= p.N) return;
  const uint tid = gl_LocalInvocationID.x;
  float acc[MAX_T];
  for (uint t = 0u; t < MAX_T; t++) acc[t] = 0.0;
  if (WDT == DT_Q8_0 || WDT == DT_Q4_0 || WDT == DT_Q4_1) {
    const uint bs = gguf_block_bytes();
    const uint row = p.w_off * 4u + n * quant_row_bytes(p.K);
    for (uint blk = tid; blk < p.K / 32u; blk += WG) {
      const uint sa = SPLIT != 0 ? row + blk * split_scale_stride() : row + blk * bs;
      const uint ma = sa + 2u;  // q4_1's min
      const uint a = SPLIT != 0 ? row + split_meta_bytes(p.K) + blk * quant_block_bytes()
                                : sa + (WDT == DT_Q4_1 ? 4u : 2u);
      const float d = f16_bits_to_f32(LOAD_U16(wts, sa));
      const float m = WDT == DT_Q4_1 ? f16_bits_to_f32(LOAD_U16(wts, ma)) : 0.0;  // q4_1: q d + m
      float v[32];
      if (WDT == DT_Q8_0) {
        for (uint j = 0u; j < 32u; j++) v[j] = float(int(LOAD_BYTE(wts, a + j) << 24) >> 24) * d;
      } else {
        for (uint j = 0u; j < 16u; j++) {
          const uint q = LOAD_BYTE(wts, a + j);
          v[j] = WDT == DT_Q4_1 ? float(q & 15u) * d + m : float(int(q & 15u) - 8) * d;
          v[j + 16u] = WDT == DT_Q4_1 ? float(q >> 4) * d + m : float(int(q >> 4) - 8) * d;
        }
      }
      for (uint t = 0u; t < p.T; t++) {
        const uint xb = p.x_off + t * p.K + blk * 32u;
        float s = 0.0;
        for (uint j = 0u; j < 32u; j++) s += x[xb + j] * v[j];
        acc[t] += s;
      }
    }
  } else {
    for (uint k = tid; k < p.K; k += WG) {
      const float v = LOAD_FLOAT(wts, WDT, p.w_off, n * p.K + k);
      for (uint t = 0u; t < p.T; t++) acc[t] += x[p.x_off + t * p.K + k] * v;
    }
  }
  for (uint t = 0u; t < MAX_T; t++) red[t][tid] = acc[t];
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (tid < s)
      for (uint t = 0u; t < MAX_T; t++) red[t][tid] += red[t][tid + s];
    barrier();
  }
  if (tid == 0u) {
    const float b = p.has_bias != 0u ? LOAD_FLOAT(bias, BDT, p.b_off, n) : 0.0;
    for (uint t = 0u; t < p.T; t++) y[p.y_off + t * p.N + n] = red[t][0] + b;
  }
}
