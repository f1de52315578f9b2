// llmcli: the command line of llmrt. Each subcommand lives in cmd_*.cpp.
#include <cstdio>

#include "cli/common.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"llmcli: run large language models on CUDA, Vulkan or the CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "llmcli 0.1.0");
  llm::cli::register_devices(app);
  llm::cli::register_logits(app);
  llm::cli::register_generate(app);
  llm::cli::register_embed(app);
  llm::cli::register_chat(app);
  llm::cli::register_serve(app);
  llm::cli::register_tokenize(app);
  llm::cli::register_bench(app);
  llm::cli::register_template(app);
  llm::cli::register_synth(app);
  llm::cli::register_convert(app);
  llm::cli::register_trace(app);
  llm::cli::register_pull(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const llm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of host memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
