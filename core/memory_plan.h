// Memory planning for a graph's intermediate tensors: each gets an offset in
// one arena, and tensors whose lifetimes do not overlap share memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/graph.h"

namespace llm {

// Lifetime of a planned tensor as node indices [first, last], both inclusive:
// first is the node that writes it, last the final node that reads it.
// Outputs live until the end of the graph.
struct Lifetime {
  int first = -1;
  int last = -1;
};

struct MemoryPlan {
  static constexpr size_t kNotPlanned = SIZE_MAX;
  std::vector<size_t> offset;  // per tensor id; kNotPlanned for weights, inputs, states ...
  std::vector<Lifetime> lifetime;
  size_t arena_bytes = 0;  // size of the arena
  size_t naive_bytes = 0;  // what giving every tensor its own memory would take
};

// Plans the Intermediate and Output tensors of g. Offsets are multiples of alignment.
MemoryPlan plan_memory(const Graph& g, size_t alignment = 256);

}  // namespace llm
