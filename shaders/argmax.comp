// Op::ArgMax: out[r] = index of the largest value of row r of x [R, N] (the first of
// equal ones; NaN ranks below every number; a row of NaNs gives 0). A workgroup per row:
// each invocation keeps the best of its strided elements, then a shared-memory tree
// merges them (larger value wins, then the lower index).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define WG 256
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Out { int outv[]; };
layout(push_constant) uniform P {
  uint x_off, out_off, rows, n;
} p;

shared float best_v[WG];
shared int best_i[WG];

void main() {
  const uint tid = gl_LocalInvocationID.x;
  for (uint row = flat_group(); row < p.rows; row += gl_NumWorkGroups.x * gl_NumWorkGroups.y) {
    const uint base = p.x_off + row * p.n;
    float bv = 0.0;
    int bi = -1;
    // Indices rise within an invocation: a tie keeps the earlier one.
    for (uint k = tid; k < p.n; k += WG) {
      const float v = x[base + k];
      if (!isnan(v) && (bi < 0 || v > bv)) {
        bv = v;
        bi = int(k);
      }
    }
    best_v[tid] = bv;
    best_i[tid] = bi;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
      if (tid < s) {
        const float ov = best_v[tid + s];
        const int oi = best_i[tid + s];
        const int mi = best_i[tid];
        if (oi >= 0 && (mi < 0 || ov > best_v[tid] || (ov == best_v[tid] && oi < mi))) {
          best_v[tid] = ov;
          best_i[tid] = oi;
        }
      }
      barrier();
    }
    if (tid == 0u) outv[p.out_off + row] = max(best_i[0], 0);
    barrier();
  }
}
