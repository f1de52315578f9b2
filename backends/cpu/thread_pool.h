// A persistent pool of worker threads for the CPU kernels. parallel_for hands out
// contiguous chunks of [0, n) to the workers and the calling thread; idle workers
// spin briefly (ops follow each other within microseconds) and then sleep.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace llm {
namespace cpu {

class ThreadPool {
 public:
  // n_threads <= 0: $LLM_THREADS when set, else std::thread::hardware_concurrency().
  // The calling thread counts as one of them.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return n_threads_; }

  // Calls fn(begin, end) on disjoint ranges covering [0, n), each at least `grain`
  // items long (but the last), and returns when all have run. A call from inside a
  // running fn runs inline. An exception thrown by fn is rethrown here.
  template <class F>
  void parallel_for(int64_t n, F&& fn, int64_t grain = 1) {
    using Fn = std::remove_reference_t<F>;
    run(
        n, grain,
        [](void* ctx, int64_t begin, int64_t end) { (*static_cast<Fn*>(ctx))(begin, end); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);

  void run(int64_t n, int64_t grain, RangeFn fn, void* ctx);
  void worker_main();
  void do_chunks();

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex dispatch_mu_;  // one parallel_for at a time from outside threads

  // The current job, published by bumping generation_.
  RangeFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 1;
  int64_t n_chunks_ = 0;
  std::atomic<int64_t> next_chunk_{0};
  std::atomic<int> pending_{0};  // workers that have not finished the current job
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::mutex error_mu_;
  std::exception_ptr error_;

  // Sleeping workers wait here; sleepers_ lets a dispatch skip the notify when all spin.
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
  std::atomic<int> sleepers_{0};
};

}  // namespace cpu
}  // namespace llm
