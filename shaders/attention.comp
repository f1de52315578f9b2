// Causal attention over the paged KV cache (core/graph.h): a workgroup per (token,
// query head). Keys go in chunks of WG, a thread per key for the score q·k (scaled,
// soft-capped); an online softmax (running max and sum, exact rescaling) folds each
// chunk into the output, whose dims are spread over the threads (up to 8 each). Dot
// products and weighted sums keep four partial sums, so loads overlap.
// With SPLITS > 1 (few tokens and heads: decode) the keys of each (token, head) are
// split over SPLITS workgroups, each writing its running max, sum and unnormalised
// output to `part`, which attention_merge.comp combines; or, with MERGE, the last of
// the SPLITS workgroups of a (token, head) to finish combines them (a counter per
// (token, head), which it resets for the next run), and with QUANT also rounds the
// output for the integer-dot GEMV that reads it (quantize_x.comp's layout): one
// dispatch and barrier less per layer.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define WG 128
#define MAX_D 1024
#define PER_T (MAX_D / WG)
layout(local_size_x = WG) in;
layout(constant_id = 0) const int KDT = DT_F32;
layout(constant_id = 1) const int VDT = DT_F32;
layout(constant_id = 2) const uint SPLITS = 1;
// 1: f32 K rows 16-byte aligned with D % 4 == 0, read as vec4 (4x fewer loads).
layout(constant_id = 3) const int K_VEC4 = 0;
layout(constant_id = 4) const int MERGE = 0;
layout(constant_id = 5) const int QUANT = 0;
layout(std430, binding = 0) readonly buffer Qry { float qry[]; };
layout(std430, binding = 1) readonly buffer KC { uint kc[]; };
layout(std430, binding = 1) readonly buffer KC4 { vec4 kc4[]; };
layout(std430, binding = 2) readonly buffer VC { uint vc[]; };
layout(std430, binding = 3) readonly buffer Pos { int positions[]; };
layout(std430, binding = 4) readonly buffer Seq { int seq_ids[]; };
layout(std430, binding = 5) readonly buffer Table { int table[]; };
layout(std430, binding = 6) writeonly buffer Out { float outv[]; };
layout(std430, binding = 7) buffer Err { uint err_bits[]; };
// [T * H * SPLITS][2 + D]; coherent: with MERGE another workgroup reads it.
layout(std430, binding = 8) coherent buffer Part { float part[]; };
layout(std430, binding = 9) buffer Counters { uint counters[]; };  // MERGE: [T * H]
layout(std430, binding = 10) writeonly buffer QP { uvec4 q[]; };    // QUANT: planes
layout(std430, binding = 10) writeonly buffer QPM { uvec2 qm[]; };
layout(push_constant) uniform P {
  uint q_off, k_off, v_off, pos_off, seq_off, table_off, out_off;
  uint T, H, Hkv, D, window, page_size, n_seqs, max_pages, cache_rows;
  float scale, softcap;
  uint planes_off;
} p;
#include "quantize_block.glsl"

// -inf, spelled out: constant folding of -1.0 / 0.0 is not to be relied on.
#define NEG_INF uintBitsToFloat(0xff800000u)

shared float qs[MAX_D];
shared float red[WG];
shared float probs[WG];
shared int slot_of[WG];

float reduce_max(float v) {
  const uint tid = gl_LocalInvocationID.x;
  red[tid] = v;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (tid < s) red[tid] = max(red[tid], red[tid + s]);
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}

float reduce_sum(float v) {
  const uint tid = gl_LocalInvocationID.x;
  red[tid] = v;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (tid < s) red[tid] += red[tid + s];
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}

// The result of one (token, head, split): normalised into the output, or as a partial.
void finish(uint item, uint split, float m, float l, float acc[PER_T]) {
  const uint tid = gl_LocalInvocationID.x;
  if (SPLITS == 1u) {
    for (uint i = 0u; i < PER_T; i++) {
      const uint d = tid + i * WG;
      if (d < p.D) outv[p.out_off + item * p.D + d] = l > 0.0 ? acc[i] / l : 0.0;
    }
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

// MERGE: called by every split of `item` after its partial is written; the last one
// to get here combines them as attention_merge.comp does (qs holds the result).
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
  float M = NEG_INF;
  for (uint s = 0u; s < SPLITS; s++) M = max(M, part[base + s * stride]);
  for (uint d = tid; d < D; d += WG) {
    float num = 0.0, den = 0.0;
    for (uint s = 0u; s < SPLITS; s++) {
      const float l = part[base + s * stride + 1u];
      if (l <= 0.0) continue;  // a split without keys
      const float w = exp(part[base + s * stride] - M);
      den += w * l;
      num += w * part[base + s * stride + 2u + d];
    }
    const float o = den > 0.0 ? num / den : 0.0;
    outv[p.out_off + item * D + d] = o;
    qs[d] = o;
  }
  if (QUANT == 0) return;
  // Blocks of 32 of the output (D is a multiple of 32, checked on the host).
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

void main() {
  const uint group = flat_group();
  if (group >= p.T * p.H * SPLITS) return;
  const uint item = group / SPLITS, split = group % SPLITS;
  const uint tid = gl_LocalInvocationID.x;
  const uint t = item / p.H, h = item % p.H;
  const uint D = p.D;
  float acc[PER_T];
  for (uint i = 0u; i < PER_T; i++) acc[i] = 0.0;
  const int pos = positions[p.pos_off + t];
  const int s = seq_ids[p.seq_off + t];
  if (s < 0 || uint(s) >= p.n_seqs || pos < 0 || uint(pos) / p.page_size >= p.max_pages) {
    if (tid == 0u) atomicOr(err_bits[0], ERR_SEQ_OR_POS);
    finish(item, split, NEG_INF, 0.0, acc);
    if (SPLITS > 1u && MERGE != 0) merge_if_last(item);
    return;
  }
  const uint kv_row = p.Hkv * D;
  const uint kv_off = (h / (p.H / p.Hkv)) * D;
  const uint n_pages = p.cache_rows / p.page_size;
  for (uint d = tid; d < D; d += WG) qs[d] = qry[p.q_off + item * D + d];
  barrier();

  // This split's keys: [lo, hi] of the token's context lo0..pos cut in SPLITS parts.
  const uint lo0 = p.window > 0u ? uint(max(0, pos - int(p.window) + 1)) : 0u;
  const uint per = (uint(pos) - lo0 + SPLITS) / SPLITS;
  const uint lo = lo0 + split * per;
  const uint hi = min(uint(pos), lo + per - 1u);
  float m = NEG_INF, l = 0.0;
  for (uint base = lo; base <= hi; base += WG) {
    const uint j = base + tid;
    float sc = NEG_INF;
    int slot = -1;
    if (j <= hi) {
      const int page = table[p.table_off + uint(s) * p.max_pages + j / p.page_size];
      if (page < 0 || uint(page) >= n_pages) {
        atomicOr(err_bits[0], ERR_PAGE);
      } else {
        slot = page * int(p.page_size) + int(j % p.page_size);
        const uint kb = uint(slot) * kv_row + kv_off;
        // Independent sums, so several loads of the key row are in flight at once
        // (one sum waits for memory once per element): eight 16-byte loads with vec4
        // rows, four otherwise.
        vec4 qk4 = vec4(0.0);
        if (K_VEC4 != 0) {
          const uint kb4 = (p.k_off + kb) / 4u, n4 = D / 4u;
          uint d4 = 0u;
          vec4 qk8 = vec4(0.0);
          for (; d4 + 8u <= n4; d4 += 8u) {
            vec4 kv[8];
            for (uint u = 0u; u < 8u; u++) kv[u] = kc4[kb4 + d4 + u];
            for (uint u = 0u; u < 8u; u++) {
              const uint e = 4u * (d4 + u);
              const float t = dot(vec4(qs[e], qs[e + 1u], qs[e + 2u], qs[e + 3u]), kv[u]);
              if (u < 4u)
                qk4[u] += t;
              else
                qk8[u - 4u] += t;
            }
          }
          qk4 += qk8;
          for (; d4 + 4u <= n4; d4 += 4u)
            for (uint u = 0u; u < 4u; u++) {
              const uint e = 4u * (d4 + u);
              qk4[u] += dot(vec4(qs[e], qs[e + 1u], qs[e + 2u], qs[e + 3u]), kc4[kb4 + d4 + u]);
            }
          for (; d4 < n4; d4++)
            qk4.x += dot(vec4(qs[4u * d4], qs[4u * d4 + 1u], qs[4u * d4 + 2u], qs[4u * d4 + 3u]),
                         kc4[kb4 + d4]);
        } else {
          uint d = 0u;
          for (; d + 4u <= D; d += 4u)
            for (uint u = 0u; u < 4u; u++)
              qk4[u] += qs[d + u] * LOAD_FLOAT(kc, KDT, p.k_off, kb + d + u);
          for (; d < D; d++) qk4.x += qs[d] * LOAD_FLOAT(kc, KDT, p.k_off, kb + d);
        }
        const float qk = (qk4.x + qk4.y) + (qk4.z + qk4.w);
        sc = qk * p.scale;
        if (p.softcap > 0.0) sc = p.softcap * tanh_accurate(sc / p.softcap);
      }
    }
    const float new_m = max(m, reduce_max(sc));
    const float pr = slot >= 0 ? exp(sc - new_m) : 0.0;
    probs[tid] = pr;
    slot_of[tid] = slot;
    const float csum = reduce_sum(pr);  // its barriers also publish probs and slot_of
    if (new_m == NEG_INF) continue;  // every key of the chunk was skipped
    const float alpha = exp(m - new_m);
    l = l * alpha + csum;
    m = new_m;
    const uint n_keys = min(uint(WG), hi - base + 1u);
    for (uint i = 0u; i < PER_T; i++) {
      const uint d = tid + i * WG;
      if (d >= D) break;
      // Independent sums over the chunk's keys, as for q·k: eight V loads at once.
      vec4 a4 = vec4(acc[i] * alpha, 0.0, 0.0, 0.0);
      uint jj = 0u;
      for (; jj + 8u <= n_keys; jj += 8u) {
        float vv[8];
        for (uint u = 0u; u < 8u; u++) {
          const int sl = slot_of[jj + u];
          vv[u] = sl >= 0 ? probs[jj + u] *
                                LOAD_FLOAT(vc, VDT, p.v_off, uint(max(sl, 0)) * kv_row + kv_off + d)
                          : 0.0;
        }
        for (uint u = 0u; u < 8u; u++) a4[u % 4u] += vv[u];
      }
      for (; jj + 4u <= n_keys; jj += 4u)
        for (uint u = 0u; u < 4u; u++) {
          const int sl = slot_of[jj + u];
          if (sl >= 0)
            a4[u] += probs[jj + u] * LOAD_FLOAT(vc, VDT, p.v_off, uint(sl) * kv_row + kv_off + d);
        }
      for (; jj < n_keys; jj++) {
        const int sl = slot_of[jj];
        if (sl >= 0) a4.x += probs[jj] * LOAD_FLOAT(vc, VDT, p.v_off, uint(sl) * kv_row + kv_off + d);
      }
      acc[i] = (a4.x + a4.y) + (a4.z + a4.w);
    }
    barrier();  // probs and slot_of are rewritten by the next chunk
  }
  finish(item, split, m, l, acc);
  if (SPLITS > 1u && MERGE != 0) merge_if_last(item);
}
