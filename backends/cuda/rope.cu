// Rotary position embedding. Angles follow HF: theta = float(pos) * inv_freq[i] in
// float32, then cos/sin in float32 with sincosf (no fast math: it matches the CPU's
// libm within an ulp or two). One thread per rotated pair; in-place safe (y == x).
#include <algorithm>

#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

template <bool kNeoX>
__global__ void rope_kernel(const float* x, const int32_t* __restrict__ positions,
                            const float* __restrict__ inv_freq, float* y, int64_t T, int n_heads,
                            int head_dim, int rot_dims) {
  const int half = rot_dims / 2;
  const int64_t pairs = T * n_heads * half;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < pairs;
       idx += stride) {
    const int i = static_cast<int>(idx % half);
    const int64_t th = idx / half;  // token * n_heads + head
    const int64_t t = th / n_heads;
    const float theta = static_cast<float>(positions[t]) * inv_freq[i];
    float sn, cs;
    sincosf(theta, &sn, &cs);
    const int64_t off = th * head_dim;
    // NeoX rotates halves (i, i + rot/2); GPT-J interleaved pairs (2i, 2i + 1).
    const int64_t ia = off + (kNeoX ? i : 2 * i);
    const int64_t ib = off + (kNeoX ? i + half : 2 * i + 1);
    const float a = x[ia], b = x[ib];
    y[ia] = a * cs - b * sn;
    y[ib] = b * cs + a * sn;
  }
  // Dims past rot_dims pass through.
  const int tail = head_dim - rot_dims;
  if (tail > 0 && x != y) {
    const int64_t n = T * n_heads * tail;
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
         idx += stride) {
      const int64_t at = (idx / tail) * head_dim + rot_dims + idx % tail;
      y[at] = x[at];
    }
  }
}

// Single block: stage q, k, v and slots in shared memory, then write (positions and
// inv_freq are inputs and constants, which no intermediate shares memory with). Index
// math in 32 bits: one multiprocessor does all of it (sizes are checked by the launcher).
template <typename CT>
__global__ void __launch_bounds__(1024) rope_kv_kernel(const RopeKvArgs a) {
  extern __shared__ __align__(16) float stage[];
  const int T = static_cast<int>(a.T);
  const int D = a.head_dim, H = a.n_heads, Hkv = a.n_kv_heads, HH = H + Hkv;
  const int qw = H * D, kw = Hkv * D;
  float* qs = stage;
  float* ks = qs + T * qw;
  float* vs = ks + T * kw;
  int32_t* slot = reinterpret_cast<int32_t*>(vs + T * kw);
  float* sin_s = reinterpret_cast<float*>(slot + T);
  const int half = a.rot_dims / 2;
  float* cos_s = sin_s + T * half;
  for (int i = threadIdx.x; i < T * qw; i += blockDim.x) qs[i] = a.q[i];
  for (int i = threadIdx.x; i < T * kw; i += blockDim.x) {
    ks[i] = a.k[i];
    vs[i] = a.v[i];
  }
  for (int i = threadIdx.x; i < T; i += blockDim.x) slot[i] = a.slots[i];
  // The angles depend on (token, frequency) only: one sincosf each, shared by the heads.
  for (int i = threadIdx.x; i < T * half; i += blockDim.x) {
    const float theta = static_cast<float>(a.positions[i / half]) * a.inv_freq[i % half];
    sincosf(theta, &sin_s[i], &cos_s[i]);
  }
  __syncthreads();

  const bool neox = a.style == RopeStyle::NeoX;
  CT* kc = static_cast<CT*>(a.k_cache);
  CT* vc = static_cast<CT*>(a.v_cache);
  auto cache_ok = [&](int t) { return slot[t] >= 0 && slot[t] < a.cache_rows; };
  // Rotated pairs of q heads then k heads, as rope_kernel computes them.
  for (int idx = threadIdx.x; idx < T * HH * half; idx += blockDim.x) {
    const int i = idx % half, th = idx / half;  // th = token * (H + Hkv) + head
    const int t = th / HH, hh = th % HH;
    const bool is_k = hh >= H;
    const float sn = sin_s[t * half + i], cs = cos_s[t * half + i];
    const int off = is_k ? t * kw + (hh - H) * D : t * qw + hh * D;
    const int ia = off + (neox ? i : 2 * i), ib = off + (neox ? i + half : 2 * i + 1);
    const float* src = is_k ? ks : qs;
    const float x0 = src[ia], x1 = src[ib];
    const float y0 = x0 * cs - x1 * sn, y1 = x1 * cs + x0 * sn;
    if (!is_k) {
      a.q_out[ia] = y0;
      a.q_out[ib] = y1;
    } else {
      if (a.k_out) {
        a.k_out[ia] = y0;
        a.k_out[ib] = y1;
      }
      if (cache_ok(t)) {
        const int64_t c = static_cast<int64_t>(slot[t]) * kw + (ia - t * kw);
        kc[c] = from_f32<CT>(y0);
        kc[c + (ib - ia)] = from_f32<CT>(y1);
      }
    }
  }
  // Dims past rot_dims pass through; v goes to its cache as is.
  const int tail = D - a.rot_dims;
  if (tail > 0) {
    for (int idx = threadIdx.x; idx < T * HH * tail; idx += blockDim.x) {
      const int th = idx / tail, d = a.rot_dims + idx % tail;
      const int t = th / HH, hh = th % HH;
      if (hh < H) {
        const int at = t * qw + hh * D + d;
        a.q_out[at] = qs[at];
      } else {
        const int at = t * kw + (hh - H) * D + d;
        if (a.k_out) a.k_out[at] = ks[at];
        if (cache_ok(t))
          kc[static_cast<int64_t>(slot[t]) * kw + (at - t * kw)] = from_f32<CT>(ks[at]);
      }
    }
  }
  for (int i = threadIdx.x; i < T * kw; i += blockDim.x) {
    const int t = i / kw;
    if (cache_ok(t))
      vc[static_cast<int64_t>(slot[t]) * kw + (i - t * kw)] = from_f32<CT>(vs[i]);
    else if (i == t * kw)
      report(a.err, kErrSlot);
  }
}

// One block per (token, head), for when no output overlaps another head's input (the
// host checks; exact in-place is fine: each thread reads its pair before writing it):
// many multiprocessors instead of one. Threads take rotated pairs, then the tail dims;
// blocks of k heads also store k and v to the caches.
template <typename CT>
__global__ void rope_kv_heads_kernel(const RopeKvArgs a) {
  pdl_trigger();  // decode attention may start reading older keys
  const int t = blockIdx.x, hh = blockIdx.y;
  const int D = a.head_dim, H = a.n_heads, half = a.rot_dims / 2;
  const bool is_k = hh >= H;
  const int kw = a.n_kv_heads * D;
  const int off = is_k ? t * kw + (hh - H) * D : t * H * D + hh * D;
  const float* src = is_k ? a.k : a.q;
  float* dst = is_k ? a.k_out : a.q_out;
  const int32_t slot = a.slots[t];
  const bool store = is_k && slot >= 0 && slot < a.cache_rows;
  if (is_k && !store && hh == H && threadIdx.x == 0) report(a.err, kErrSlot);
  CT* kc = static_cast<CT*>(a.k_cache) + static_cast<int64_t>(slot) * kw + (hh - H) * D;
  CT* vc = static_cast<CT*>(a.v_cache) + static_cast<int64_t>(slot) * kw + (hh - H) * D;
  const bool neox = a.style == RopeStyle::NeoX;
  const float pos = static_cast<float>(a.positions[t]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float sn, cs;
    sincosf(pos * a.inv_freq[i], &sn, &cs);
    const int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
    const float x0 = src[off + ia], x1 = src[off + ib];
    const float y0 = x0 * cs - x1 * sn, y1 = x1 * cs + x0 * sn;
    if (dst) {
      dst[off + ia] = y0;
      dst[off + ib] = y1;
    }
    if (store) {
      kc[ia] = from_f32<CT>(y0);
      kc[ib] = from_f32<CT>(y1);
    }
  }
  for (int d = a.rot_dims + threadIdx.x; d < D; d += blockDim.x) {
    const float x = src[off + d];
    if (dst) dst[off + d] = x;
    if (store) kc[d] = from_f32<CT>(x);
  }
  if (store)
    for (int d = threadIdx.x; d < D; d += blockDim.x) vc[d] = from_f32<CT>(a.v[off + d]);
}

template <typename CT>
void set_rope_kv_smem() {
  LLM_CUDA_CHECK(cudaFuncSetAttribute(rope_kv_kernel<CT>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(kRopeKvMaxSmem)));
}

}  // namespace

size_t rope_kv_smem_bytes(int64_t T, int n_heads, int n_kv_heads, int head_dim) {
  // q, k, v, slots, then sin and cos of up to head_dim / 2 frequencies.
  return static_cast<size_t>(T) *
         ((static_cast<size_t>(n_heads) + 2 * static_cast<size_t>(n_kv_heads)) * head_dim + 2 +
          static_cast<size_t>(head_dim)) *
         4;
}

void rope_kv_prepare() {
  set_rope_kv_smem<float>();
  set_rope_kv_smem<__half>();
  set_rope_kv_smem<__nv_bfloat16>();
}

void rope_kv(cudaStream_t stream, const RopeKvArgs& a) {
  if (a.T <= 0) return;
  if (a.heads_apart) {
    const dim3 grid(static_cast<unsigned>(a.T), static_cast<unsigned>(a.n_heads + a.n_kv_heads));
    const int threads = std::min(256, std::max(32, (a.head_dim / 2 + 31) / 32 * 32));
    dispatch_float(a.cache_type, "kv caches", [&](auto tag) {
      using CT = decltype(tag);
      rope_kv_heads_kernel<CT><<<grid, threads, 0, stream>>>(a);
    });
    LLM_CUDA_CHECK_LAUNCH("rope_kv_heads_kernel");
    return;
  }
  const size_t smem = rope_kv_smem_bytes(a.T, a.n_heads, a.n_kv_heads, a.head_dim);
  if (smem > kRopeKvMaxSmem) fail("cuda rope_kv: %zu bytes of shared memory", smem);
  dispatch_float(a.cache_type, "kv caches", [&](auto tag) {
    using CT = decltype(tag);
    rope_kv_kernel<CT><<<1, 1024, smem, stream>>>(a);
  });
  LLM_CUDA_CHECK_LAUNCH("rope_kv_kernel");
}

void rope(cudaStream_t stream, const float* x, const int32_t* positions, const float* inv_freq,
          float* y, int64_t T, int n_heads, int head_dim, int rot_dims, RopeStyle style) {
  if (T * n_heads <= 0 || rot_dims < 2) return;
  const unsigned grid = grid_for(T * n_heads * (rot_dims / 2), 256);
  if (style == RopeStyle::NeoX)
    rope_kernel<true>
        <<<grid, 256, 0, stream>>>(x, positions, inv_freq, y, T, n_heads, head_dim, rot_dims);
  else
    rope_kernel<false>
        <<<grid, 256, 0, stream>>>(x, positions, inv_freq, y, T, n_heads, head_dim, rot_dims);
  LLM_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace cuda
}  // namespace llm
