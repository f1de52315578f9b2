// Anthropic's routes (server/anthropic_api.h): /v1/messages (streamed as Anthropic's named
// server-sent events) and /v1/messages/count_tokens. They share the engine with the OpenAI
// routes.
#include <httplib.h>

#include <memory>

#include "core/error.h"
#include "server/anthropic_api.h"
#include "server/generation_plan.h"
#include "server/openai_protocol.h"
#include "server/server_state.h"
#include "server/single_reply.h"

namespace llm::server {

namespace {

void reply_error(httplib::Response& res, const ApiError& e) {
  reply_json(res, e.status, anthropic_error(e));
}

}  // namespace

void Server::anthropic_routes() {
  using httplib::Request;
  using httplib::Response;

  // The request as the engine's: its plan, whether it streams.
  auto plan = [this](const Ready& r, const Request& req, bool* stream) {
    const nlohmann::ordered_json chat = parse_anthropic_request(parse_body(req.body));
    if (!r.chat) throw ApiError(400, "this model has no chat template", "messages");
    const ParsedRequest p = parse_chat_request(chat, r.engine->vocab_size());
    if (stream) *stream = p.stream;
    return plan_generation(p, *r.tokenizer, r.chat, opts_.split_reasoning,
                           r.engine->context_size());
  };

  http_->Post("/v1/messages/count_tokens", [this, plan](const Request& req, Response& res) {
    try {
      const std::shared_ptr<Ready> r = ready();
      if (!r) throw ApiError(503, "the model is still loading", "", "server_error");
      const GenerationPlan p = plan(*r, req, nullptr);
      reply_json(res, 200, {{"input_tokens", p.request.prompt.size()}});
    } catch (const ApiError& e) {
      reply_error(res, e);
    }
  });

  http_->Post("/v1/messages", [this, plan](const Request& req, Response& res) {
    auto job = std::make_shared<SingleJob>(in_flight_);
    bool stream = false;
    try {
      job->ready = ready();
      if (!job->ready) throw ApiError(503, "the model is still loading", "", "server_error");
      GenerationPlan p = plan(*job->ready, req, &stream);
      submit_plan(*job, p, "messages");
    } catch (const ApiError& e) {
      reply_error(res, e);
      return;
    }
    const std::string id = random_id("msg_"), model = opts_.model_name;
    auto events = std::make_shared<AnthropicStream>(id, model);
    SingleReplyFormat f;
    stream_events(f, events);
    f.whole = [id, model](ShownReply shown, FinishReason why, const ReplyTimings& t) {
      return anthropic_message(id, model, shown, why, t);
    };
    f.reply_error = reply_error;
    send_single_reply(job, stream, res, metrics_, f);
  });
}

}  // namespace llm::server
