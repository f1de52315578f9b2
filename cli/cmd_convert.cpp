// llmcli convert SRC -o DIR --quantization Q: a Hugging Face folder, a GGUF file or
// a native folder to a native folder (weights quantized once, multi-threaded).
// llmcli gen-config SRC -o DIR --quantization Q: only llm-config.json and the
// tokenizer files, like MLC's gen_config.
#include <cstdio>
#include <cstdlib>

#include "cli/common.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/formats/native_folder.h"

namespace llm::cli {

namespace {

struct ConvertCliOptions {
  std::string src;
  std::string out;
  GenConfigOptions gen;
  int shard_mib = 1024;
};

void add_gen_config_options(CLI::App* cmd, ConvertCliOptions& o) {
  cmd->add_option("src", o.src, "Source: a Hugging Face folder, a .gguf file or a native folder")
      ->required();
  cmd->add_option("-o,--output", o.out, "Output folder")->required();
  cmd->add_option("--quantization", o.gen.quantization, "q4f16_1, q8f16_1, q0f16, q0bf16 or q0f32")
      ->required();
  cmd->add_option("--conv-template", o.gen.conv_template,
                  "Conversation template (default: guessed from the vocab)");
  // 0 means "the default" inside; given on the command line it is an error.
  cmd->add_option("--context-window-size", o.gen.context_window_size,
                  "Context window (default: the model's max_position_embeddings)")
      ->check(CLI::Range(1, 1 << 30));
  cmd->add_option("--prefill-chunk-size", o.gen.prefill_chunk_size,
                  "Tokens per prefill step (default: min(2048, context window))")
      ->check(CLI::Range(1, 1 << 30));
  cmd->add_option("--sliding-window-size", o.gen.sliding_window_size,
                  "Attention window, -1 for none (default: the model's)")
      ->check(
          [](const std::string& v) {
            return v == "-1" || std::atoll(v.c_str()) >= 1 ? std::string()
                                                           : "must be -1 (none) or positive";
          },
          "-1 or positive");
}

}  // namespace

void register_convert(CLI::App& app) {
  auto* conv = app.add_subcommand("convert", "Convert a model to the native folder format");
  auto co = std::make_shared<ConvertCliOptions>();
  add_gen_config_options(conv, *co);
  conv->add_option("--threads", co->gen.threads, "Threads (default: all hardware threads)")
      ->check(CLI::Range(1, kMaxThreads));
  conv->add_option("--max-shard-size", co->shard_mib, "MiB per safetensors shard")
      ->capture_default_str();
  conv->callback([co]() {
    if (co->shard_mib <= 0) fail("--max-shard-size must be positive");
    GenConfigOptions g = co->gen;
    g.shard_bytes = static_cast<size_t>(co->shard_mib) << 20;
    ProgressBar bar("convert " + g.quantization);
    g.progress = bar.callback();
    convert_model(resolve_model(co->src), co->out, g);
    bar.finish();
    std::fprintf(stderr, "llmcli: wrote %s\n", co->out.c_str());
  });

  auto* gen = app.add_subcommand("gen-config", "Write llm-config.json and the tokenizer files");
  auto go = std::make_shared<ConvertCliOptions>();
  add_gen_config_options(gen, *go);
  gen->callback([go]() {
    const NativeConfig nc = gen_native_config(resolve_model(go->src), go->out, go->gen);
    std::fprintf(stderr, "llmcli: wrote %s/%s (conv_template %s, context %d)\n", go->out.c_str(),
                 kNativeConfigName, nc.conv_template.c_str(), nc.context_window_size);
  });
}

}  // namespace llm::cli
