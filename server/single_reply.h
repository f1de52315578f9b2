// One generation sent back as a route's own format: the whole reply as one JSON body, or a
// stream of lines (Ollama's NDJSON, llama.cpp's server-sent events). Shared by the Ollama
// and llama.cpp routes, which differ only in how a piece, the last line and an error read.
#pragma once

#include <httplib.h>

#include <functional>
#include <memory>
#include <string>

#include "server/chat_reply.h"
#include "server/generation_plan.h"
#include "server/metrics.h"
#include "server/server_state.h"

namespace llm::server {

// Counts and durations of one reply, as Ollama and llama.cpp report them, and the stop
// string that ended it (Anthropic's stop_sequence, llama.cpp's stopping_word).
struct ReplyTimings {
  double total_s = 0, prompt_s = 0, eval_s = 0;
  int prompt_tokens = 0, eval_tokens = 0;
  int cached_tokens = 0;  // prompt tokens the prefix cache held
  std::string stop_string;
};

// A request while it runs (kept alive by the streaming callbacks).
struct SingleJob {
  explicit SingleJob(std::atomic<int>& in_flight) : guard(in_flight) {}
  InFlight guard;
  std::shared_ptr<Server::Ready> ready;
  std::shared_ptr<RequestStream> stream;
  ReplyFormat format;
  std::unique_ptr<StreamedReply> streamed;
  Clock::time_point start = Clock::now(), first, last;
  ReplyTimings timings;
  bool done = false;

  // Timings of one event.
  void account(const GenerationEvent& ev);
};

struct SingleReplyFormat {
  const char* stream_type = "";  // the stream's Content-Type
  // A streamed piece of the reply, framed (a line, an event).
  std::function<std::string(const ShownReply&, const ReplyTimings&)> piece;
  // The stream's last piece, after a good finish.
  std::function<std::string(FinishReason, const ReplyTimings&)> last;
  // A stream's error piece (the request failed or was cancelled after it started).
  std::function<std::string(const std::string&)> error;
  // The body of a reply not streamed.
  std::function<nlohmann::json(ShownReply, FinishReason, const ReplyTimings&)> whole;
  // An error before or instead of a reply not streamed.
  std::function<void(httplib::Response&, const ApiError&)> reply_error;
};

// Submits plan's request for job (job.ready set): 429 when the queue is full, 400 naming
// param when the engine refuses it.
void submit_plan(SingleJob& job, const GenerationPlan& plan, const std::string& param);

// A stream writer's events (piece, last, error, as AnthropicStream and ResponsesStream
// have them) as f's stream parts.
template <class Events>
void stream_events(SingleReplyFormat& f, const std::shared_ptr<Events>& events) {
  f.stream_type = "text/event-stream";
  f.piece = [events](const ShownReply& shown, const ReplyTimings& t) {
    return events->piece(shown, t);
  };
  f.last = [events](FinishReason why, const ReplyTimings& t) { return events->last(why, t); };
  f.error = [events](const std::string& message) { return events->error(message); };
}

// Sends job's reply (its stream submitted) as `f` says; a client that leaves cancels it.
void send_single_reply(const std::shared_ptr<SingleJob>& job, bool stream, httplib::Response& res,
                       Metrics& metrics, const SingleReplyFormat& f);

}  // namespace llm::server
