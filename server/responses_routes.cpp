// The Responses API's route (server/responses_api.h): POST /v1/responses, streamed as its
// named server-sent events. It shares the engine with the chat route.
#include <httplib.h>

#include <algorithm>
#include <ctime>
#include <memory>
#include <optional>

#include "core/error.h"
#include "server/generation_plan.h"
#include "server/openai_protocol.h"
#include "server/response_store.h"
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
    ResponsesRequest rr;
    bool stream = false;
    try {
      job->ready = ready();
      if (!job->ready) throw ApiError(503, "the model is still loading", "", "server_error");
      const Ready& r = *job->ready;
      rr = parse_responses_request(parse_body(req.body), [this](const std::string& id) {
        std::optional<StoredResponse> s = responses_->get(id);
        return s ? s->turn : nullptr;
      });
      ParsedRequest p = parse_chat_request(rr.chat, r.engine->vocab_size());
      stream = p.stream;
      const int context = r.engine->context_size();
      GenerationPlan plan =
          plan_generation(p, *r.tokenizer, r.chat, opts_.split_reasoning, context);
      // truncation "auto": the oldest turns go until the prompt leaves room for the reply
      // (max_output_tokens, at most half the context; at least one token).
      const int room = 1 + std::min(std::max(plan.request.max_tokens, 0), context / 2);
      while (rr.truncate && static_cast<int>(plan.request.prompt.size()) + room > context &&
             drop_oldest_turn(rr.chat["messages"])) {
        p = parse_chat_request(rr.chat, r.engine->vocab_size());
        plan = plan_generation(p, *r.tokenizer, r.chat, opts_.split_reasoning, context);
      }
      submit_plan(*job, plan, "input");
    } catch (const ApiError& e) {
      reply_error(res, e);
      return;
    }
    ResponseMeta meta{random_id("resp_"),
                      opts_.model_name,
                      static_cast<int64_t>(std::time(nullptr)),
                      rr.previous_id,
                      rr.store && responses_->capacity() > 0,
                      rr.echo};
    // A finished response is kept with its conversation: the earlier turns, its input and
    // its output.
    auto keep = [store = responses_.get(), meta, previous = rr.previous, input = rr.input_messages,
                 items = rr.input_items](const nlohmann::json& response) {
      if (!meta.store) return;
      auto turn = std::make_shared<ConversationTurn>();
      turn->previous = previous;
      turn->messages = input;
      for (auto& m : output_messages(response["output"])) turn->messages.push_back(std::move(m));
      store->put(meta.id, {response, std::move(turn), items});
    };
    auto events = std::make_shared<ResponsesStream>(meta);
    events->on_finished = keep;
    SingleReplyFormat f;
    stream_events(f, events);
    f.whole = [meta, keep](ShownReply shown, FinishReason why, const ReplyTimings& t) {
      nlohmann::json r = responses_object(meta, shown, why, t);
      keep(r);
      return r;
    };
    f.reply_error = reply_error;
    send_single_reply(job, stream, res, metrics_, f);
  });

  // A stored response, and dropping one.
  const char* by_id = R"(/v1/responses/([A-Za-z0-9_\-]+))";
  http_->Get(by_id, [this](const Request& req, Response& res) {
    const std::string id = req.matches[1];
    if (std::optional<StoredResponse> s = responses_->get(id))
      reply_json(res, 200, s->response);
    else
      reply_error(res, ApiError(404, "no response '" + id + "' is stored", "response_id"));
  });
  http_->Get(R"(/v1/responses/([A-Za-z0-9_\-]+)/input_items)", [this](const Request& req,
                                                                      Response& res) {
    const std::string id = req.matches[1];
    std::optional<StoredResponse> s = responses_->get(id);
    if (!s) {
      reply_error(res, ApiError(404, "no response '" + id + "' is stored", "response_id"));
      return;
    }
    try {
      reply_json(res, 200,
                 input_items_page(s->input_items,
                                  req.has_param("order") ? req.get_param_value("order") : "desc",
                                  req.get_param_value("limit"), req.get_param_value("after")));
    } catch (const ApiError& e) {
      reply_error(res, e);
    }
  });
  http_->Delete(by_id, [this](const Request& req, Response& res) {
    const std::string id = req.matches[1];
    if (responses_->erase(id))
      reply_json(res, 200, {{"id", id}, {"object", "response"}, {"deleted", true}});
    else
      reply_error(res, ApiError(404, "no response '" + id + "' is stored", "response_id"));
  });
}

}  // namespace llm::server
