// Shared by attention.comp and attention_decode.comp: their specialization constants,
// bindings and push constants, block reductions, and the end of a (token, head, split):
// the normalised output, or (SPLITS > 1) a partial that the last split to finish merges;
// the output rounded for the o GEMV (QUANT) by the workgroup that writes it, which with
// O_WORKERS also hands the head to the o workers (attention_o.glsl). The includer
// defines WG, MAX_D (head dims at most) and PER_T (output dims per thread: d = tid + i * WG).
#ifndef LLM_ATTENTION_COMMON_GLSL
#define LLM_ATTENTION_COMMON_GLSL
layout(constant_id = 0) const int KDT = DT_F32;
layout(constant_id = 1) const int VDT = DT_F32;
layout(constant_id = 2) const uint SPLITS = 1;
// 1: f32 K rows 16-byte aligned with D % 4 == 0, read as vec4 (4x fewer loads).
layout(constant_id = 3) const int K_VEC4 = 0;
layout(constant_id = 4) const int QUANT = 0;
layout(std430, binding = 0) readonly buffer Qry { float qry[]; };
layout(std430, binding = 1) readonly buffer KC { uint kc[]; };
layout(std430, binding = 1) readonly buffer KC4 { vec4 kc4[]; };
layout(std430, binding = 2) readonly buffer VC { uint vc[]; };
layout(std430, binding = 3) readonly buffer Pos { int positions[]; };
layout(std430, binding = 4) readonly buffer Seq { int seq_ids[]; };
layout(std430, binding = 5) readonly buffer Table { int table[]; };
layout(std430, binding = 6) writeonly buffer Out { float outv[]; };
layout(std430, binding = 7) buffer Err { uint err_bits[]; };
// [T * H * SPLITS][2 + D]; coherent: the merging workgroup reads the others' parts.
layout(std430, binding = 8) coherent buffer Part { float part[]; };
layout(std430, binding = 9) buffer Counters { uint counters[]; };  // SPLITS > 1: [T * H]
#ifdef O_WORKERS
#define PLANES_COHERENT coherent  // read by other workgroups (the o workers)
#else
#define PLANES_COHERENT
#endif
layout(std430, binding = 10) PLANES_COHERENT writeonly buffer QP { uvec4 q[]; };  // QUANT: planes
layout(std430, binding = 10) PLANES_COHERENT writeonly buffer QPM { uvec2 qm[]; };
layout(push_constant) uniform P {
  uint q_off, k_off, v_off, pos_off, seq_off, table_off, out_off;
  uint T, H, Hkv, D, window, page_size, n_seqs, max_pages, cache_rows;
  float scale, softcap;
  uint planes_off;
#ifdef O_WORKERS
  // o's weight (words), rows and slices a head, the residual, the sum; a worker's spins;
  // O_NEXT_NORM: the norm's weight and planes (words) and its eps
  uint o_w_off, o_rows, o_parts, o_res_off, o_sum_off, o_spin, o_nn_w_off, o_nn_q_off;
  float o_nn_eps;
#endif
} p;
#include "quantize_block.glsl"

// -inf, spelled out: constant folding of -1.0 / 0.0 is not to be relied on.
#define NEG_INF uintBitsToFloat(0xff800000u)

shared float qs[MAX_D];
shared float red[WG];

// Max and sum over the first n threads' values (n a power of two, at most WG; the other
// threads' values are not read) by a tree in shared memory; every thread gets the result.
float tree_max(float v, uint n) {
  const uint tid = gl_LocalInvocationID.x;
  if (tid < n) red[tid] = v;
  barrier();
  for (uint s = n / 2u; s > 0u; s >>= 1) {
    if (tid < s) red[tid] = max(red[tid], red[tid + s]);
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}

float tree_sum(float v, uint n) {
  const uint tid = gl_LocalInvocationID.x;
  if (tid < n) red[tid] = v;
  barrier();
  for (uint s = n / 2u; s > 0u; s >>= 1) {
    if (tid < s) red[tid] += red[tid + s];
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}

#ifdef O_WORKERS
#include "attention_o.glsl"
#endif

// QUANT: the head's output (in qs) rounded for the integer-dot o GEMV, a block of 32 a
// thread (D is a multiple of 32, checked on the host).
void round_for_gemv(uint item) {
  const uint tid = gl_LocalInvocationID.x, D = p.D;
  barrier();
  const uint n = p.T * p.H * D;
  for (uint b = tid; b < D / 32u; b += WG) {
    vec4 v[8];
    for (uint j = 0u; j < 8u; j++)
      v[j] = vec4(qs[b * 32u + 4u * j], qs[b * 32u + 4u * j + 1u], qs[b * 32u + 4u * j + 2u],
                  qs[b * 32u + 4u * j + 3u]);
    const uint blk = item * (D / 32u) + b;
    quantize_block(v, p.planes_off / 4u + blk * 4u, (p.planes_off / 4u + (n / 32u) * 4u) * 2u + blk);
  }
}

// The result of one (token, head, split): normalised into the output (and rounded for
// the o GEMV: QUANT), or as a partial.
void finish(uint item, uint split, float m, float l, float acc[PER_T]) {
  const uint tid = gl_LocalInvocationID.x;
  if (SPLITS == 1u) {
    if (QUANT != 0) barrier();  // every read of q (qs) is done
    for (uint i = 0u; i < PER_T; i++) {
      const uint d = tid + i * WG;
      if (d >= p.D) continue;
      const float o = l > 0.0 ? acc[i] / l : 0.0;
      outv[p.out_off + item * p.D + d] = o;
      if (QUANT != 0) qs[d] = o;
    }
    if (QUANT != 0) round_for_gemv(item);
#ifdef O_WORKERS
    o_head_ready(item);
#endif
    return;
  }
  const uint base = (item * SPLITS + split) * (p.D + 2u);
  if (tid == 0u) {
    part[base] = m;
    part[base + 1u] = l;
  }
  for (uint i = 0u; i < PER_T; i++) {
    const uint d = tid + i * WG;
    if (d < p.D) part[base + 2u + d] = acc[i];
  }
}

shared bool merging;

// SPLITS > 1: called by every split of `item` after its partial is written; the last
// one to get here combines them: out = Σ e^(m_s - M) acc_s / Σ e^(m_s - M) l_s with M
// the largest running max (qs holds the result).
void merge_if_last(uint item) {
  const uint tid = gl_LocalInvocationID.x;
  memoryBarrierBuffer();
  barrier();
  if (tid == 0u) merging = atomicAdd(counters[item], 1u) == SPLITS - 1u;
  barrier();
  if (!merging) return;
  memoryBarrierBuffer();
  if (tid == 0u) counters[item] = 0u;
  const uint D = p.D, stride = D + 2u, base = item * SPLITS * stride;
  // Every load first, all in flight at once: the partials come from L2 (other
  // workgroups wrote them), and loads behind a branch on each split's sum went out
  // one split after another.
  float ms[SPLITS], ls[SPLITS], av[SPLITS][PER_T];
  [[unroll]] for (uint s = 0u; s < SPLITS; s++) {
    ms[s] = part[base + s * stride];
    ls[s] = part[base + s * stride + 1u];
    [[unroll]] for (uint i = 0u; i < PER_T; i++)
      av[s][i] = part[base + s * stride + 2u + min(tid + i * WG, D - 1u)];
  }
  float M = NEG_INF;
  [[unroll]] for (uint s = 0u; s < SPLITS; s++) M = max(M, ms[s]);
  float num[PER_T];
  [[unroll]] for (uint i = 0u; i < PER_T; i++) num[i] = 0.0;
  float den = 0.0;
  [[unroll]] for (uint s = 0u; s < SPLITS; s++) {
    const float w = ls[s] > 0.0 ? exp(ms[s] - M) : 0.0;  // 0: a split without keys
    den += w * ls[s];
    [[unroll]] for (uint i = 0u; i < PER_T; i++) num[i] += w * av[s][i];
  }
  [[unroll]] for (uint i = 0u; i < PER_T; i++) {
    const uint d = tid + i * WG;
    if (d >= D) continue;
    const float o = den > 0.0 ? num[i] / den : 0.0;
    outv[p.out_off + item * D + d] = o;
    qs[d] = o;
  }
  if (QUANT != 0) round_for_gemv(item);
#ifdef O_WORKERS
  o_head_ready(item);
#endif
}

#endif
