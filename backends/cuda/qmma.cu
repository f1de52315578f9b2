// Batched-decode GEMM over Q4_0 / Q4_1 / Q8_0 matrices in the split layout: y[T, N] = x · Wᵀ
// (+ bias) for up to three matrices of one x (q/k/v, gate/up: their row tiles side by
// side in one grid) on the tensor cores (mma.sync m16n8k16, f16 operands, f32 accumulators),
// reading the quantized blocks straight from memory: one pass over the weights per
// 64 tokens, where dequantizing the whole matrix to f16 for cuBLAS reads and writes it
// several times over.
//
// The weights are the MMA's A operand (16 rows of W per tile) and the tokens its B
// operand (8 tokens per tile), so a handful of tokens still fills the instruction.
// A thread of the MMA holds 4 k-slots per row and step; since a dot product does not
// care in which order k comes, each thread takes a whole quantized block of each of its
// rows (4 threads: 4 consecutive blocks, 64 bytes of a row), and
// step s (of 8 per 128 columns) uses elements 4s..4s+3 of its block (low or high
// nibbles of one word for Q4_0 / Q4_1, one word for Q8_0), as (e0, e2) and (e1, e3) so that
// the nibble-to-half trick needs no byte shuffles. x is converted once to f16 in that
// same order ("fragment order", qmma_convert_x), so A and B fragments are single 16- and
// 8-byte loads from shared memory with no bank conflicts.
//
// A block takes 128 rows and up to 64 tokens; chunks of 128 columns (4 blocks of each
// row: 64 bytes of Q4_0 quants, 4 scales, and the tokens' x) stream into shared memory
// through a cp.async pipeline several chunks deep, so the weights keep arriving while
// the tensor cores work. (Scale rows are padded to groups of 4, see qsplit_scale_stride.)
//
// Values are those of the cuBLAS path: x rounded to f16 (saturating), each weight
// (q - 8) * d, q * d + m or q * d rounded to f16 once, products summed in float32.
//
// Few row tiles (N / 128) cannot fill the GPU, so the columns are split (split-K):
// each split writes float32 partials and a second kernel adds them in split order
// (deterministic), adds the bias and writes y. A residual add after the matmul runs in
// whichever kernel writes y.
//
// The conversion of x into fragment order can compute the node that produced x on the
// way (an RmsNorm, a SiLU-gated product), so that node needs no launch of its own.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kMT = 2;                            // m16 tiles (of weight rows) per warp
constexpr int kRowsPerBlock = kWarps * kMT * 16;  // 128
constexpr int kChunk = 128;                       // columns per iteration: 4 quant blocks
constexpr int kSteps = kChunk / 16;               // k16 MMA steps per chunk
constexpr int kMaxNT = 8;                         // n8 tiles (tokens / 8) per block

// One matrix of the launch; its row tiles are blockIdx.x in [tile0, next seg's tile0),
// its outputs columns [n0, n0 + N) of the partials.
struct SegParams {
  const uint8_t* qs;
  const uint16_t* sc;
  const void* bias;
  float* y;
  int ss, N, tile0, n0, bias_type;
};

struct Params {
  const __half* x16;  // fragment order, [chunks][kSteps][Tpad][16]
  int T, Tpad, K, nb, n_chunks;
  SegParams seg[kQMmaMaxSegs];
  int n_segs, N_total;
  const float* residual;  // residual epilogue (one segment): out2 = residual + y
  float* out2;
  int splits, chunks_per_split;
  float* partials;  // [splits][T][N_total] when splits > 1
};

// The segment that holds row tile / output column `key` (selects, no indexed loads
// from the parameter space).
template <typename F>
__device__ __forceinline__ SegParams seg_of(const Params& p, int key, F start) {
  SegParams s = p.seg[0];
#pragma unroll
  for (int i = 1; i < kQMmaMaxSegs; i++)
    if (i < p.n_segs && key >= start(p.seg[i])) s = p.seg[i];
  return s;
}

// y and the residual epilogue's out2 for output (t, n) of segment s.
__device__ __forceinline__ void store_out(const Params& p, const SegParams& s, int t, int n,
                                          float v) {
  if (s.bias) v += load_any(s.bias, s.bias_type, n);
  const size_t i = static_cast<size_t>(t) * s.N + n;
  if (s.y) s.y[i] = v;
  if (p.out2) p.out2[i] = p.residual[i] + v;
}

__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 bits_h2(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

// Step s of one row's block: (e0, e2) and (e1, e3) of elements 4s..4s+3, times d.
// 0x6400 | n is the half 1024 + n, exact for n < 1024.
__device__ __forceinline__ void dequant_step_q4(const uint4& q, int s, __half2 d, uint32_t& lo,
                                                uint32_t& hi) {
  const uint32_t w = (&q.x)[s & 3] >> ((s >> 2) * 4);           // high nibbles: elements 16..31
  const __half2 bias = __half2half2(__ushort_as_half(0x6408));  // 1032 = 1024 + 8
  lo = h2_bits(__hmul2(__hsub2(bits_h2((w & 0x000f000fu) | 0x64006400u), bias), d));
  hi = h2_bits(__hmul2(__hsub2(bits_h2(((w >> 8) & 0x000f000fu) | 0x64006400u), bias), d));
}

// Q4_1: q * d + m, one rounding (a fused multiply-add in f16).
__device__ __forceinline__ void dequant_step_q4_1(const uint4& q, int s, __half2 d, __half2 m,
                                                  uint32_t& lo, uint32_t& hi) {
  const uint32_t w = (&q.x)[s & 3] >> ((s >> 2) * 4);
  const __half2 bias = __half2half2(__ushort_as_half(0x6400));  // 1024
  lo = h2_bits(__hfma2(__hsub2(bits_h2((w & 0x000f000fu) | 0x64006400u), bias), d, m));
  hi = h2_bits(__hfma2(__hsub2(bits_h2(((w >> 8) & 0x000f000fu) | 0x64006400u), bias), d, m));
}

__device__ __forceinline__ void dequant_step_q8(const uint4& q0, const uint4& q1, int s, __half2 d,
                                                uint32_t& lo, uint32_t& hi) {
  const uint32_t w = (s < 4 ? (&q0.x)[s] : (&q1.x)[s - 4]) ^ 0x80808080u;  // b + 128
  const __half2 bias = __half2half2(__ushort_as_half(0x6480));             // 1152
  lo = h2_bits(__hmul2(__hsub2(bits_h2((w & 0x00ff00ffu) | 0x64006400u), bias), d));
  hi = h2_bits(__hmul2(__hsub2(bits_h2(((w >> 8) & 0x00ff00ffu) | 0x64006400u), bias), d));
}

// Pipeline depth: chunks in flight while one is computed.
template <int kL>
__host__ __device__ constexpr int stages() {
  return layout_is_q4(kL) ? 4 : 3;
}

// One stage of shared memory: the chunk's weights (quants and scales of 4 blocks for
// each of the block's rows; Q4_1: (d, min) pairs) and its x in fragment order.
template <int kL, int NT>
struct Stage {
  static constexpr int kQB = layout_is_q4(kL) ? 16 : 32;  // quant bytes per block
  static constexpr int kTok = 8 * NT;
  using Scale = std::conditional_t<kL == kLayoutQ4_1, uint32_t, uint16_t>;
  uint8_t q[kRowsPerBlock][4 * kQB];
  Scale d[kRowsPerBlock][4];
  __half x[kSteps][kTok][16];
};

template <int kL, int NT>
constexpr size_t smem_bytes() {
  return sizeof(Stage<kL, NT>) * stages<kL>();
}

template <int kL, int NT>
__global__ void __launch_bounds__(kThreads) qmma_kernel(const Params p) {
  using St = Stage<kL, NT>;
  constexpr bool kQ4 = layout_is_q4(kL), kMin = kL == kLayoutQ4_1;
  constexpr int kQB = St::kQB, kTok = St::kTok, kStages = stages<kL>();
  extern __shared__ __align__(16) uint8_t smem_raw[];
  St* stage = reinterpret_cast<St*>(smem_raw);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, c = lane & 3;
  const SegParams sg = seg_of(p, blockIdx.x, [](const SegParams& s) { return s.tile0; });
  const int row0 = (blockIdx.x - sg.tile0) * kRowsPerBlock;
  const int tok0 = blockIdx.y * kTok;
  const int split = blockIdx.z;
  const int ch0 = split * p.chunks_per_split;
  const int ch1 = min(p.n_chunks, ch0 + p.chunks_per_split);

  // Everything of chunk ch into stage st, asynchronously (one commit group).
  auto load_stage = [&](int ch, int st) {
    St& S = stage[st];
    constexpr int kRowPieces = 4 * kQB / 16;  // 16-byte pieces per row and chunk
    for (int i = tid; i < kRowsPerBlock * kRowPieces; i += kThreads) {
      const int r = i / kRowPieces, piece = i % kRowPieces;
      const int row = min(row0 + r, sg.N - 1);
      const int blk = ch * 4 + piece * 16 / kQB;
      cp_async16_zfill(&S.q[r][piece * 16],
                       sg.qs + (static_cast<size_t>(row) * p.nb + blk) * kQB + piece * 16 % kQB,
                       blk < p.nb);
    }
    for (int r = tid; r < kRowsPerBlock; r += kThreads) {
      const int row = min(row0 + r, sg.N - 1);
      const size_t at = static_cast<size_t>(row) * sg.ss + ch * 4;
      if constexpr (kMin)
        cp_async16(&S.d[r][0], sg.sc + 2 * at);
      else
        cp_async8(&S.d[r][0], sg.sc + at);
    }
    constexpr int kXPieces = kSteps * kTok * 2;
    for (int i = tid; i < kXPieces; i += kThreads) {
      const int s = i / (kTok * 2), r = i % (kTok * 2);
      cp_async16(&S.x[s][0][0] + r * 8,
                 p.x16 + ((static_cast<size_t>(ch) * kSteps + s) * p.Tpad + tok0) * 16 + r * 8);
    }
  };

  float acc[kMT][NT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; mt++)
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.f;

#pragma unroll
  for (int st = 0; st < kStages - 1; st++) {
    if (ch0 + st < ch1) load_stage(ch0 + st, st);
    cp_async_commit();
  }
  for (int ch = ch0, i = 0; ch < ch1; ch++, i++) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage i is in; stage i - 1 is free again
    if (ch + kStages - 1 < ch1) load_stage(ch + kStages - 1, (i + kStages - 1) % kStages);
    cp_async_commit();
    const St& S = stage[i % kStages];
    // This thread's block c of its rows (g, g + 8 of each m16 tile).
    uint4 q[kMT][2][kQ4 ? 1 : 2];
    __half2 d[kMT][2], m[kMT][2];
#pragma unroll
    for (int mt = 0; mt < kMT; mt++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = warp * kMT * 16 + mt * 16 + h * 8 + g;
        const uint4* src = reinterpret_cast<const uint4*>(&S.q[r][c * kQB]);
        q[mt][h][0] = src[0];
        if constexpr (!kQ4) q[mt][h][kQ4 ? 0 : 1] = src[1];
        d[mt][h] = __half2half2(__ushort_as_half(static_cast<uint16_t>(S.d[r][c])));
        if constexpr (kMin)
          m[mt][h] = __half2half2(__ushort_as_half(static_cast<uint16_t>(S.d[r][c] >> 16)));
      }
#pragma unroll
    for (int s = 0; s < kSteps; s++) {
      uint32_t b[NT][2];
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const uint2 v = *reinterpret_cast<const uint2*>(&S.x[s][nt * 8 + g][c * 4]);
        b[nt][0] = v.x;
        b[nt][1] = v.y;
      }
#pragma unroll
      for (int mt = 0; mt < kMT; mt++) {
        uint32_t a[4];
        if constexpr (kMin) {
          dequant_step_q4_1(q[mt][0][0], s, d[mt][0], m[mt][0], a[0], a[2]);
          dequant_step_q4_1(q[mt][1][0], s, d[mt][1], m[mt][1], a[1], a[3]);
        } else if constexpr (kQ4) {
          dequant_step_q4(q[mt][0][0], s, d[mt][0], a[0], a[2]);
          dequant_step_q4(q[mt][1][0], s, d[mt][1], a[1], a[3]);
        } else {
          dequant_step_q8(q[mt][0][0], q[mt][0][kQ4 ? 0 : 1], s, d[mt][0], a[0], a[2]);
          dequant_step_q8(q[mt][1][0], q[mt][1][kQ4 ? 0 : 1], s, d[mt][1], a[1], a[3]);
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++) mma16816(acc[mt][nt], a, b[nt][0], b[nt][1]);
      }
    }
  }
  cp_async_wait<0>();

  // acc[mt][nt]: rows row_base + mt*16 + g (+8), tokens tok0 + nt*8 + 2c (+1).
  const int row_base = row0 + warp * kMT * 16;  // of the segment
  auto for_each_out = [&](auto&& fn) {
#pragma unroll
    for (int mt = 0; mt < kMT; mt++)
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
          const int n = row_base + mt * 16 + g + (i >> 1) * 8;
          const int t = tok0 + nt * 8 + 2 * c + (i & 1);
          if (n < sg.N && t < p.T) fn(n, t, acc[mt][nt][i]);
        }
  };
  if (p.splits == 1) {
    for_each_out([&](int n, int t, float v) { store_out(p, sg, t, n, v); });
    return;
  }
  float* part = p.partials + static_cast<size_t>(split) * p.T * p.N_total + sg.n0;
  for_each_out([&](int n, int t, float v) { part[static_cast<size_t>(t) * p.N_total + n] = v; });
}

// y = the splits' partials added in split order (+ bias, + the epilogue): every
// multiprocessor takes part, where one block per tile would add them up one after
// another.
__global__ void reduce_kernel(const Params p) {
  const int64_t total = static_cast<int64_t>(p.T) * p.N_total;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    float v = 0.f;
#pragma unroll 8
    for (int sp = 0; sp < p.splits; sp++) v += __ldcg(p.partials + sp * total + i);
    const int t = static_cast<int>(i / p.N_total), col = static_cast<int>(i % p.N_total);
    const SegParams sg = seg_of(p, col, [](const SegParams& s) { return s.n0; });
    store_out(p, sg, t, col - sg.n0, v);
  }
}

// f32 -> f16, saturating at ±65504 (NaN stays NaN), as the cuBLAS path rounds x.
__device__ __forceinline__ __half sat_half(float v) {
  if (!(v != v)) v = fminf(fmaxf(v, -65504.f), 65504.f);
  return __float2half_rn(v);
}

// Four values of one token, as fragment order stores them: (e0, e2, e1, e3).
__device__ __forceinline__ void put4(__half* h, float4 v) {
  h[0] = sat_half(v.x);
  h[1] = sat_half(v.z);
  h[2] = sat_half(v.y);
  h[3] = sat_half(v.w);
}

// Group i of x16: chunk, k16 step and token.
struct Group {
  int ch, s, t;
};
__device__ __forceinline__ Group group_of(int64_t i, int Tpad) {
  return {static_cast<int>(i / (static_cast<int64_t>(Tpad) * kSteps)),
          static_cast<int>((i / Tpad) % kSteps), static_cast<int>(i % Tpad)};
}

__device__ __forceinline__ void store_group(__half* x16, int64_t i, const __half* h) {
  uint4* dst = reinterpret_cast<uint4*>(x16 + i * 16);
  dst[0] = *reinterpret_cast<const uint4*>(&h[0]);
  dst[1] = *reinterpret_cast<const uint4*>(&h[8]);
}

// One thread per (chunk, step, token): 4 elements of each of the chunk's 4 blocks; x
// itself or, kSilu, silu(x) * x2 (written to `out` as well when set).
template <bool kSilu>
__global__ void convert_x_kernel(const QMmaConvertArgs a, int Tpad, int n_chunks,
                                 __half* __restrict__ out) {
  const int T = static_cast<int>(a.T), K = static_cast<int>(a.K);
  const int64_t total = static_cast<int64_t>(n_chunks) * kSteps * Tpad;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const Group g = group_of(i, Tpad);
    __half h[16];
#pragma unroll
    for (int blk = 0; blk < 4; blk++) {
      const int k = g.ch * kChunk + blk * 32 + 4 * g.s;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (g.t < T && k < K) {
        const size_t at = static_cast<size_t>(g.t) * K + k;
        v = __ldg(reinterpret_cast<const float4*>(a.x + at));
        if constexpr (kSilu) {
          const float4 u = *reinterpret_cast<const float4*>(a.x2 + at);
          v = make_float4(silu(v.x) * u.x, silu(v.y) * u.y, silu(v.z) * u.z, silu(v.w) * u.w);
          if (a.out) *reinterpret_cast<float4*>(a.out + at) = v;
        }
      }
      put4(&h[blk * 4], v);
    }
    store_group(out, i, h);
  }
}

// One block per token (Tpad blocks; the padding tokens get zeros): the token's sum of
// squares in rms_norm_kernel's order (same threads, so the same bits), then its
// normalized values into x16 (and `out` when set).
__global__ void convert_rms_norm_kernel(const QMmaConvertArgs a, int Tpad, int n_chunks,
                                        __half* __restrict__ out) {
  __shared__ float red[32];
  const int t = blockIdx.x, K = static_cast<int>(a.K);
  const bool real = t < a.T;
  const float* xr = a.x + static_cast<size_t>(t) * K;
  float inv = 0.f;
  if (real) {
    float ss = 0.f;
    for (int i = threadIdx.x; i < K; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
    ss = block_sum(ss, red);
    inv = 1.f / sqrtf(ss / static_cast<float>(K) + a.eps);
  }
  const int w_type = static_cast<int>(a.norm_type);
  for (int gi = threadIdx.x; gi < n_chunks * kSteps; gi += blockDim.x) {
    const int ch = gi / kSteps, s = gi % kSteps;
    __half h[16];
#pragma unroll
    for (int blk = 0; blk < 4; blk++) {
      const int k = ch * kChunk + blk * 32 + 4 * s;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (real && k < K) {
        v = *reinterpret_cast<const float4*>(xr + k);
        v.x = (v.x * inv) * load_any(a.norm_w, w_type, k);
        v.y = (v.y * inv) * load_any(a.norm_w, w_type, k + 1);
        v.z = (v.z * inv) * load_any(a.norm_w, w_type, k + 2);
        v.w = (v.w * inv) * load_any(a.norm_w, w_type, k + 3);
        if (a.out) *reinterpret_cast<float4*>(a.out + static_cast<size_t>(t) * K + k) = v;
      }
      put4(&h[blk * 4], v);
    }
    store_group(out, (static_cast<int64_t>(ch) * kSteps + s) * Tpad + t, h);
  }
}

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::max<int64_t>(1, std::atoll(v)) : fallback;
}

int tokens_per_block(int64_t T) { return T <= 16 ? 16 : (T <= 32 ? 32 : 64); }

// Calls f(std::integral_constant<int, kL>, std::integral_constant<int, NT>) with the
// kernel variant that takes T tokens of `type`.
template <typename F>
void with_variant(DType type, int64_t T, F&& f) {
  with_layout(type, [&](auto l) {
    switch (tokens_per_block(T) / 8) {
      case 2:
        f(l, std::integral_constant<int, 2>{});
        break;
      case 4:
        f(l, std::integral_constant<int, 4>{});
        break;
      default:
        f(l, std::integral_constant<int, kMaxNT>{});
    }
  });
}

// Raises the kernel's limit where the device has the room (kernels that do not fit are
// never launched: see qmma_fits).
template <int kL, int NT>
void set_smem_limit(int smem_optin) {
  if (smem_bytes<kL, NT>() > static_cast<size_t>(smem_optin)) return;
  LLM_CUDA_CHECK(cudaFuncSetAttribute(qmma_kernel<kL, NT>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem_bytes<kL, NT>())));
}

int64_t n_chunks(int64_t K) { return (K + kChunk - 1) / kChunk; }
int64_t tokens_padded(int64_t T) {
  const int64_t b = tokens_per_block(T);
  return (T + b - 1) / b * b;
}

}  // namespace

void qmma_prepare(int smem_optin) {
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1})
    for (int64_t T : {16, 32, 64})
      with_variant(t, T, [&](auto l, auto nt) {
        set_smem_limit<decltype(l)::value, decltype(nt)::value>(smem_optin);
      });
}

bool qmma_fits(DType type, int64_t T, int smem_optin) {
  size_t need = 0;
  with_variant(type, T, [&](auto l, auto nt) {
    need = smem_bytes<decltype(l)::value, decltype(nt)::value>();
  });
  return need <= static_cast<size_t>(smem_optin);
}

size_t qmma_x16_elems(int64_t T, int64_t K) {
  return static_cast<size_t>(n_chunks(K) * kSteps * tokens_padded(T) * 16);
}

int qmma_splits(const QMmaArgs& a, int n_sms) {
  // Tuning knob for measurements: LLM_CUDA_QMMA_MAX_SPLITS.
  static const int64_t max_splits = env_int("LLM_CUDA_QMMA_MAX_SPLITS", 8);
  const int64_t T = a.T;
  int64_t row_tiles = 0;
  for (int i = 0; i < a.n_segs; i++)
    row_tiles += (a.segs[i].w.N + kRowsPerBlock - 1) / kRowsPerBlock;
  const int64_t tiles = row_tiles * ((T + tokens_per_block(T) - 1) / tokens_per_block(T));
  // Blocks that fit on one multiprocessor at once, and the pipeline's depth.
  int per_sm = 0, fill = 0;
  with_variant(a.segs[0].w.type, T, [&](auto l, auto nt) {
    constexpr int kL = decltype(l)::value;
    constexpr int NT = decltype(nt)::value;
    LLM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, qmma_kernel<kL, NT>,
                                                                 kThreads, smem_bytes<kL, NT>()));
    fill = stages<kL>() - 1;
  });
  const int64_t slots = int64_t{n_sms} * std::max(1, per_sm), chunks = n_chunks(a.segs[0].w.K);
  // A block's time is about its chunks plus the pipeline's fill, and a launch takes as
  // many of those as it has waves of blocks: a last wave a quarter full costs a whole
  // one. More splits also write and add more partials, so ties go to fewer.
  int best = 1;
  int64_t best_cost = INT64_MAX;
  for (int64_t s = 1; s <= std::max<int64_t>(1, std::min(max_splits, chunks / 2)); s++) {
    const int64_t waves = (tiles * s + slots - 1) / slots;
    const int64_t cost = waves * ((chunks + s - 1) / s + fill);
    if (cost < best_cost) {
      best_cost = cost;
      best = static_cast<int>(s);
    }
  }
  return best;
}

size_t qmma_partials_floats(const QMmaArgs& a) {
  if (a.splits <= 1) return 0;
  size_t cols = 0;
  for (int i = 0; i < a.n_segs; i++) cols += static_cast<size_t>(a.segs[i].w.N);
  return static_cast<size_t>(a.splits) * a.T * cols;
}

void qmma_convert(cudaStream_t stream, const QMmaConvertArgs& a, __half* x16) {
  if (a.T <= 0) return;
  if (a.K % 32 != 0 || !aligned16(a.x) || (a.x2 && !aligned16(a.x2)) ||
      (a.out && !aligned16(a.out)))
    fail("cuda qmma_convert: K %lld or x not 16-byte aligned", (long long)a.K);
  const int Tpad = static_cast<int>(tokens_padded(a.T)), nc = static_cast<int>(n_chunks(a.K));
  const int64_t groups = int64_t{nc} * kSteps * Tpad;
  switch (a.kind) {
    case QMmaInput::Plain:
      convert_x_kernel<false><<<grid_for(groups, 256), 256, 0, stream>>>(a, Tpad, nc, x16);
      break;
    case QMmaInput::SiluMul:
      if (!a.x2) fail("cuda qmma_convert: SiluMul without its second input");
      convert_x_kernel<true><<<grid_for(groups, 256), 256, 0, stream>>>(a, Tpad, nc, x16);
      break;
    case QMmaInput::RmsNorm:
      if (!a.norm_w) fail("cuda qmma_convert: RmsNorm without its weight");
      convert_rms_norm_kernel<<<static_cast<unsigned>(Tpad), norm_threads(a.K), 0, stream>>>(
          a, Tpad, nc, x16);
      break;
  }
  LLM_CUDA_CHECK_LAUNCH("qmma_convert");
}

void qmma(cudaStream_t stream, const QMmaArgs& a) {
  const int64_t T = a.T;
  if (a.n_segs < 1 || a.n_segs > kQMmaMaxSegs) fail("cuda qmma: %d matrices", a.n_segs);
  const QMatrix& w0 = a.segs[0].w;
  const int64_t K = w0.K;
  if (T <= 0) return;
  if (K % 32 != 0 || K / 32 > (int64_t{1} << 26)) fail("cuda qmma: bad K %lld", (long long)K);
  if (a.splits > 1 && !a.partials) fail("cuda qmma: splits without partials");
  if (a.out2 && (a.n_segs != 1 || !a.residual)) fail("cuda qmma: bad residual epilogue");
  Params p{};
  p.x16 = a.x16;
  p.T = static_cast<int>(T);
  p.Tpad = static_cast<int>(tokens_padded(T));
  p.K = static_cast<int>(K);
  p.nb = static_cast<int>(K / 32);
  p.n_chunks = static_cast<int>(n_chunks(K));
  int64_t tiles = 0, cols = 0;
  for (int i = 0; i < a.n_segs; i++) {
    const QMmaSeg& s = a.segs[i];
    if (s.w.K != K || s.w.type != w0.type) fail("cuda qmma: matrices of different K or type");
    if (s.w.N <= 0 || tiles + s.w.N / kRowsPerBlock + 1 > (int64_t{1} << 30))
      fail("cuda qmma: bad N %lld", (long long)s.w.N);
    SegParams& sp = p.seg[i];
    sp.qs = s.w.qs;
    sp.sc = s.w.scales;
    sp.bias = s.bias;
    sp.bias_type = static_cast<int>(s.bias_type);
    sp.y = s.y;
    sp.ss = static_cast<int>(s.w.scale_stride);
    sp.N = static_cast<int>(s.w.N);
    sp.tile0 = static_cast<int>(tiles);
    sp.n0 = static_cast<int>(cols);
    tiles += (s.w.N + kRowsPerBlock - 1) / kRowsPerBlock;
    cols += s.w.N;
  }
  p.n_segs = a.n_segs;
  p.N_total = static_cast<int>(cols);
  p.residual = a.residual;
  p.out2 = a.out2;
  p.splits = std::max(1, a.splits);
  p.chunks_per_split = (p.n_chunks + p.splits - 1) / p.splits;
  p.partials = a.partials;
  const dim3 grid(static_cast<unsigned>(tiles),
                  static_cast<unsigned>((T + tokens_per_block(T) - 1) / tokens_per_block(T)),
                  static_cast<unsigned>(p.splits));
  with_variant(w0.type, T, [&](auto l, auto nt) {
    constexpr int kL = decltype(l)::value;
    constexpr int NT = decltype(nt)::value;
    qmma_kernel<kL, NT><<<grid, kThreads, smem_bytes<kL, NT>(), stream>>>(p);
  });
  LLM_CUDA_CHECK_LAUNCH("qmma_kernel");
  if (p.splits > 1) {
    reduce_kernel<<<grid_for(T * cols, 256), 256, 0, stream>>>(p);
    LLM_CUDA_CHECK_LAUNCH("qmma reduce_kernel");
  }
}

}  // namespace cuda
}  // namespace llm
