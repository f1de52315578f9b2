// llmcli synth --shape tiny|llama-1b|llama-7b|llama-8b --quantization Q [--vocab FILE]
// [--format native|gguf] -o OUT: a random-weight llama model of a real shape, for
// benchmarks, with a real tokenizer when --vocab is given.
#include <cstdio>

#include "cli/common.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/models/synth.h"

namespace llm::cli {

namespace {

struct SynthCliOptions {
  SynthOptions synth;
  int shard_mib = 1024;
};

}  // namespace

void register_synth(CLI::App& app) {
  auto* cmd = app.add_subcommand("synth", "Write a random-weight model of a real shape");
  auto o = std::make_shared<SynthCliOptions>();
  cmd->add_option("--shape", o->synth.shape, "tiny, llama-1b, llama-7b or llama-8b")->required();
  cmd->add_option("--quantization", o->synth.quantization,
                  "q4f16_1, q8f16_1, q0f16, q0bf16, q0f32, or q4_1 (GGUF Q4_1 blocks, "
                  "--format gguf: what Q4_K files load as)")
      ->capture_default_str();
  cmd->add_option("--vocab", o->synth.vocab,
                  "Tokenizer: a GGUF vocab or a tokenizer.json (sets vocab_size)");
  cmd->add_option("--format", o->synth.format, "native (a folder) or gguf (a file)")
      ->capture_default_str();
  cmd->add_option("-o,--output", o->synth.out, "Output folder (native) or .gguf file")->required();
  cmd->add_option("--seed", o->synth.seed, "Random seed")->capture_default_str();
  cmd->add_option("--threads", o->synth.threads, "Threads (default: all hardware threads)")
      ->check(CLI::Range(1, kMaxThreads));
  cmd->add_option("--max-shard-size", o->shard_mib, "MiB per safetensors shard (native)")
      ->capture_default_str();
  cmd->callback([o]() {
    if (o->shard_mib <= 0) fail("--max-shard-size must be positive");
    SynthOptions so = o->synth;
    so.shard_bytes = static_cast<size_t>(o->shard_mib) << 20;
    ProgressBar bar("synth " + so.shape + " " + so.quantization);
    so.progress = bar.callback();
    synth_model(so);
    bar.finish();
    std::fprintf(stderr, "llmcli: wrote %s (%s)\n", so.out.c_str(), so.format.c_str());
  });
}

}  // namespace llm::cli
