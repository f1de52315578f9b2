// llmcli trace MODEL (-p TEXT | --token-ids ...): the ops the executor dispatches
// for a prefill step and a decode step, with shapes, dtypes and the kernel that
// served each, then the calls per op type.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/common.h"
#include "core/engine/sampler.h"
#include "core/engine/session.h"
#include "core/error.h"
#include "core/tokenizer/tokenizer.h"
#include "core/trace.h"

namespace llm::cli {

namespace {

struct TraceOptions {
  ModelOptions model;
  std::string prompt;
  std::string token_ids;
  int n_decode = 1;
  std::string layers;
  std::string json_path;
};

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : " ") + x;
  return s;
}

void print_step(const StepTrace& t, const std::set<int>& layers) {
  std::printf("%s: %d token%s after %d cached; %zu nodes in %zu dispatches\n", t.step.c_str(),
              t.n_tokens, t.n_tokens == 1 ? "" : "s", t.n_past, t.ops.size(), t.dispatches.size());
  std::printf("%5s %5s  %-24s %-10s %-30s %s\n", "node", "disp", "name", "op", "kernel",
              "inputs -> output");
  for (size_t d = 0; d < t.dispatches.size(); d++) {
    const Program::Dispatch& dp = t.dispatches[d];
    if (dp.nodes.empty()) {  // a helper launch (e.g. weight repacking) of its own
      if (layers.empty())
        std::printf("%5s %5zu  %-24s %-10s %s\n", "-", d, "-", "-", dp.kernel.c_str());
      continue;
    }
    for (size_t k = 0; k < dp.nodes.size(); k++) {
      const TraceOp& op = t.ops[dp.nodes[k]];
      if (!layers.empty() && !layers.count(op.layer)) continue;
      // Nodes after the first of a dispatch were fused into it.
      const std::string kernel = k > 0               ? "  + fused into " + std::to_string(d)
                                 : dp.kernel.empty() ? "-"
                                                     : dp.kernel;
      std::printf("%5d %5zu  %-24s %-10s %-30s %s -> %s\n", dp.nodes[k], d, op.name.c_str(),
                  op.op.c_str(), kernel.c_str(), join(op.inputs).c_str(), op.output.c_str());
    }
  }
  std::printf("calls per op (%s, whole step):\n", t.step.c_str());
  for (const OpCount& c : op_counts(t))
    std::printf("  %-12s %5d%s\n", c.op.c_str(), c.calls,
                c.breakdown.empty() ? "" : ("  (" + c.breakdown + ")").c_str());
  std::printf("\n");
}

void run_trace(const TraceOptions& o) {
  if (o.prompt.empty() == o.token_ids.empty()) fail("give exactly one of -p TEXT and --token-ids");
  if (o.n_decode < 1) fail("-n must be at least 1, got %d", o.n_decode);
  std::set<int> layers;
  if (!o.layers.empty())
    for (int32_t l : parse_int_list(o.layers, "--layers", "layer")) layers.insert(l);

  std::vector<int32_t> prompt;
  if (!o.token_ids.empty()) {
    prompt = parse_int_list(o.token_ids, "--token-ids", "token id");
  } else {
    prompt = Tokenizer::load(o.model.model)->encode(o.prompt, /*add_special=*/true);
    if (prompt.empty()) fail("-p \"%s\" gives no tokens", o.prompt.c_str());
  }

  LoadedModel lm = load_model(o.model);
  const ModelConfig& cfg = lm.model->config();
  for (int l : layers)
    if (l < 0 || l >= cfg.num_layers)
      fail("--layers: layer %d does not exist (the model has %d)", l, cfg.num_layers);
  SessionOptions so;
  so.context_size = o.model.context_size > 0 ? o.model.context_size
                                             : static_cast<int>(prompt.size()) + o.n_decode;
  so.prefill_chunk_size = static_cast<int>(prompt.size());  // the prompt is one step
  so.kv_dtype = kv_cache_dtype(o.model);
  Session session(*lm.model, so);

  // The prefill step, and the last of the decode steps.
  StepTrace prefill, decode;
  bool in_prefill = true;
  session.observe_steps(
      [&](Executor& ex, int n_past, const std::vector<double>&) {
        (in_prefill ? prefill : decode) = trace_step(ex, in_prefill ? "prefill" : "decode", n_past);
      },
      /*profile=*/false);
  std::vector<float> logits = session.forward(prompt, false);
  in_prefill = false;
  for (int i = 0; i < o.n_decode; i++)
    logits = session.forward({argmax(logits.data(), cfg.vocab_size)}, false);

  const DeviceInfo dev = lm.model->backend().info();
  std::printf("model %s on %s (%s)\n\n", o.model.model.c_str(), dev.id.c_str(), dev.name.c_str());
  print_step(prefill, layers);
  print_step(decode, layers);

  if (!o.json_path.empty()) {
    nlohmann::json steps = nlohmann::json::array();
    for (const StepTrace* t : {&prefill, &decode}) {
      nlohmann::json j = to_json(*t);
      if (!layers.empty()) {
        nlohmann::json kept = nlohmann::json::array();
        for (const auto& op : j["ops"])
          if (layers.count(op["layer"].get<int>())) kept.push_back(op);
        j["ops"] = kept;
      }
      steps.push_back(std::move(j));
    }
    const nlohmann::json doc{
        {"model", o.model.model}, {"device", dev.id}, {"device_name", dev.name}, {"steps", steps}};
    std::ofstream f(o.json_path);
    f << doc.dump(2) << "\n";
    if (!f) fail("cannot write %s", o.json_path.c_str());
  }
}

}  // namespace

void register_trace(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "trace", "List the ops and kernels of a prefill and a decode step, with shapes");
  auto o = std::make_shared<TraceOptions>();
  add_model_options(cmd, o->model);
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text (needs the model's tokenizer)");
  cmd->add_option("--token-ids", o->token_ids, "Prompt as token ids: 1,2,3");
  cmd->add_option("-n", o->n_decode, "Decode steps to run; the last one is traced")
      ->capture_default_str();
  cmd->add_option("--layers", o->layers, "Only list the nodes of these layers: 0,1");
  cmd->add_option("--json", o->json_path, "Also write the trace as JSON to this file");
  cmd->callback([o]() { run_trace(*o); });
}

}  // namespace llm::cli
