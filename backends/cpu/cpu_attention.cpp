// Causal attention over the paged KV cache (semantics in core/graph.h).
//
// One work item is one (token, query head). Two passes over the token's context:
// scores q·k (scaled, soft-capped) into a per-thread buffer, then a max-subtracted
// softmax and the weighted sum of V rows. f16/bf16 caches are decoded row by row.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"
#include "core/error.h"

namespace llm {
namespace cpu {

namespace {

// Head slice of cache row `slot` as float32: in place for f32, else decoded to buf.
LLM_CPU_INLINE const float* cache_row(const void* cache, DequantRowFn decode, size_t row_bytes,
                                      int64_t slot, int64_t offset, int64_t n, float* buf) {
  const void* row = static_cast<const uint8_t*>(cache) + slot * row_bytes;
  if (!decode) return static_cast<const float*>(row) + offset;
  decode(row, offset, n, buf);
  return buf;
}

LLM_CPU_CLONES void attend_one(const AttentionArgs& a, int64_t t, int h, float* scores,
                               float* kv_buf, float* acc) {
  const OpParams& p = a.p;
  const int64_t D = p.head_dim;
  const int64_t kv_row = static_cast<int64_t>(p.n_kv_heads) * D;
  const int64_t kv_off = static_cast<int64_t>(h / (p.n_heads / p.n_kv_heads)) * D;
  const float* q = a.q + (t * p.n_heads + h) * D;
  const int64_t pos = a.positions[t];
  const int32_t* pages = a.block_table + static_cast<int64_t>(a.seq_ids[t]) * a.max_pages;
  const int64_t lo = p.window > 0 ? std::max<int64_t>(0, pos - p.window + 1) : 0;
  const int64_t n = pos - lo + 1;
  const int64_t ps = p.page_size;
  const size_t k_row_bytes = dtype_row_bytes(a.k_type, kv_row);
  const size_t v_row_bytes = dtype_row_bytes(a.v_type, kv_row);
  const DequantRowFn k_decode = a.k_type == DType::F32 ? nullptr : dequant_row_fn(a.k_type);
  const DequantRowFn v_decode = a.v_type == DType::F32 ? nullptr : dequant_row_fn(a.v_type);

  float max_s = -std::numeric_limits<float>::infinity();
  for (int64_t j = lo; j <= pos; j++) {
    const int64_t slot = static_cast<int64_t>(pages[j / ps]) * ps + j % ps;
    const float* k = cache_row(a.k_cache, k_decode, k_row_bytes, slot, kv_off, D, kv_buf);
    float s = dot_f32(q, k, D) * p.scale;
    if (p.softcap > 0.f) s = p.softcap * std::tanh(s / p.softcap);
    scores[j - lo] = s;
    max_s = std::max(max_s, s);
  }
  float sum = 0.f;
  for (int64_t i = 0; i < n; i++) {
    scores[i] = std::exp(scores[i] - max_s);
    sum += scores[i];
  }
  std::fill(acc, acc + D, 0.f);
  for (int64_t j = lo; j <= pos; j++) {
    const int64_t slot = static_cast<int64_t>(pages[j / ps]) * ps + j % ps;
    const float* v = cache_row(a.v_cache, v_decode, v_row_bytes, slot, kv_off, D, kv_buf);
    axpy_f32(acc, scores[j - lo], v, D);
  }
  scale_f32(a.out + (t * p.n_heads + h) * D, acc, 1.f / sum, D);
}

}  // namespace

void attention(ThreadPool& pool, const AttentionArgs& a) {
  const OpParams& p = a.p;
  // Validate what the kernel will index with on this thread, so that workers never
  // read outside the cache.
  const int64_t ps = p.page_size;
  const int64_t n_pages = a.cache_rows / ps;
  for (int64_t t = 0; t < a.T; t++) {
    const int64_t s = a.seq_ids[t], pos = a.positions[t];
    if (s < 0 || s >= a.n_seqs)
      fail("attention: token %lld has sequence id %lld, not in [0, %lld)", (long long)t,
           (long long)s, (long long)a.n_seqs);
    if (pos < 0 || pos / ps >= a.max_pages)
      fail("attention: token %lld has position %lld beyond the block table (%lld pages of %lld)",
           (long long)t, (long long)pos, (long long)a.max_pages, (long long)ps);
    const int64_t lo = p.window > 0 ? std::max<int64_t>(0, pos - p.window + 1) : 0;
    for (int64_t pg = lo / ps; pg <= pos / ps; pg++) {
      const int64_t page = a.block_table[s * a.max_pages + pg];
      if (page < 0 || page >= n_pages)
        fail("attention: sequence %lld maps page %lld to cache page %lld, not in [0, %lld)",
             (long long)s, (long long)pg, (long long)page, (long long)n_pages);
    }
  }

  const int64_t items = a.T * p.n_heads;
  pool.parallel_for(items, [&](int64_t begin, int64_t end) {
    // Per-thread scratch, grown to the longest context seen.
    thread_local std::vector<float> scratch;
    int64_t longest = 0;
    for (int64_t i = begin; i < end; i++) {
      const int64_t pos = a.positions[i / p.n_heads];
      const int64_t lo = p.window > 0 ? std::max<int64_t>(0, pos - p.window + 1) : 0;
      longest = std::max(longest, pos - lo + 1);
    }
    const size_t need = static_cast<size_t>(longest + 2 * p.head_dim);
    if (scratch.size() < need) scratch.resize(need);
    float* kv_buf = scratch.data();
    float* acc = kv_buf + p.head_dim;
    float* scores = acc + p.head_dim;
    for (int64_t i = begin; i < end; i++)
      attend_one(a, i / p.n_heads, static_cast<int>(i % p.n_heads), scores, kv_buf, acc);
  });
}

}  // namespace cpu
}  // namespace llm
