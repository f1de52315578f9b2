// Decode GEMV for q4_0/q8_0 matrices in the backend's row layout (SPLIT = 1, see
// weights.glsl), for devices with subgroup arithmetic. The workgroup's threads form
// groups of p.tpr (a power of two >= the subgroup size, about the row's block count,
// so short rows leave no thread idle); each group computes 4 output rows (x is read
// from L2 once per 4 rows), each thread a block of 32 weights at a time with one
// 16-byte load (q4_0; two for q8_0) and one scale, keeping T <= 8 token sums, reduced
// with subgroupAdd and then across the group's subgroups in shared memory. Weights are
// dequantized exactly (q * d) and multiplied in float32.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"
#define WG 128
#define MAX_T 8
#define ROWS 4  // output rows per group of threads
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
  uint x_off, w_off, b_off, y_off, T, K, N, has_bias, res_off, out2_off, fuse_add, tpr;
} p;
#include "weights.glsl"

// Partial sums per (row, token, subgroup); subgroups are at least 4 wide.
shared float partial[ROWS * MAX_T][WG / 4];
shared float red[WG];  // when subgroups are wider than a group of threads

void write_out(uint n, uint t, float s) {
  const float b = p.has_bias != 0u ? LOAD_FLOAT(bias, BDT, p.b_off, n) : 0.0;
  const float v = s + b;
  y[p.y_off + t * p.N + n] = v;
  if (p.fuse_add != 0u) out2[p.out2_off + t * p.N + n] = v + residual[p.res_off + t * p.N + n];
}

void main() {
  const uint tpr = p.tpr, groups = WG / tpr;
  const uint n0 = flat_group() * groups * ROWS;
  if (n0 >= p.N) return;
  const uint tid = gl_LocalInvocationID.x;
  const uint g = tid / tpr, lane = tid % tpr;
  const uint nb = p.K / 32u;
  const uint row_bytes = quant_row_bytes(p.K);
  float acc[ROWS][MAX_T];
  for (uint r = 0u; r < ROWS; r++)
    for (uint t = 0u; t < MAX_T; t++) acc[r][t] = 0.0;
  for (uint blk = lane; blk < nb; blk += tpr) {
    for (uint r = 0u; r < ROWS; r++) {
      const uint n = n0 + g * ROWS + r;
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
  if (gl_SubgroupSize <= tpr) {
    // Subgroups lie within one group (both are powers of two, groups aligned).
    for (uint r = 0u; r < ROWS; r++)
      for (uint t = 0u; t < p.T; t++) {
        const float s = subgroupAdd(acc[r][t]);
        if (subgroupElect()) partial[r * MAX_T + t][gl_SubgroupID] = s;
      }
    barrier();
    const uint per_group = tpr / gl_SubgroupSize;
    for (uint o = tid; o < groups * ROWS * p.T; o += WG) {
      const uint og = o / (ROWS * p.T), r = (o / p.T) % ROWS, t = o % p.T;
      const uint n = n0 + og * ROWS + r;
      if (n >= p.N) continue;
      float s = 0.0;
      for (uint sg = og * per_group; sg < (og + 1u) * per_group; sg++) s += partial[r * MAX_T + t][sg];
      write_out(n, t, s);
    }
    return;
  }
  // Subgroups wider than a group: a tree in shared memory per (row, token).
  for (uint r = 0u; r < ROWS; r++)
    for (uint t = 0u; t < p.T; t++) {
      red[tid] = acc[r][t];
      barrier();
      for (uint s = tpr / 2u; s > 0u; s >>= 1) {
        if (lane < s) red[tid] += red[tid + s];
        barrier();
      }
      const uint n = n0 + g * ROWS + r;
      if (lane == 0u && n < p.N) write_out(n, t, red[tid]);
      barrier();
    }
}
