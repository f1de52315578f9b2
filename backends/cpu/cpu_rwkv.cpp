// RWKV-4 recurrent ops: token shift and the WKV scan. Each channel of each
// sequence is an independent scan over that sequence's tokens in step order.
#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"
#include "core/error.h"

namespace llm {
namespace cpu {

namespace {

// Validates the step's sequence ids and state slots before going parallel.
void check_seqs(const int32_t* seq_ids, int64_t T, const int32_t* state_slots, int64_t S,
                int64_t n_slots, const char* op) {
  for (int64_t t = 0; t < T; t++)
    if (seq_ids[t] < 0 || seq_ids[t] >= S)
      fail("%s: sequence id %d of token %lld is out of range [0, %lld)", op, seq_ids[t],
           static_cast<long long>(t), static_cast<long long>(S));
  for (int64_t s = 0; s < S; s++)
    if (state_slots[s] < 0 || state_slots[s] >= n_slots)
      fail("%s: state slot %d of sequence %lld is out of range [0, %lld)", op, state_slots[s],
           static_cast<long long>(s), static_cast<long long>(n_slots));
}

}  // namespace

void token_shift(ThreadPool& pool, const float* x, float* state, const int32_t* seq_ids,
                 const int32_t* state_slots, float* y, int64_t T, int64_t D, int64_t S,
                 int64_t n_slots) {
  check_seqs(seq_ids, T, state_slots, S, n_slots, "token_shift");
  pool.parallel_for(S, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; s++) {
      float* st = state + static_cast<int64_t>(state_slots[s]) * D;
      const float* prev = st;
      for (int64_t t = 0; t < T; t++) {
        if (seq_ids[t] != s) continue;
        std::copy(prev, prev + D, y + t * D);
        prev = x + t * D;
      }
      if (prev != st) std::copy(prev, prev + D, st);
    }
  });
}

void wkv(ThreadPool& pool, const float* k, const float* v, const float* time_decay,
         const float* time_first, float* state, const int32_t* seq_ids, const int32_t* state_slots,
         float* y, int64_t T, int64_t A, int64_t S, int64_t n_slots) {
  check_seqs(seq_ids, T, state_slots, S, n_slots, "wkv");
  pool.parallel_for(
      S * A,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; i++) {
          const int64_t s = i / A, c = i % A;
          float* st = state + static_cast<int64_t>(state_slots[s]) * 3 * A;
          float num = st[c], den = st[A + c], mx = st[2 * A + c];
          const float w = -std::exp(time_decay[c]), u = time_first[c];
          for (int64_t t = 0; t < T; t++) {
            if (seq_ids[t] != s) continue;
            const float kt = k[t * A + c], vt = v[t * A + c];
            const float mo = std::max(mx, kt + u);
            const float e1 = std::exp(mx - mo), e2 = std::exp(kt + u - mo);
            y[t * A + c] = (e1 * num + e2 * vt) / (e1 * den + e2);
            const float ms = std::max(mx + w, kt);
            const float f1 = std::exp(mx + w - ms), f2 = std::exp(kt - ms);
            num = f1 * num + f2 * vt;
            den = f1 * den + f2;
            mx = ms;
          }
          st[c] = num;
          st[A + c] = den;
          st[2 * A + c] = mx;
        }
      },
      64);
}

}  // namespace cpu
}  // namespace llm
