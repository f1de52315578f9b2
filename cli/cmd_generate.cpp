// llmcli generate MODEL --token-ids ... -n N: one completion from token ids,
// greedy when --temperature is 0.
#include <chrono>
#include <cstdio>
#include <random>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/engine/sampler.h"
#include "core/engine/session.h"
#include "core/error.h"

namespace llm::cli {

namespace {

struct GenerateOptions {
  ModelOptions model;
  std::string token_ids;
  int n_new = 16;
  SamplingParams sampling;
  bool seed_given = false;
  bool json = false;
  bool ignore_eos = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void run_generate(const GenerateOptions& o) {
  const std::vector<int32_t> prompt = parse_token_ids(o.token_ids, "--token-ids");
  if (o.n_new < 0) fail("-n must be >= 0, got %d", o.n_new);
  SamplingParams sp = o.sampling;
  if (!o.seed_given) sp.seed = std::random_device{}();
  validate(sp);

  LoadedModel lm = load_model(o.model);
  const ModelConfig& cfg = lm.model->config();
  SessionOptions so;
  so.context_size = o.model.context_size;
  Session session(*lm.model, so);
  if (static_cast<int>(prompt.size()) + o.n_new > session.context_size())
    fail("prompt of %zu tokens plus %d new tokens exceeds the context window of %d tokens",
         prompt.size(), o.n_new, session.context_size());

  Sampler sampler(sp);
  std::vector<int32_t> out;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<float> logits = session.forward(prompt, /*all_logits=*/false);
  const double prefill_s = seconds_since(t0);
  const auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < o.n_new; i++) {
    const int32_t next = sampler.sample(logits.data(), cfg.vocab_size);
    out.push_back(next);
    bool eos = false;
    for (int e : cfg.eos_token_ids) eos |= next == e;
    if ((eos && !o.ignore_eos) || i + 1 == o.n_new) break;
    logits = session.forward({next}, /*all_logits=*/false);
  }
  const double decode_s = seconds_since(t1);

  if (o.json) {
    std::printf("%s\n", nlohmann::json{{"ids", out}}.dump().c_str());
  } else {
    for (size_t i = 0; i < out.size(); i++) std::printf(i ? ",%d" : "%d", out[i]);
    std::printf("\n");
  }
  const int decoded = static_cast<int>(out.size()) - 1;
  std::fprintf(stderr, "llmcli: prompt %zu tokens in %.3f s (%.1f tok/s), %d new tokens",
               prompt.size(), prefill_s, prompt.size() / prefill_s, static_cast<int>(out.size()));
  if (decoded > 0)
    std::fprintf(stderr, ", decode %.1f tok/s", decoded / decode_s);
  std::fprintf(stderr, "\n");
}

}  // namespace

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate tokens after a prompt of token ids");
  auto o = std::make_shared<GenerateOptions>();
  o->sampling.temperature = 0.8f;
  o->sampling.top_p = 0.95f;
  add_model_options(cmd, o->model);
  cmd->add_option("--token-ids", o->token_ids, "Prompt token ids, comma-separated")->required();
  cmd->add_option("-n,--max-tokens", o->n_new, "New tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", o->sampling.temperature, "0 means greedy")
      ->capture_default_str();
  cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling threshold")
      ->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "Keep the k most likely tokens (0: off)");
  cmd->add_option("--min-p", o->sampling.min_p, "Drop tokens below min_p * p_max (0: off)");
  auto* seed = cmd->add_option("--seed", o->sampling.seed, "Random seed (default: random)");
  cmd->add_flag("--json", o->json, "Print {\"ids\":[...]}");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Do not stop at the model's EOS tokens");
  cmd->callback([o, seed]() {
    o->seed_given = seed->count() > 0;
    run_generate(*o);
  });
}

}  // namespace llm::cli
