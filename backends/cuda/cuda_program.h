// A compiled CUDA step: its launches in order on the backend's stream, captured into a
// CUDA graph on the first run and replayed after (LLM_CUDA_GRAPHS=0: launched one by
// one), with per-launch timing for profiles (CUPTI's kernel timeline of a replay, or
// events between direct launches).
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/cuda_context.h"
#include "core/backend.h"

namespace llm {
namespace cuda {

// One launch: enqueues its kernel(s) on the stream it is given.
using Launch = std::function<void(cudaStream_t)>;

// labels[i] names launch i in the LLM_CUDA_PROFILE=1 breakdown; keep: scratch the
// launches point into.
std::unique_ptr<Program> make_program(std::shared_ptr<Context> ctx, std::vector<Launch> launches,
                                      std::vector<std::string> labels,
                                      std::vector<Program::Dispatch> dispatches,
                                      std::vector<std::shared_ptr<CudaBuffer>> keep);

}  // namespace cuda
}  // namespace llm
