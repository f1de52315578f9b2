// Row gathers and scatters: GetRows (embedding lookup) and KvAppend (cache write).
#include <algorithm>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"
#include "core/error.h"

namespace llm {
namespace cpu {

void get_rows(ThreadPool& pool, const void* table, DType table_type, int64_t V, int64_t D,
              const int32_t* ids, int64_t R, float* out) {
  const DequantRowFn dequant = dequant_row_fn(table_type);
  if (!dequant)
    fail("get_rows: %s tables are not supported by the cpu backend", dtype_name(table_type));
  for (int64_t r = 0; r < R; r++)
    if (ids[r] < 0 || ids[r] >= V)
      fail("get_rows: row id %d at %lld is outside the table of %lld rows", ids[r], (long long)r,
           (long long)V);
  const size_t row_bytes = dtype_row_bytes(table_type, D);
  const uint8_t* base = static_cast<const uint8_t*>(table);
  pool.parallel_for(
      R,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; r++) dequant(base + ids[r] * row_bytes, 0, D, out + r * D);
      },
      std::max<int64_t>(1, 16384 / std::max<int64_t>(1, D)));
}

void kv_append(ThreadPool& pool, const float* src, const int32_t* slots, int64_t T, int64_t W,
               void* cache, DType cache_type, int64_t cache_rows) {
  for (int64_t t = 0; t < T; t++)
    if (slots[t] < 0 || slots[t] >= cache_rows)
      fail("kv_append: slot %d of token %lld is outside the cache of %lld rows", slots[t],
           (long long)t, (long long)cache_rows);
  pool.parallel_for(
      T,
      [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; t++) {
          const float* s = src + t * W;
          const int64_t at = static_cast<int64_t>(slots[t]) * W;
          switch (cache_type) {
            case DType::F32:
              std::copy(s, s + W, static_cast<float*>(cache) + at);
              break;
            case DType::F16: {
              uint16_t* d = static_cast<uint16_t*>(cache) + at;
              for (int64_t i = 0; i < W; i++) d[i] = f32_to_f16(s[i]);
              break;
            }
            default: {  // BF16, checked by CpuBackend::check
              uint16_t* d = static_cast<uint16_t*>(cache) + at;
              for (int64_t i = 0; i < W; i++) d[i] = f32_to_bf16(s[i]);
              break;
            }
          }
        }
      },
      std::max<int64_t>(1, 16384 / std::max<int64_t>(1, W)));
}

}  // namespace cpu
}  // namespace llm
