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
#include <cstdlib>

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
  int min_chunk;  // decode: fewest keys per split
  float scale, softcap;
  float* partial_acc;  // [T * n_heads * n_splits, head_dim]
  float* partial_ml;   // [T * n_heads * n_splits, 2]: running max, sum
  int* err;
  int64_t T_total;
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

// ---- Decode: few tokens, GQA groups per block, split-K merged by the last split.

constexpr int kDecWarps = 4;
constexpr int kDecMinChunk = 32;  // fewest keys per split
constexpr int kDecMaxSplits = 64;
constexpr int kMergeLoads = 64;  // partial sums a thread of the merge loads at once

// Fewest keys per decode split (LLM_CUDA_ATTN_MIN_CHUNK overrides, for tuning).
int dec_min_chunk() {
  static const int v = [] {
    const char* e = std::getenv("LLM_CUDA_ATTN_MIN_CHUNK");
    return e ? std::max(1, std::atoi(e)) : kDecMinChunk;
  }();
  return v;
}

// Blocks per multiprocessor the decode splits aim at: a block reads its keys once
// for G query heads, so with more heads per KV head fewer, longer blocks do better
// (H200 at a 512-640-token context: 3 for 7b, G = 1; 1 for 1b, G = 4, 1,679 against
// 1,588 tok/s). LLM_CUDA_ATTN_BLOCKS_PER_SM overrides, for tuning.
int dec_blocks_per_sm(int G) {
  static const int v = [] {
    const char* e = std::getenv("LLM_CUDA_ATTN_BLOCKS_PER_SM");
    return e ? std::max(1, std::atoi(e)) : 0;
  }();
  return v ? v : std::max(1, 3 / std::max(1, G));
}

// E elements of a K/V row at p (aligned to E elements) as floats.
template <typename KT, int E>
__device__ __forceinline__ void load_row(const KT* p, float* out) {
  constexpr int kBytes = E * static_cast<int>(sizeof(KT));
  if constexpr (kBytes >= 16) {
    constexpr int kPer = 16 / sizeof(KT);
#pragma unroll
    for (int i = 0; i < kBytes / 16; i++) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p) + i);
      const KT* e = reinterpret_cast<const KT*>(&raw);
#pragma unroll
      for (int k = 0; k < kPer; k++) out[i * kPer + k] = to_f32(e[k]);
    }
  } else if constexpr (kBytes == 8) {
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
    const KT* e = reinterpret_cast<const KT*>(&raw);
#pragma unroll
    for (int k = 0; k < E; k++) out[k] = to_f32(e[k]);
  } else {
    static_assert(kBytes == 4, "row slices of 4, 8 or 16n bytes");
    const unsigned raw = __ldg(reinterpret_cast<const unsigned*>(p));
    const KT* e = reinterpret_cast<const KT*>(&raw);
#pragma unroll
    for (int k = 0; k < E; k++) out[k] = to_f32(e[k]);
  }
}

// How the decode kernel lays a key over a warp: a group of LPK lanes holds one key's
// K and V rows, DL dimensions per lane, so q.k costs log2(LPK) shuffles and p.V none;
// the NG = 32 / LPK groups of a warp take NG keys at once, KS times per step (loads
// in flight). DL keeps q and the accumulator at G * DL <= 64 floats per lane.
template <int D, int G>
struct DecodeLayout {
  static constexpr int DL = G <= 2 ? 16 : 8;
  static constexpr int LPK = D / DL;
  static constexpr int NG = 32 / LPK;
  static constexpr int KS = 32 / DL;
  static constexpr int KPW = NG * KS;        // keys per warp step
  static constexpr int NP = kDecWarps * NG;  // partial softmax states per block
  static_assert(LPK >= 1 && LPK <= 32 && 32 % LPK == 0, "head_dim 64, 128 or 256");
};

constexpr float kLog2e = 1.4426950408889634f;

// One block per (token, kv head, split): its G query heads share each K/V row read.
// Scores are kept in log2 units (q is pre-scaled by scale * log2 e) for exp2f.
template <typename KT, int D, int G>
__global__ void __launch_bounds__(kDecWarps * 32)
    attention_decode_kernel(Params a, int* __restrict__ counters) {
  using L = DecodeLayout<D, G>;
  constexpr int DL = L::DL, LPK = L::LPK, NG = L::NG, KS = L::KS, KPW = L::KPW, NP = L::NP;
  __shared__ float sm_m[NP][G], sm_l[NP][G];
  __shared__ __align__(16) float sm_acc[NP][G][D];
  __shared__ float sm_w[kDecMaxSplits > NP ? kDecMaxSplits : NP][G];
  __shared__ float sm_ml[kDecMaxSplits][G][2];
  __shared__ float sm_L[G];
  __shared__ int sm_last;
  pdl_trigger();  // the o projection after this may start streaming its weights
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int grp = lane / LPK, li = lane % LPK;
  const int H = a.n_heads, Hkv = a.n_kv_heads, S = a.n_splits;
  const int64_t t = blockIdx.x / Hkv;
  const int kh = blockIdx.x % Hkv;
  const int split = blockIdx.y;
  const int64_t kv_row = static_cast<int64_t>(Hkv) * D;
  const int64_t kv_off = static_cast<int64_t>(kh) * D + li * DL;
  const KT* k_cache = static_cast<const KT*>(a.k_cache);
  const KT* v_cache = static_cast<const KT*>(a.v_cache);
  const int64_t s = a.seq_ids[t], pos64 = a.positions[t];
  const int ps = a.page_size;
  const bool ok = s >= 0 && s < a.n_seqs && pos64 >= 0 && pos64 / ps < a.max_pages;
  if (!ok && tid == 0 && split == 0) report(a.err, kErrSeqOrPos);

  float m[G], l[G], acc[G][DL];
#pragma unroll
  for (int g = 0; g < G; g++) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int e = 0; e < DL; e++) acc[g][e] = 0.f;
  }
  if (ok) {
    // Positions fit 32 bits here (pos / page_size indexes the block table).
    const int pos = static_cast<int>(pos64);
    const int lo = a.window > 0 && pos - a.window + 1 > 0 ? pos - a.window + 1 : 0;
    const int n = pos - lo + 1;
    int chunk = (n + S - 1) / S;
    if (chunk < a.min_chunk) chunk = a.min_chunk;
    const int begin = lo + split * chunk;
    const int end = pos + 1 < begin + chunk ? pos + 1 : begin + chunk;
    const int32_t* pages = a.block_table + s * a.max_pages;
    const int ps_shift = (ps & (ps - 1)) == 0 ? __ffs(ps) - 1 : -1;
    float kk[KS][DL], vv[KS][DL];
    bool valid[KS];
    auto load_keys = [&](int j0) {
#pragma unroll
      for (int u = 0; u < KS; u++) {
        const int j = j0 + u * NG + grp;
        valid[u] = j < end;
        int64_t slot = 0;
        if (valid[u]) {
          const int pi = ps_shift >= 0 ? j >> ps_shift : j / ps;
          const int page = __ldg(pages + pi);
          if (page < 0 || page >= a.n_pages) {
            report(a.err, kErrPage);
            valid[u] = false;
          }
          slot = static_cast<int64_t>(page) * ps + (j - pi * ps);
        }
        if (valid[u]) {
          load_row<KT, DL>(k_cache + slot * kv_row + kv_off, kk[u]);
          load_row<KT, DL>(v_cache + slot * kv_row + kv_off, vv[u]);
        } else {
#pragma unroll
          for (int e = 0; e < DL; e++) kk[u][e] = vv[u][e] = 0.f;
        }
      }
    };
    // Keys at positions <= pos - T were written by earlier steps (this step's tokens of
    // a sequence sit at its last <= T positions), so the first batch of those is read
    // before waiting on the kernel that appends this step's keys and rotates q. The
    // indices come from step inputs, complete before that kernel started.
    int j0 = begin + warp * KPW;
    bool loaded = j0 < end && j0 + KPW <= pos - a.T_total + 1;
    if (loaded) load_keys(j0);
    pdl_wait();
    const float q_scale = a.scale * kLog2e;
    const float cap = a.softcap * kLog2e;  // softcap in log2 units
    float q[G][DL];
#pragma unroll
    for (int g = 0; g < G; g++) {
      load_row<float, DL>(a.q + (t * H + static_cast<int64_t>(kh) * G + g) * D + li * DL, q[g]);
#pragma unroll
      for (int e = 0; e < DL; e++) q[g][e] *= q_scale;
    }
    for (; j0 < end; j0 += kDecWarps * KPW) {
      if (!loaded) load_keys(j0);
      loaded = false;
#pragma unroll
      for (int g = 0; g < G; g++) {
        float sc[KS];
        float mx = -INFINITY;
#pragma unroll
        for (int u = 0; u < KS; u++) {
          float d = 0.f;
#pragma unroll
          for (int e = 0; e < DL; e++) d = fmaf(q[g][e], kk[u][e], d);
#pragma unroll
          for (int o = LPK / 2; o > 0; o >>= 1) d += __shfl_xor_sync(kFullMask, d, o);
          if (cap > 0.f) d = cap * tanhf(d / cap);
          sc[u] = valid[u] ? d : -INFINITY;
          mx = fmaxf(mx, sc[u]);
        }
        if (mx > -INFINITY) {
          const float m_new = fmaxf(m[g], mx);
          const float corr = exp2f(m[g] - m_new);  // 0 while m[g] is -inf
          l[g] *= corr;
#pragma unroll
          for (int e = 0; e < DL; e++) acc[g][e] *= corr;
#pragma unroll
          for (int u = 0; u < KS; u++) {
            const float pr = exp2f(sc[u] - m_new);  // 0 for invalid keys
            l[g] += pr;
#pragma unroll
            for (int e = 0; e < DL; e++) acc[g][e] = fmaf(pr, vv[u][e], acc[g][e]);
          }
          m[g] = m_new;
        }
      }
    }
  } else {
    pdl_wait();
  }

  // Merge the block's NP partial states (one per lane group): weights per state and
  // head first, then each output dimension.
  const int me = warp * NG + grp;
#pragma unroll
  for (int g = 0; g < G; g++) {
    if (li == 0) {
      sm_m[me][g] = m[g];
      sm_l[me][g] = l[g];
    }
#pragma unroll
    for (int e = 0; e < DL; e += 4)
      *reinterpret_cast<float4*>(&sm_acc[me][g][li * DL + e]) =
          make_float4(acc[g][e], acc[g][e + 1], acc[g][e + 2], acc[g][e + 3]);
  }
  __syncthreads();
  // A warp per head: lanes over the states (NP <= 32), shuffles for max and sum.
  static_assert(NP <= 32, "one state per lane");
  for (int g = warp; g < G; g += kDecWarps) {
    const bool has = lane < NP && sm_l[lane < NP ? lane : 0][g] > 0.f;
    const float mp = has ? sm_m[lane][g] : -INFINITY;
    const float M_g = warp_max(mp);
    const float w = has ? exp2f(mp - M_g) : 0.f;
    const float Lsum = warp_sum(has ? sm_l[lane][g] * w : 0.f);
    if (lane < NP) sm_w[lane][g] = w;
    if (lane == 0) {
      sm_L[g] = Lsum;
      if (S > 1) {
        const int64_t part = (t * H + static_cast<int64_t>(kh) * G + g) * S + split;
        a.partial_ml[part * 2] = M_g;
        a.partial_ml[part * 2 + 1] = Lsum;
      }
    }
  }
  __syncthreads();
  for (int i = tid; i < G * D; i += kDecWarps * 32) {
    const int g = i / D, d = i % D;
    float A = 0.f;
#pragma unroll 8
    for (int p = 0; p < NP; p++) A = fmaf(sm_acc[p][g][d], sm_w[p][g], A);
    const int64_t row = t * H + static_cast<int64_t>(kh) * G + g;
    if (S == 1)
      a.out[row * D + d] = sm_L[g] > 0.f ? A / sm_L[g] : 0.f;
    else
      a.partial_acc[(row * S + split) * D + d] = A;
  }
  if (S == 1) return;

  // The last split of this (token, kv head) to finish merges them all (count_acq_rel:
  // the partials written before the barrier are visible to the last split).
  __syncthreads();
  if (tid == 0)
    sm_last = count_acq_rel(reinterpret_cast<unsigned*>(&counters[blockIdx.x])) ==
              static_cast<unsigned>(S - 1);
  __syncthreads();
  if (!sm_last) return;
  // The merge is a chain of L2 round trips (other blocks wrote the partials), so its
  // loads go out together: each thread's partial sums (kOuts outputs x up to kPerOut
  // splits, kMergeLoads values) are loaded here, before the statistics, and stay in
  // flight across the barriers. More splits or outputs than that: read per output
  // below, 8 splits at a time.
  constexpr int kOuts = (G * D + kDecWarps * 32 - 1) / (kDecWarps * 32);
  constexpr int kHeld = kOuts <= 4 ? kOuts : 1;  // outputs whose partials are held
  constexpr int kPerOut = kOuts <= 4 ? kMergeLoads / kOuts : 1;
  const bool in_flight = kOuts <= 4 && S <= kPerOut;
  float pv[kHeld][kPerOut];
  if (in_flight) {
#pragma unroll
    for (int k = 0; k < kHeld; k++) {
      const int i = tid + k * kDecWarps * 32;
      const int g = i < G * D ? i / D : 0, d = i % D;
      const float* pa = a.partial_acc + (t * H + static_cast<int64_t>(kh) * G + g) * S * D + d;
#pragma unroll
      for (int sp = 0; sp < kPerOut; sp++)
        pv[k][sp] = i < G * D && sp < S ? __ldcg(pa + sp * D) : 0.f;
    }
  }
  // Every (split, head) statistic in one parallel round of loads, then the weights
  // per head.
  for (int i = tid; i < S * G; i += kDecWarps * 32) {
    const int sp = i / G, g = i % G;
    const float* ml = a.partial_ml + ((t * H + static_cast<int64_t>(kh) * G + g) * S + sp) * 2;
    sm_ml[sp][g][0] = __ldcg(ml);
    sm_ml[sp][g][1] = __ldcg(ml + 1);
  }
  __syncthreads();
  // A warp per head: lanes over the splits (two each at most).
  static_assert(kDecMaxSplits <= 64, "two splits per lane");
  for (int g = warp; g < G; g += kDecWarps) {
    float mv[2], lv[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int sp = lane + 32 * h;
      const bool has = sp < S && sm_ml[sp < S ? sp : 0][g][1] > 0.f;
      mv[h] = has ? sm_ml[sp][g][0] : -INFINITY;
      lv[h] = has ? sm_ml[sp][g][1] : 0.f;
    }
    const float M = warp_max(fmaxf(mv[0], mv[1]));
    float w[2];
#pragma unroll
    for (int h = 0; h < 2; h++) w[h] = lv[h] > 0.f ? exp2f(mv[h] - M) : 0.f;
    const float Lsum = warp_sum(fmaf(lv[0], w[0], lv[1] * w[1]));
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int sp = lane + 32 * h;
      if (sp < S) sm_w[sp][g] = Lsum > 0.f ? w[h] / Lsum : 0.f;
    }
  }
  __syncthreads();
  if (in_flight) {
#pragma unroll
    for (int k = 0; k < kHeld; k++) {
      const int i = tid + k * kDecWarps * 32;
      if (i >= G * D) break;
      const int g = i / D, d = i % D;
      float v = 0.f;
#pragma unroll
      for (int sp = 0; sp < kPerOut; sp++) v = fmaf(pv[k][sp], sp < S ? sm_w[sp][g] : 0.f, v);
      a.out[(t * H + static_cast<int64_t>(kh) * G + g) * D + d] = v;
    }
  } else {
    for (int i = tid; i < G * D; i += kDecWarps * 32) {
      const int g = i / D, d = i % D;
      const int64_t row = t * H + static_cast<int64_t>(kh) * G + g;
      const float* pa = a.partial_acc + row * S * D + d;
      float v = 0.f;
#pragma unroll 8
      for (int sp = 0; sp < S; sp++)
        v = fmaf(__ldcg(pa + static_cast<int64_t>(sp) * D), sm_w[sp][g], v);
      a.out[row * D + d] = v;
    }
  }
  if (tid == 0) counters[blockIdx.x] = 0;
}

// ---- Prefill: tiles of 16 query rows x 128 keys.

constexpr int kPreRows = 16;
constexpr int kPreKeys = kThreads;  // one key per thread in the score phase

template <typename KT, int D>
__global__ void __launch_bounds__(kThreads) attention_prefill_kernel(Params a, int GQ) {
  constexpr int R = kPreRows;
  constexpr int RPT = R * D / kThreads;  // rows per thread in the P·V phase
  static_assert(RPT % 4 == 0, "P·V reads probabilities 4 rows at a time");
  __shared__ __align__(16) float q_s[R][D];
  __shared__ __align__(16) float p_s[kPreKeys][R];
  __shared__ int64_t slot_s[kPreKeys];
  __shared__ float m_s[R], l_s[R], mnew_s[R], corr_s[R];
  __shared__ float red_s[kThreads / 32][R];
  __shared__ int64_t seq_s[R], pos_s[R], lo_s[R];
  __shared__ int ok_s[R], active_s[R];
  __shared__ int64_t pass_seq_s, klo_s, khi_s;
  __shared__ int done_s[R];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int H = a.n_heads, Hkv = a.n_kv_heads, G = H / Hkv, D_ = D;
  const int TQ = R / GQ;  // tokens per tile
  const int groups = G / GQ;
  const int kh = blockIdx.y / groups, hg = blockIdx.y % groups;
  const int64_t tok0 = static_cast<int64_t>(blockIdx.x) * TQ;
  const int64_t kv_row = static_cast<int64_t>(Hkv) * D, kv_off = static_cast<int64_t>(kh) * D;
  const KT* k_cache = static_cast<const KT*>(a.k_cache);
  const KT* v_cache = static_cast<const KT*>(a.v_cache);
  const int64_t T = a.T_total;
  auto row_tok = [&](int r) { return tok0 + r / GQ; };
  auto row_head = [&](int r) { return kh * G + hg * GQ + r % GQ; };

  for (int i = tid; i < R * D; i += kThreads) {
    const int r = i / D, d = i % D;
    const int64_t tk = row_tok(r);
    q_s[r][d] = tk < T ? a.q[(tk * H + row_head(r)) * D_ + d] : 0.f;
  }
  if (tid < R) {
    const int r = tid;
    const int64_t tk = row_tok(r);
    int ok = 0;
    if (tk < T) {
      const int64_t sq = a.seq_ids[tk], pos = a.positions[tk];
      ok = sq >= 0 && sq < a.n_seqs && pos >= 0 && pos / a.page_size < a.max_pages;
      if (!ok && row_head(r) % G == 0) report(a.err, kErrSeqOrPos);
      seq_s[r] = sq;
      pos_s[r] = pos;
      lo_s[r] = a.window > 0 && pos - a.window + 1 > 0 ? pos - a.window + 1 : 0;
    }
    ok_s[r] = ok;
    done_s[r] = !ok;
    m_s[r] = -INFINITY;
    l_s[r] = 0.f;
  }
  const int dcol = tid % D, rg = tid / D;  // P·V: column and row group of this thread
  float acc[RPT];
#pragma unroll
  for (int i = 0; i < RPT; i++) acc[i] = 0.f;
  const int64_t ps = a.page_size;

  // One pass per sequence among the rows (one pass in a single-sequence prefill).
  while (true) {
    __syncthreads();
    if (tid == 0) {
      int64_t sq = -1, klo = INT64_MAX, khi = -1;
      for (int r = 0; r < R; r++) {
        if (done_s[r]) continue;
        if (sq < 0) sq = seq_s[r];
        if (seq_s[r] != sq) continue;
        done_s[r] = 1;
        klo = lo_s[r] < klo ? lo_s[r] : klo;
        khi = pos_s[r] > khi ? pos_s[r] : khi;
      }
      pass_seq_s = sq;
      klo_s = klo;
      khi_s = khi;
    }
    __syncthreads();
    const int64_t sq = pass_seq_s;
    if (sq < 0) break;
    if (tid < R) active_s[tid] = ok_s[tid] && seq_s[tid] == sq;
    const int64_t klo = klo_s, khi = khi_s;
    const int32_t* pages = a.block_table + sq * a.max_pages;
    __syncthreads();

    for (int64_t j0 = klo; j0 <= khi; j0 += kPreKeys) {
      // Scores: one key per thread against the 16 rows.
      const int64_t j = j0 + tid;
      int64_t slot = -1;
      if (j <= khi) {
        const int64_t page = pages[j / ps];
        if (page < 0 || page >= a.n_pages)
          report(a.err, kErrPage);
        else
          slot = page * ps + j % ps;
      }
      float sc[R];
#pragma unroll
      for (int r = 0; r < R; r++) sc[r] = 0.f;
      if (slot >= 0) {
        const KT* kr = k_cache + slot * kv_row + kv_off;
#pragma unroll 4
        for (int d = 0; d < D; d += 4) {
          float kv[4];
          load_row<KT, 4>(kr + d, kv);
#pragma unroll
          for (int r = 0; r < R; r++) {
            const float4 qv = *reinterpret_cast<const float4*>(&q_s[r][d]);
            sc[r] = fmaf(qv.x, kv[0], sc[r]);
            sc[r] = fmaf(qv.y, kv[1], sc[r]);
            sc[r] = fmaf(qv.z, kv[2], sc[r]);
            sc[r] = fmaf(qv.w, kv[3], sc[r]);
          }
        }
      }
      slot_s[tid] = slot;
#pragma unroll
      for (int r = 0; r < R; r++) {
        float v = sc[r] * a.scale;
        if (a.softcap > 0.f) v = a.softcap * tanhf(v / a.softcap);
        const bool live = slot >= 0 && active_s[r] && j >= lo_s[r] && j <= pos_s[r];
        sc[r] = live ? v : -INFINITY;
        const float mx = warp_max(sc[r]);
        if (lane == 0) red_s[warp][r] = mx;
      }
      __syncthreads();
      if (tid < R) {
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < kThreads / 32; w++) mx = fmaxf(mx, red_s[w][tid]);
        const float m_new = fmaxf(m_s[tid], mx);
        mnew_s[tid] = m_new;
        corr_s[tid] =
            m_s[tid] == -INFINITY ? (m_new == -INFINITY ? 1.f : 0.f) : expf(m_s[tid] - m_new);
      }
      __syncthreads();
#pragma unroll
      for (int r = 0; r < R; r++) {
        const float pr = sc[r] == -INFINITY ? 0.f : expf(sc[r] - mnew_s[r]);
        p_s[tid][r] = pr;
        const float sum = warp_sum(pr);
        if (lane == 0) red_s[warp][r] = sum;
      }
      __syncthreads();
      if (tid < R) {
        float sum = 0.f;
#pragma unroll
        for (int w = 0; w < kThreads / 32; w++) sum += red_s[w][tid];
        l_s[tid] = l_s[tid] * corr_s[tid] + sum;
        m_s[tid] = mnew_s[tid];
      }
      // Values: this thread's column for its RPT rows.
#pragma unroll
      for (int i = 0; i < RPT; i++) acc[i] *= corr_s[rg * RPT + i];
      const int n_keys = khi - j0 + 1 < kPreKeys ? static_cast<int>(khi - j0 + 1) : kPreKeys;
#pragma unroll 4
      for (int kk = 0; kk < n_keys; kk++) {
        const int64_t sl = slot_s[kk];
        if (sl < 0) continue;
        const float v = to_f32(v_cache[sl * kv_row + kv_off + dcol]);
#pragma unroll
        for (int i = 0; i < RPT; i += 4) {
          const float4 pr = *reinterpret_cast<const float4*>(&p_s[kk][rg * RPT + i]);
          acc[i] = fmaf(pr.x, v, acc[i]);
          acc[i + 1] = fmaf(pr.y, v, acc[i + 1]);
          acc[i + 2] = fmaf(pr.z, v, acc[i + 2]);
          acc[i + 3] = fmaf(pr.w, v, acc[i + 3]);
        }
      }
      __syncthreads();  // p_s, slot_s and the row state are rewritten by the next tile
    }
  }

#pragma unroll
  for (int i = 0; i < RPT; i++) {
    const int r = rg * RPT + i;
    const int64_t tk = row_tok(r);
    if (tk >= T) continue;
    const float L = l_s[r];
    a.out[(tk * H + row_head(r)) * D_ + dcol] = ok_s[r] && L > 0.f ? acc[i] / L : 0.f;
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

namespace {

Params make_params(const AttentionArgs& a) {
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
  p.min_chunk = dec_min_chunk();
  p.scale = a.scale;
  p.softcap = a.softcap;
  p.err = a.err;
  p.T_total = a.T;
  p.partial_acc = a.partials;
  p.partial_ml = a.partials
                     ? a.partials + static_cast<size_t>(a.T) * a.n_heads * p.n_splits * a.head_dim
                     : nullptr;
  return p;
}

int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }

template <typename KT, int D, int G>
void launch_decode_g(cudaStream_t stream, const Params& p, dim3 grid, int* counters, bool pdl) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(kDecWarps * 32);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  LLM_CUDA_CHECK(cudaLaunchKernelEx(&cfg, attention_decode_kernel<KT, D, G>, p, counters));
}

template <typename KT, int D>
void launch_decode(cudaStream_t stream, const Params& p, int G, dim3 grid, int* counters,
                   bool pdl) {
  switch (G) {
    case 1:
      return launch_decode_g<KT, D, 1>(stream, p, grid, counters, pdl);
    case 2:
      return launch_decode_g<KT, D, 2>(stream, p, grid, counters, pdl);
    case 4:
      return launch_decode_g<KT, D, 4>(stream, p, grid, counters, pdl);
    default:
      return launch_decode_g<KT, D, 8>(stream, p, grid, counters, pdl);
  }
}

}  // namespace

bool attention_decode_ok(const AttentionArgs& a) {
  const int G = a.n_kv_heads > 0 ? a.n_heads / a.n_kv_heads : 0;
  return (a.head_dim == 64 || a.head_dim == 128 || a.head_dim == 256) &&
         (G == 1 || G == 2 || G == 4 || G == 8) && aligned16(a.q) && aligned16(a.k_cache) &&
         aligned16(a.v_cache) && a.n_splits <= kDecMaxSplits;
}

int attention_decode_splits(int64_t T, int n_kv_heads, int G, int64_t max_context, int n_sms) {
  static const int forced = [] {  // LLM_CUDA_ATTN_SPLITS: a fixed count, for tuning
    const char* e = std::getenv("LLM_CUDA_ATTN_SPLITS");
    return e ? std::clamp(std::atoi(e), 1, kDecMaxSplits) : 0;
  }();
  if (forced) return forced;
  const int64_t blocks = std::max<int64_t>(1, T * n_kv_heads);
  const int64_t by_ctx = (max_context + dec_min_chunk() - 1) / dec_min_chunk();
  const int64_t by_fill =
      (dec_blocks_per_sm(G) * static_cast<int64_t>(n_sms) + blocks - 1) / blocks;
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>({by_ctx, by_fill, kDecMaxSplits})));
}

void attention_decode(cudaStream_t stream, const AttentionArgs& a, int* counters) {
  if (a.T <= 0) return;
  if (!attention_decode_ok(a)) fail("cuda attention: the decode kernel does not take this shape");
  const Params p = make_params(a);
  if (p.n_splits > 1 && (!a.partials || !counters))
    fail("cuda attention: %d splits without partials", p.n_splits);
  const dim3 grid(static_cast<unsigned>(a.T * a.n_kv_heads), static_cast<unsigned>(p.n_splits));
  const int G = a.n_heads / a.n_kv_heads;
  dispatch_float(a.cache_type, "attention caches", [&](auto tag) {
    using KT = decltype(tag);
    if (a.head_dim == 64)
      launch_decode<KT, 64>(stream, p, G, grid, counters, a.pdl);
    else if (a.head_dim == 128)
      launch_decode<KT, 128>(stream, p, G, grid, counters, a.pdl);
    else
      launch_decode<KT, 256>(stream, p, G, grid, counters, a.pdl);
  });
  LLM_CUDA_CHECK_LAUNCH("attention_decode_kernel");
}

bool attention_prefill_ok(const AttentionArgs& a) {
  return (a.head_dim == 64 || a.head_dim == 128) && a.n_kv_heads > 0 &&
         a.n_heads % a.n_kv_heads == 0 && aligned16(a.k_cache) && aligned16(a.v_cache);
}

void attention_prefill(cudaStream_t stream, const AttentionArgs& a) {
  if (a.T <= 0) return;
  if (!attention_prefill_ok(a)) fail("cuda attention: the prefill kernel does not take this shape");
  Params p = make_params(a);
  p.n_splits = 1;
  const int G = a.n_heads / a.n_kv_heads;
  const int GQ = gcd(G, kPreRows);
  const int TQ = kPreRows / GQ;
  const dim3 grid(static_cast<unsigned>((a.T + TQ - 1) / TQ),
                  static_cast<unsigned>(a.n_kv_heads * (G / GQ)));
  dispatch_float(a.cache_type, "attention caches", [&](auto tag) {
    using KT = decltype(tag);
    if (a.head_dim == 64)
      attention_prefill_kernel<KT, 64><<<grid, kThreads, 0, stream>>>(p, GQ);
    else
      attention_prefill_kernel<KT, 128><<<grid, kThreads, 0, stream>>>(p, GQ);
  });
  LLM_CUDA_CHECK_LAUNCH("attention_prefill_kernel");
}

void attention(cudaStream_t stream, const AttentionArgs& a) {
  if (a.T <= 0) return;
  if (a.head_dim > kAttentionMaxHeadDim)
    fail("cuda attention: head_dim %d > %d", a.head_dim, kAttentionMaxHeadDim);
  const Params p = make_params(a);
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
