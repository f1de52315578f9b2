// The plan of a step for the CUDA backend (CudaBackend::compile): the bound nodes as a
// list of launches in order, most nodes one launch each and the transformer step's
// patterns fused (see cuda_planner.cpp), with the scratch they read allocated once
// their sizes are known.
#pragma once

#include <memory>
#include <vector>

#include "backends/cuda/cuda_context.h"
#include "core/backend.h"

namespace llm {
namespace cuda {

// backend: the one compiling (its check_bound() for each node).
std::unique_ptr<Program> plan_program(const Backend& backend, const std::shared_ptr<Context>& ctx,
                                      std::vector<BoundNode> nodes);

}  // namespace cuda
}  // namespace llm
