#include "server/single_reply.h"

namespace llm::server {

void SingleJob::account(const GenerationEvent& ev) {
  const auto now = Clock::now();
  if (!ev.tokens.empty()) {
    if (timings.eval_tokens == 0) first = now;
    last = now;
  }
  timings.prompt_tokens = ev.prompt_tokens;
  timings.cached_tokens = ev.cached_tokens;
  timings.eval_tokens = ev.completion_tokens;
  timings.total_s = seconds(start, now);
  timings.prompt_s = timings.eval_tokens > 0 ? seconds(start, first) : timings.total_s;
  timings.eval_s = timings.eval_tokens > 0 ? seconds(first, last) : 0;
  if (!ev.stop_string.empty()) timings.stop_string = ev.stop_string;
}

void submit_plan(SingleJob& job, const GenerationPlan& plan, const std::string& param) {
  job.format = plan.format;
  try {
    job.stream = job.ready->engine->submit(plan.request);
  } catch (const QueueFullError& e) {
    throw ApiError(429, e.what(), "", "rate_limit_exceeded");
  } catch (const Error& e) {
    throw ApiError(400, e.what(), param);
  }
}

void send_single_reply(const std::shared_ptr<SingleJob>& job, bool stream, httplib::Response& res,
                       Metrics& metrics, const SingleReplyFormat& f) {
  if (!stream) {
    std::string text;
    GenerationEvent ev;
    do {
      ev = job->stream->next();
      job->account(ev);
      text += ev.text;
    } while (ev.finish == FinishReason::None);
    if (ev.finish == FinishReason::Error || ev.finish == FinishReason::Cancelled)
      return f.reply_error(res,
                           ev.finish == FinishReason::Error
                               ? ApiError(500, ev.error, "", "server_error")
                               : ApiError(503, "the server is shutting down", "", "server_error"));
    metrics.observe_request(job->timings.total_s);
    metrics.add_tokens(job->timings.prompt_tokens, job->timings.eval_tokens);
    reply_json(res, 200,
               f.whole(show_reply(job->format, std::move(text)), ev.finish, job->timings));
    return;
  }
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      f.stream_type,
      [job, f, &metrics](size_t, httplib::DataSink& sink) {
        if (job->done) {
          sink.done();
          return true;
        }
        GenerationEvent ev;
        if (!job->stream->next(ev, std::chrono::milliseconds(200))) return true;
        job->account(ev);
        const bool finished = ev.finish != FinishReason::None;
        const bool ended_well =
            finished && ev.finish != FinishReason::Error && ev.finish != FinishReason::Cancelled;
        if (!job->streamed) job->streamed = std::make_unique<StreamedReply>(job->format);
        const ShownReply shown = job->streamed->push(ev.text, ended_well);
        std::string out;
        if (!shown.content.empty() || !shown.reasoning.empty() || !shown.calls.empty())
          out += f.piece(shown, job->timings);
        if (finished) {
          if (ended_well) {
            out += f.last(ev.finish, job->timings);
            metrics.observe_request(job->timings.total_s);
            metrics.add_tokens(job->timings.prompt_tokens, job->timings.eval_tokens);
          } else {
            out += f.error(ev.finish == FinishReason::Error
                               ? ev.error
                               : std::string("the request was cancelled"));
          }
          job->done = true;
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) return false;
        if (job->done) sink.done();
        return true;
      },
      [job](bool success) {
        // The client went away (or the write failed): stop generating for it.
        if (!success || !job->done) job->stream->cancel();
      });
}

}  // namespace llm::server
