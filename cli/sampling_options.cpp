#include "cli/sampling_options.h"

#include <random>

namespace llm::cli {

SamplingParams SamplingOptions::resolve() const {
  SamplingParams p = params;
  if (!seed || seed->count() == 0) p.seed = std::random_device{}();
  validate(p);
  return p;
}

void add_sampling_options(CLI::App* cmd, SamplingOptions& o) {
  o.params.temperature = 0.8f;
  o.params.top_p = 0.95f;
  cmd->add_option("--temperature", o.params.temperature, "0 means greedy")->capture_default_str();
  cmd->add_option("--top-p", o.params.top_p, "Nucleus sampling threshold")->capture_default_str();
  cmd->add_option("--top-k", o.params.top_k, "Keep the k most likely tokens (0: off)");
  cmd->add_option("--min-p", o.params.min_p, "Drop tokens below min_p * p_max (0: off)");
  cmd->add_option("--repeat-penalty", o.params.repetition_penalty,
                  "Divide logits of tokens already seen (1: off)");
  cmd->add_option("--presence-penalty", o.params.presence_penalty,
                  "Subtract from logits of generated tokens (-2..2)");
  cmd->add_option("--frequency-penalty", o.params.frequency_penalty,
                  "Subtract per occurrence in the output (-2..2)");
  o.seed = cmd->add_option("--seed", o.params.seed, "Random seed (default: random)");
  add_lookup_draft_option(cmd, o.lookup_draft);
}

void add_lookup_draft_option(CLI::App* cmd, int& lookup_draft) {
  cmd->add_option("--lookup-draft", lookup_draft,
                  "Speculative decoding: check up to N tokens that followed the reply's latest "
                  "words earlier (prompt lookup) in each step; same tokens (0: off)")
      ->check(CLI::Range(0, 32))
      ->capture_default_str();
}

}  // namespace llm::cli
