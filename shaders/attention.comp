// Causal attention over the paged KV cache (core/graph.h): a workgroup per (token,
// query head). Keys go in chunks of WG, a thread per key for the score q·k (scaled,
// soft-capped); an online softmax (running max and sum, exact rescaling) folds each
// chunk into the output, whose dims are spread over the threads (up to 8 each). Dot
// products and weighted sums issue up to eight loads before adding them, so they overlap.
// Heads of up to 128 dims take attention_decode.comp instead (without tiles).
// With SPLITS > 1 (few tokens and heads: decode) the keys of each (token, head) are
// split over SPLITS workgroups, each writing its running max, sum and unnormalised
// output to `part`; the last of them to finish combines them (a counter per (token,
// head), which it resets for the next run), and with QUANT also rounds the output for
// the integer-dot GEMV that reads it (quantize_x.comp's layout).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#define WG 128
#define MAX_D 1024
#define PER_T (MAX_D / WG)
layout(local_size_x = WG) in;
#include "attention_common.glsl"

shared float probs[WG];
shared int slot_of[WG];

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
    if (SPLITS > 1u) merge_if_last(item);
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
    const float new_m = max(m, tree_max(sc, WG));
    const float pr = slot >= 0 ? exp(sc - new_m) : 0.0;
    probs[tid] = pr;
    slot_of[tid] = slot;
    const float csum = tree_sum(pr, WG);  // its barriers also publish probs and slot_of
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
  if (SPLITS > 1u) merge_if_last(item);
}
