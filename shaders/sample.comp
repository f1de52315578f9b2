// Op::Sample: one token per row of x [R, N] with params [R, 5] = (temperature, u,
// top_k, top_p, min_p). Temperature 0: the index of the largest value (the first of
// equal ones; NaN ranks below every number; a row of NaNs gives 0). Above 0: the first
// index at which the running sum of the kept tokens' exp((x - max) / temperature)
// exceeds u * their sum (float sums: the CPU reference sums in double, so a draw within
// rounding of a boundary may differ); the cuts that decide which are kept are
// sample_cut.glsl's.
// SPLITS workgroups per row, each over a contiguous part of it: invocations keep the
// best of strided elements, a shared-memory tree merges them, and the last workgroup
// of the row to finish (a counter) merges the parts' bests, so a long row is read by
// many multiprocessors at once; that workgroup then draws (at a temperature) over the
// whole row.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#define WG 256
#define UNROLL 8u
layout(local_size_x = WG) in;
layout(constant_id = 0) const uint SPLITS = 1;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Params { float params[]; };
layout(std430, binding = 2) writeonly buffer Out { int outv[]; };
// SPLITS > 1: each part's best (value bits, index) [rows][SPLITS], read by the merging
// workgroup (coherent), and a counter per row, zero between runs (the merger resets it).
layout(std430, binding = 3) coherent buffer Part { uvec2 part[]; };
layout(std430, binding = 4) buffer Counters { uint counters[]; };
layout(push_constant) uniform P {
  uint x_off, params_off, out_off, rows, n;
} p;

#include "sample_cut.glsl"

shared float best_v[WG];
shared int best_i[WG];
shared float sums[WG];
shared int picked;
// The cuts of the row being drawn: tokens after (cut_key, cut_idx) in the order by value
// are dropped (cut_on), and those below log(min_p) (log_min_p, -inf when off).
shared bool cut_on;
shared uint cut_key, cut_idx;
shared float log_min_p;
shared bool merging;

// (v, i) beats (bv, bi): a number above bv, or equal to it at a smaller index; an index
// of -1 (no number seen) loses to any other.
bool sample_better(float v, int i, float bv, int bi) {
  return i >= 0 && (bi < 0 || v > bv || (v == bv && i < bi));
}

// Merges the invocations' (bv, bi) into best_v[0], best_i[0].
void reduce_best(float bv, int bi) {
  const uint tid = gl_LocalInvocationID.x;
  best_v[tid] = bv;
  best_i[tid] = bi;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (tid < s && sample_better(best_v[tid + s], best_i[tid + s], best_v[tid], best_i[tid])) {
      best_v[tid] = best_v[tid + s];
      best_i[tid] = best_i[tid + s];
    }
    barrier();
  }
}

// Whether token i of value v survives the row's cuts.
bool kept(uint i, float v, float m, float inv_t) {
  if ((v - m) * inv_t < log_min_p) return false;
  if (!cut_on) return true;
  const uint k = order_key(v);
  return k > cut_key || (k == cut_key && i <= cut_idx);
}

// Sets the row's cuts (Op::Sample): the boundary of top-k, then of top-p within it.
// Uniform control flow; barriers inside.
void apply_cuts(uint base, uint n, float temperature, float top_k, float top_p, float min_p) {
  const uint tid = gl_LocalInvocationID.x;
  if (tid == 0u) {
    cut_on = false;
    log_min_p = min_p > 0.0 ? log(min_p) : uintBitsToFloat(0xff800000u);
  }
  barrier();
  const float m = best_v[0];
  if (!(temperature > 0.0) || best_i[0] < 0 || isinf(m)) return;
  const float inv_t = 1.0 / temperature;
  const bool by_k = top_k >= 1.0 && top_k < float(n);
  uvec2 s_k = uvec2(0u);
  if (by_k) {
    select_boundary(base, n, m, inv_t, false, false, uvec2(uint(top_k), 0u));
    s_k = b_mass;
  }
  if (top_p < 1.0) {
    const uint t = uint(top_p * 16777216.0);
    if (by_k)
      select_boundary(base, n, m, inv_t, true, false, top_p_target(s_k, t));
    else
      select_boundary(base, n, m, inv_t, true, true, uvec2(t, 0u));
  }
  if (tid == 0u && (by_k || top_p < 1.0)) {
    cut_on = true;
    cut_key = b_key;
    cut_idx = b_idx;
  }
  barrier();
}

// The id of the row of n logits from element base whose best (reduce_best) is in
// best_v[0], best_i[0], into
// `picked`: the argmax, or above temperature 0 the inverse-CDF draw at u. Each
// invocation sums a contiguous chunk, a scan places the chunks, and the invocation
// whose chunk holds the target walks it. Uniform control flow; barriers inside.
void sample_pick(uint base, uint n, float temperature, float u) {
  const uint tid = gl_LocalInvocationID.x;
  if (tid == 0u) picked = max(best_i[0], 0);
  barrier();
  const float m = best_v[0];
  if (temperature > 0.0 && best_i[0] >= 0 && !isinf(m)) {
    const float inv_t = 1.0 / temperature;
    const uint chunk = (n + WG - 1u) / WG;
    const uint lo = min(n, tid * chunk), hi = min(n, lo + chunk);
    float sum = 0.0;
    for (uint i = lo; i < hi; i++) {
      const float v = x[base + i];
      if (!isnan(v) && kept(i, v, m, inv_t)) sum += exp((v - m) * inv_t);
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
          if (isnan(v) || !kept(i, v, m, inv_t)) continue;
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
}

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint per = (p.n + SPLITS - 1u) / SPLITS;  // elements per part
  for (uint g = flat_group(); g < p.rows * SPLITS; g += gl_NumWorkGroups.x * gl_NumWorkGroups.y) {
    const uint row = g / SPLITS, split = g % SPLITS;
    const uint base = p.x_off + row * p.n;
    const uint part_lo = min(p.n, split * per), part_hi = min(p.n, part_lo + per);
    float bv = 0.0;
    int bi = -1;
    // Indices rise within an invocation: a tie keeps the earlier one. UNROLL loads go
    // out before the first comparison (one trip to memory for them, not UNROLL).
    uint k = part_lo + tid;
    for (; k + (UNROLL - 1u) * WG < part_hi; k += UNROLL * WG) {
      float v[UNROLL];
      for (uint j = 0u; j < UNROLL; j++) v[j] = x[base + k + j * WG];
      for (uint j = 0u; j < UNROLL; j++) {
        if (!isnan(v[j]) && (bi < 0 || v[j] > bv)) {
          bv = v[j];
          bi = int(k + j * WG);
        }
      }
    }
    for (; k < part_hi; k += WG) {
      const float v = x[base + k];
      if (!isnan(v) && (bi < 0 || v > bv)) {
        bv = v;
        bi = int(k);
      }
    }
    reduce_best(bv, bi);
    if (SPLITS > 1u) {
      // This part's best out, then the last part of the row to finish merges them all.
      if (tid == 0u) part[row * SPLITS + split] = uvec2(floatBitsToUint(best_v[0]), uint(best_i[0]));
      memoryBarrierBuffer();
      barrier();
      if (tid == 0u) merging = atomicAdd(counters[row], 1u) == SPLITS - 1u;
      barrier();
      if (!merging) continue;  // uniform: merging is shared
      memoryBarrierBuffer();
      if (tid == 0u) counters[row] = 0u;
      // The tie rule compares indices, so the parts may merge in any order.
      const uvec2 e = tid < SPLITS ? part[row * SPLITS + tid] : uvec2(0u, 0xffffffffu);
      reduce_best(uintBitsToFloat(e.x), int(e.y));
    }
    const uint po = p.params_off + 5u * row;
    apply_cuts(base, p.n, params[po], params[po + 2u], params[po + 3u], params[po + 4u]);
    sample_pick(base, p.n, params[po], params[po + 1u]);
    if (tid == 0u) outv[p.out_off + row] = picked;
    barrier();
  }
}
