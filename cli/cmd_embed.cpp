// llmcli embed MODEL (-p TEXT ... | --file PATH | --token-ids 1,2,3): embeddings of one
// or more inputs through the engine (batched together), one JSON array per input and
// line on stdout.
#include <chrono>
#include <cstdio>
#include <sstream>

#include "cli/common.h"
#include "core/engine/engine.h"
#include "core/error.h"
#include "server/embeddings.h"

namespace llm::cli {

namespace {

struct EmbedOptions {
  ModelOptions model;
  std::vector<std::string> prompts;
  std::string file;
  std::string token_ids;
  std::string pooling;  // empty: the model's, else mean
  bool no_normalize = false;
};

void run_embed(const EmbedOptions& o) {
  const int sources = int(!o.prompts.empty()) + int(!o.file.empty()) + int(!o.token_ids.empty());
  if (sources != 1) fail("give exactly one of -p TEXT (repeatable), --file PATH and --token-ids");
  std::vector<std::string> texts = o.prompts;
  if (!o.file.empty()) {
    // One input per line; blank lines are skipped.
    std::istringstream in(read_input(o.file, "--file"));
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) texts.push_back(line);
    }
    if (texts.empty()) fail("--file %s holds no input (one per line)", o.file.c_str());
  }
  for (const std::string& t : texts)
    if (t.empty()) fail("-p: an input is empty");
  const Pooling pooling_flag = o.pooling.empty() ? Pooling::Mean : parse_pooling(o.pooling);

  LoadedModel lm = load_model(o.model);
  std::vector<std::vector<int32_t>> prompts;
  std::unique_ptr<Tokenizer> tok;
  if (!o.token_ids.empty()) {
    prompts.push_back(parse_int_list(o.token_ids, "--token-ids", "token id"));
  } else {
    tok = load_tokenizer(lm);
    for (const std::string& t : texts) prompts.push_back(tok->encode(t, /*add_special=*/true));
  }
  EmbeddingRequest req;
  req.pooling = o.pooling.empty() ? default_pooling(lm.model->config().pooling) : pooling_flag;
  req.normalize = !o.no_normalize;
  EngineOptions eo;
  eo.context_size = o.model.context_size;
  eo.max_seqs = static_cast<int>(std::min<size_t>(prompts.size(), 16));
  eo.kv_dtype = kv_cache_dtype(o.model);
  Engine engine(*lm.model, tok.get(), eo);

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<RequestStream>> streams;
  size_t n_tokens = 0;
  for (size_t i = 0; i < prompts.size(); i++) {
    req.prompt = prompts[i];
    n_tokens += req.prompt.size();
    try {
      streams.push_back(engine.submit_embedding(req));
    } catch (const Error& e) {
      fail("input %zu: %s", i, e.what());
    }
  }
  const size_t dim = static_cast<size_t>(engine.hidden_size());
  for (auto& s : streams) {
    GenerationEvent ev;
    do ev = s->next();
    while (ev.finish == FinishReason::None);
    if (ev.finish != FinishReason::Stop) fail("%s", ev.error.c_str());
    nlohmann::json out;
    if (req.pooling == Pooling::None) {
      out = nlohmann::json::array();
      for (size_t at = 0; at < ev.embedding.size(); at += dim)
        out.push_back(server::json_floats(ev.embedding.data() + at, dim));
    } else {
      out = server::json_floats(ev.embedding.data(), ev.embedding.size());
    }
    std::printf("%s\n", out.dump().c_str());
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr,
               "llmcli: %zu input%s, %zu tokens in %.3f s (%.1f tok/s); %s pooling, %zu values%s\n",
               prompts.size(), prompts.size() == 1 ? "" : "s", n_tokens, s,
               static_cast<double>(n_tokens) / s, pooling_name(req.pooling), dim,
               req.normalize ? ", L2-normalized" : "");
}

}  // namespace

void register_embed(CLI::App& app) {
  auto* cmd = app.add_subcommand("embed", "Embeddings of texts or token ids (one JSON array each)");
  auto o = std::make_shared<EmbedOptions>();
  add_model_options(cmd, o->model);
  cmd->add_option("-p,--prompt", o->prompts, "Input text (repeatable)");
  cmd->add_option("--file", o->file, "Inputs, one per line (- for stdin)");
  cmd->add_option("--token-ids", o->token_ids, "One input as token ids, comma-separated");
  cmd->add_option("--pooling", o->pooling,
                  "mean, last (token), cls (first token) or none (a vector per token); "
                  "default: the model's, else mean")
      ->check(CLI::IsMember({"mean", "last", "cls", "none"}));
  cmd->add_flag("--no-normalize", o->no_normalize, "Keep the vectors' length (default: unit L2)");
  cmd->callback([o]() { run_embed(*o); });
}

}  // namespace llm::cli
