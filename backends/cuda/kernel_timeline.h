// Internal to the CUDA backend: the start and end of every kernel the GPU ran while
// recording, from CUPTI's activity API (bench --profile). Kernels inside a replayed
// CUDA graph are seen one by one, so the step is profiled as it really runs: with its
// launch gaps and programmatic dependent launch, not kernel by kernel from the host.
//
// libcupti is opened at run time (dlopen), so binaries need no CUPTI to start; where
// it is missing or refuses to trace, available() is false and the caller falls back
// to timing launches one by one with events.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llm {
namespace cuda {

struct KernelSpan {
  uint64_t start_ns = 0, end_ns = 0;
};

class KernelTimeline {
 public:
  // The process-wide recorder, or nullptr (with the reason in *why) when CUPTI cannot
  // be loaded or initialised.
  static KernelTimeline* get(std::string* why = nullptr);

  // Starts recording kernel activity; the caller has synchronised its stream.
  void begin();
  // Stops recording after the caller has synchronised the work it launched, and
  // returns the kernels that ran since begin(), sorted by start.
  std::vector<KernelSpan> end();

 private:
  KernelTimeline() = default;
};

// Each kernel's share of a timeline that starts with the first kernel: from the end
// of everything before it (or its own start, for the first) to its own end, zero
// when it ended inside an earlier one. Gaps are charged to the kernel that waited,
// and the shares add up to the span from the first start to the last end.
std::vector<double> exclusive_ms(const std::vector<KernelSpan>& sorted);

}  // namespace cuda
}  // namespace llm
