// Device parts of Op::Sample shared by the sample kernel (sampling.cu) and the GEMV that
// samples the logits it computes (qgemv.cu). Semantics in Op::Sample: the argmax (larger
// value wins, then the lower index; NaN ranks below numbers); with a temperature, each
// thread sums the weights of a contiguous chunk in double, a block scan places the
// chunks, and the thread whose chunk holds u * sum walks it; the cuts (top-k, top-p,
// min-p) decide which tokens take part first (sample_cuts).
#pragma once

#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>

#include "backends/cuda/cuda_device.cuh"

namespace llm {
namespace cuda {

struct SampleBest {
  float v;
  int i;  // -1: nothing yet
};

__device__ __forceinline__ SampleBest sample_better(SampleBest a, SampleBest b) {
  if (b.i < 0) return a;
  if (a.i < 0) return b;
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}

__device__ __forceinline__ SampleBest sample_warp_best(SampleBest b) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    SampleBest other;
    other.v = __shfl_xor_sync(kFullMask, b.v, o);
    other.i = __shfl_xor_sync(kFullMask, b.i, o);
    b = sample_better(b, other);
  }
  return b;
}

// Indices must rise within a thread: a tie keeps the earlier one.
__device__ __forceinline__ void sample_take(SampleBest& b, float v, int i) {
  if (!isnan(v) && (b.i < 0 || v > b.v)) {
    b.v = v;
    b.i = i;
  }
}

// Inclusive prefix sum over a block of kThreads; every thread gets its own and the total.
// warp_sums: kThreads / 32 values of shared memory.
template <int kThreads, typename T = double>
__device__ T sample_block_scan(T v, T* warp_sums, T& total) {
  constexpr int kWarpsN = kThreads / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T n = __shfl_up_sync(kFullMask, v, o);
    if (lane >= o) v += n;
  }
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < kWarpsN ? warp_sums[lane] : T(0);
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const T n = __shfl_up_sync(kFullMask, w, o);
      if (lane >= o) w += n;
    }
    if (lane < kWarpsN) warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  total = warp_sums[kWarpsN - 1];
  const T out = v + (warp > 0 ? warp_sums[warp - 1] : T(0));
  __syncthreads();  // warp_sums may be reused at once
  return out;
}

// Loads of the row: through the read-only path, or through L2 (kL2) where other blocks
// of the same kernel wrote it.
template <bool kL2>
__device__ __forceinline__ float sample_load(const float* p) {
  if constexpr (kL2)
    return __ldcg(p);
  else
    return __ldg(p);
}

// Op::Sample's cuts (top-k, top-p, min-p) of a row, as the block decided them: tokens
// after (key, idx) in the order by value are dropped (on), and those whose
// (v - max) / temperature is below log_min_p (-inf when off).
struct SampleCut {
  bool on;
  unsigned key;
  int idx;
  float log_min_p;
};

// Elements i0 + j * kThreads (j < kUnroll) of the row, every load issued before any is
// used (NaN past the end).
template <int kThreads, int kUnroll, bool kL2>
__device__ __forceinline__ void sample_load_strided(const float* row, int N, int i0,
                                                    float (&v)[kUnroll]) {
#pragma unroll
  for (int j = 0; j < kUnroll; j++) {
    const int i = i0 + j * kThreads;
    v[j] = i < N ? sample_load<kL2>(row + i) : __uint_as_float(0x7fc00000u);
  }
}

// Larger values, larger keys.
__device__ __forceinline__ unsigned sample_order_key(float v) {
  const unsigned b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

// Whether v is a number whose key *k lies in [klo, khi].
__device__ __forceinline__ bool sample_key_in(float v, unsigned klo, unsigned khi, unsigned* k) {
  *k = sample_order_key(v);
  return !isnan(v) && *k >= klo && *k <= khi;
}

__device__ __forceinline__ float sample_key_value(unsigned k) {
  return __uint_as_float((k & 0x80000000u) ? k & 0x7fffffffu : ~k);
}

// A token's mass in Op::Sample's fixed point: floor(exp((v - m) / T) * 2^31).
__device__ __forceinline__ unsigned long long sample_mass(float v, float m, float inv_t) {
  return static_cast<unsigned>(expf((v - m) * inv_t) * 2147483648.f);
}

__device__ __forceinline__ bool sample_kept(const SampleCut& c, int i, float v, float m,
                                            float inv_t) {
  if ((v - m) * inv_t < c.log_min_p) return false;
  if (!c.on) return true;
  const unsigned k = sample_order_key(v);
  return k > c.key || (k == c.key && i <= c.idx);
}

// Adds a token of mass m to bin b of the shared histogram. The lanes of a warp that hold
// tokens of one bin add them with one atomic pair: the first rounds put most of a row in a
// bin or two, where a block's 1,024 atomics per load serialized on one address (0.5 ms a
// row of 32,000 on the H100).
__device__ __forceinline__ void sample_hist_add(unsigned* cnt, unsigned long long* mass, int b,
                                                unsigned long long m) {
  namespace cg = cooperative_groups;
  const cg::coalesced_group peers = cg::labeled_partition(cg::coalesced_threads(), b);
  const unsigned long long sum = cg::reduce(peers, m, cg::plus<unsigned long long>());
  if (peers.thread_rank() == 0) {
    atomicAdd(&cnt[b], peers.size());
    atomicAdd(&mass[b], sum);
  }
}

// The boundary of the order where the prefix first reaches `want` tokens (by_mass
// false) or fixed-point mass (by_mass true; with want_top_p, want is t = floor(top_p *
// 2^24) and the target comes from the row's whole mass): shaders/sample_cut.glsl's
// search, line for line. Each round counts the tokens of the current key range, and
// their masses, in 64 bins of the key bits below the range's common prefix, and keeps
// the bin where the prefix reaches want; a bin of at most kCap tokens is sorted in
// shared memory, and one of more tokens of a single value is resolved by rank in index
// order. Every thread of the block calls it; the result is in *key, *idx, *mass.
template <int kThreads, bool kL2>
__device__ void sample_select(const float* row, int N, float m, float inv_t, bool by_mass,
                              bool want_top_p, unsigned long long want, unsigned* key, int* idx,
                              unsigned long long* mass) {
  constexpr int kBins = 64, kCap = 512, kUnroll = 4;
  static_assert(kThreads >= kCap, "a thread per token of the sort and its scan");
  __shared__ unsigned h_cnt[kBins];
  __shared__ unsigned long long h_mass[kBins];
  __shared__ unsigned s_klo, s_khi, s_above_cnt, s_bin_cnt, s_cn;
  __shared__ unsigned long long s_above_mass, s_want;
  __shared__ bool s_done;
  __shared__ unsigned c_key[kCap];
  __shared__ int c_idx[kCap];
  __shared__ unsigned long long warp_tot[kThreads / 32];
  const int tid = threadIdx.x;
  auto reaches = [&](unsigned cnt, unsigned long long ms, unsigned long long w) {
    return by_mass ? ms >= w : cnt >= w;
  };
  if (tid == 0) {
    s_klo = 0u;
    s_khi = 0xffffffffu;
    s_above_cnt = 0u;
    s_above_mass = 0ull;
    s_want = want;
    s_done = false;
  }
  __syncthreads();
  bool first = true;
  while (true) {
    const unsigned klo = s_klo, khi = s_khi;
    const unsigned diff = klo ^ khi;
    if (diff == 0u || s_done) break;
    const int msb = 31 - __clz(diff);
    const int shift = max(msb - 5, 0);
    __syncthreads();  // every thread has read the range before it changes
    if (tid < kBins) {
      h_cnt[tid] = 0u;
      h_mass[tid] = 0ull;
    }
    __syncthreads();
    for (int i0 = tid; i0 < N; i0 += kThreads * kUnroll) {
      float v[kUnroll];
      sample_load_strided<kThreads, kUnroll, kL2>(row, N, i0, v);
#pragma unroll
      for (int j = 0; j < kUnroll; j++) {
        unsigned k;
        if (!sample_key_in(v[j], klo, khi, &k)) continue;
        sample_hist_add(h_cnt, h_mass, (k >> shift) & (kBins - 1), sample_mass(v[j], m, inv_t));
      }
    }
    __syncthreads();
    if (tid == 0) {
      if (first && want_top_p) {
        unsigned long long total = 0;
        for (int b = 0; b < kBins; b++) total += h_mass[b];
        s_want = (total >> 24) * want + (((total & 0xffffffull) * want) >> 24);
      }
      unsigned cnt = s_above_cnt;
      unsigned long long ms = s_above_mass;
      int pick = -1;
      for (int b = kBins - 1; b >= 0 && pick < 0; b--) {
        if (h_cnt[b] > 0u && reaches(cnt + h_cnt[b], ms + h_mass[b], s_want)) {
          pick = b;
        } else {
          cnt += h_cnt[b];
          ms += h_mass[b];
        }
      }
      if (pick < 0) {
        // want past the range (a top_k beyond the row's numbers): its last nonempty
        // bin, whose last token then ends the order.
        pick = 0;
        while (pick < kBins - 1 && h_cnt[pick] == 0u) pick++;
        cnt = s_above_cnt;
        ms = s_above_mass;
        for (int b = pick + 1; b < kBins; b++) {
          cnt += h_cnt[b];
          ms += h_mass[b];
        }
      }
      s_above_cnt = cnt;
      s_above_mass = ms;
      s_bin_cnt = h_cnt[pick];
      const unsigned span = shift + 6 >= 32 ? 0xffffffffu : (64u << shift) - 1u;
      const unsigned lo = (klo & ~span) | (static_cast<unsigned>(pick) << shift);
      const unsigned hi = shift == 0 ? lo : lo | ((1u << shift) - 1u);
      s_klo = max(klo, lo);
      s_khi = min(khi, hi);
      s_done = h_cnt[pick] <= kCap;
    }
    first = false;
    __syncthreads();
  }
  const unsigned klo = s_klo, khi = s_khi, above_cnt = s_above_cnt;
  const unsigned long long above_mass = s_above_mass, target = s_want;
  if (s_bin_cnt <= kCap) {
    // The bin's tokens into shared memory, sorted by key descending, index ascending.
    if (tid == 0) s_cn = 0u;
    __syncthreads();
    for (int i0 = tid; i0 < N; i0 += kThreads * kUnroll) {
      float v[kUnroll];
      sample_load_strided<kThreads, kUnroll, kL2>(row, N, i0, v);
#pragma unroll
      for (int j = 0; j < kUnroll; j++) {
        unsigned k;
        if (!sample_key_in(v[j], klo, khi, &k)) continue;
        const unsigned at = atomicAdd(&s_cn, 1u);
        if (at < kCap) {
          c_key[at] = k;
          c_idx[at] = i0 + j * kThreads;
        }
      }
    }
    __syncthreads();
    const int cn = min(static_cast<int>(s_cn), kCap);
    int n2 = 1;
    while (n2 < cn) n2 <<= 1;
    for (int j = cn + tid; j < n2; j += kThreads) {
      c_key[j] = 0u;  // after every real token
      c_idx[j] = 0x7fffffff;
    }
    __syncthreads();
    for (int size = 2; size <= n2; size <<= 1) {
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        if (tid < n2 / 2) {
          const int i = 2 * tid - (tid & (stride - 1)), j = i + stride;
          const bool down = (i & size) == 0;
          const unsigned ki = c_key[i], kj = c_key[j];
          const int ii = c_idx[i], ij = c_idx[j];
          const bool j_first = kj > ki || (kj == ki && ij < ii);
          if (j_first == down) {
            c_key[i] = kj;
            c_key[j] = ki;
            c_idx[i] = ij;
            c_idx[j] = ii;
          }
        }
        __syncthreads();
      }
    }
    // Thread j holds token j: a scan of the masses; the token whose prefix first
    // reaches want is the boundary (the bin's last token if none does).
    const unsigned long long own =
        tid < cn ? sample_mass(sample_key_value(c_key[tid]), m, inv_t) : 0;
    unsigned long long bin_total;
    const unsigned long long incl =
        sample_block_scan<kThreads, unsigned long long>(own, warp_tot, bin_total);
    if (tid < cn) {
      const bool now = reaches(above_cnt + tid + 1, above_mass + incl, target);
      const bool before = reaches(above_cnt + tid, above_mass + incl - own, target);
      if ((now && !before) || (tid == cn - 1 && !now)) {
        *key = c_key[tid];
        *idx = c_idx[tid];
        *mass = above_mass + incl;
      }
    }
    __syncthreads();
  } else {
    // More than kCap tokens of one value: the boundary is the r-th of them in index
    // order.
    const unsigned kv = klo;
    const unsigned long long w = sample_mass(sample_key_value(kv), m, inv_t);
    if (tid == 0) {
      unsigned long long r = s_bin_cnt;
      if (reaches(above_cnt, above_mass, target))
        r = 1;
      else if (!by_mass)
        r = min(static_cast<unsigned long long>(s_bin_cnt), target - above_cnt);
      else if (w > 0)
        r = min(static_cast<unsigned long long>(s_bin_cnt), (target - above_mass + w - 1) / w);
      s_cn = static_cast<unsigned>(max(r, 1ull));
      *key = kv;
      *mass = above_mass + s_cn * w;
    }
    __syncthreads();
    const unsigned long long r = s_cn;
    const int chunk = (N + kThreads - 1) / kThreads;
    const int lo = min(N, tid * chunk), hi = min(N, lo + chunk);
    unsigned long long n_own = 0;
    for (int i = lo; i < hi; i++) {
      const float v = sample_load<kL2>(row + i);
      if (!isnan(v) && sample_order_key(v) == kv) n_own++;
    }
    unsigned long long all;
    const unsigned long long incl =
        sample_block_scan<kThreads, unsigned long long>(n_own, warp_tot, all);
    if (incl - n_own < r && r <= incl) {
      unsigned long long seen = incl - n_own;
      for (int i = lo; i < hi; i++) {
        const float v = sample_load<kL2>(row + i);
        if (!isnan(v) && sample_order_key(v) == kv && ++seen == r) {
          *idx = i;
          break;
        }
      }
    }
    __syncthreads();
  }
}

// The row's cuts for (temperature, top_k, top_p, min_p): the boundary of top-k, then of
// top-p within it. Every thread of the block calls it and gets the same cut.
template <int kThreads, bool kL2>
__device__ SampleCut sample_cuts(const float* row, int N, SampleBest best, float temperature,
                                 float top_k, float top_p, float min_p) {
  __shared__ unsigned b_key;
  __shared__ int b_idx;
  __shared__ unsigned long long b_mass;
  SampleCut c{false, 0u, 0, min_p > 0.f ? logf(min_p) : -INFINITY};
  const float m = best.v;
  if (!(temperature > 0.f) || best.i < 0 || !isfinite(m)) return c;
  const float inv_t = 1.f / temperature;
  const bool by_k = top_k >= 1.f && top_k < static_cast<float>(N);
  unsigned long long s_k = 0;
  if (by_k) {
    sample_select<kThreads, kL2>(row, N, m, inv_t, false, false,
                                 static_cast<unsigned long long>(top_k), &b_key, &b_idx, &b_mass);
    s_k = b_mass;
  }
  if (top_p < 1.f) {
    const unsigned long long t = static_cast<unsigned>(top_p * 16777216.f);
    if (by_k)
      sample_select<kThreads, kL2>(row, N, m, inv_t, true, false,
                                   (s_k >> 24) * t + (((s_k & 0xffffffull) * t) >> 24), &b_key,
                                   &b_idx, &b_mass);
    else
      sample_select<kThreads, kL2>(row, N, m, inv_t, true, true, t, &b_key, &b_idx, &b_mass);
  }
  if (by_k || top_p < 1.f) {
    c.on = true;
    c.key = b_key;
    c.idx = b_idx;
  }
  __syncthreads();  // b_* are rewritten by the next row's call
  return c;
}

// The temperature draw over the kept tokens of row [N] whose argmax `best` the whole
// block holds. *picked holds the argmax's index on entry (every thread of the block
// calls this) and the drawn index on return.
template <int kThreads, bool kL2>
__device__ void sample_temperature(const float* row, int N, SampleBest best, float temperature,
                                   float u, const SampleCut& cut, double* warp_sums, int* picked) {
  const float m = best.v;
  if (!(temperature > 0.f) || best.i < 0 || !isfinite(m)) return;
  const float inv_t = 1.f / temperature;
  const int chunk = (N + kThreads - 1) / kThreads;
  const int lo = min(N, static_cast<int>(threadIdx.x) * chunk), hi = min(N, lo + chunk);
  double sum = 0.0;
  for (int i = lo; i < hi; i++) {
    const float v = sample_load<kL2>(row + i);
    if (!isnan(v) && sample_kept(cut, i, v, m, inv_t)) sum += expf((v - m) * inv_t);
  }
  double total;
  const double incl = sample_block_scan<kThreads>(sum, warp_sums, total);
  const double excl = incl - sum;
  if (total > 0.0 && isfinite(total)) {
    const double target = static_cast<double>(u) * total;
    if (lo < hi && excl <= target && target < incl) {
      // The walk regroups the chunk's additions: if rounding keeps it at or below the
      // target, the chunk's last weighted index is the one.
      double run = excl;
      int last = -1, pick = -1;
      for (int i = lo; i < hi && pick < 0; i++) {
        const float v = sample_load<kL2>(row + i);
        if (isnan(v) || !sample_kept(cut, i, v, m, inv_t)) continue;
        const float w = expf((v - m) * inv_t);
        run += w;
        if (w > 0.f) last = i;
        if (run > target) pick = i;
      }
      if (pick < 0) pick = last;
      if (pick >= 0) *picked = pick;
    }
  }
  __syncthreads();
}

}  // namespace cuda
}  // namespace llm
