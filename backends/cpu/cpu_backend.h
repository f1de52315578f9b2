// The CPU backend: float32 reference implementation of the op set, multithreaded
// (q8_0 / q4_0 weights: integer dot products against 8-bit activations in decode).
#pragma once

#include <memory>

#include "core/backend.h"

namespace llm {

// n_threads <= 0: one per hardware thread (or $LLM_THREADS when set).
std::unique_ptr<Backend> make_cpu_backend(int n_threads = 0);

}  // namespace llm
