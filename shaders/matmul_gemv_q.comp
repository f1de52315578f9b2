// Decode GEMV for q4_0/q8_0 matrices in the backend's row layout (SPLIT = 1, see
// weights.glsl), for devices with subgroup arithmetic: a workgroup per 4 output rows,
// each thread a block of 32 weights at a time with one 16-byte load (q4_0; two for
// q8_0) and one scale, T <= 8 token sums reduced with subgroupAdd and then across the
// workgroup's subgroups in shared memory. Weights are dequantized exactly (q * d) and
// multiplied in float32.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"
#define WG 128
#define MAX_T 8
#define ROWS 4  // output rows per workgroup: x is read from L2 once per 4 rows
layout(local_size_x = WG) in;
layout(constant_id = 0) const int WDT = DT_Q4_0;
layout(constant_id = 1) const int BDT = DT_F32;
layout(constant_id = 2) const int SPLIT = 1;
layout(std430, binding = 0) readonly buffer X { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer W { uint wts[]; };
layout(std430, binding = 1) readonly buffer W4 { uvec4 wts4[]; };
layout(std430, binding = 2) readonly buffer Bias { uint bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
// fuse_add: the Add of a residual that follows in the graph, out2 = y + residual.
layout(std430, binding = 4) readonly buffer Res { float residual[]; };
layout(std430, binding = 5) writeonly buffer Out2 { float out2[]; };
layout(push_constant) uniform P {
  uint x_off, w_off, b_off, y_off, T, K, N, has_bias, res_off, out2_off, fuse_add;
} p;
#include "weights.glsl"

// Partial sums per (row, token, subgroup); subgroups are at least 4 wide.
shared float partial[ROWS * MAX_T][WG / 4];

void main() {
  const uint n0 = flat_group() * ROWS;
  if (n0 >= p.N) return;
  const uint tid = gl_LocalInvocationID.x;
  const uint nb = p.K / 32u;
  const uint row_bytes = quant_row_bytes(p.K);
  float acc[ROWS][MAX_T];
  for (uint r = 0u; r < ROWS; r++)
    for (uint t = 0u; t < MAX_T; t++) acc[r][t] = 0.0;
  for (uint blk = tid; blk < nb; blk += WG) {
    for (uint r = 0u; r < ROWS; r++) {
      const uint n = n0 + r;
      if (n >= p.N) break;
      const uint row = p.w_off * 4u + n * row_bytes;              // bytes, 16-aligned
      const uint q_base = (row + split_scale_bytes(p.K)) / 16u;  // in uvec4
      const float d = f16_bits_to_f32(LOAD_U16(wts, row + blk * 2u));
      float v[32];
      if (WDT == DT_Q4_0) {
        const uvec4 q = wts4[q_base + blk];
        for (uint w = 0u; w < 4u; w++) {
          const uint word = q[w];
          for (uint b = 0u; b < 4u; b++) {
            const uint byte_ = (word >> (8u * b)) & 0xffu;
            v[w * 4u + b] = float(int(byte_ & 15u) - 8) * d;
            v[w * 4u + b + 16u] = float(int(byte_ >> 4) - 8) * d;
          }
        }
      } else {
        for (uint h = 0u; h < 2u; h++) {
          const uvec4 q = wts4[q_base + blk * 2u + h];
          for (uint w = 0u; w < 4u; w++)
            for (uint b = 0u; b < 4u; b++)
              v[h * 16u + w * 4u + b] = float(int(((q[w] >> (8u * b)) & 0xffu) << 24) >> 24) * d;
        }
      }
      // The same x block for every row: from L1 after the first.
      for (uint t = 0u; t < p.T; t++) {
        // x rows are 16-byte aligned (x_off and K multiples of 4, checked on the host).
        const uint xb = (p.x_off + t * p.K + blk * 32u) / 4u;
        float s = 0.0;
        for (uint k = 0u; k < 8u; k++) {
          const vec4 xv = x4[xb + k];
          s += dot(xv, vec4(v[4u * k], v[4u * k + 1u], v[4u * k + 2u], v[4u * k + 3u]));
        }
        acc[r][t] += s;
      }
    }
  }
  for (uint r = 0u; r < ROWS; r++)
    for (uint t = 0u; t < p.T; t++) {
      const float s = subgroupAdd(acc[r][t]);
      if (subgroupElect()) partial[r * MAX_T + t][gl_SubgroupID] = s;
    }
  barrier();
  if (tid < ROWS * p.T) {
    const uint r = tid / p.T, t = tid % p.T, n = n0 + r;
    if (n < p.N) {
      float s = 0.0;
      for (uint g = 0u; g < gl_NumSubgroups; g++) s += partial[r * MAX_T + t][g];
      const float b = p.has_bias != 0u ? LOAD_FLOAT(bias, BDT, p.b_off, n) : 0.0;
      const float v = s + b;
      y[p.y_off + t * p.N + n] = v;
      if (p.fuse_add != 0u) out2[p.out2_off + t * p.N + n] = v + residual[p.res_off + t * p.N + n];
    }
  }
}
