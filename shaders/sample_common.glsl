// Op::Sample's reductions and draw, shared by sample.comp and the head GEMV that samples
// its own logits (matmul_gemv_qdot_sx_sample.comp). The includer defines WG and
// SAMPLE_LOGIT(i), element i of the buffer holding the logits.
//
// Temperature 0: the index of the largest value (the first of equal ones; NaN ranks
// below every number; a row of NaNs gives 0). Above 0: the first index at which the
// running sum of exp((x - max) / temperature) exceeds u * sum (float sums: the CPU
// reference sums in double, so a draw within rounding of a boundary may differ).
#ifndef LLM_SAMPLE_COMMON_GLSL
#define LLM_SAMPLE_COMMON_GLSL

shared float best_v[WG];
shared int best_i[WG];
shared float sums[WG];
shared int picked;
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
      const float v = SAMPLE_LOGIT(base + i);
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
          const float v = SAMPLE_LOGIT(base + i);
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
}

#endif
