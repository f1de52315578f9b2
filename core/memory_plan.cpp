#include "core/memory_plan.h"

#include <algorithm>

#include "core/error.h"

namespace llm {

namespace {

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

bool is_planned(const TensorInfo& t) {
  return t.kind == TensorKind::Intermediate || t.kind == TensorKind::Output;
}

}  // namespace

MemoryPlan plan_memory(const Graph& g, size_t alignment) {
  const auto& tensors = g.tensors();
  const auto& nodes = g.nodes();
  MemoryPlan plan;
  plan.offset.assign(tensors.size(), MemoryPlan::kNotPlanned);
  plan.lifetime.assign(tensors.size(), Lifetime{});

  const int n_nodes = static_cast<int>(nodes.size());
  for (int i = 0; i < n_nodes; i++) {
    const Node& n = nodes[i];
    for (TensorId in : n.inputs) {
      if (!is_planned(tensors[in])) continue;
      if (plan.lifetime[in].first < 0)
        fail("graph: node '%s' reads a tensor before any node writes it", n.name.c_str());
      plan.lifetime[in].last = i;
    }
    if (is_planned(tensors[n.output])) {
      Lifetime& lt = plan.lifetime[n.output];
      if (lt.first < 0) lt.first = i;
      lt.last = std::max(lt.last, i);
    }
  }

  // Greedy by size, largest first: each tensor goes at the lowest offset that
  // does not collide with an already placed tensor whose lifetime overlaps.
  std::vector<TensorId> order;
  for (TensorId id = 0; id < static_cast<TensorId>(tensors.size()); id++) {
    if (!is_planned(tensors[id]) || plan.lifetime[id].first < 0) continue;
    if (tensors[id].kind == TensorKind::Output) {
      // Outputs are read after the step, and backends may compute one in the same
      // launch as the node before it (a norm and the head GEMV), so none shares memory
      // with that node's inputs either.
      plan.lifetime[id].last = n_nodes;
      plan.lifetime[id].first = std::max(0, plan.lifetime[id].first - 1);
    }
    order.push_back(id);
  }
  std::vector<size_t> bytes(tensors.size(), 0);
  for (TensorId id : order) {
    bytes[id] = align_up(tensor_bytes(tensors[id].dtype, tensors[id].shape), alignment);
    plan.naive_bytes += bytes[id];
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](TensorId a, TensorId b) { return bytes[a] > bytes[b]; });

  struct Placed {
    size_t begin, end;
    Lifetime lt;
  };
  std::vector<Placed> placed;
  for (TensorId id : order) {
    const Lifetime lt = plan.lifetime[id];
    std::vector<std::pair<size_t, size_t>> busy;
    for (const Placed& p : placed)
      if (p.lt.first <= lt.last && lt.first <= p.lt.last) busy.emplace_back(p.begin, p.end);
    std::sort(busy.begin(), busy.end());
    size_t off = 0;
    for (const auto& [b, e] : busy) {
      if (off + bytes[id] <= b) break;
      off = std::max(off, e);
    }
    plan.offset[id] = off;
    placed.push_back({off, off + bytes[id], lt});
    plan.arena_bytes = std::max(plan.arena_bytes, off + bytes[id]);
  }
  return plan;
}

}  // namespace llm
