// The ops of the non-llama architectures: Slice (fused projections), and the RWKV
// ops Mix, SigmoidMul, ReluSqr, TokenShift and the WKV scan. The recurrent ops give
// one thread to each (sequence, channel): it walks the step's tokens in order, so a
// multi-token prefill is the same scan as token-by-token decode, and it reads its
// state row before it writes it back.
#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

constexpr int kThreads = 256;

__global__ void slice_kernel(const float* a, float* y, int64_t n, int64_t w_in, int64_t w_out,
                             int64_t offset) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t r = i / w_out, c = i % w_out;
    y[i] = a[r * w_in + offset + c];
  }
}

template <RwkvElementwise kOp>
__global__ void rwkv_elementwise_kernel(const float* a, const float* b, const float* w, float* y,
                                        int64_t n, int64_t d) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    if constexpr (kOp == RwkvElementwise::Mix) {
      const float m = w[i % d];
      y[i] = a[i] * m + b[i] * (1.f - m);
    }
    if constexpr (kOp == RwkvElementwise::SigmoidMul) y[i] = b[i] / (1.f + expf(-a[i]));
    if constexpr (kOp == RwkvElementwise::ReluSqr) {
      const float r = fmaxf(a[i], 0.f);
      y[i] = r * r;
    }
  }
}

// The state row of sequence s, or nullptr (reported) when its slot is bad.
__device__ __forceinline__ bool state_row(const int32_t* state_slots, int64_t s, int64_t n_slots,
                                          int64_t* row, int* err) {
  const int64_t slot = state_slots[s];
  if (slot < 0 || slot >= n_slots) {
    report(err, kErrState);
    return false;
  }
  *row = slot;
  return true;
}

__global__ void token_shift_kernel(const float* x, float* state, const int32_t* seq_ids,
                                   const int32_t* state_slots, float* y, int64_t T, int64_t D,
                                   int64_t S, int64_t n_slots, int* err) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= S * D) return;
  const int64_t s = i / D, c = i % D;
  if (s == 0 && c == 0)
    for (int64_t t = 0; t < T; t++)
      if (seq_ids[t] < 0 || seq_ids[t] >= S) report(err, kErrState);
  int64_t row;
  if (!state_row(state_slots, s, n_slots, &row, err)) return;
  float* st = state + row * D + c;
  float prev = *st;
  bool any = false;
  for (int64_t t = 0; t < T; t++) {
    if (seq_ids[t] != s) continue;
    y[t * D + c] = prev;
    prev = x[t * D + c];
    any = true;
  }
  if (any) *st = prev;
}

__global__ void wkv_kernel(const float* k, const float* v, const float* time_decay,
                           const float* time_first, float* state, const int32_t* seq_ids,
                           const int32_t* state_slots, float* y, int64_t T, int64_t A, int64_t S,
                           int64_t n_slots, int* err) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= S * A) return;
  const int64_t s = i / A, c = i % A;
  int64_t row;
  if (!state_row(state_slots, s, n_slots, &row, err)) return;
  float* st = state + row * 3 * A;
  float num = st[c], den = st[A + c], mx = st[2 * A + c];
  const float w = -expf(time_decay[c]), u = time_first[c];
  for (int64_t t = 0; t < T; t++) {
    if (seq_ids[t] != s) continue;
    const float kt = k[t * A + c], vt = v[t * A + c];
    const float mo = fmaxf(mx, kt + u);
    const float e1 = expf(mx - mo), e2 = expf(kt + u - mo);
    y[t * A + c] = (e1 * num + e2 * vt) / (e1 * den + e2);
    const float ms = fmaxf(mx + w, kt);
    const float f1 = expf(mx + w - ms), f2 = expf(kt - ms);
    num = f1 * num + f2 * vt;
    den = f1 * den + f2;
    mx = ms;
  }
  st[c] = num;
  st[A + c] = den;
  st[2 * A + c] = mx;
}

}  // namespace

void slice(cudaStream_t stream, const float* a, float* y, int64_t rows, int64_t w_in, int64_t w_out,
           int64_t offset) {
  const int64_t n = rows * w_out;
  if (n <= 0) return;
  slice_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(a, y, n, w_in, w_out, offset);
  LLM_CUDA_CHECK_LAUNCH("slice_kernel");
}

void rwkv_elementwise(cudaStream_t stream, RwkvElementwise op, const float* a, const float* b,
                      const float* w, float* y, int64_t n, int64_t d) {
  if (n <= 0) return;
  const unsigned grid = grid_for(n, kThreads);
  switch (op) {
    case RwkvElementwise::Mix:
      rwkv_elementwise_kernel<RwkvElementwise::Mix>
          <<<grid, kThreads, 0, stream>>>(a, b, w, y, n, d);
      break;
    case RwkvElementwise::SigmoidMul:
      rwkv_elementwise_kernel<RwkvElementwise::SigmoidMul>
          <<<grid, kThreads, 0, stream>>>(a, b, w, y, n, d);
      break;
    case RwkvElementwise::ReluSqr:
      rwkv_elementwise_kernel<RwkvElementwise::ReluSqr>
          <<<grid, kThreads, 0, stream>>>(a, b, w, y, n, d);
      break;
  }
  LLM_CUDA_CHECK_LAUNCH("rwkv_elementwise_kernel");
}

void token_shift(cudaStream_t stream, const float* x, float* state, const int32_t* seq_ids,
                 const int32_t* state_slots, float* y, int64_t T, int64_t D, int64_t S,
                 int64_t n_slots, int* err) {
  const int64_t n = S * D;
  if (n <= 0) return;
  token_shift_kernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      x, state, seq_ids, state_slots, y, T, D, S, n_slots, err);
  LLM_CUDA_CHECK_LAUNCH("token_shift_kernel");
}

void wkv(cudaStream_t stream, const float* k, const float* v, const float* time_decay,
         const float* time_first, float* state, const int32_t* seq_ids, const int32_t* state_slots,
         float* y, int64_t T, int64_t A, int64_t S, int64_t n_slots, int* err) {
  const int64_t n = S * A;
  if (n <= 0) return;
  wkv_kernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      k, v, time_decay, time_first, state, seq_ids, state_slots, y, T, A, S, n_slots, err);
  LLM_CUDA_CHECK_LAUNCH("wkv_kernel");
}

}  // namespace cuda
}  // namespace llm
