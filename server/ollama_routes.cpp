// Ollama's routes (server/ollama_api.h): chat and generate (streamed as NDJSON by
// default), embed, tags, show, ps, version. They share the engine with the OpenAI routes.
#include <httplib.h>

#include <memory>

#include "core/error.h"
#include "server/embeddings.h"
#include "server/generation_plan.h"
#include "server/ollama_api.h"
#include "server/openai_protocol.h"
#include "server/server_state.h"
#include "server/single_reply.h"

namespace llm::server {

using json = nlohmann::json;

namespace {

void reply_error(httplib::Response& res, const ApiError& e) {
  reply_json(res, e.status, ollama_error(e.what()));
}

// The one model this server runs, as Ollama lists it.
json model_entry(const std::string& name, const ModelDetails& d, std::time_t since) {
  return {{"name", name},
          {"model", name},
          {"modified_at", ollama_time(since)},
          {"size", d.bytes},
          {"digest", ""},
          {"details",
           {{"format", d.format},
            {"family", d.family},
            {"families", json::array({d.family})},
            {"parameter_size", ""},
            {"quantization_level", d.quantization}}}};
}

const char* done_reason(FinishReason r) { return r == FinishReason::Length ? "length" : "stop"; }

}  // namespace

void Server::ollama_routes() {
  using httplib::Request;
  using httplib::Response;
  const std::time_t started = std::time(nullptr);

  http_->Get("/api/version", [](const Request&, Response& res) {
    reply_json(res, 200, {{"version", "0.1.0"}});
  });
  http_->Get("/api/tags", [this, started](const Request&, Response& res) {
    const std::shared_ptr<Ready> r = ready();
    json models = json::array();
    if (r) models.push_back(model_entry(opts_.model_name, r->details, started));
    reply_json(res, 200, {{"models", models}});
  });
  http_->Get("/api/ps", [this, started](const Request&, Response& res) {
    const std::shared_ptr<Ready> r = ready();
    json models = json::array();
    if (r) {
      json m = model_entry(opts_.model_name, r->details, started);
      m["size_vram"] = r->details.bytes + r->engine->cache_bytes();
      m["expires_at"] = "2999-01-01T00:00:00Z";  // loaded for as long as the server runs
      models.push_back(std::move(m));
    }
    reply_json(res, 200, {{"models", models}});
  });
  http_->Post("/api/show", [this, started](const Request& req, Response& res) {
    try {
      const std::shared_ptr<Ready> r = ready();
      if (!r) throw ApiError(503, "the model is still loading");
      parse_body(req.body);
      json caps = json::array({"completion", "embedding"});
      if (r->chat && r->chat->tool_call_syntax() != ToolCallSyntax::None) caps.push_back("tools");
      if (r->chat && r->chat->thinks()) caps.push_back("thinking");
      const json entry = model_entry(opts_.model_name, r->details, started);
      reply_json(res, 200,
                 {{"modelfile", ""},
                  {"parameters", ""},
                  {"template", r->chat ? r->chat->origin() : ""},
                  {"details", entry["details"]},
                  {"model_info",
                   {{"general.architecture", r->details.family},
                    {"llmrt.context_length", r->engine->context_size()},
                    {"llmrt.embedding_length", r->engine->hidden_size()}}},
                  {"capabilities", caps},
                  {"modified_at", entry["modified_at"]}});
    } catch (const ApiError& e) {
      reply_error(res, e);
    }
  });

  // /api/embed: L2-normalized vectors of one input or several ("truncate", the default,
  // cuts an input to the context); /api/embeddings: the older route, one prompt, its
  // vector as pooled.
  auto embed = [this](bool legacy) {
    return [this, legacy](const Request& req, Response& res) {
      InFlight guard(in_flight_);
      const auto start = Clock::now();
      try {
        const std::shared_ptr<Ready> r = ready();
        if (!r) throw ApiError(503, "the model is still loading");
        if (r->pooling == Pooling::None)
          throw ApiError(400, "the server runs with --pooling none (a vector per token)");
        const nlohmann::ordered_json body = parse_body(req.body);
        nlohmann::ordered_json openai = {{"input", body.contains(legacy ? "prompt" : "input")
                                                       ? body[legacy ? "prompt" : "input"]
                                                       : nullptr}};
        if (!legacy && body.contains("dimensions")) openai["dimensions"] = body["dimensions"];
        const EmbeddingsRequest e =
            parse_embeddings_request(openai, r->engine->vocab_size(), r->engine->hidden_size());
        const bool truncate = !body.contains("truncate") || body["truncate"] != false;
        const auto prompts =
            embedding_prompts(e, *r->tokenizer, r->engine->context_size(), truncate);
        int prompt_tokens = 0;
        for (const auto& p : prompts) prompt_tokens += static_cast<int>(p.size());
        const auto out = run_embeddings(*r->engine, prompts, r->pooling, !legacy, e.dimensions);
        metrics_.observe_request(seconds(start, Clock::now()));
        metrics_.add_tokens(prompt_tokens, 0);
        if (legacy) {
          reply_json(res, 200, {{"embedding", json_floats(out[0].data(), out[0].size())}});
          return;
        }
        json vectors = json::array();
        for (const auto& v : out) vectors.push_back(json_floats(v.data(), v.size()));
        reply_json(res, 200,
                   {{"model", opts_.model_name},
                    {"embeddings", std::move(vectors)},
                    {"total_duration", static_cast<int64_t>(seconds(start, Clock::now()) * 1e9)},
                    {"load_duration", 0},
                    {"prompt_eval_count", prompt_tokens}});
      } catch (const ApiError& e) {
        reply_error(res, e);
      }
    };
  };
  http_->Post("/api/embed", embed(false));
  http_->Post("/api/embeddings", embed(true));

  auto generate = [this](bool chat_route) {
    return [this, chat_route](const Request& req, Response& res) {
      auto job = std::make_shared<SingleJob>(in_flight_);
      bool stream = true;
      try {
        job->ready = ready();
        if (!job->ready) throw ApiError(503, "the model is still loading");
        const Ready& r = *job->ready;
        const nlohmann::ordered_json body = parse_body(req.body);
        if (ollama_load_only(body, chat_route)) {
          // Ollama's clients load a model with an empty request; this one is loaded.
          reply_json(res, 200,
                     ollama_reply(opts_.model_name, chat_route, ShownReply{}, true, "load", {}));
          return;
        }
        const OllamaRequest o = parse_ollama_request(body, chat_route, r.chat != nullptr);
        stream = o.stream;
        const int vocab = r.engine->vocab_size();
        const ParsedRequest p = o.chat ? parse_chat_request(o.openai, vocab)
                                       : parse_completion_request(o.openai, vocab);
        GenerationPlan plan = plan_generation(p, *r.tokenizer, r.chat, opts_.split_reasoning,
                                              r.engine->context_size());
        job->format = plan.format;
        try {
          job->stream = r.engine->submit(plan.request);
        } catch (const QueueFullError& e) {
          throw ApiError(429, e.what());
        } catch (const Error& e) {
          throw ApiError(400, e.what());
        }
      } catch (const ApiError& e) {
        reply_error(res, e);
        return;
      }
      const std::string model = opts_.model_name;
      SingleReplyFormat f;
      f.stream_type = "application/x-ndjson";
      f.piece = [model, chat_route](const ShownReply& shown, const ReplyTimings&) {
        return dump(ollama_reply(model, chat_route, shown, false, "", {})) + "\n";
      };
      f.last = [model, chat_route](FinishReason why, const ReplyTimings& t) {
        return dump(ollama_reply(model, chat_route, ShownReply{}, true, done_reason(why), t)) +
               "\n";
      };
      f.error = [](const std::string& message) { return dump(ollama_error(message)) + "\n"; };
      f.whole = [model, chat_route](ShownReply shown, FinishReason why, const ReplyTimings& t) {
        return ollama_reply(model, chat_route, shown, true, done_reason(why), t);
      };
      f.reply_error = reply_error;
      send_single_reply(job, stream, res, metrics_, f);
    };
  };
  http_->Post("/api/chat", generate(true));
  http_->Post("/api/generate", generate(false));
}

}  // namespace llm::server
