#include "backends/cuda/kernel_timeline.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <type_traits>

#if __has_include(<cupti_activity.h>)
#include <cupti_activity.h>
#define LLM_HAVE_CUPTI_HEADERS 1
#endif

#include "core/error.h"

namespace llm {
namespace cuda {

std::vector<double> exclusive_ms(const std::vector<KernelSpan>& sorted) {
  std::vector<double> out(sorted.size(), 0.0);
  if (sorted.empty()) return out;
  uint64_t reached = sorted[0].start_ns;  // end of everything seen so far
  for (size_t i = 0; i < sorted.size(); i++) {
    if (sorted[i].end_ns > reached) {
      out[i] = static_cast<double>(sorted[i].end_ns - reached) * 1e-6;
      reached = sorted[i].end_ns;
    }
  }
  return out;
}

#ifdef LLM_HAVE_CUPTI_HEADERS

namespace {

// The few CUPTI entry points used, resolved from the library at run time.
struct Cupti {
  decltype(&cuptiActivityRegisterCallbacks) register_callbacks = nullptr;
  decltype(&cuptiActivityEnable) enable = nullptr;
  decltype(&cuptiActivityDisable) disable = nullptr;
  decltype(&cuptiActivityFlushAll) flush_all = nullptr;
  decltype(&cuptiActivityGetNextRecord) next_record = nullptr;
};

Cupti g_api;
std::mutex g_mutex;               // guards g_spans (CUPTI calls back from its own thread)
std::vector<KernelSpan> g_spans;  // kernels of the recording in progress
constexpr size_t kBufferBytes = 4 << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  // Records must be 8-byte aligned.
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer ? kBufferBytes : 0;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* rec = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    while (g_api.next_record(buffer, valid, &rec) == CUPTI_SUCCESS) {
      if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL &&
          rec->kind != CUPTI_ACTIVITY_KIND_KERNEL)
        continue;
      // start/end sit at the same place in every version of the kernel record.
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
      if (k->end > k->start) g_spans.push_back({k->start, k->end});
    }
  }
  std::free(buffer);
}

bool load(std::string& why) {
  // LLM_CUPTI names the library where it is not on the loader's path.
  std::vector<std::string> names;
  if (const char* env = std::getenv("LLM_CUPTI")) names.push_back(env);
  for (const char* n : {"libcupti.so.13", "libcupti.so", "/usr/local/cuda/lib64/libcupti.so.13",
                        "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so.13"})
    names.push_back(n);
  void* lib = nullptr;
  for (const std::string& n : names)
    if ((lib = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL))) break;
  if (!lib) {
    why = "libcupti.so.13 not found (set LLM_CUPTI to its path)";
    return false;
  }
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    return fn != nullptr;
  };
  if (!sym(g_api.register_callbacks, "cuptiActivityRegisterCallbacks") ||
      !sym(g_api.enable, "cuptiActivityEnable") || !sym(g_api.disable, "cuptiActivityDisable") ||
      !sym(g_api.flush_all, "cuptiActivityFlushAll") ||
      !sym(g_api.next_record, "cuptiActivityGetNextRecord")) {
    why = "libcupti lacks the activity API";
    return false;
  }
  if (g_api.register_callbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS) {
    why = "CUPTI refused its activity callbacks";
    return false;
  }
  return true;
}

}  // namespace

KernelTimeline* KernelTimeline::get(std::string* why) {
  static std::string reason;
  static KernelTimeline* instance = [] {
    const char* off = std::getenv("LLM_CUPTI");
    if (off && std::string(off) == "0") {
      reason = "LLM_CUPTI=0";
      return static_cast<KernelTimeline*>(nullptr);
    }
    return load(reason) ? new KernelTimeline() : nullptr;
  }();
  if (!instance && why) *why = reason;
  return instance;
}

void KernelTimeline::begin() {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_spans.clear();
  }
  if (g_api.enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS)
    fail("CUPTI: cannot trace kernels on this device");
}

std::vector<KernelSpan> KernelTimeline::end() {
  g_api.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  g_api.disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  g_api.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::vector<KernelSpan> out;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    out.swap(g_spans);
  }
  std::sort(out.begin(), out.end(),
            [](const KernelSpan& a, const KernelSpan& b) { return a.start_ns < b.start_ns; });
  return out;
}

#else  // no CUPTI headers at build time

KernelTimeline* KernelTimeline::get(std::string* why) {
  if (why) *why = "built without CUPTI headers";
  return nullptr;
}
void KernelTimeline::begin() {}
std::vector<KernelSpan> KernelTimeline::end() { return {}; }

#endif

}  // namespace cuda
}  // namespace llm
