// llmcli generate MODEL (-p TEXT [--chat] | --token-ids ...) -n N: one completion
// through the engine, streamed to stdout (text for -p, ids for --token-ids).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/sampling_options.h"
#include "core/chat/chat_prompt.h"
#include "core/chat/infill_prompt.h"
#include "core/engine/engine.h"
#include "core/error.h"

namespace llm::cli {

namespace {

struct GenerateOptions {
  ModelOptions model;
  SamplingOptions sampling;
  DraftOptions draft;
  std::string prompt;
  std::string token_ids;
  std::string system;
  std::string conv_template;
  std::string template_kwargs;  // --chat-template-kwargs (with --chat)
  std::vector<std::string> stop;
  int n_new = 16;
  bool chat = false;
  bool json = false;
  std::string format = "text";  // "json": JSON mode
  std::string json_schema;      // a file: the reply follows this JSON schema
  bool ignore_eos = false;
  bool infill = false;  // --suffix given: fill in the middle between -p and it
  std::string suffix;
};

void run_generate(const GenerateOptions& o) {
  if (o.infill && (o.chat || !o.token_ids.empty()))
    fail("--suffix takes the text before the cursor from -p, not with --chat or --token-ids");
  if (!o.infill && o.prompt.empty() == o.token_ids.empty())
    fail("give exactly one of -p TEXT (not empty) and --token-ids");
  if (o.chat && o.prompt.empty()) fail("--chat needs -p TEXT");
  if (!o.chat && (!o.system.empty() || !o.conv_template.empty() || !o.template_kwargs.empty()))
    fail("--system, --conv-template and --chat-template-kwargs need --chat");
  if (o.n_new < 1) fail("-n must be >= 1, got %d", o.n_new);
  const nlohmann::ordered_json template_kwargs = parse_template_kwargs(o.template_kwargs);
  GenerationRequest req;
  req.sampling = o.sampling.resolve();
  req.max_tokens = o.n_new;
  req.ignore_eos = o.ignore_eos;
  req.stop = o.stop;
  if (o.format == "json") req.json = JsonSchema::any_object();
  if (!o.json_schema.empty()) {
    std::ifstream in(o.json_schema, std::ios::binary);
    if (!in) fail("--json-schema: cannot read '%s'", o.json_schema.c_str());
    nlohmann::json schema;
    try {
      schema = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail("--json-schema %s: %s", o.json_schema.c_str(), e.what());
    }
    req.json = JsonSchema::compile(schema);
  }
  if (!o.token_ids.empty()) req.prompt = parse_int_list(o.token_ids, "--token-ids", "token id");

  LoadedModel lm = load_model(o.model);
  std::unique_ptr<Tokenizer> tok;
  if (!o.prompt.empty() || o.infill || !o.stop.empty() || req.json) tok = load_tokenizer(lm);
  if (o.chat) {
    nlohmann::ordered_json messages = nlohmann::ordered_json::array();
    if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
    messages.push_back({{"role", "user"}, {"content", o.prompt}});
    ChatPrompt prompt(*tok, lm.path, o.conv_template);
    prompt.set_default_kwargs(template_kwargs);
    req.prompt = prompt.encode(messages);
  } else if (!o.prompt.empty()) {
    req.prompt = tok->encode(o.prompt, /*add_special=*/true);
  }
  EngineOptions eo;
  eo.context_size = o.model.context_size;
  eo.max_seqs = 1;
  eo.kv_dtype = kv_cache_dtype(o.model);
  eo.lookup_draft = o.sampling.lookup_draft;
  const std::unique_ptr<Model> draft = load_draft_model(o.draft, o.model, lm, tok.get(), eo);
  Engine engine(*lm.model, tok.get(), eo);
  if (o.infill) {
    // The prompt leaves room for -n new tokens (at most half the context).
    const int budget = engine.context_size() - std::min(o.n_new, engine.context_size() / 2);
    InfillPrompt infill = build_infill_prompt(*tok, {o.prompt, o.suffix, {}}, budget);
    req.prompt = std::move(infill.tokens);
    req.stop_token_ids = std::move(infill.stop_ids);
  }

  const auto t0 = std::chrono::steady_clock::now();
  auto stream = engine.submit(req);
  std::vector<int32_t> ids;
  // Timed by when the engine queued the events, not when this thread read them (it
  // may read the first only after the last was queued).
  std::chrono::steady_clock::time_point first_at, last_at;
  size_t first_tokens = 0;  // tokens in the first event, which ends the prefill's timing
  FinishReason finish = FinishReason::None;
  while (finish == FinishReason::None) {
    GenerationEvent ev = stream->next();
    if (ids.empty() && !ev.tokens.empty()) {
      first_at = ev.queued_at;
      first_tokens = ev.tokens.size();
    }
    if (!ev.tokens.empty()) last_at = ev.queued_at;
    if (o.token_ids.empty() && !o.json) {
      std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
      std::fflush(stdout);
    }
    ids.insert(ids.end(), ev.tokens.begin(), ev.tokens.end());
    finish = ev.finish;
    if (finish == FinishReason::Error) fail("%s", ev.error.c_str());
  }
  if (o.json) {
    std::printf(
        "%s\n",
        nlohmann::json{{"ids", ids}, {"finish_reason", finish_reason_name(finish)}}.dump().c_str());
  } else if (!o.token_ids.empty()) {
    for (size_t i = 0; i < ids.size(); i++) std::printf(i ? ",%d" : "%d", ids[i]);
    std::printf("\n");
  } else {
    std::printf("\n");  // after the streamed text
  }
  // The decode rate counts the tokens that came after the first event; an event may
  // carry several (they queue while the host is slow), and when the first carried them
  // all there is no rate to give.
  const size_t decoded = ids.size() - first_tokens;
  if (ids.empty()) first_at = last_at = std::chrono::steady_clock::now();  // no token came
  const double ttft = std::chrono::duration<double>(first_at - t0).count();
  const double decode_s = std::chrono::duration<double>(last_at - first_at).count();
  std::fprintf(stderr, "llmcli: prompt %zu tokens in %.3f s (%.1f tok/s), %zu new tokens",
               req.prompt.size(), ttft, req.prompt.size() / ttft, ids.size());
  if (decoded > 0 && decode_s > 0)
    std::fprintf(stderr, ", decode %.1f tok/s", static_cast<double>(decoded) / decode_s);
  const EngineStats st = engine.stats();
  if (st.draft_tokens > 0)
    std::fprintf(stderr, ", drafts %llu of %llu tokens kept",
                 static_cast<unsigned long long>(st.draft_accepted),
                 static_cast<unsigned long long>(st.draft_tokens));
  std::fprintf(stderr, " [%s]\n", finish_reason_name(finish));
}

}  // namespace

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate a completion of a text or token-id prompt");
  auto o = std::make_shared<GenerateOptions>();
  add_model_options(cmd, o->model);
  add_sampling_options(cmd, o->sampling);
  add_draft_options(cmd, o->draft);
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text (raw, or a user message with --chat)");
  cmd->add_option("--token-ids", o->token_ids, "Prompt token ids, comma-separated (prints ids)");
  cmd->add_flag("--chat", o->chat, "Render -p through the model's chat template");
  cmd->add_option("--system", o->system, "System message (with --chat)");
  cmd->add_option("--conv-template", o->conv_template, "Built-in conversation template to use");
  add_template_kwargs_option(cmd, o->template_kwargs);
  cmd->add_option("--stop", o->stop, "Stop string (repeatable)");
  cmd->add_option("-n,--max-tokens", o->n_new, "New tokens to generate")->capture_default_str();
  cmd->add_flag("--json", o->json, "Print {\"ids\":[...],\"finish_reason\":...}");
  cmd->add_option("--json-schema", o->json_schema, "A JSON schema file the reply follows");
  cmd->add_option("--format", o->format, "json: the reply is one JSON object (JSON mode)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Do not stop at the model's EOS tokens");
  cmd->add_option_function<std::string>(
      "--suffix",
      [o](const std::string& s) {
        o->suffix = s;
        o->infill = true;
      },
      "Fill in the middle (code models): -p is the text before the cursor, this the text "
      "after it");
  cmd->callback([o]() { run_generate(*o); });
}

}  // namespace llm::cli
