// The CPU backend: float32 reference implementation of the op set, multithreaded.
#pragma once

#include <memory>

#include "core/backend.h"

namespace llm {

// n_threads <= 0: one per hardware thread (or $LLM_THREADS when set).
std::unique_ptr<Backend> make_cpu_backend(int n_threads = 0);

}  // namespace llm
