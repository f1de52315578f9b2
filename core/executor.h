// The executor: plans a graph's memory, binds weights and states, checks that
// the backend implements every node, compiles the step once, and runs it.
// Per-step host work is writing the inputs and reading the outputs: the nodes
// are bound once, so backends can replay the recorded step.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/graph.h"
#include "core/memory_plan.h"

namespace llm {

// Returns where a Weight or State tensor lives; throws llm::Error when it
// does not exist or does not match the graph's shape and dtype.
using TensorResolver = std::function<TensorRef(const TensorInfo&)>;

class Executor {
 public:
  Executor(Backend& backend, Graph graph, const TensorResolver& weights,
           const TensorResolver& states);

  // Copies host data into an Input tensor; bytes must equal the tensor's size.
  void set_input(const std::string& name, const void* data, size_t bytes);
  void run();
  // Copies the first `bytes` of an Output tensor to the host (leading rows).
  void read_output(const std::string& name, void* dst, size_t bytes) const;

  const Graph& graph() const { return graph_; }
  const MemoryPlan& plan() const { return plan_; }
  // The compiled step (for trace and profiling) and the nodes it was compiled from.
  Program& program() { return *program_; }
  const std::vector<BoundNode>& bound_nodes() const { return bound_; }

 private:
  TensorRef ref_of(TensorId id) const;
  TensorId find_kind(const std::string& name, TensorKind kind, const char* what) const;

  Backend& backend_;
  Graph graph_;
  MemoryPlan plan_;
  std::unique_ptr<DeviceBuffer> arena_;
  std::unique_ptr<DeviceBuffer> inputs_;     // all Input tensors, back to back
  std::unique_ptr<DeviceBuffer> constants_;  // all Constant tensors
  std::vector<TensorRef> refs_;              // per tensor id
  std::vector<BoundNode> bound_;             // what program_ was compiled from
  std::unique_ptr<Program> program_;
};

}  // namespace llm
