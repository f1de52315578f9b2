// Batched-decode GEMM over Q4_0 / Q8_0 matrices in the split layout: y[T, N] = x · Wᵀ
// (+ bias) on the tensor cores (mma.sync m16n8k16, f16 operands, f32 accumulators),
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
// nibbles of one word for Q4_0, one word for Q8_0), as (e0, e2) and (e1, e3) so that
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
// (q - 8) * d or q * d rounded to f16 once, products summed in float32.
//
// Few row tiles (N / 128) cannot fill the GPU, so the columns are split (split-K):
// each split writes float32 partials and a second kernel adds them in split order
// (deterministic), adds the bias and writes y.
#include <algorithm>
#include <cstdlib>

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

struct Params {
  const __half* x16;  // fragment order, [chunks][kSteps][Tpad][16]
  int T, Tpad, K, N, nb, ss, n_chunks;
  const uint8_t* qs;
  const uint16_t* sc;
  const void* bias;
  int bias_type;
  float* y;
  int splits, chunks_per_split;
  float* partials;  // [splits][T][N] when splits > 1
};

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

__device__ __forceinline__ void dequant_step_q8(const uint4& q0, const uint4& q1, int s, __half2 d,
                                                uint32_t& lo, uint32_t& hi) {
  const uint32_t w = (s < 4 ? (&q0.x)[s] : (&q1.x)[s - 4]) ^ 0x80808080u;  // b + 128
  const __half2 bias = __half2half2(__ushort_as_half(0x6480));             // 1152
  lo = h2_bits(__hmul2(__hsub2(bits_h2((w & 0x00ff00ffu) | 0x64006400u), bias), d));
  hi = h2_bits(__hmul2(__hsub2(bits_h2(((w >> 8) & 0x00ff00ffu) | 0x64006400u), bias), d));
}

// Pipeline depth: chunks in flight while one is computed.
template <bool kQ4>
__host__ __device__ constexpr int stages() {
  return kQ4 ? 4 : 3;
}

// One stage of shared memory: the chunk's weights (quants and scales of 4 blocks for
// each of the block's rows) and its x in fragment order.
template <bool kQ4, int NT>
struct Stage {
  static constexpr int kQB = kQ4 ? 16 : 32;  // quant bytes per block
  static constexpr int kTok = 8 * NT;
  uint8_t q[kRowsPerBlock][4 * kQB];
  uint16_t d[kRowsPerBlock][4];
  __half x[kSteps][kTok][16];
};

template <bool kQ4, int NT>
constexpr size_t smem_bytes() {
  return sizeof(Stage<kQ4, NT>) * stages<kQ4>();
}

template <bool kQ4, int NT>
__global__ void __launch_bounds__(kThreads) qmma_kernel(const Params p) {
  using St = Stage<kQ4, NT>;
  constexpr int kQB = St::kQB, kTok = St::kTok, kStages = stages<kQ4>();
  extern __shared__ __align__(16) uint8_t smem_raw[];
  St* stage = reinterpret_cast<St*>(smem_raw);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int row0 = blockIdx.x * kRowsPerBlock;
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
      const int row = min(row0 + r, p.N - 1);
      const int blk = ch * 4 + piece * 16 / kQB;
      cp_async16_zfill(&S.q[r][piece * 16],
                       p.qs + (static_cast<size_t>(row) * p.nb + blk) * kQB + piece * 16 % kQB,
                       blk < p.nb);
    }
    for (int r = tid; r < kRowsPerBlock; r += kThreads) {
      const int row = min(row0 + r, p.N - 1);
      cp_async8(&S.d[r][0], p.sc + static_cast<size_t>(row) * p.ss + ch * 4);
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
    __half2 d[kMT][2];
#pragma unroll
    for (int mt = 0; mt < kMT; mt++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = warp * kMT * 16 + mt * 16 + h * 8 + g;
        const uint4* src = reinterpret_cast<const uint4*>(&S.q[r][c * kQB]);
        q[mt][h][0] = src[0];
        if constexpr (!kQ4) q[mt][h][kQ4 ? 0 : 1] = src[1];
        d[mt][h] = __half2half2(__ushort_as_half(S.d[r][c]));
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
        if constexpr (kQ4) {
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
  const int row_base = row0 + warp * kMT * 16;
  auto for_each_out = [&](auto&& fn) {
#pragma unroll
    for (int mt = 0; mt < kMT; mt++)
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
          const int n = row_base + mt * 16 + g + (i >> 1) * 8;
          const int t = tok0 + nt * 8 + 2 * c + (i & 1);
          if (n < p.N && t < p.T) fn(n, t, acc[mt][nt][i]);
        }
  };
  if (p.splits == 1) {
    for_each_out([&](int n, int t, float v) {
      if (p.bias) v += load_any(p.bias, p.bias_type, n);
      p.y[static_cast<size_t>(t) * p.N + n] = v;
    });
    return;
  }
  float* part = p.partials + static_cast<size_t>(split) * p.T * p.N;
  for_each_out([&](int n, int t, float v) { part[static_cast<size_t>(t) * p.N + n] = v; });
}

// y = the splits' partials added in split order (+ bias): every multiprocessor takes
// part, where one block per tile would add them up one after another.
__global__ void reduce_kernel(const float* __restrict__ partials, int splits, int64_t T, int64_t N,
                              const void* bias, int bias_type, float* __restrict__ y) {
  const int64_t total = T * N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    float v = 0.f;
#pragma unroll 8
    for (int sp = 0; sp < splits; sp++) v += __ldcg(partials + sp * total + i);
    if (bias) v += load_any(bias, bias_type, i % N);
    y[i] = v;
  }
}

// f32 -> f16, saturating at ±65504 (NaN stays NaN), as the cuBLAS path rounds x.
__device__ __forceinline__ __half sat_half(float v) {
  if (!(v != v)) v = fminf(fmaxf(v, -65504.f), 65504.f);
  return __float2half_rn(v);
}

// One thread per (chunk, step, token): 4 elements of each of the chunk's 4 blocks.
__global__ void convert_x_kernel(const float* __restrict__ x, int T, int Tpad, int K, int n_chunks,
                                 __half* __restrict__ out) {
  const int64_t total = static_cast<int64_t>(n_chunks) * kSteps * Tpad;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int t = static_cast<int>(i % Tpad);
    const int s = static_cast<int>((i / Tpad) % kSteps);
    const int ch = static_cast<int>(i / (static_cast<int64_t>(Tpad) * kSteps));
    __half h[16];
#pragma unroll
    for (int blk = 0; blk < 4; blk++) {
      const int k = ch * kChunk + blk * 32 + 4 * s;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (t < T && k < K)
        v = __ldg(reinterpret_cast<const float4*>(x + static_cast<size_t>(t) * K + k));
      h[blk * 4 + 0] = sat_half(v.x);  // e0
      h[blk * 4 + 1] = sat_half(v.z);  // e2
      h[blk * 4 + 2] = sat_half(v.y);  // e1
      h[blk * 4 + 3] = sat_half(v.w);  // e3
    }
    uint4* dst = reinterpret_cast<uint4*>(out + i * 16);
    dst[0] = *reinterpret_cast<const uint4*>(&h[0]);
    dst[1] = *reinterpret_cast<const uint4*>(&h[8]);
  }
}

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::max<int64_t>(1, std::atoll(v)) : fallback;
}

int tokens_per_block(int64_t T) { return T <= 16 ? 16 : (T <= 32 ? 32 : 64); }

template <bool kQ4, int NT>
void launch_nt(cudaStream_t stream, const Params& p, dim3 grid) {
  qmma_kernel<kQ4, NT><<<grid, kThreads, smem_bytes<kQ4, NT>(), stream>>>(p);
}

template <bool kQ4>
void launch(cudaStream_t stream, const Params& p, dim3 grid) {
  switch (tokens_per_block(p.T) / 8) {
    case 2:
      launch_nt<kQ4, 2>(stream, p, grid);
      break;
    case 4:
      launch_nt<kQ4, 4>(stream, p, grid);
      break;
    default:
      launch_nt<kQ4, kMaxNT>(stream, p, grid);
  }
  LLM_CUDA_CHECK_LAUNCH("qmma_kernel");
}

template <bool kQ4, int NT>
void set_smem_limit() {
  LLM_CUDA_CHECK(cudaFuncSetAttribute(qmma_kernel<kQ4, NT>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem_bytes<kQ4, NT>())));
}

int64_t n_chunks(int64_t K) { return (K + kChunk - 1) / kChunk; }
int64_t tokens_padded(int64_t T) {
  const int64_t b = tokens_per_block(T);
  return (T + b - 1) / b * b;
}

}  // namespace

void qmma_prepare() {
  set_smem_limit<true, 2>();
  set_smem_limit<true, 4>();
  set_smem_limit<true, kMaxNT>();
  set_smem_limit<false, 2>();
  set_smem_limit<false, 4>();
  set_smem_limit<false, kMaxNT>();
}

size_t qmma_x16_elems(int64_t T, int64_t K) {
  return static_cast<size_t>(n_chunks(K) * kSteps * tokens_padded(T) * 16);
}

int qmma_splits(int64_t T, int64_t N, int64_t K, int n_sms) {
  // Tuning knobs for measurements: LLM_CUDA_QMMA_BLOCKS_PER_SM, LLM_CUDA_QMMA_MAX_SPLITS.
  static const int64_t blocks_per_sm = env_int("LLM_CUDA_QMMA_BLOCKS_PER_SM", 2);
  static const int64_t max_splits = env_int("LLM_CUDA_QMMA_MAX_SPLITS", 8);
  const int64_t tiles = (N + kRowsPerBlock - 1) / kRowsPerBlock *
                        ((T + tokens_per_block(T) - 1) / tokens_per_block(T));
  // About two blocks per multiprocessor, at most 8 splits of at least 2 chunks: the
  // partials are written and read once more.
  const int64_t want = (blocks_per_sm * n_sms + tiles - 1) / tiles;
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>({want, max_splits, n_chunks(K) / 2})));
}

size_t qmma_partials_floats(int64_t T, int64_t N, int splits) {
  return splits > 1 ? static_cast<size_t>(splits) * T * N : 0;
}

void qmma_convert_x(cudaStream_t stream, const float* x, int64_t T, int64_t K, __half* x16) {
  if (T <= 0) return;
  const int64_t groups = n_chunks(K) * kSteps * tokens_padded(T);
  convert_x_kernel<<<grid_for(groups, 256), 256, 0, stream>>>(
      x, static_cast<int>(T), static_cast<int>(tokens_padded(T)), static_cast<int>(K),
      static_cast<int>(n_chunks(K)), x16);
  LLM_CUDA_CHECK_LAUNCH("qmma_convert_x");
}

void qmma(cudaStream_t stream, const QMmaArgs& a) {
  const int64_t T = a.T, K = a.w.K, N = a.w.N;
  if (T <= 0 || N <= 0) return;
  if (K % 32 != 0 || K / 32 > (int64_t{1} << 26)) fail("cuda qmma: bad K %lld", (long long)K);
  if (a.splits > 1 && !a.partials) fail("cuda qmma: splits without partials");
  Params p{};
  p.x16 = a.x16;
  p.T = static_cast<int>(T);
  p.Tpad = static_cast<int>(tokens_padded(T));
  p.K = static_cast<int>(K);
  p.N = static_cast<int>(N);
  p.nb = static_cast<int>(K / 32);
  p.ss = static_cast<int>(a.w.scale_stride);
  p.n_chunks = static_cast<int>(n_chunks(K));
  p.qs = a.w.qs;
  p.sc = a.w.scales;
  p.bias = a.bias;
  p.bias_type = static_cast<int>(a.bias_type);
  p.y = a.y;
  p.splits = std::max(1, a.splits);
  p.chunks_per_split = (p.n_chunks + p.splits - 1) / p.splits;
  p.partials = a.partials;
  const dim3 grid(static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock),
                  static_cast<unsigned>((T + tokens_per_block(T) - 1) / tokens_per_block(T)),
                  static_cast<unsigned>(p.splits));
  if (a.w.type == DType::Q4_0)
    launch<true>(stream, p, grid);
  else
    launch<false>(stream, p, grid);
  if (p.splits > 1) {
    reduce_kernel<<<grid_for(T * N, 256), 256, 0, stream>>>(a.partials, p.splits, T, N, a.bias,
                                                            static_cast<int>(a.bias_type), a.y);
    LLM_CUDA_CHECK_LAUNCH("qmma reduce_kernel");
  }
}

}  // namespace cuda
}  // namespace llm
