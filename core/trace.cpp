#include "core/trace.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "core/error.h"
#include "core/models/architecture.h"

namespace llm {

namespace {

std::string tensor_str(DType t, const Shape& s) { return dtype_name(t) + s.str(); }

double bytes_of(const TensorRef& r) { return static_cast<double>(tensor_bytes(r.dtype, r.shape)); }

// Cache rows attention reads for T new tokens after n_past: the causal window of
// the last token reaches back furthest in total.
int64_t attended_rows(const OpParams& p, int64_t T, int n_past) {
  const int64_t all = n_past + T;
  return p.window > 0 ? std::min<int64_t>(all, p.window + T - 1) : all;
}

}  // namespace

int layer_of(const std::string& name) {
  static const std::string kPrefix = "layers.";
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return -1;
  const char* digits = name.c_str() + kPrefix.size();
  char* end = nullptr;
  const long l = std::strtol(digits, &end, 10);
  if (end == digits || (*end != '.' && *end != '\0') || l < 0) return -1;
  return static_cast<int>(l);
}

double node_bytes(const BoundNode& bn, int n_past) {
  const Node& n = *bn.node;
  const auto& in = bn.inputs;
  switch (n.op) {
    case Op::GetRows: {
      // Only the rows asked for are read from the table.
      const int64_t rows = in[1].shape.numel();
      return static_cast<double>(dtype_row_bytes(in[0].dtype, in[0].shape.row_len())) * rows +
             bytes_of(in[1]) + bytes_of(bn.output);
    }
    case Op::KvAppend: {
      const int64_t rows = in[0].shape.rows();
      return bytes_of(in[0]) + bytes_of(in[1]) +
             static_cast<double>(dtype_row_bytes(in[2].dtype, in[2].shape.row_len())) * rows;
    }
    case Op::Attention: {
      const int64_t rows = attended_rows(n.params, in[0].shape.rows(), n_past);
      double b = bytes_of(in[0]) + bytes_of(bn.output);
      for (size_t k = 1; k <= 2; k++)
        b += static_cast<double>(dtype_row_bytes(in[k].dtype, in[k].shape.row_len())) * rows;
      for (size_t k = 3; k < in.size(); k++) b += bytes_of(in[k]);
      return b;
    }
    default: {
      double b = bytes_of(bn.output);
      for (const TensorRef& r : in) b += bytes_of(r);
      return b;
    }
  }
}

double node_flops(const BoundNode& bn, int n_past) {
  const Node& n = *bn.node;
  if (n.op == Op::MatMul) {
    const double T = static_cast<double>(bn.inputs[0].shape.rows());
    const double K = static_cast<double>(bn.inputs[0].shape.row_len());
    const double N = static_cast<double>(bn.inputs[1].shape.rows());
    return 2 * T * K * N;
  }
  if (n.op == Op::Attention) {
    // QKᵀ and PV: 2 multiply-adds per head dimension per (query, key) pair.
    const OpParams& p = n.params;
    const int64_t T = bn.inputs[0].shape.rows();
    double pairs = 0;
    for (int64_t t = 0; t < T; t++) {
      const int64_t ctx = n_past + t + 1;
      pairs += static_cast<double>(p.window > 0 ? std::min<int64_t>(ctx, p.window) : ctx);
    }
    return 4.0 * p.n_heads * p.head_dim * pairs;
  }
  return 0;
}

StepTrace trace_step(Executor& ex, const std::string& step, int n_past) {
  const std::vector<BoundNode>& nodes = ex.bound_nodes();
  StepTrace t;
  t.step = step;
  t.n_past = n_past;
  t.n_tokens = 0;
  for (const TensorInfo& ti : ex.graph().tensors())
    if (ti.kind == TensorKind::Input && ti.name == step_io::kTokens)
      t.n_tokens = static_cast<int>(ti.shape.numel());

  t.dispatches = ex.program().dispatches();
  if (t.dispatches.empty()) {
    for (size_t i = 0; i < nodes.size(); i++) t.dispatches.push_back({"", {static_cast<int>(i)}});
  }
  std::vector<int> served(nodes.size(), -1);
  for (size_t d = 0; d < t.dispatches.size(); d++) {
    for (int i : t.dispatches[d].nodes) {
      if (i < 0 || i >= static_cast<int>(nodes.size()))
        fail("trace: dispatch %zu (%s) names node %d of %zu", d, t.dispatches[d].kernel.c_str(), i,
             nodes.size());
      // A node may take several dispatches (split-K attention and its merge); it is
      // listed under the first.
      if (served[i] < 0) served[i] = static_cast<int>(d);
    }
  }
  for (size_t i = 0; i < nodes.size(); i++) {
    const BoundNode& bn = nodes[i];
    if (served[i] < 0) fail("trace: no dispatch serves node '%s'", bn.node->name.c_str());
    TraceOp op;
    op.name = bn.node->name;
    op.op = op_name(bn.node->op);
    op.layer = layer_of(op.name);
    for (const TensorRef& r : bn.inputs) op.inputs.push_back(tensor_str(r.dtype, r.shape));
    op.output = tensor_str(bn.output.dtype, bn.output.shape);
    op.dispatch = served[i];
    op.bytes = node_bytes(bn, n_past);
    op.flops = node_flops(bn, n_past);
    t.ops.push_back(std::move(op));
  }
  return t;
}

std::vector<OpCount> op_counts(const StepTrace& t) {
  std::vector<OpCount> out;
  std::map<std::string, std::map<int, int>> per_layer;  // op -> layer -> calls
  int n_layers = 0;
  for (const TraceOp& op : t.ops) {
    auto it = std::find_if(out.begin(), out.end(), [&](const OpCount& c) { return c.op == op.op; });
    if (it == out.end()) it = out.insert(out.end(), OpCount{op.op, 0, ""});
    it->calls++;
    per_layer[op.op][op.layer]++;
    n_layers = std::max(n_layers, op.layer + 1);
  }
  for (OpCount& c : out) {
    const std::map<int, int>& m = per_layer[c.op];
    const auto outside = m.find(-1);
    const int rest = outside == m.end() ? 0 : outside->second;
    const int in_layers = c.calls - rest;
    if (in_layers == 0 || n_layers == 0) continue;
    // Same count in every layer?
    const int each = m.count(0) ? m.at(0) : 0;
    bool uniform = each > 0;
    for (int l = 0; l < n_layers && uniform; l++) uniform = m.count(l) && m.at(l) == each;
    if (!uniform) continue;
    c.breakdown = std::to_string(n_layers) + " layers × " + std::to_string(each);
    if (rest) c.breakdown += " + " + std::to_string(rest);
  }
  return out;
}

void Profiler::add(const StepTrace& t, const std::vector<double>& ms) {
  if (ms.size() != t.dispatches.size())
    fail("profile: the backend timed %zu dispatches of a step that has %zu", ms.size(),
         t.dispatches.size());
  for (size_t d = 0; d < ms.size(); d++) {
    const Program::Dispatch& dp = t.dispatches[d];
    std::string ops;
    for (int i : dp.nodes) {
      const std::string& o = t.ops[i].op;
      if (ops.empty() || ("+" + ops + "+").find("+" + o + "+") == std::string::npos)
        ops += (ops.empty() ? "" : "+") + o;
    }
    // Without a kernel name from the backend, the op stands for it.
    const std::string kernel = dp.kernel.empty() ? ops : dp.kernel;
    auto it = std::find_if(stats_.begin(), stats_.end(),
                           [&](const KernelStat& s) { return s.kernel == kernel; });
    if (it == stats_.end()) it = stats_.insert(stats_.end(), KernelStat{kernel, ops, 0, 0, 0, 0});
    if (("+" + it->ops + "+").find("+" + ops + "+") == std::string::npos) it->ops += "+" + ops;
    it->ms += ms[d];
    it->calls++;
    for (int i : dp.nodes) {
      it->bytes += t.ops[i].bytes;
      it->flops += t.ops[i].flops;
    }
  }
  runs_++;
}

StepProfile Profiler::result() const {
  StepProfile p;
  p.step = step_;
  p.runs = runs_;
  if (runs_ == 0) return p;
  for (KernelStat s : stats_) {
    s.ms /= runs_;
    s.calls /= runs_;
    s.bytes /= runs_;
    s.flops /= runs_;
    p.step_ms += s.ms;
    p.kernels.push_back(std::move(s));
  }
  std::stable_sort(p.kernels.begin(), p.kernels.end(),
                   [](const KernelStat& a, const KernelStat& b) { return a.ms > b.ms; });
  return p;
}

nlohmann::json to_json(const StepTrace& t) {
  nlohmann::json ops = nlohmann::json::array();
  for (const TraceOp& op : t.ops) {
    ops.push_back({{"index", static_cast<int>(ops.size())},
                   {"name", op.name},
                   {"op", op.op},
                   {"layer", op.layer},
                   {"inputs", op.inputs},
                   {"output", op.output},
                   {"dispatch", op.dispatch},
                   {"kernel", t.dispatches[op.dispatch].kernel},
                   {"bytes", op.bytes},
                   {"flops", op.flops}});
  }
  nlohmann::json dispatches = nlohmann::json::array();
  for (const Program::Dispatch& d : t.dispatches)
    dispatches.push_back({{"kernel", d.kernel}, {"nodes", d.nodes}});
  nlohmann::json summary = nlohmann::json::array();
  for (const OpCount& c : op_counts(t))
    summary.push_back({{"op", c.op}, {"calls", c.calls}, {"breakdown", c.breakdown}});
  return {{"step", t.step}, {"n_tokens", t.n_tokens},   {"n_past", t.n_past},
          {"ops", ops},     {"dispatches", dispatches}, {"summary", summary}};
}

nlohmann::json to_json(const StepProfile& p, double bandwidth_gbs) {
  nlohmann::json kernels = nlohmann::json::array();
  for (const KernelStat& k : p.kernels) {
    const double s = k.ms / 1e3;
    nlohmann::json j{{"kernel", k.kernel},
                     {"ops", k.ops},
                     {"ms", k.ms},
                     {"calls", k.calls},
                     {"avg_us", k.calls ? k.ms * 1e3 / k.calls : 0.0},
                     {"share", p.step_ms > 0 ? k.ms / p.step_ms : 0.0},
                     {"bytes", k.bytes},
                     {"gb_per_s", s > 0 ? k.bytes / s / 1e9 : 0.0},
                     {"flops", k.flops},
                     {"tflop_per_s", s > 0 ? k.flops / s / 1e12 : 0.0}};
    if (bandwidth_gbs > 0 && s > 0) j["bandwidth_share"] = k.bytes / s / 1e9 / bandwidth_gbs;
    kernels.push_back(std::move(j));
  }
  return {{"step", p.step}, {"runs", p.runs}, {"step_ms", p.step_ms}, {"kernels", kernels}};
}

void print_label_profile(const std::string& device, const char* unit, size_t n_dispatches,
                         const std::vector<std::string>& labels,
                         const std::vector<double>& totals_ms, int runs) {
  std::vector<std::pair<std::string, double>> by_label;
  double all = 0;
  for (size_t i = 0; i < labels.size() && i < totals_ms.size(); i++) {
    all += totals_ms[i];
    auto it = std::find_if(by_label.begin(), by_label.end(),
                           [&](const auto& e) { return e.first == labels[i]; });
    if (it == by_label.end())
      by_label.push_back({labels[i], totals_ms[i]});
    else
      it->second += totals_ms[i];
  }
  std::sort(by_label.begin(), by_label.end(),
            [](const auto& a, const auto& b) { return a.second > b.second; });
  std::fprintf(stderr, "%s profile: %zu %s x %d runs, %.3f ms per run\n", device.c_str(),
               n_dispatches, unit, runs, all / runs);
  for (const auto& [label, ms] : by_label)
    std::fprintf(stderr, "  %-48s %9.3f ms per run %5.1f%%\n", label.c_str(), ms / runs,
                 all > 0 ? 100.0 * ms / all : 0.0);
}

}  // namespace llm
