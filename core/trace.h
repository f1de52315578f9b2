// What a compiled step runs (llmcli trace) and where its time goes (llmcli bench
// --profile): built from an Executor's bound nodes and its Program's dispatches.
// Bytes and FLOPs are estimated here from shapes and dtypes, the same for every
// backend; backends only say which kernel served which nodes and how long it took.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/executor.h"

namespace llm {

// One node of a step as the executor bound it.
struct TraceOp {
  std::string name;                 // "layers.0.attn.q"
  std::string op;                   // "matmul"
  int layer = -1;                   // from a "layers.N." name prefix; -1 outside the layers
  std::vector<std::string> inputs;  // "f32[5, 64]" per input
  std::string output;               // "f32[5, 128]"
  int dispatch = -1;                // index into StepTrace::dispatches
  double bytes = 0;                 // estimated bytes read + written
  double flops = 0;                 // estimated floating point operations
};

struct StepTrace {
  std::string step;  // "prefill" or "decode"
  int n_tokens = 0;  // tokens in the step
  int n_past = 0;    // tokens in the cache before the step
  std::vector<TraceOp> ops;
  // What the backend launches, in order. When the backend does not say: one per
  // node, with an empty kernel name.
  std::vector<Program::Dispatch> dispatches;
};

// The trace of the step ex has compiled, run with n_past tokens already cached.
// Throws llm::Error when the backend's dispatches do not cover each node once.
StepTrace trace_step(Executor& ex, const std::string& step, int n_past);

// Layer of a node name ("layers.12.ffn.up" -> 12), -1 when it has none.
int layer_of(const std::string& node_name);

// Estimates for one bound node of a step run after n_past cached tokens. Bytes:
// inputs read plus output written (kv_append: the rows written, not the cache;
// attention: the cache rows its causal window reads). FLOPs: 2·T·K·N for a
// matmul, 4·heads·head_dim per (query, key) pair for attention, 0 otherwise.
double node_bytes(const BoundNode& bn, int n_past);
double node_flops(const BoundNode& bn, int n_past);

// Calls per op type over the step in first-seen order, with how they split over
// the layers: {"rms_norm", 5, "2 layers × 2 + 1"}.
struct OpCount {
  std::string op;
  int calls = 0;
  std::string breakdown;  // empty when the op is not in every layer the same number of times
};
std::vector<OpCount> op_counts(const StepTrace& t);

// Per-kernel totals of profiled runs of one step, per run.
struct KernelStat {
  std::string kernel;
  std::string ops;  // ops of the nodes it serves, "+"-joined ("rms_norm+matmul")
  double ms = 0;    // per run
  int calls = 0;    // per run
  double bytes = 0;
  double flops = 0;
};

struct StepProfile {
  std::string step;
  int runs = 0;
  double step_ms = 0;               // sum of all dispatch times, per run
  std::vector<KernelStat> kernels;  // sorted by time, largest first
};

// Accumulates Program::run_profiled() results of one kind of step over runs.
class Profiler {
 public:
  explicit Profiler(std::string step) : step_(std::move(step)) {}
  // One run: its trace and the time of each dispatch (ms). Throws llm::Error
  // when the counts differ.
  void add(const StepTrace& t, const std::vector<double>& ms);
  StepProfile result() const;

 private:
  std::string step_;
  std::vector<KernelStat> stats_;  // first-seen order
  int runs_ = 0;
};

nlohmann::json to_json(const StepTrace& t);
// bandwidth_gbs <= 0: unknown (no share of peak).
nlohmann::json to_json(const StepProfile& p, double bandwidth_gbs);

// The backends' environment-variable profiles (LLM_CUDA_PROFILE, LLM_VULKAN_PROFILE):
// device time per label summed over `runs` runs, largest first, on stderr.
void print_label_profile(const std::string& device, const char* unit, size_t n_dispatches,
                         const std::vector<std::string>& labels,
                         const std::vector<double>& totals_ms, int runs);

}  // namespace llm
