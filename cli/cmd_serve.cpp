// llmcli serve MODEL: the OpenAI-compatible HTTP server. It listens at once
// (/health says 503 while the model loads), serves until SIGINT/SIGTERM, then
// stops accepting, lets in-flight requests finish briefly and exits cleanly.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "cli/common.h"
#include "cli/sampling_options.h"
#include "core/chat/chat_prompt.h"
#include "core/engine/engine.h"
#include "core/error.h"
#include "server/http_server.h"

namespace llm::cli {

namespace {

struct ServeOptions {
  ModelOptions model;
  DraftOptions draft;
  server::ServerOptions http;
  EngineOptions engine;
  std::string conv_template;
  std::string template_kwargs;  // --chat-template-kwargs: every request's defaults
  std::string served_name;
  std::string reasoning_format = "deepseek";
  std::string pooling;  // empty: the model's, else mean
};

void run_serve(ServeOptions o) {
  const nlohmann::ordered_json template_kwargs = parse_template_kwargs(o.template_kwargs);
  if (o.http.port < 0 || o.http.port > 65535)
    fail("--port must be in 0..65535, got %d", o.http.port);
  if (o.http.max_body < 1024) fail("--max-body must be at least 1024 bytes");
  o.engine.context_size = o.model.context_size;
  o.engine.kv_dtype = kv_cache_dtype(o.model);
  o.http.split_reasoning = o.reasoning_format == "deepseek";
  o.http.model_name = !o.served_name.empty()
                          ? o.served_name
                          : std::filesystem::path(o.model.model).filename().string();
  if (o.http.model_name.empty()) o.http.model_name = o.model.model;
  if (o.http.threads == 0)
    o.http.threads = o.engine.max_seqs + (o.engine.max_queue > 0 ? o.engine.max_queue : 64) + 8;

  // Block the stop signals in every thread; this one waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  server::Server srv(o.http);
  const int port = srv.bind();
  std::thread http([&] { srv.serve(); });
  std::printf("llmcli: listening on http://%s:%d (model loading)\n", o.http.host.c_str(), port);
  std::fflush(stdout);

  // Declared in the order they depend on each other: the engine goes first.
  LoadedModel lm;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<ChatPrompt> chat;
  std::unique_ptr<Model> draft;
  std::unique_ptr<Engine> engine;
  try {
    lm = load_model(o.model);
    tok = load_tokenizer(lm);
    draft = load_draft_model(o.draft, o.model, lm, tok.get(), o.engine);
    try {
      chat = std::make_unique<ChatPrompt>(*tok, lm.path, o.conv_template);
      chat->set_default_kwargs(template_kwargs);
    } catch (const Error& e) {
      std::fprintf(stderr, "llmcli: no chat template (%s): /v1/chat/completions is off\n",
                   e.what());
    }
    engine = std::make_unique<Engine>(*lm.model, tok.get(), o.engine);
  } catch (...) {
    srv.shutdown();
    http.join();
    throw;
  }
  const Pooling pooling =
      o.pooling.empty() ? default_pooling(lm.model->config().pooling) : parse_pooling(o.pooling);
  server::ModelDetails details;
  details.family = lm.model->config().model_type;
  details.format =
      std::filesystem::is_directory(lm.path)
          ? (std::filesystem::exists(lm.path + "/llm-config.json") ? "native" : "safetensors")
          : "gguf";
  details.quantization = o.model.quantization;
  details.bytes = lm.model->weight_bytes();
  srv.set_ready(*engine, *tok, chat.get(), pooling, details);
  std::printf(
      "llmcli: ready: model '%s', context %d tokens, %d sequences per batch, KV cache %s, "
      "embeddings pooled by %s%s\n",
      o.http.model_name.c_str(), engine->context_size(), o.engine.max_seqs,
      format_bytes(engine->cache_bytes()).c_str(), pooling_name(pooling),
      draft ? (", draft model proposing up to " + std::to_string(o.draft.max_tokens) + " tokens")
                  .c_str()
      : o.engine.lookup_draft > 0
          ? (", drafts of up to " + std::to_string(o.engine.lookup_draft) + " tokens").c_str()
          : "");
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::printf("llmcli: %s: finishing in-flight requests, then exiting\n",
              sig == SIGINT ? "SIGINT" : "SIGTERM");
  std::fflush(stdout);
  srv.shutdown();
  http.join();
  std::printf("llmcli: stopped\n");
}

}  // namespace

void register_serve(CLI::App& app) {
  auto* cmd = app.add_subcommand("serve", "Serve an OpenAI-compatible HTTP API");
  auto o = std::make_shared<ServeOptions>();
  add_model_options(cmd, o->model);
  cmd->add_option("--host", o->http.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->http.port, "Port (0: any free port)")->capture_default_str();
  cmd->add_option("--api-key", o->http.api_key, "Require 'Authorization: Bearer KEY' on /v1/");
  cmd->add_option("--max-queue", o->engine.max_queue,
                  "Waiting requests before answering 429 (0: unlimited)")
      ->capture_default_str();
  cmd->add_option("--max-body", o->http.max_body, "Largest request body in bytes")
      ->capture_default_str();
  cmd->add_option("--max-seqs", o->engine.max_seqs, "Sequences decoded together")
      ->capture_default_str();
  cmd->add_option("--prefill-chunk-size", o->engine.prefill_chunk_size, "Tokens per step")
      ->capture_default_str();
  cmd->add_option("--kv-cache-size", o->engine.kv_cache_tokens,
                  "KV cache in tokens, all sequences together (default: from free memory)");
  add_lookup_draft_option(cmd, o->engine.lookup_draft);
  add_draft_options(cmd, o->draft);
  cmd->add_option("--threads-http", o->http.threads,
                  "HTTP worker threads (default: from --max-seqs)");
  cmd->add_option("--conv-template", o->conv_template, "Built-in conversation template to use");
  add_template_kwargs_option(cmd, o->template_kwargs);
  cmd->add_option("--reasoning-format", o->reasoning_format,
                  "deepseek: a reasoning model's <think> block goes to reasoning_content; "
                  "none: it stays in the content")
      ->check(CLI::IsMember({"deepseek", "none"}))
      ->capture_default_str();
  cmd->add_option("--pooling", o->pooling,
                  "How /v1/embeddings pools a prompt's rows: mean, last, cls (default: the "
                  "model's, else mean)")
      ->check(CLI::IsMember({"mean", "last", "cls", "none"}));
  cmd->add_option("--responses-store", o->http.responses_stored,
                  "Responses API responses kept in memory for previous_response_id (the most "
                  "recent; 0: none)")
      ->capture_default_str();
  cmd->add_option("--served-model-name", o->served_name,
                  "Model id in /v1/models (default: folder name)");
  cmd->callback([o]() { run_serve(*o); });
}

}  // namespace llm::cli
