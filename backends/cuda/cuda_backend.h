// The CUDA backend: the op set as CUDA kernels, decode steps replayed as CUDA graphs.
#pragma once

#include <memory>

#include "core/backend.h"

namespace llm {

// Throws llm::Error when the device does not exist or cannot be initialised.
std::unique_ptr<Backend> make_cuda_backend(int device_index);

}  // namespace llm
