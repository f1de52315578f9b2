// Op::Sample: one token per row of x [R, N] with params [R, 2] = (temperature, u).
// Temperature 0: the index of the largest value (the first of equal ones; NaN ranks
// below every number; a row of NaNs gives 0). Above 0: the first index at which the
// running sum of exp((x - max) / temperature) exceeds u * sum (float sums here: the
// CPU reference sums in double, so a draw within rounding of a boundary may differ).
// A workgroup per row: invocations keep the best of strided elements, a shared-memory
// tree merges them; for sampling each invocation sums a contiguous chunk, a scan places
// the chunks, and the invocation whose chunk holds the target walks it.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define WG 256
#define UNROLL 8u
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Params { float params[]; };
layout(std430, binding = 2) writeonly buffer Out { int outv[]; };
layout(push_constant) uniform P {
  uint x_off, params_off, out_off, rows, n;
} p;

shared float best_v[WG];
shared int best_i[WG];
shared float sums[WG];
shared int picked;

void main() {
  const uint tid = gl_LocalInvocationID.x;
  for (uint row = flat_group(); row < p.rows; row += gl_NumWorkGroups.x * gl_NumWorkGroups.y) {
    const uint base = p.x_off + row * p.n;
    float bv = 0.0;
    int bi = -1;
    // Indices rise within an invocation: a tie keeps the earlier one. UNROLL loads go
    // out before the first comparison (one trip to memory for them, not UNROLL).
    uint k = tid;
    for (; k + (UNROLL - 1u) * WG < p.n; k += UNROLL * WG) {
      float v[UNROLL];
      for (uint j = 0u; j < UNROLL; j++) v[j] = x[base + k + j * WG];
      for (uint j = 0u; j < UNROLL; j++) {
        if (!isnan(v[j]) && (bi < 0 || v[j] > bv)) {
          bv = v[j];
          bi = int(k + j * WG);
        }
      }
    }
    for (; k < p.n; k += WG) {
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
    if (tid == 0u) picked = max(best_i[0], 0);
    barrier();
    const float temperature = params[p.params_off + 2u * row];
    const float u = params[p.params_off + 2u * row + 1u];
    const float m = best_v[0];
    if (temperature > 0.0 && best_i[0] >= 0 && !isinf(m)) {
      const float inv_t = 1.0 / temperature;
      const uint chunk = (p.n + WG - 1u) / WG;
      const uint lo = min(p.n, tid * chunk), hi = min(p.n, lo + chunk);
      float sum = 0.0;
      for (uint i = lo; i < hi; i++) {
        const float v = x[base + i];
        if (!isnan(v)) sum += exp((v - m) * inv_t);
      }
      // Inclusive scan (Hillis-Steele) over the chunk sums.
      sums[tid] = sum;
      barrier();
      for (uint o = 1u; o < WG; o <<= 1) {
        const float add = tid >= o ? sums[tid - o] : 0.0;
        barrier();
        sums[tid] += add;
        barrier();
      }
      const float incl = sums[tid], total = sums[WG - 1u];
      const float excl = incl - sum;
      if (total > 0.0 && !isinf(total)) {
        const float target = u * total;
        if (lo < hi && excl <= target && target < incl) {
          float run = excl;
          int last = -1, pick = -1;
          for (uint i = lo; i < hi && pick < 0; i++) {
            const float v = x[base + i];
            if (isnan(v)) continue;
            const float w = exp((v - m) * inv_t);
            run += w;
            if (w > 0.0) last = int(i);
            if (run > target) pick = int(i);
          }
          if (pick < 0) pick = last;
          if (pick >= 0) picked = pick;
        }
      }
      barrier();
    }
    if (tid == 0u) outv[p.out_off + row] = picked;
    barrier();
  }
}
