// Splitting row-wise work (quantizing, decoding, generating tensors) over threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace llm {

// Runs fn(r0, r1) over [0, rows) in contiguous ranges on up to n_threads threads
// (0: all hardware threads), giving each at least min_rows rows. fn must not throw.
template <typename Fn>
void parallel_rows(int64_t rows, int n_threads, Fn fn, int64_t min_rows = 16) {
  if (n_threads <= 0)
    n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  n_threads = static_cast<int>(std::min<int64_t>(n_threads, std::max<int64_t>(1, rows / min_rows)));
  const int64_t per = (rows + n_threads - 1) / n_threads;
  std::vector<std::thread> threads;
  for (int t = 1; t < n_threads; t++)
    threads.emplace_back(fn, std::min(rows, t * per), std::min(rows, (t + 1) * per));
  fn(0, std::min(rows, per));
  for (std::thread& th : threads) th.join();
}

}  // namespace llm
