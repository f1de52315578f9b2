// The executor's memory planning: tensors alive at the same time never share
// bytes, and tensors that are not share memory.
#include <catch2/catch.hpp>
#include <random>

#include "core/memory_plan.h"
#include "core/models/architecture.h"

using namespace llm;

namespace {

// Asserts the invariant of a plan over every pair of planned tensors.
void check_no_overlap(const Graph& g, const MemoryPlan& plan) {
  const auto& ts = g.tensors();
  for (size_t a = 0; a < ts.size(); a++) {
    if (plan.offset[a] == MemoryPlan::kNotPlanned) continue;
    const size_t a_end = plan.offset[a] + tensor_bytes(ts[a].dtype, ts[a].shape);
    REQUIRE(a_end <= plan.arena_bytes);
    REQUIRE(plan.offset[a] % 256 == 0);
    for (size_t b = a + 1; b < ts.size(); b++) {
      if (plan.offset[b] == MemoryPlan::kNotPlanned) continue;
      const Lifetime la = plan.lifetime[a], lb = plan.lifetime[b];
      const bool live_together = la.first <= lb.last && lb.first <= la.last;
      if (!live_together) continue;
      const size_t b_end = plan.offset[b] + tensor_bytes(ts[b].dtype, ts[b].shape);
      const bool disjoint = a_end <= plan.offset[b] || b_end <= plan.offset[a];
      INFO("tensors " << a << " and " << b);
      REQUIRE(disjoint);
    }
  }
}

}  // namespace

TEST_CASE("a chain reuses memory: two buffers suffice", "[executor]") {
  Graph g;
  TensorId x = g.input("x", DType::F32, {4, 64});  // 1 KiB
  for (int i = 0; i < 10; i++)
    x = g.add(Op::Scale, "s" + std::to_string(i), {x}, DType::F32, {4, 64});
  g.mark_output(x, "y");
  const MemoryPlan plan = plan_memory(g, 256);
  check_no_overlap(g, plan);
  CHECK(plan.naive_bytes == 10 * 1024);
  // Two buffers for the chain, a third for the output: it keeps apart from the input
  // of the node before it too (a backend may compute both in one launch).
  CHECK(plan.arena_bytes == 3 * 1024);
  // The input is not planned; the output lives to the end.
  CHECK(plan.offset[g.find("x")] == MemoryPlan::kNotPlanned);
  CHECK(plan.lifetime[g.find("y")].last == static_cast<int>(g.nodes().size()));
}

TEST_CASE("a tensor read later stays alive across the nodes between", "[executor]") {
  Graph g;
  const TensorId in = g.input("x", DType::F32, {256});
  const TensorId a = g.add(Op::Scale, "a", {in}, DType::F32, {256});
  const TensorId b = g.add(Op::Scale, "b", {a}, DType::F32, {256});
  const TensorId c = g.add(Op::Scale, "c", {b}, DType::F32, {256});
  const TensorId d = g.add(Op::Add, "d", {a, c}, DType::F32, {256});  // a still needed here
  g.mark_output(d, "out");
  const MemoryPlan plan = plan_memory(g, 256);
  check_no_overlap(g, plan);
  CHECK(plan.lifetime[a].first == 0);
  CHECK(plan.lifetime[a].last == 3);
  CHECK(plan.offset[a] != plan.offset[c]);
  CHECK(plan.offset[a] != plan.offset[b]);
}

TEST_CASE("random graphs never share bytes between live tensors", "[executor]") {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 50; trial++) {
    Graph g;
    std::vector<TensorId> pool = {g.input("x", DType::F32, {3})};
    const int n = 5 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; i++) {
      const TensorId lhs = pool[rng() % pool.size()], rhs = pool[rng() % pool.size()];
      const int64_t len = 1 + rng() % 700;  // sizes that do not fill the alignment
      pool.push_back(g.add(Op::Add, "n" + std::to_string(i), {lhs, rhs}, DType::F32, {len}));
    }
    g.mark_output(pool.back(), "out");
    const MemoryPlan plan = plan_memory(g, 256);
    check_no_overlap(g, plan);
    CHECK(plan.arena_bytes <= plan.naive_bytes);
  }
}

TEST_CASE("the llama graph plans far less than naive and keeps invariants", "[executor]") {
  ModelConfig cfg;
  cfg.model_type = "llama";
  cfg.vocab_size = 1000;
  cfg.hidden_size = 96;
  cfg.intermediate_size = 250;
  cfg.num_layers = 6;
  cfg.num_heads = 6;
  cfg.num_kv_heads = 2;
  cfg.head_dim = 16;
  cfg.max_position_embeddings = 64;
  StepShape shape;
  shape.n_tokens = 13;
  shape.n_logit_rows = 13;
  shape.max_pages_per_seq = 4;
  shape.n_cache_slots = 64;
  const Graph g = build_step_graph(cfg, shape, [](const std::string&) { return DType::F32; });
  const MemoryPlan plan = plan_memory(g, 256);
  check_no_overlap(g, plan);
  // Memory does not grow with depth: six layers plan like one.
  CHECK(plan.arena_bytes * 4 < plan.naive_bytes);
}
