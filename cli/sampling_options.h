// Sampling flags shared by `generate` and `chat`.
#pragma once

#include <CLI/CLI.hpp>

#include "core/engine/sampler.h"

namespace llm::cli {

struct SamplingOptions {
  SamplingParams params;
  CLI::Option* seed = nullptr;
  int lookup_draft = 0;  // EngineOptions::lookup_draft
  // The params with a random seed when --seed was not given; validated.
  SamplingParams resolve() const;
};

// --temperature --top-p --top-k --min-p --repeat-penalty --presence-penalty
// --frequency-penalty --seed, with defaults temperature 0.8, top_p 0.95; and
// --lookup-draft (speculative decoding by prompt lookup).
void add_sampling_options(CLI::App* cmd, SamplingOptions& o);
// --lookup-draft N alone (serve, whose sampling comes with each request).
void add_lookup_draft_option(CLI::App* cmd, int& lookup_draft);

}  // namespace llm::cli
