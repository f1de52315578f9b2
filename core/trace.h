// What a compiled step runs (llmcli trace) and where its time goes (llmcli bench
// --profile): built from an Executor's bound nodes and its Program's dispatches.
// Bytes and FLOPs are estimated here from shapes and dtypes, the same for every
// backend; backends only say which kernel served which nodes and how long it took.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/backend.h"
#include "core/executor.h"

namespace llm {

// One node of a step as the executor bound it.
struct TraceOp {
  int index = 0;       // position in the step's node list
  std::string name;    // "layers.0.attn.q"
  std::string op;      // "matmul"
  int layer = -1;      // from a "layers.N." name prefix; -1 outside the layers
  std::vector<std::string> inputs;  // "f32[5,64]" per input
  std::string output;               // "f32[5,128]"
  std::string kernel;               // what served it ("" when the backend does not say)
  int dispatch = -1;                // index into StepTrace::dispatches
  double bytes = 0;                 // estimated bytes read + written
  double flops = 0;                 // estimated floating point operations
};

struct StepTrace {
  std::string step;  // "prefill" or "decode"
  int n_tokens = 0;
  std::vector<TraceOp> ops;
  std::vector<Program::Dispatch> dispatches;  // one per node when the backend does not say
};

// The trace of the step an executor has compiled.
StepTrace trace_step(Executor& ex, const std::string& step, int n_tokens);

// Layer of a node name ("layers.12.mlp.up" -> 12), -1 when it has none.
int layer_of(const std::string& node_name);

// Estimated bytes moved (inputs read + output written; for kv_append the rows
// written; for attention the cache rows a causal step reads) and FLOPs (2·T·K·N
// for matmul, attention's QKᵀ and PV) of one bound node.
double node_bytes(const BoundNode& bn);
double node_flops(const BoundNode& bn);

// Calls per op type over the whole step, in first-seen order: {"rms_norm", 48}.
std::vector<std::pair<std::string, int>> op_counts(const StepTrace& t);

// Per-kernel totals over profiled runs of one step.
struct KernelStat {
  std::string kernel;
  std::string op;  // op of the nodes it serves ("matmul", "rms_norm+matmul" ...)
  double total_ms = 0;
  int calls = 0;
  double bytes = 0;
  double flops = 0;
};

struct StepProfile {
  std::string step;
  int runs = 0;
  double step_ms = 0;  // sum of all dispatch times, per run
  std::vector<KernelStat> kernels;  // sorted by total time, largest first
};

// Accumulates run_profiled() results of one step (a trace of it) over several runs.
class Profiler {
 public:
  explicit Profiler(StepTrace trace);
  // Adds one run's per-dispatch times; throws when their count does not match.
  void add(const std::vector<double>& ms);
  StepProfile result() const;
  const StepTrace& trace() const { return trace_; }

 private:
  StepTrace trace_;
  std::vector<double> totals_;
  int runs_ = 0;
};

nlohmann::json to_json(const StepTrace& t);
nlohmann::json to_json(const StepProfile& p, double bandwidth_gbs);

}  // namespace llm
