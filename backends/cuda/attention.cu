// Causal attention over the paged KV cache (semantics in core/graph.h).
//
// One block of 128 threads per (token, query head, split of the context). Keys are
// taken in tiles of 128, one key per thread: each thread computes its key's score
// against q (kept in shared memory), the block updates an online softmax (running
// max and sum), then each thread accumulates its output dims over the tile's V rows,
// which are read coalesced across the threads. Prefill gets one block per
// (token, head); decode, with few tokens, splits the context over blocks (split-K)
// and a second kernel merges their partial softmaxes. The split count is fixed when
// the program is compiled; each block finds its range of keys from the positions at
// run time, so a replayed graph stays valid as the context grows.
#include <algorithm>

#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kTile = kThreads;  // keys per tile: one per thread
constexpr int kDimsPerThread = kAttentionMaxHeadDim / kThreads;

struct Params {
  const float* q;
  const void* k_cache;
  const void* v_cache;
  int64_t n_pages;
  const int32_t* positions;
  const int32_t* seq_ids;
  const int32_t* block_table;
  int64_t n_seqs, max_pages;
  float* out;
  int n_heads, n_kv_heads, head_dim, window, page_size, n_splits;
  float scale, softcap;
  float* partial_acc;  // [T * n_heads * n_splits, head_dim]
  float* partial_ml;   // [T * n_heads * n_splits, 2]: running max, sum
  int* err;
};

template <typename KT, bool kVec>
__global__ void __launch_bounds__(kThreads) attention_kernel(Params a) {
  __shared__ float q_s[kAttentionMaxHeadDim];
  __shared__ float p_s[kTile];
  __shared__ int64_t slot_s[kTile];
  __shared__ float red[32];
  // Groups' partial outputs of the vector path: G * head_dim <= kThreads * E floats.
  __shared__ float vsum_s[kVec ? kThreads * Vec16<KT>::kN : 1];

  const int tid = threadIdx.x;
  const int H = a.n_heads, D = a.head_dim;
  const int64_t t = blockIdx.x / H;
  const int h = blockIdx.x % H;
  const int split = blockIdx.y;
  const int64_t kv_row = static_cast<int64_t>(a.n_kv_heads) * D;
  const int64_t kv_off = static_cast<int64_t>(h / (H / a.n_kv_heads)) * D;
  const KT* k_cache = static_cast<const KT*>(a.k_cache);
  const KT* v_cache = static_cast<const KT*>(a.v_cache);
  const int64_t row = (t * H + h);  // this (token, head)
  const int64_t part = row * a.n_splits + split;

  const int64_t s = a.seq_ids[t], pos = a.positions[t];
  const int64_t ps = a.page_size;
  if (s < 0 || s >= a.n_seqs || pos < 0 || pos / ps >= a.max_pages) {
    // Uniform over the block: no barrier has been reached yet.
    if (tid == 0) report(a.err, kErrSeqOrPos);
    for (int d = tid; d < D; d += kThreads) {
      if (a.n_splits == 1)
        a.out[row * D + d] = 0.f;
      else
        a.partial_acc[part * D + d] = 0.f;
    }
    if (a.n_splits > 1 && tid == 0) {
      a.partial_ml[part * 2] = -INFINITY;
      a.partial_ml[part * 2 + 1] = 0.f;
    }
    return;
  }
  for (int d = tid; d < D; d += kThreads) q_s[d] = a.q[row * D + d];

  const int64_t lo = a.window > 0 && pos - a.window + 1 > 0 ? pos - a.window + 1 : 0;
  const int64_t n = pos - lo + 1;
  // Splits take whole tiles, so a short context leaves the later splits empty.
  int64_t chunk = (n + a.n_splits - 1) / a.n_splits;
  chunk = (chunk + kTile - 1) / kTile * kTile;
  const int64_t begin = lo + split * chunk;
  const int64_t end = pos + 1 < begin + chunk ? pos + 1 : begin + chunk;
  const int32_t* pages = a.block_table + s * a.max_pages;
  __syncthreads();  // q_s

  float m = -INFINITY, l = 0.f;
  float acc[kDimsPerThread];
#pragma unroll
  for (int i = 0; i < kDimsPerThread; i++) acc[i] = 0.f;
  // Vector path: thread = (group g of G, 16-byte slice c of the head).
  constexpr int kE = Vec16<KT>::kN;
  const int tpk = D / kE;
  const int G = kThreads / tpk;
  const int g = tid / tpk, c = tid % tpk;
  float vacc[kE];
#pragma unroll
  for (int e = 0; e < kE; e++) vacc[e] = 0.f;

  for (int64_t tile = begin; tile < end; tile += kTile) {
    // Scores: one key per thread.
    const int64_t j = tile + tid;
    float sc = -INFINITY;
    if (j < end) {
      const int64_t page = pages[j / ps];
      if (page < 0 || page >= a.n_pages) {
        report(a.err, kErrPage);
        slot_s[tid] = -1;
      } else {
        const int64_t slot = page * ps + j % ps;
        slot_s[tid] = slot;
        const KT* kr = k_cache + slot * kv_row + kv_off;
        float dot = 0.f;
        if constexpr (kVec) {
#pragma unroll 4
          for (int d = 0; d < D; d += kE) {
            float kv[kE];
            load16(kr + d, kv);
#pragma unroll
            for (int e = 0; e < kE; e++) dot = fmaf(q_s[d + e], kv[e], dot);
          }
        } else {
          for (int d = 0; d < D; d++) dot = fmaf(q_s[d], to_f32(kr[d]), dot);
        }
        sc = dot * a.scale;
        if (a.softcap > 0.f) sc = a.softcap * tanhf(sc / a.softcap);
      }
    }
    const float m_new = fmaxf(m, block_max(sc, red));
    const float p = sc == -INFINITY ? 0.f : expf(sc - m_new);
    p_s[tid] = p;
    const float tile_sum = block_sum(p, red);  // its barriers publish p_s and slot_s
    const float corr = m == -INFINITY ? 0.f : expf(m - m_new);
    l = l * corr + tile_sum;
    m = m_new;

    const int n_keys = end - tile < kTile ? static_cast<int>(end - tile) : kTile;
    if constexpr (kVec) {
      // Values: groups of head_dim / E threads take a key each, a 16-byte slice of its
      // V row per thread, so G keys are in flight per step rather than one.
#pragma unroll
      for (int e = 0; e < kE; e++) vacc[e] *= corr;
      if (g < G) {
#pragma unroll 4
        for (int jj = g; jj < n_keys; jj += G) {
          const float pj = p_s[jj];
          const int64_t slot = slot_s[jj];
          if (slot < 0) continue;
          float vv[kE];
          load16(v_cache + slot * kv_row + kv_off + c * kE, vv);
#pragma unroll
          for (int e = 0; e < kE; e++) vacc[e] = fmaf(pj, vv[e], vacc[e]);
        }
      }
    } else {
      // Values, any head_dim: each thread owns dims tid, tid + 128, ...
#pragma unroll
      for (int i = 0; i < kDimsPerThread; i++) acc[i] *= corr;
#pragma unroll 4
      for (int jj = 0; jj < n_keys; jj++) {
        const float pj = p_s[jj];
        const int64_t slot = slot_s[jj];
        if (slot < 0) continue;
        const KT* vr = v_cache + slot * kv_row + kv_off;
#pragma unroll
        for (int i = 0; i < kDimsPerThread; i++) {
          const int d = tid + i * kThreads;
          if (d < D) acc[i] = fmaf(pj, to_f32(vr[d]), acc[i]);
        }
      }
    }
    __syncthreads();  // p_s and slot_s are rewritten by the next tile
  }

  if constexpr (kVec) {
    // Sum the groups' partial outputs; thread d then owns dims tid, tid + 128, ...
    if (g < G) {
#pragma unroll
      for (int e = 0; e < kE; e++) vsum_s[g * D + c * kE + e] = vacc[e];
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kDimsPerThread; i++) {
      const int d = tid + i * kThreads;
      if (d < D) {
        float v = 0.f;
        for (int gg = 0; gg < G; gg++) v += vsum_s[gg * D + d];
        acc[i] = v;
      }
    }
  }

  if (a.n_splits == 1) {
    const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
    for (int i = 0; i < kDimsPerThread; i++) {
      const int d = tid + i * kThreads;
      if (d < D) a.out[row * D + d] = acc[i] * inv;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kDimsPerThread; i++) {
      const int d = tid + i * kThreads;
      if (d < D) a.partial_acc[part * D + d] = acc[i];
    }
    if (tid == 0) {
      a.partial_ml[part * 2] = m;
      a.partial_ml[part * 2 + 1] = l;
    }
  }
}

// Merges the splits of one (token, head): rescales each to the common max.
__global__ void __launch_bounds__(kThreads) attention_combine_kernel(Params a) {
  const int64_t row = blockIdx.x;
  const int D = a.head_dim, S = a.n_splits;
  const float* ml = a.partial_ml + row * S * 2;
  float M = -INFINITY;
  for (int s = 0; s < S; s++)
    if (ml[2 * s + 1] > 0.f) M = fmaxf(M, ml[2 * s]);
  float L = 0.f;
  for (int s = 0; s < S; s++)
    if (ml[2 * s + 1] > 0.f) L += ml[2 * s + 1] * expf(ml[2 * s] - M);
  const float inv = L > 0.f ? 1.f / L : 0.f;
  for (int d = threadIdx.x; d < D; d += kThreads) {
    float v = 0.f;
    for (int s = 0; s < S; s++)
      if (ml[2 * s + 1] > 0.f) v += a.partial_acc[(row * S + s) * D + d] * expf(ml[2 * s] - M);
    a.out[row * D + d] = v * inv;
  }
}

}  // namespace

int attention_splits(int64_t T, int n_heads, int64_t max_context, int n_sms) {
  const int64_t blocks = T * n_heads;
  if (blocks >= n_sms || max_context <= 2 * kTile) return 1;
  const int64_t want = (2 * static_cast<int64_t>(n_sms) + blocks - 1) / blocks;
  const int64_t useful = (max_context + kTile - 1) / kTile;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({want, useful, 32})));
}

size_t attention_partials_floats(int64_t T, int n_heads, int head_dim, int n_splits) {
  if (n_splits <= 1) return 0;
  return static_cast<size_t>(T) * n_heads * n_splits * (head_dim + 2);
}

void attention(cudaStream_t stream, const AttentionArgs& a) {
  if (a.T <= 0) return;
  if (a.head_dim > kAttentionMaxHeadDim)
    fail("cuda attention: head_dim %d > %d", a.head_dim, kAttentionMaxHeadDim);
  Params p;
  p.q = a.q;
  p.k_cache = a.k_cache;
  p.v_cache = a.v_cache;
  p.n_pages = a.cache_rows / a.page_size;
  p.positions = a.positions;
  p.seq_ids = a.seq_ids;
  p.block_table = a.block_table;
  p.n_seqs = a.n_seqs;
  p.max_pages = a.max_pages;
  p.out = a.out;
  p.n_heads = a.n_heads;
  p.n_kv_heads = a.n_kv_heads;
  p.head_dim = a.head_dim;
  p.window = a.window;
  p.page_size = a.page_size;
  p.n_splits = std::max(1, a.n_splits);
  p.scale = a.scale;
  p.softcap = a.softcap;
  p.err = a.err;
  p.partial_acc = a.partials;
  p.partial_ml = a.partials
                     ? a.partials + static_cast<size_t>(a.T) * a.n_heads * p.n_splits * a.head_dim
                     : nullptr;
  if (p.n_splits > 1 && !a.partials) fail("cuda attention: %d splits without partials", p.n_splits);

  const dim3 grid(static_cast<unsigned>(a.T * a.n_heads), static_cast<unsigned>(p.n_splits));
  dispatch_float(a.cache_type, "attention caches", [&](auto tag) {
    using KT = decltype(tag);
    const bool vec =
        a.head_dim % Vec16<KT>::kN == 0 && aligned16(a.k_cache) && aligned16(a.v_cache);
    if (vec)
      attention_kernel<KT, true><<<grid, kThreads, 0, stream>>>(p);
    else
      attention_kernel<KT, false><<<grid, kThreads, 0, stream>>>(p);
  });
  LLM_CUDA_CHECK_LAUNCH("attention_kernel");
  if (p.n_splits > 1) {
    attention_combine_kernel<<<static_cast<unsigned>(a.T * a.n_heads), kThreads, 0, stream>>>(p);
    LLM_CUDA_CHECK_LAUNCH("attention_combine_kernel");
  }
}

}  // namespace cuda
}  // namespace llm
