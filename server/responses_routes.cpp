// The Responses API's route (server/responses_api.h): POST /v1/responses, streamed as its
// named server-sent events. It shares the engine with the chat route.
#include <httplib.h>

#include <ctime>
#include <memory>

#include "core/error.h"
#include "server/generation_plan.h"
#include "server/openai_protocol.h"
#include "server/responses_api.h"
#include "server/server_state.h"
#include "server/single_reply.h"

namespace llm::server {

namespace {

void reply_error(httplib::Response& res, const ApiError& e) {
  reply_json(res, e.status, error_body(e));
}

}  // namespace

void Server::responses_routes() {
  using httplib::Request;
  using httplib::Response;

  http_->Post("/v1/responses", [this](const Request& req, Response& res) {
    auto job = std::make_shared<SingleJob>(in_flight_);
    bool stream = false;
    try {
      job->ready = ready();
      if (!job->ready) throw ApiError(503, "the model is still loading", "", "server_error");
      const Ready& r = *job->ready;
      const ParsedRequest p =
          parse_chat_request(parse_responses_request(parse_body(req.body)), r.engine->vocab_size());
      stream = p.stream;
      GenerationPlan plan =
          plan_generation(p, *r.tokenizer, r.chat, opts_.split_reasoning, r.engine->context_size());
      submit_plan(*job, plan, "input");
    } catch (const ApiError& e) {
      reply_error(res, e);
      return;
    }
    const std::string id = random_id("resp_"), model = opts_.model_name;
    const int64_t created = static_cast<int64_t>(std::time(nullptr));
    auto events = std::make_shared<ResponsesStream>(id, model, created);
    SingleReplyFormat f;
    stream_events(f, events);
    f.whole = [id, model, created](ShownReply shown, FinishReason why, const ReplyTimings& t) {
      return responses_object(id, model, created, shown, why, t);
    };
    f.reply_error = reply_error;
    send_single_reply(job, stream, res, metrics_, f);
  });
}

}  // namespace llm::server
