// llmcli logits MODEL --token-ids 1,2,3 --out FILE.safetensors: one forward
// pass; writes the F32 tensor `logits` [T, vocab].
#include <cstdio>

#include "cli/common.h"
#include "core/engine/session.h"
#include "core/formats/safetensors.h"

namespace llm::cli {

void register_logits(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "Run one forward pass and write all logits");
  auto opts = std::make_shared<ModelOptions>();
  auto ids = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  add_model_options(cmd, *opts);
  cmd->add_option("--token-ids", *ids, "Prompt token ids, comma-separated")->required();
  cmd->add_option("--out", *out, "Output .safetensors file")->required();
  cmd->callback([opts, ids, out]() {
    const std::vector<int32_t> tokens = parse_int_list(*ids, "--token-ids", "token id");
    LoadedModel lm = load_model(*opts);
    SessionOptions so;
    so.context_size = opts->context_size;
    so.kv_dtype = kv_cache_dtype(*opts);
    Session session(*lm.model, so);
    const std::vector<float> logits = session.forward(tokens, /*all_logits=*/true);
    HostTensor t;
    t.dtype = DType::F32;
    t.shape = {static_cast<int64_t>(tokens.size()), lm.model->config().vocab_size};
    t.data = logits.data();
    t.nbytes = logits.size() * sizeof(float);
    write_safetensors(*out, {{"logits", t}});
    std::fprintf(stderr, "llmcli: wrote logits %s to %s\n", t.shape.str().c_str(), out->c_str());
  });
}

}  // namespace llm::cli
