// llmcli pull hf://ORG/NAME[@REV][/FILE.gguf]: downloads a model into the cache
// ($LLMRT_CACHE, default ~/.cache/llmrt) and prints where it is; every other
// command takes the same hf:// argument and downloads what is missing itself.
#include <cstdio>

#include "cli/common.h"
#include "core/error.h"
#include "core/sources/hf_hub.h"

namespace llm::cli {

void register_pull(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  auto* cmd =
      app.add_subcommand("pull", "Download a model from the Hugging Face Hub into the cache");
  cmd->add_option("model", *model, "hf://ORG/NAME[@REVISION] or hf://ORG/NAME[@REVISION]/FILE.gguf")
      ->required();
  cmd->callback([model]() {
    parse_hf_uri(*model);  // a clear error for anything that is not hf://
    std::printf("%s\n", resolve_model(*model).c_str());
  });
}

}  // namespace llm::cli
