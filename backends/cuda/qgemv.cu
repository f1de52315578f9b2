// Decode GEMV over Q8_0 / Q4_0 / Q4_1 matrices in the split layout (see cuda_kernels.h).
//
// Bytes: one pass over the quants and scales, 16-byte loads coalesced across the warp
// (a lane takes one 16-byte chunk: a whole Q4_0 / Q4_1 block or half a Q8_0 block), each warp
// working on two rows at once with the next iteration's loads issued before the current
// one is computed. Arithmetic: each block first turns the rows of x into 16-bit
// integers per block of 32 (s = round(x * 32512 / amax), kept as two int8 planes
// s = 256 h + l) in shared memory, so one Q4_0 block costs 8 dp4a per plane and a few
// float operations (Q4_1's min one more: m times the block's sum of s, as the CPU's
// q4_1 GEMV takes the sum of its rounded x): the kernel stays bound by memory on the
// H100 where a float dequantizing loop would be bound by issue. The 16-bit activations
// keep the result within amax / 65024 per element of the float32 product, far tighter
// than q8 ones.
//
// One block of 24 warps per multiprocessor (80 registers a thread), at most one wave;
// warps stride over row pairs, so the prologue (quantizing x, and optionally the
// RmsNorm that produces it) is paid once per multiprocessor. The first loads are issued
// before the prologue so the weights are already on their way while it runs. For a
// single token the weights stream through a ring of batches in shared memory (cp.async)
// where the device has the room: more bytes in flight than registers can hold.
#include <algorithm>
#include <cstdlib>

#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/sampling.cuh"

namespace llm {
namespace cuda {

namespace {

// One block of 24 warps per multiprocessor: x is quantized once per multiprocessor,
// where three blocks of 8 did it three times (H200 7b decode: 421 -> 460 tok/s).
constexpr int kWarps = 24;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 2;    // rows per warp task
constexpr int kUnroll = 2;  // 16-byte chunks per row per lane per iteration
constexpr int kBlock = 32;
constexpr float kSMax = 32512.f;  // 127 * 256: s = 256 h + l with |h| <= 127

struct Params {
  const float* x;
  int T;
  int K, nb, C;  // columns, blocks of 32 and 16-byte chunks per row
  int ss;        // scales per row (stride)
  const uint8_t* qs[kGemvMaxSegs];
  const uint16_t* sc[kGemvMaxSegs];
  const void* bias[kGemvMaxSegs];
  int bias_type[kGemvMaxSegs];
  float* y[kGemvMaxSegs];
  int N[kGemvMaxSegs];
  int row0[kGemvMaxSegs + 1];  // first row of each segment in the concatenation
  int n_segs;
  bool pair;  // task j = row j of segments 0 and 1
  int n_tasks;
  int ksplit;     // warps sharing a task, each taking every ksplit-th iteration over K
  int stage_off;  // staged kernels: where the rings start in dynamic shared memory
  const void* norm_w;
  int norm_type;
  float eps;
  float* norm_out;
  int epilogue;
  const float* residual;
  bool residual_early;  // the residual may be read before the wait (see QGemvArgs)
  float* out2;
  // RopeKv: a task is a rotated pair of q or k (or two consecutive rows of v).
  int head_dim, rot_half, neox;
  const int32_t* positions;
  const float* inv_freq;
  const int32_t* slots;
  float* q_out;
  float* k_out;
  void* k_cache;
  void* v_cache;
  int cache_type;
  int64_t cache_rows;
  int* err;
  // Sample (one token, one segment): each block's best logit, and the count of blocks
  // done (the last one resets it), then the drawn id.
  const float* sample_params;
  SampleBest* sample_partials;
  unsigned* sample_counter;
  int32_t* sample_out;
};

__device__ __forceinline__ uint4 lds16(const uint8_t* p) {
  return *reinterpret_cast<const uint4*>(p);
}

__device__ __forceinline__ uint32_t pack_bytes(int a, int b, int c, int d) {
  return (static_cast<uint32_t>(a) & 0xff) | ((static_cast<uint32_t>(b) & 0xff) << 8) |
         ((static_cast<uint32_t>(c) & 0xff) << 16) | (static_cast<uint32_t>(d) << 24);
}

// kStages > 0 (single tokens): the weights stream through a ring of kStages batches per
// warp in shared memory (cp.async) instead of two in registers, so more bytes are in
// flight per multiprocessor than registers could hold. The ring starts at stage_off.
// kSample (one token, one segment): Op::Sample of the row of logits computed, after it.
// kL: the weights' QLayout.
template <int kL, int TMAX, int kStages, bool kSample = false>
__global__ void __launch_bounds__(kThreads, 1) qgemv_kernel(const Params p) {
  constexpr bool kQ4 = layout_is_q4(kL), kMin = kL == kLayoutQ4_1;
  // A chunk's scale entry: f16 d, or Q4_1's (d, min) pair.
  using Scale = std::conditional_t<kMin, uint32_t, uint16_t>;
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float red[32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int T = p.T, K = p.K, nb = p.nb, C = p.C;
  // Shared memory: per token 2K bytes of planes (Q4_0: hi of elements 0-15, hi of
  // 16-31, lo of 0-15, lo of 16-31, each [nb][16]; Q8_0: hi, lo, each [2 nb][16], so
  // that lanes read consecutive 16-byte entries), then the scales and sums [T][nb].
  float* a_scale = reinterpret_cast<float*>(smem + static_cast<size_t>(T) * 2 * K);
  int* a_sum = reinterpret_cast<int*>(a_scale + T * nb);

  // Row (segment, index) of each row of a task; -1 when past the end.
  const bool rope = p.epilogue == static_cast<int>(QEpilogue::RopeKv);
  auto row_of = [&](int j, int r, int& seg, int& n) {
    if (p.pair) {
      seg = r;
      n = j;
      if (j >= p.N[0]) seg = -1;
      return;
    }
    if (rope) {
      // Segments of whole heads (even row counts); in q and k, task i of a head takes
      // the rows that rotate together: (i, i + rot/2) for NeoX, (2i, 2i + 1) for GPT-J
      // and for the dims past rot_dims.
      if (2 * j >= p.row0[3]) {
        seg = -1;
        return;
      }
      seg = 2 * j >= p.row0[1] ? (2 * j >= p.row0[2] ? 2 : 1) : 0;
      const int jl = j - p.row0[seg] / 2;
      if (seg == 2) {
        n = 2 * jl + r;
        return;
      }
      const int hd2 = p.head_dim >> 1, h = jl / hd2, i = jl - h * hd2;
      n = h * p.head_dim + (p.neox && i < p.rot_half ? i + r * p.rot_half : 2 * i + r);
      return;
    }
    const int g = kRows * j + r;
    if (g >= p.row0[p.n_segs]) {
      seg = -1;
      return;
    }
    seg = g >= p.row0[1] ? (p.n_segs > 2 && g >= p.row0[2] ? 2 : 1) : 0;
    n = g - p.row0[seg];
  };

  struct Batch {
    uint4 w[kRows][kUnroll];
    Scale d[kRows][kUnroll];
  };
  auto load = [&](int j, int it, Batch& b) {
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      int seg, n;
      row_of(j, r, seg, n);
#pragma unroll
      for (int u = 0; u < kUnroll; u++) {
        const int c = it * 32 * kUnroll + u * 32 + lane;
        if (seg >= 0 && c < C) {
          const uint8_t* qrow = p.qs[seg] + static_cast<size_t>(n) * C * 16;
          b.w[r][u] = __ldg(reinterpret_cast<const uint4*>(qrow) + c);
          b.d[r][u] = __ldg(reinterpret_cast<const Scale*>(p.sc[seg]) +
                            static_cast<size_t>(n) * p.ss + (kQ4 ? c : c >> 1));
        } else {
          b.w[r][u] = make_uint4(0, 0, 0, 0);
          b.d[r][u] = 0;
        }
      }
    }
  };

  // The staged ring: per warp kStages batches, each [kRows * kUnroll][32 lanes] of
  // 16-byte chunks, then as many 4-byte words holding each chunk's scale (the aligned
  // pair of u16 it sits in: scale rows have even strides; Q4_1: its own d, min pair).
  // Every lane reads back only what it copied itself, so its own cp.async wait is all
  // the synchronization needed.
  constexpr int kSlots = kRows * kUnroll;
  constexpr int kStageBytes = kSlots * 32 * (16 + 4);
  uint8_t* ring = smem + p.stage_off + static_cast<size_t>(warp) * kStages * kStageBytes;
  auto stage_issue = [&](int j, int it, int st) {
    uint8_t* base = ring + st * kStageBytes;
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      int seg, n;
      row_of(j, r, seg, n);
#pragma unroll
      for (int u = 0; u < kUnroll; u++) {
        const int c = it * 32 * kUnroll + u * 32 + lane;
        const bool ok = seg >= 0 && c < C;
        const int sg = ok ? seg : 0;
        const size_t row = ok ? static_cast<size_t>(n) : 0;
        const int slot_i = (r * kUnroll + u) * 32 + lane;
        cp_async16_zfill(base + slot_i * 16, p.qs[sg] + (row * C + (ok ? c : 0)) * 16, ok);
        const size_t di = row * p.ss + (ok ? (kQ4 ? c : c >> 1) : 0);
        cp_async4_zfill(base + kSlots * 32 * 16 + slot_i * 4,
                        kMin ? p.sc[sg] + 2 * di : p.sc[sg] + (di & ~size_t{1}), ok);
      }
    }
  };
  auto stage_read = [&](int st, Batch& b) {
    const uint8_t* base = ring + st * kStageBytes;
    // The chunk's scale index has the parity of its block: c's (Q4_0) or c / 2's (Q8_0).
    const int shift = 16 * (kQ4 ? (lane & 1) : ((lane >> 1) & 1));
#pragma unroll
    for (int r = 0; r < kRows; r++)
#pragma unroll
      for (int u = 0; u < kUnroll; u++) {
        const int slot_i = (r * kUnroll + u) * 32 + lane;
        b.w[r][u] = *reinterpret_cast<const uint4*>(base + slot_i * 16);
        const uint32_t dd =
            *reinterpret_cast<const uint32_t*>(base + kSlots * 32 * 16 + slot_i * 4);
        b.d[r][u] = kMin ? static_cast<Scale>(dd) : static_cast<Scale>(dd >> shift);
      }
  };

  const int n_it = (C + 32 * kUnroll - 1) / (32 * kUnroll);
  // A block takes kWarps / ksplit tasks at once; the ksplit warps of a task (its "slot")
  // take iterations sub, sub + ksplit, ... and add their sums in shared memory.
  const int KS = p.ksplit, slots = kWarps / KS, slot = warp / KS, sub = warp % KS;
  const int tstride = gridDim.x * slots;
  // A warp's (task, iteration) pairs in order; it ends up at n_tasks.
  auto advance = [&](int& jj, int& ii) {
    ii += KS;
    if (ii >= n_it) {
      ii = sub;
      jj += tstride;
    }
  };
  // Two batches of weights in flight before anything waits: they do not depend on the
  // kernels before this one, so with programmatic dependent launch they stream while
  // those finish, and in any case during the prologue.
  int j = blockIdx.x * slots + slot, it = sub;
  if (sub >= n_it) j = p.n_tasks;  // a warp with no iteration: only adds zeros
  bool have = j < p.n_tasks;
  Batch cur, nxt;
  int j2 = j, it2 = it;
  bool have2 = false;
  int jl = j, itl = it, k = 0;  // staged: the last position issued, the one to consume
  if constexpr (kStages > 0) {
    // kStages - 1 batches in flight; a commit group per position, empty or not.
    if (have) stage_issue(jl, itl, 0);
    cp_async_commit();
#pragma unroll
    for (int st = 1; st < kStages - 1; st++) {
      advance(jl, itl);
      if (jl < p.n_tasks) stage_issue(jl, itl, st);
      cp_async_commit();
    }
  } else {
    if (have) load(j, it, cur);
    advance(j2, it2);
    have2 = have && j2 < p.n_tasks;
    if (have2) load(j2, it2, nxt);
  }
  // ---- Prologue: x (optionally RMS-normalized) as 16-bit integers per block of 32.
  // A thread rounds 4 elements of each of kPre * kThreads / 8 blocks a round, float4
  // index tid + u * kThreads of the round: the same the sum of squares reads, so the
  // first round's x is loaded once for both, and the norm weights of the first round
  // (constants) go out before the wait.
  // Rounds of kPre * kThreads / 8 blocks (3 with the staged ring, rows of up to 9,216
  // in one trip to L2, made every GEMV slower on the H200: 1b 1,784 -> 1,747 tok/s).
  constexpr int kPre = 2;
  const int q = tid & 7;            // 8 threads per block of 32, 4 elements each
  const int A = kQ4 ? nb * 16 : K;  // bytes per plane array
  float4 ww0[kPre];
#pragma unroll
  for (int u = 0; u < kPre; u++) {
    const int b = u * (kThreads / 8) + (tid >> 3), e = b * kBlock + q * 4;
    ww0[u] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (p.norm_w && b < nb)
      ww0[u] = make_float4(
          load_any(p.norm_w, p.norm_type, e), load_any(p.norm_w, p.norm_type, e + 1),
          load_any(p.norm_w, p.norm_type, e + 2), load_any(p.norm_w, p.norm_type, e + 3));
  }
  // The epilogue of the warp's first task (lane t: token t) reads what the kernels
  // before this one did not write: the rope's angles come from the step's positions
  // and the constant frequencies, and the residual where the host found it written
  // before the previous launch started (residual_early). Both are fetched before the
  // wait, off the end of the chain.
  const int task0 = blockIdx.x * slots + slot;
  float res0[kRows], sin0 = 0.f, cos0 = 1.f;
#pragma unroll
  for (int r = 0; r < kRows; r++) res0[r] = 0.f;
  if (lane < T && task0 < p.n_tasks) {
    if (p.epilogue == static_cast<int>(QEpilogue::Residual) && p.residual_early) {
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        int seg, n;
        row_of(task0, r, seg, n);
        if (seg >= 0) res0[r] = p.residual[static_cast<size_t>(lane) * p.N[0] + n];
      }
    } else if (rope) {
      int seg, n;
      row_of(task0, 0, seg, n);
      const int i = seg >= 0 ? (task0 - p.row0[seg] / 2) % (p.head_dim >> 1) : 0;
      if (seg >= 0 && seg < 2 && i < p.rot_half)
        sincosf(static_cast<float>(p.positions[lane]) * p.inv_freq[i], &sin0, &cos0);
    }
  }
  pdl_wait();
  pdl_trigger();

#pragma unroll
  for (int t = 0; t < TMAX; t++) {
    if (t >= T) break;
    const float4* xr = reinterpret_cast<const float4*>(p.x + static_cast<size_t>(t) * K);
    float4 xv0[kPre];
#pragma unroll
    for (int u = 0; u < kPre; u++) {
      const int i = u * kThreads + tid;
      xv0[u] = i < K / 4 ? __ldg(xr + i) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    float inv = 1.f;
    if (p.norm_w) {
      float ss = 0.f;
#pragma unroll
      for (int u = 0; u < kPre; u++) {
        const float4 v = xv0[u];
        ss = fmaf(v.x, v.x, ss);
        ss = fmaf(v.y, v.y, ss);
        ss = fmaf(v.z, v.z, ss);
        ss = fmaf(v.w, v.w, ss);
      }
#pragma unroll 4
      for (int i = kPre * kThreads + tid; i < K / 4; i += kThreads) {
        const float4 v = __ldg(xr + i);
        ss = fmaf(v.x, v.x, ss);
        ss = fmaf(v.y, v.y, ss);
        ss = fmaf(v.z, v.z, ss);
        ss = fmaf(v.w, v.w, ss);
      }
      ss = block_sum(ss, red);
      inv = 1.f / sqrtf(ss / static_cast<float>(K) + p.eps);
    }
    {
      uint8_t* planes = smem + static_cast<size_t>(t) * 2 * K;
      // Trip count uniform over the block: every lane takes part in the shuffles. The
      // loads of kPre rounds of blocks go out together: fewer round trips to L2.
      for (int b0 = 0; b0 < nb; b0 += kPre * (kThreads / 8)) {
        float4 vv[kPre], ww[kPre];
#pragma unroll
        for (int u = 0; u < kPre; u++) {
          const int b = b0 + u * (kThreads / 8) + (tid >> 3);
          const int e = b * kBlock + q * 4;
          vv[u] = xv0[u];
          ww[u] = ww0[u];
          if (b0 > 0 && b < nb) {
            vv[u] = __ldg(reinterpret_cast<const float4*>(p.x + static_cast<size_t>(t) * K + e));
            if (p.norm_w)
              ww[u] = make_float4(
                  load_any(p.norm_w, p.norm_type, e), load_any(p.norm_w, p.norm_type, e + 1),
                  load_any(p.norm_w, p.norm_type, e + 2), load_any(p.norm_w, p.norm_type, e + 3));
          }
        }
#pragma unroll
        for (int u = 0; u < kPre; u++) {
          const int b = b0 + u * (kThreads / 8) + (tid >> 3);
          const bool live = b < nb;
          const int e = b * kBlock + q * 4;
          float4 v = vv[u];
          if (p.norm_w && live) {
            // As the RmsNorm kernel: (x * inv) * w.
            v.x = (v.x * inv) * ww[u].x;
            v.y = (v.y * inv) * ww[u].y;
            v.z = (v.z * inv) * ww[u].z;
            v.w = (v.w * inv) * ww[u].w;
            if (p.norm_out && blockIdx.x == 0)
              *reinterpret_cast<float4*>(p.norm_out + static_cast<size_t>(t) * K + e) = v;
          }
          float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
          int bad = (v.x != v.x) | (v.y != v.y) | (v.z != v.z) | (v.w != v.w);
#pragma unroll
          for (int o = 1; o < 8; o <<= 1) {
            amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, o));
            bad |= __shfl_xor_sync(kFullMask, bad, o);
          }
          const float inv_step = amax > 0.f ? kSMax / amax : 0.f;
          const int s0 = __float2int_rn(v.x * inv_step), s1 = __float2int_rn(v.y * inv_step);
          const int s2 = __float2int_rn(v.z * inv_step), s3 = __float2int_rn(v.w * inv_step);
          // Low bytes as signed int8, high parts exact: s = 256 h + l.
          const int l0 = static_cast<int8_t>(s0 & 0xff), l1 = static_cast<int8_t>(s1 & 0xff);
          const int l2 = static_cast<int8_t>(s2 & 0xff), l3 = static_cast<int8_t>(s3 & 0xff);
          const uint32_t hw =
              pack_bytes((s0 - l0) >> 8, (s1 - l1) >> 8, (s2 - l2) >> 8, (s3 - l3) >> 8);
          const uint32_t lw = pack_bytes(l0, l1, l2, l3);
          int sum = s0 + s1 + s2 + s3;
#pragma unroll
          for (int o = 1; o < 8; o <<= 1) sum += __shfl_xor_sync(kFullMask, sum, o);
          const int half = q >> 2;
          const int entry = kQ4 ? b : 2 * b + half;
          const int hi_arr = kQ4 ? half : 0, lo_arr = kQ4 ? 2 + half : 1;
          const int off = entry * 16 + (q & 3) * 4;
          if (!live) continue;
          *reinterpret_cast<uint32_t*>(planes + hi_arr * A + off) = hw;
          *reinterpret_cast<uint32_t*>(planes + lo_arr * A + off) = lw;
          if (q == 0) {
            // Non-finite inputs make the whole product NaN, as float math would.
            a_scale[t * nb + b] = (bad || isinf(amax)) ? __int_as_float(0x7fc00000) : amax / kSMax;
            a_sum[t * nb + b] = sum;
          }
        }
      }
    }
  }
  __syncthreads();

  // ---- Main loop.
  float acc[kRows][TMAX];
#pragma unroll
  for (int r = 0; r < kRows; r++)
#pragma unroll
    for (int t = 0; t < TMAX; t++) acc[r][t] = 0.f;

  // Sample: lane 0's best of its warp's rows (rising indices: take keeps the first).
  SampleBest best{-INFINITY, -1};

  // Tasks in rounds uniform over the block (the split sums meet at a barrier).
  __shared__ float part[2][kWarps][kRows][TMAX];
  int buf = 0;
  for (int base = blockIdx.x * slots; base < p.n_tasks; base += tstride, buf ^= 1) {
    const int task = base + slot;
    while (have && j == task) {
      if constexpr (kStages > 0) {
        cp_async_wait<kStages - 2>();
        stage_read(k % kStages, cur);
        // The stage rewritten next is the one read in the previous round.
        asm volatile("" ::: "memory");
        advance(jl, itl);
        if (jl < p.n_tasks) stage_issue(jl, itl, (k + kStages - 1) % kStages);
        cp_async_commit();
        k++;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; u++) {
        const int c = it * 32 * kUnroll + u * 32 + lane;
        if (c >= C) continue;
        const int blk = kQ4 ? c : c >> 1;
        float dw[kRows], mw[kRows];
#pragma unroll
        for (int r = 0; r < kRows; r++) {
          dw[r] = __half2float(__ushort_as_half(static_cast<uint16_t>(cur.d[r][u])));
          mw[r] =
              kMin ? __half2float(__ushort_as_half(static_cast<uint16_t>(cur.d[r][u] >> 16))) : 0.f;
        }
#pragma unroll
        for (int t = 0; t < TMAX; t++) {
          if (t >= T) break;
          const uint8_t* planes = smem + static_cast<size_t>(t) * 2 * K;
          const float as = a_scale[t * nb + blk];
          if constexpr (kQ4) {
            const uint4 h0 = lds16(planes + c * 16), h1 = lds16(planes + A + c * 16);
            const uint4 l0 = lds16(planes + 2 * A + c * 16), l1 = lds16(planes + 3 * A + c * 16);
            // Q4_0's q - 8 comes off the integer dot; Q4_1 adds m * sum(x) instead.
            const int xsum = a_sum[t * nb + blk];
            const int corr = kMin ? 0 : 8 * xsum;
#pragma unroll
            for (int r = 0; r < kRows; r++) {
              const uint4 w = cur.w[r][u];
              const uint32_t ww[4] = {w.x, w.y, w.z, w.w};
              const uint32_t hh0[4] = {h0.x, h0.y, h0.z, h0.w}, hh1[4] = {h1.x, h1.y, h1.z, h1.w};
              const uint32_t ll0[4] = {l0.x, l0.y, l0.z, l0.w}, ll1[4] = {l1.x, l1.y, l1.z, l1.w};
              int dh = 0, dl = 0;
#pragma unroll
              for (int i = 0; i < 4; i++) {
                const int lo = static_cast<int>(ww[i] & 0x0f0f0f0fu);
                const int hi = static_cast<int>((ww[i] >> 4) & 0x0f0f0f0fu);
                dh = __dp4a(lo, static_cast<int>(hh0[i]), dh);
                dh = __dp4a(hi, static_cast<int>(hh1[i]), dh);
                dl = __dp4a(lo, static_cast<int>(ll0[i]), dl);
                dl = __dp4a(hi, static_cast<int>(ll1[i]), dl);
              }
              const int dot = dh * 256 + dl - corr;
              acc[r][t] = fmaf(static_cast<float>(dot), dw[r] * as, acc[r][t]);
              if constexpr (kMin) acc[r][t] = fmaf(static_cast<float>(xsum), mw[r] * as, acc[r][t]);
            }
          } else {
            const uint4 h = lds16(planes + c * 16), l = lds16(planes + A + c * 16);
#pragma unroll
            for (int r = 0; r < kRows; r++) {
              const uint4 w = cur.w[r][u];
              int dh = __dp4a(static_cast<int>(w.x), static_cast<int>(h.x), 0);
              dh = __dp4a(static_cast<int>(w.y), static_cast<int>(h.y), dh);
              dh = __dp4a(static_cast<int>(w.z), static_cast<int>(h.z), dh);
              dh = __dp4a(static_cast<int>(w.w), static_cast<int>(h.w), dh);
              int dl = __dp4a(static_cast<int>(w.x), static_cast<int>(l.x), 0);
              dl = __dp4a(static_cast<int>(w.y), static_cast<int>(l.y), dl);
              dl = __dp4a(static_cast<int>(w.z), static_cast<int>(l.z), dl);
              dl = __dp4a(static_cast<int>(w.w), static_cast<int>(l.w), dl);
              acc[r][t] = fmaf(static_cast<float>(dh * 256 + dl), dw[r] * as, acc[r][t]);
            }
          }
        }
      }
      if constexpr (kStages > 0) {
        advance(j, it);
        have = j < p.n_tasks;
      } else {
        cur = nxt;
        j = j2;
        it = it2;
        have = have2;
        advance(j2, it2);
        have2 = j2 < p.n_tasks;
        if (have2) load(j2, it2, nxt);
      }
    }
    // Row sums; with a split, the slot's warps add theirs through shared memory and its
    // first warp finishes. Lane t holds token t.
    float sum[kRows][TMAX];
#pragma unroll
    for (int r = 0; r < kRows; r++)
#pragma unroll
      for (int t = 0; t < TMAX; t++) {
        sum[r][t] = warp_sum(acc[r][t]);
        acc[r][t] = 0.f;
      }
    if (KS > 1) {
#pragma unroll
      for (int r = 0; r < kRows; r++)
#pragma unroll
        for (int t = 0; t < TMAX; t++)
          if (lane == t) part[buf][warp][r][t] = sum[r][t];
      __syncthreads();
      if (sub != 0) continue;
#pragma unroll
      for (int r = 0; r < kRows; r++)
#pragma unroll
        for (int t = 0; t < TMAX; t++) {
          float v = 0.f;
          for (int w = 0; w < KS; w++) v += part[buf][warp + w][r][t];
          sum[r][t] = v;
        }
    }
    if (task >= p.n_tasks) continue;
    {
      int seg[kRows], n[kRows];
#pragma unroll
      for (int r = 0; r < kRows; r++) row_of(task, r, seg[r], n[r]);
#pragma unroll
      for (int t = 0; t < TMAX; t++) {
        if (lane != t || t >= T) continue;
        float val[kRows];
#pragma unroll
        for (int r = 0; r < kRows; r++) {
          if (seg[r] < 0) continue;
          const int s = seg[r];
          val[r] = sum[r][t] + (p.bias[s] ? load_any(p.bias[s], p.bias_type[s], n[r]) : 0.f);
          const size_t at = static_cast<size_t>(t) * p.N[s] + n[r];
          if (p.y[s]) p.y[s][at] = val[r];
          if constexpr (kSample) sample_take(best, val[r], n[r]);
          if (p.epilogue == static_cast<int>(QEpilogue::Residual))
            p.out2[at] = (task == task0 && p.residual_early ? res0[r] : p.residual[at]) + val[r];
        }
        if (p.epilogue == static_cast<int>(QEpilogue::SiluPair) && seg[0] >= 0)
          p.out2[static_cast<size_t>(t) * p.N[0] + n[0]] = silu(val[0]) * val[1];
        if (rope && seg[0] >= 0) {
          // As rope_kv: theta = float(pos) * inv_freq[i] in float32, sincosf.
          const int s = seg[0];
          float y0 = val[0], y1 = val[1];
          const int i = (task - p.row0[s] / 2) % (p.head_dim >> 1);
          if (s < 2 && i < p.rot_half) {
            float sn = sin0, cs = cos0;
            if (task != task0)
              sincosf(static_cast<float>(p.positions[t]) * p.inv_freq[i], &sn, &cs);
            y0 = val[0] * cs - val[1] * sn;
            y1 = val[1] * cs + val[0] * sn;
          }
          const size_t at = static_cast<size_t>(t) * p.N[s];
          if (s == 0) {
            p.q_out[at + n[0]] = y0;
            p.q_out[at + n[1]] = y1;
          } else {
            if (s == 1 && p.k_out) {
              p.k_out[at + n[0]] = y0;
              p.k_out[at + n[1]] = y1;
            }
            const int32_t slot = p.slots[t];
            if (slot >= 0 && slot < p.cache_rows) {
              void* cache = s == 1 ? p.k_cache : p.v_cache;
              const int64_t c = static_cast<int64_t>(slot) * p.N[s];
              store_any(cache, p.cache_type, c + n[0], y0);
              store_any(cache, p.cache_type, c + n[1], y1);
            } else if (s == 1 && n[0] == 0) {
              report(p.err, kErrSlot);
            }
          }
        }
      }
    }
  }
  if constexpr (kSample) {
    // Each block's best goes out, and the last block to finish merges them all and
    // draws (its loads of the logits go through L2, where the other blocks wrote them).
    __shared__ SampleBest warp_best[kWarps];
    __shared__ double warp_sums[kWarps];
    __shared__ SampleBest all_best;
    __shared__ float all_draw[kSampleParamCount];
    __shared__ int last, picked;
    if (lane == 0) warp_best[warp] = best;
    __syncthreads();
    if (warp == 0) {
      SampleBest b = lane < kWarps ? warp_best[lane] : SampleBest{-INFINITY, -1};
      b = sample_warp_best(b);
      if (lane == 0) {
        __stcg(reinterpret_cast<int2*>(p.sample_partials + blockIdx.x),
               make_int2(__float_as_int(b.v), b.i));
        // Release: this block's logits (ordered before by the barrier) and its best,
        // before its count; acquire: the last block then sees every block's. One
        // acq_rel atomic in place of two full fences on the launch's last path.
        last = count_acq_rel(p.sample_counter) == gridDim.x - 1;
      }
    }
    __syncthreads();
    if (!last) return;
    if (warp == 0) {
      // The parameters' load goes out with the partials' (inputs of the step: complete
      // since the GEMV's programmatic-launch wait).
      const float draw = lane < kSampleParamCount ? __ldcg(p.sample_params + lane) : 0.f;
      // Every block's best in one round of loads (a block per multiprocessor: up to 256
      // in flight at once, the rest after).
      constexpr int kAtOnce = 8;
      const int blocks = static_cast<int>(gridDim.x);
      int2 v[kAtOnce];
#pragma unroll
      for (int k = 0; k < kAtOnce; k++) {
        const int i = lane + 32 * k;
        v[k] = i < blocks ? __ldcg(reinterpret_cast<const int2*>(p.sample_partials + i))
                          : make_int2(0, -1);
      }
      SampleBest b{-INFINITY, -1};
#pragma unroll
      for (int k = 0; k < kAtOnce; k++)
        b = sample_better(b, SampleBest{__int_as_float(v[k].x), v[k].y});
      for (int i = lane + 32 * kAtOnce; i < blocks; i += 32) {
        const int2 w = __ldcg(reinterpret_cast<const int2*>(p.sample_partials + i));
        b = sample_better(b, SampleBest{__int_as_float(w.x), w.y});
      }
      b = sample_warp_best(b);
      if (lane == 0) {
        all_best = b;
        picked = b.i < 0 ? 0 : b.i;
        *p.sample_counter = 0;  // for the next launch
      }
      if (lane < kSampleParamCount) all_draw[lane] = draw;
    }
    // Every read of the params and the logits is done before the id is written (the
    // planner may place it in memory this launch reads).
    __syncthreads();
    const SampleCut cut = sample_cuts<kThreads, true>(p.y[0], p.N[0], all_best, all_draw[0],
                                                      all_draw[2], all_draw[3], all_draw[4]);
    sample_temperature<kThreads, true>(p.y[0], p.N[0], all_best, all_draw[0], all_draw[1], cut,
                                       warp_sums, &picked);
    if (tid == 0) *p.sample_out = picked;
  }
}

constexpr int kRingStages = 3;  // batches per warp in the staged kernels' rings
constexpr size_t kRingBytes = size_t{kWarps} * kRingStages * kRows * kUnroll * 32 * (16 + 4);

template <int kL, int TMAX>
void set_smem_limit() {
  LLM_CUDA_CHECK(cudaFuncSetAttribute(qgemv_kernel<kL, TMAX, 0>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(kQGemvMaxSmem)));
}

template <int kL, int TMAX, int S, bool kSample = false>
void launch_one(cudaStream_t stream, const Params& p, unsigned grid, size_t smem, bool pdl) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  LLM_CUDA_CHECK(cudaLaunchKernelEx(&cfg, qgemv_kernel<kL, TMAX, S, kSample>, p));
}

template <int kL>
void launch(cudaStream_t stream, const Params& p, unsigned grid, size_t smem, bool pdl,
            bool staged) {
  if (p.sample_out && staged)
    launch_one<kL, 1, kRingStages, true>(stream, p, grid, smem, pdl);
  else if (p.sample_out)
    launch_one<kL, 1, 0, true>(stream, p, grid, smem, pdl);
  else if (staged && p.T == 1)
    launch_one<kL, 1, kRingStages>(stream, p, grid, smem, pdl);
  else if (p.T == 1)
    launch_one<kL, 1, 0>(stream, p, grid, smem, pdl);
  else if (p.T == 2)
    launch_one<kL, 2, 0>(stream, p, grid, smem, pdl);
  else if (p.T <= 4)
    launch_one<kL, 4, 0>(stream, p, grid, smem, pdl);
  else
    launch_one<kL, 8, 0>(stream, p, grid, smem, pdl);
  LLM_CUDA_CHECK_LAUNCH("qgemv_kernel");
}

// LLM_CUDA_QGEMV_KSPLIT=1|2|4|8 fixes the warps per task (for measuring); 0 or unset
// chooses by shape.
int qgemv_ksplit_override() {
  static const int v = [] {
    const char* e = std::getenv("LLM_CUDA_QGEMV_KSPLIT");
    const int k = e ? std::atoi(e) : 0;
    return k == 1 || k == 2 || k == 4 || k == 8 ? k : 0;
  }();
  return v;
}

}  // namespace

size_t qgemv_sample_scratch_bytes(int n_sms) {
  return sizeof(SampleBest) * static_cast<size_t>(n_sms) + sizeof(unsigned);
}

size_t qgemv_smem_bytes(int64_t T, int64_t K) {
  return static_cast<size_t>(T) * (2 * K + 8 * (K / kBlock));
}

namespace {

template <int kL>
void prepare_layout(int smem_optin) {
  // The staged kernels may take all the device offers beside their static arrays.
  for (auto* k : {qgemv_kernel<kL, 1, kRingStages>, qgemv_kernel<kL, 1, kRingStages, true>}) {
    cudaFuncAttributes fa{};
    LLM_CUDA_CHECK(cudaFuncGetAttributes(&fa, k));
    LLM_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        smem_optin - static_cast<int>(fa.sharedSizeBytes)));
  }
  set_smem_limit<kL, 1>();
  set_smem_limit<kL, 2>();
  set_smem_limit<kL, 4>();
  set_smem_limit<kL, 8>();
  LLM_CUDA_CHECK(cudaFuncSetAttribute(qgemv_kernel<kL, 1, 0, true>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(kQGemvMaxSmem)));
}

}  // namespace

void qgemv_prepare(int smem_optin) {
  // Per call rather than once: the attribute belongs to the current device.
  prepare_layout<kLayoutQ8_0>(smem_optin);
  prepare_layout<kLayoutQ4_0>(smem_optin);
  prepare_layout<kLayoutQ4_1>(smem_optin);
}

void qgemv(cudaStream_t stream, const QGemvArgs& a, int n_sms, int smem_optin) {
  if (a.T < 1 || a.T > kQGemvMaxTokens) fail("cuda qgemv: %lld tokens", (long long)a.T);
  if (a.n_segs < 1 || a.n_segs > kGemvMaxSegs) fail("cuda qgemv: %d matrices", a.n_segs);
  if (a.K % kBlock != 0 || !aligned16(a.x)) fail("cuda qgemv: bad x");
  const size_t smem = qgemv_smem_bytes(a.T, a.K);
  if (smem > kQGemvMaxSmem) fail("cuda qgemv: %zu bytes of shared memory", smem);
  Params p{};
  p.x = a.x;
  p.T = static_cast<int>(a.T);
  p.K = static_cast<int>(a.K);
  p.nb = p.K / kBlock;
  p.ss = static_cast<int>(qsplit_scale_stride(a.K));
  p.C = layout_is_q4(layout_of(a.type)) ? p.nb : 2 * p.nb;
  p.n_segs = a.n_segs;
  int rows = 0;
  for (int s = 0; s < a.n_segs; s++) {
    const QGemvSeg& g = a.segs[s];
    if (g.w.type != a.type || g.w.K != a.K) fail("cuda qgemv: segments differ in dtype or K");
    p.qs[s] = g.w.qs;
    p.sc[s] = g.w.scales;
    p.bias[s] = g.bias;
    p.bias_type[s] = static_cast<int>(g.bias_type);
    p.y[s] = g.y;
    p.N[s] = static_cast<int>(g.w.N);
    p.row0[s] = rows;
    rows += p.N[s];
  }
  p.row0[a.n_segs] = rows;
  p.pair = a.epilogue == QEpilogue::SiluPair;
  if (p.pair && (a.n_segs != 2 || p.N[0] != p.N[1])) fail("cuda qgemv: bad silu pair");
  if (a.epilogue == QEpilogue::Residual && a.n_segs != 1) fail("cuda qgemv: bad residual");
  if (a.epilogue == QEpilogue::Sample) {
    if (a.T != 1 || a.n_segs != 1 || !a.segs[0].y || !a.sample_params || !a.sample_out ||
        !a.sample_scratch)
      fail("cuda qgemv: bad sample epilogue");
    p.sample_params = a.sample_params;
    p.sample_out = a.sample_out;
    p.sample_partials = static_cast<SampleBest*>(a.sample_scratch);
    p.sample_counter = reinterpret_cast<unsigned*>(p.sample_partials + n_sms);
  }
  if (a.epilogue == QEpilogue::RopeKv) {
    const RopeKvArgs& r = a.rope;
    if (a.n_segs != 3 || r.head_dim % 2 != 0 || r.rot_dims % 2 != 0 || r.rot_dims > r.head_dim ||
        p.N[0] != r.n_heads * r.head_dim || p.N[1] != r.n_kv_heads * r.head_dim ||
        p.N[2] != p.N[1] || !r.q_out || !r.positions || !r.inv_freq || !r.slots)
      fail("cuda qgemv: bad rope epilogue");
    p.head_dim = r.head_dim;
    p.rot_half = r.rot_dims / 2;
    p.neox = r.style == RopeStyle::NeoX;
    p.positions = r.positions;
    p.inv_freq = r.inv_freq;
    p.slots = r.slots;
    p.q_out = r.q_out;
    p.k_out = r.k_out;
    p.k_cache = r.k_cache;
    p.v_cache = r.v_cache;
    p.cache_type = static_cast<int>(r.cache_type);
    p.cache_rows = r.cache_rows;
    p.err = r.err;
  }
  p.n_tasks = p.pair ? p.N[0] : (rows + kRows - 1) / kRows;
  if (p.n_tasks == 0) return;
  p.norm_w = a.norm_w;
  p.norm_type = static_cast<int>(a.norm_type);
  p.eps = a.eps;
  p.norm_out = a.norm_out;
  p.epilogue = static_cast<int>(a.epilogue);
  p.residual = a.residual;
  p.residual_early = a.residual_early;
  p.out2 = a.out2;
  // One wave: a block per multiprocessor, fewer when there is less work. When
  // the tasks (row pairs) would not occupy half the warps of that wave and K is long,
  // warps split the iterations of a task: more of the GPU streams, and each warp's chain
  // of loads is shorter. (H200: llama-1b's down projection, 1,024 pairs over K = 5,632,
  // gains 5% a token; splitting llama-7b's, 2,048 pairs, loses 5-20%; measured with
  // three blocks of 8 warps.)
  const int64_t max_blocks = n_sms;
  const int n_it = (p.C + 32 * kUnroll - 1) / (32 * kUnroll);
  p.ksplit = qgemv_ksplit_override();
  if (p.ksplit == 0) {
    p.ksplit = 1;
    while (p.ksplit < 8 && 2 * p.ksplit <= n_it &&
           2 * int64_t{p.n_tasks} * p.ksplit < max_blocks * kWarps)
      p.ksplit *= 2;
  }
  const int64_t want = (int64_t{p.n_tasks} * p.ksplit + kWarps - 1) / kWarps;
  const unsigned grid = static_cast<unsigned>(std::max<int64_t>(1, std::min(want, max_blocks)));
  // The rings go after x (16-byte aligned); the static arrays need up to about 6 KB
  // besides (ptxas -v: 6,064 bytes in the kernels that sample, for the cut search).
  p.stage_off = static_cast<int>((smem + 15) / 16 * 16);
  const size_t staged_smem = p.stage_off + kRingBytes;
  const bool staged =
      p.T == 1 && a.allow_staged && staged_smem + 8192 <= static_cast<size_t>(smem_optin);
  const size_t dyn = staged ? staged_smem : smem;
  with_layout(a.type, [&](auto l) { launch<l()>(stream, p, grid, dyn, a.pdl, staged); });
}

}  // namespace cuda
}  // namespace llm
