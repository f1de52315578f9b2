#include "backends/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace llm {
namespace cpu {

namespace {

// True on pool workers and on a caller while it runs its share of a job, so that a
// nested parallel_for runs inline instead of deadlocking on the busy workers.
thread_local bool t_in_pool = false;

// How long an idle worker spins before it sleeps: long enough to bridge the gap
// between two ops of a step, short enough not to burn a core between steps.
constexpr auto kSpinTime = std::chrono::microseconds(200);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

int threads_from_env() {
  const char* s = std::getenv("LLM_THREADS");
  if (!s || !*s) return 0;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  return (end && *end == '\0' && v > 0 && v <= 4096) ? static_cast<int>(v) : 0;
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = threads_from_env();
  if (n_threads <= 0) n_threads = static_cast<int>(std::thread::hardware_concurrency());
  n_threads_ = std::max(1, n_threads);
  workers_.reserve(n_threads_ - 1);
  for (int i = 1; i < n_threads_; i++) workers_.emplace_back([this] { worker_main(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  {
    // Taking the lock orders the store before any sleeper's predicate check.
    std::lock_guard<std::mutex> lk(sleep_mu_);
  }
  sleep_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::do_chunks() {
  for (;;) {
    const int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
    if (c >= n_chunks_) return;
    const int64_t begin = c * chunk_;
    const int64_t end = std::min(n_, begin + chunk_);
    try {
      fn_(ctx_, begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lk(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void ThreadPool::worker_main() {
  t_in_pool = true;
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen;
    auto spin_start = std::chrono::steady_clock::now();
    unsigned spins = 0;
    while ((gen = generation_.load(std::memory_order_acquire)) == seen &&
           !stop_.load(std::memory_order_relaxed)) {
      if ((++spins & 63) != 0 || std::chrono::steady_clock::now() - spin_start < kSpinTime) {
        cpu_relax();
        continue;
      }
      std::unique_lock<std::mutex> lk(sleep_mu_);
      // seq_cst pairs with the dispatcher's generation bump + sleepers_ load.
      sleepers_.fetch_add(1);
      sleep_cv_.wait(lk, [&] { return generation_.load() != seen || stop_.load(); });
      sleepers_.fetch_sub(1);
      spin_start = std::chrono::steady_clock::now();
    }
    if (stop_.load()) return;
    seen = gen;
    do_chunks();
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (workers_.empty() || t_in_pool || n <= grain) {
    fn(ctx, 0, n);
    return;
  }
  std::lock_guard<std::mutex> dispatch(dispatch_mu_);
  // A few chunks per thread balance uneven work without much handing out.
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int64_t want = std::min<int64_t>(max_chunks, int64_t{4} * n_threads_);
  chunk_ = (n + want - 1) / want;
  n_chunks_ = (n + chunk_ - 1) / chunk_;
  n_ = n;
  fn_ = fn;
  ctx_ = ctx;
  error_ = nullptr;
  next_chunk_.store(0, std::memory_order_relaxed);
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: publishes the job
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> lk(sleep_mu_);
    sleep_cv_.notify_all();
  }

  t_in_pool = true;
  do_chunks();
  t_in_pool = false;
  for (unsigned spins = 0; pending_.load(std::memory_order_acquire) != 0; spins++) {
    if (spins < 4096)
      cpu_relax();
    else
      std::this_thread::yield();
  }
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

}  // namespace cpu
}  // namespace llm
