// llama.cpp's routes (server/llama_api.h): /completion, /completions and /infill, streamed
// as llama-server streams them (server-sent events, no [DONE]). They share the engine with
// the OpenAI routes.
#include <httplib.h>

#include <memory>

#include "core/error.h"
#include "server/generation_plan.h"
#include "server/llama_api.h"
#include "server/openai_protocol.h"
#include "server/server_state.h"
#include "server/single_reply.h"

namespace llm::server {

namespace {

void reply_error(httplib::Response& res, const ApiError& e) {
  reply_json(res, e.status, llama_error(e));
}

std::string sse(const nlohmann::json& j) { return "data: " + dump(j) + "\n\n"; }

}  // namespace

void Server::llama_routes() {
  using httplib::Request;
  using httplib::Response;

  auto completion = [this](bool infill) {
    return [this, infill](const Request& req, Response& res) {
      auto job = std::make_shared<SingleJob>(in_flight_);
      LlamaRequest l;
      try {
        job->ready = ready();
        if (!job->ready) throw ApiError(503, "the model is still loading", "", "server_error");
        const Ready& r = *job->ready;
        l = parse_llama_request(parse_body(req.body), infill);
        const ParsedRequest p = parse_completion_request(l.openai, r.engine->vocab_size());
        GenerationPlan plan = plan_generation(p, *r.tokenizer, r.chat, opts_.split_reasoning,
                                              r.engine->context_size());
        if (l.evaluate_only) {
          // n_predict 0 (llama.vscode warms the cache so): nothing to generate.
          ReplyTimings t;
          t.prompt_tokens = static_cast<int>(plan.request.prompt.size());
          const auto body = llama_reply(opts_.model_name, "", true, FinishReason::Length, t);
          if (l.stream) {
            res.set_content(sse(body), "text/event-stream");
          } else {
            reply_json(res, 200, body);
          }
          return;
        }
        submit_plan(*job, plan, "prompt");
      } catch (const ApiError& e) {
        reply_error(res, e);
        return;
      }
      const std::string model = opts_.model_name;
      SingleReplyFormat f;
      f.stream_type = "text/event-stream";
      f.piece = [model](const ShownReply& shown, const ReplyTimings& t) {
        return sse(llama_reply(model, shown.content, false, FinishReason::None, t));
      };
      f.last = [model](FinishReason why, const ReplyTimings& t) {
        return sse(llama_reply(model, "", true, why, t));
      };
      f.error = [](const std::string& message) {
        return sse(llama_error(ApiError(500, message, "", "server_error")));
      };
      f.whole = [model](ShownReply shown, FinishReason why, const ReplyTimings& t) {
        return llama_reply(model, shown.content, true, why, t);
      };
      f.reply_error = reply_error;
      send_single_reply(job, l.stream, res, metrics_, f);
    };
  };
  http_->Post("/completion", completion(false));
  http_->Post("/completions", completion(false));
  http_->Post("/infill", completion(true));
}

}  // namespace llm::server
