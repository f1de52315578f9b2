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

  // Copies host data into an Input tensor; bytes must equal the tensor's size. Inputs
  // are staged on the host and reach the device at the next run(), in one upload of
  // those that changed (steps mostly repeat theirs: block table, sequence ids).
  void set_input(const std::string& name, const void* data, size_t bytes);
  // Fills an Input tensor on the device from an Output of `src` (which may be this
  // executor) as it is once everything queued so far has run: a step fed by the one
  // before without the host in between. Sizes must match.
  void feed_input(const std::string& name, const Executor& src, const std::string& output);
  void run();
  // Program::set_context_used for the next run: the most keys a token of it attends to.
  void set_context_used(int64_t keys) { program_->set_context_used(keys); }
  // run() timing each dispatch (Program::run_profiled).
  std::vector<double> run_profiled();
  // Copies the first `bytes` of an Output tensor to the host (leading rows).
  void read_output(const std::string& name, void* dst, size_t bytes) const;
  // read_output that the host collects later with Backend::finish_download(ticket), so
  // it can queue the next step first.
  uint64_t start_read_output(const std::string& name, void* dst, size_t bytes) const;

  const Graph& graph() const { return graph_; }
  const MemoryPlan& plan() const { return plan_; }
  // The compiled step (for trace and profiling) and the nodes it was compiled from.
  // Running it directly skips the upload of changed inputs: use run().
  Program& program() { return *program_; }
  const std::vector<BoundNode>& bound_nodes() const { return bound_; }

 private:
  TensorRef ref_of(TensorId id) const;
  TensorId find_kind(const std::string& name, TensorKind kind, const char* what) const;
  // The Output tensor `name`, checked to hold at least `bytes`.
  const TensorRef& output_ref(const std::string& name, size_t bytes) const;
  // Uploads the inputs set since the last run (runs of adjacent ones in one copy).
  void flush_inputs();

  // An Input tensor's bytes in inputs_ and in input_host_, and whether the device
  // holds something else: set since the last upload (dirty) or fed by feed_input.
  struct InputSlot {
    size_t offset = 0, bytes = 0;
    bool dirty = true, fed = false;
  };

  Backend& backend_;
  Graph graph_;
  MemoryPlan plan_;
  std::unique_ptr<DeviceBuffer> arena_;
  std::unique_ptr<DeviceBuffer> inputs_;     // all Input tensors, back to back
  std::unique_ptr<DeviceBuffer> constants_;  // all Constant tensors
  std::vector<uint8_t> input_host_;          // the host copy of inputs_
  std::vector<InputSlot> input_slots_;       // in offset order
  std::vector<int> input_slot_of_;           // per tensor id, -1 for non-inputs
  std::vector<TensorRef> refs_;              // per tensor id
  std::vector<BoundNode> bound_;             // what program_ was compiled from
  std::unique_ptr<Program> program_;
};

}  // namespace llm
