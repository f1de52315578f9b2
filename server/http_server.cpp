#include "server/http_server.h"

#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <optional>
#include <thread>

#include "core/error.h"
#include "server/chat_reply.h"
#include "server/embeddings.h"
#include "server/generation_plan.h"
#include "server/openai_protocol.h"
#include "server/response_store.h"
#include "server/server_state.h"

namespace llm::server {

using json = nlohmann::json;

namespace {

void reply_error(httplib::Response& res, const ApiError& e) {
  reply_json(res, e.status, error_body(e));
}

// Debian's cpp-httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG is
// compiled into the library), so a burst of clients overflows the accept queue
// and some connections get reset. Calling listen() again on the bound socket
// raises the backlog; httplib keeps the descriptor private, so find it by port.
void raise_listen_backlog(int port) {
  for (int fd = 3; fd < 4096; fd++) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) continue;
    sockaddr_storage addr{};
    socklen_t alen = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) continue;
    int p = -1;
    if (addr.ss_family == AF_INET) p = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    if (addr.ss_family == AF_INET6) p = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    if (p == port) ::listen(fd, 1024);
  }
}

// The API's routes, each with its one method (another method gets 405 and Allow).
struct Route {
  const char* path;
  const char* method;
};
constexpr Route kRoutes[] = {{"/v1/chat/completions", "POST"},
                             {"/v1/completions", "POST"},
                             {"/v1/embeddings", "POST"},
                             {"/v1/models", "GET"},
                             {"/v1/models/{id}", "GET"},
                             {"/tokenize", "POST"},
                             {"/detokenize", "POST"},
                             {"/health", "GET"},
                             {"/api/chat", "POST"},
                             {"/api/generate", "POST"},
                             {"/api/embed", "POST"},
                             {"/api/embeddings", "POST"},
                             {"/api/show", "POST"},
                             {"/api/tags", "GET"},
                             {"/api/ps", "GET"},
                             {"/api/version", "GET"},
                             {"/v1/responses", "POST"},
                             {"/v1/messages", "POST"},
                             {"/v1/messages/count_tokens", "POST"},
                             {"/completion", "POST"},
                             {"/completions", "POST"},
                             {"/infill", "POST"},
                             {"/metrics", "GET"}};

const Route* find_route(const std::string& path) {
  for (const Route& r : kRoutes)
    if (path == r.path) return &r;
  // /v1/models/{id}: a model id may hold slashes ("org/name").
  static const std::string kModel = "/v1/models/";
  if (path.size() > kModel.size() && path.compare(0, kModel.size(), kModel) == 0)
    return find_route("/v1/models/{id}");
  return nullptr;
}

const char* route_label(const std::string& path) {
  const Route* r = find_route(path);
  return r ? r->path : "other";
}

// Whether an Authorization header carries `key` as a bearer token (the scheme is
// case-insensitive, RFC 9110), compared in time independent of where they differ.
// Compares in time that does not depend on where the strings differ.
bool same_key(const std::string& token, const std::string& key) {
  if (token.size() != key.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < key.size(); i++) diff |= static_cast<unsigned char>(token[i] ^ key[i]);
  return diff == 0;
}

bool bearer_matches(const std::string& header, const std::string& key) {
  const size_t sp = header.find(' ');
  if (sp == std::string::npos) return false;
  std::string scheme = header.substr(0, sp);
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t start = sp;
  while (start < header.size() && header[start] == ' ') start++;
  return scheme == "bearer" && same_key(header.substr(start), key);
}

// The request's body framing, checked before httplib reads the body (0.11 reads a
// chunked body of any size, past --max-body, and waits for all of a Content-Length
// that is over it): an error to send and close the connection on, or none.
std::optional<ApiError> check_body_framing(const httplib::Request& req, size_t max_body) {
  if (req.has_header("Transfer-Encoding"))
    return ApiError(411,
                    "send the request body with a Content-Length header (chunked bodies "
                    "are not accepted)",
                    "", "invalid_request_error");
  if (!req.has_header("Content-Length")) {
    if (req.method != "POST") return std::nullopt;
    // httplib would wait for a body to end with the connection.
    return ApiError(411, "send the request body with a Content-Length header", "",
                    "invalid_request_error");
  }
  const std::string len = req.get_header_value("Content-Length");
  const bool digits =
      !len.empty() && len.size() <= 19 &&
      std::all_of(len.begin(), len.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits)
    return ApiError(400, "invalid Content-Length '" + len.substr(0, 32) + "'", "",
                    "invalid_request_error");
  if (std::stoull(len) > max_body)
    return ApiError(413, "request body larger than " + std::to_string(max_body) + " bytes", "",
                    "invalid_request_error");
  return std::nullopt;
}

const char* finish_name(FinishReason r) { return r == FinishReason::Length ? "length" : "stop"; }

std::vector<TokenLogprob> to_logprobs(const Tokenizer& tok, const std::vector<TokenLogprobs>& lps) {
  std::vector<TokenLogprob> out;
  for (const auto& lp : lps) {
    TokenLogprob t;
    t.token = tok.decode({lp.token});
    t.logprob = lp.logprob;
    for (const auto& [id, v] : lp.top) t.top.emplace_back(tok.decode({id}), v);
    out.push_back(std::move(t));
  }
  return out;
}

// Everything one completion request needs while it runs (kept alive by the
// streaming callbacks after the handler returns).
struct Job {
  Job(std::atomic<int>& in_flight) : guard(in_flight) {}
  InFlight guard;
  std::shared_ptr<Server::Ready> ready;  // keeps the engine pointers valid
  ParsedRequest req;
  std::string id;
  std::string model;
  int64_t created = 0;
  Clock::time_point start = Clock::now(), last_token, last_write = Clock::now();
  bool any_token = false;
  bool done = false;
  Usage usage;         // completion tokens over every choice
  ReplyFormat format;  // chat: how replies show (tool calls, reasoning, a forced call)

  // One of the request's n choices: an engine request of its own.
  struct Choice {
    std::shared_ptr<RequestStream> stream;
    bool first = true;  // streamed: no chunk out yet
    bool done = false;
    int completion_tokens = 0;
    std::unique_ptr<StreamedReply> reply;  // streamed chat
  };
  std::vector<Choice> choices;
  size_t next_poll = 0;  // streamed: the choice asked first for its next event

  bool all_done() const {
    for (const Choice& c : choices)
      if (!c.done) return false;
    return true;
  }
  void cancel_all() {
    for (Choice& c : choices)
      if (c.stream) c.stream->cancel();
  }
};

}  // namespace

Server::Server(ServerOptions opts)
    : opts_(std::move(opts)),
      http_(std::make_unique<httplib::Server>()),
      responses_(std::make_unique<ResponseStore>(opts_.responses_stored)) {
  const int threads = std::max(opts_.threads, 16);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_->set_payload_max_length(opts_.max_body);
  http_->set_read_timeout(30, 0);
  http_->set_write_timeout(30, 0);
  routes();
}

Server::~Server() { shutdown(); }

int Server::bind() {
  int port = opts_.port;
  if (port == 0) {
    port = http_->bind_to_any_port(opts_.host);
    if (port < 0) fail("cannot listen on %s (any port)", opts_.host.c_str());
  } else if (!http_->bind_to_port(opts_.host, port)) {
    fail("cannot listen on %s:%d (in use, or not an address of this machine)", opts_.host.c_str(),
         port);
  }
  raise_listen_backlog(port);
  return port;
}

void Server::serve() { http_->listen_after_bind(); }

void Server::set_ready(Engine& engine, const Tokenizer& tokenizer, const ChatPrompt* chat,
                       Pooling pooling, ModelDetails details) {
  auto r = std::make_shared<Ready>();
  r->engine = &engine;
  r->tokenizer = &tokenizer;
  r->chat = chat;
  r->pooling = pooling;
  r->details = std::move(details);
  metrics_.add_gauge({"llmrt_requests_running", "Requests being decoded",
                      [&engine] { return double(engine.stats().running); }});
  metrics_.add_gauge({"llmrt_requests_waiting", "Requests queued for admission",
                      [&engine] { return double(engine.stats().waiting); }});
  metrics_.add_gauge({"llmrt_kv_pages_used", "KV cache pages in use",
                      [&engine] { return double(engine.stats().pages_used); }});
  metrics_.add_gauge({"llmrt_kv_pages_total", "KV cache pages",
                      [&engine] { return double(engine.stats().pages_total); }});
  metrics_.add_gauge({"llmrt_preemptions_total", "Sequences preempted for lack of KV pages",
                      [&engine] { return double(engine.stats().preemptions); }});
  metrics_.add_gauge({"llmrt_kv_pages_cached", "KV cache pages holding a cached prefix",
                      [&engine] { return double(engine.stats().pages_cached); }});
  metrics_.add_gauge({"llmrt_prefix_cached_tokens_total",
                      "Prompt tokens taken from the prefix cache instead of computed",
                      [&engine] { return double(engine.stats().prefix_cached_tokens); }});
  metrics_.add_gauge({"llmrt_draft_tokens_total",
                      "Speculative draft tokens checked (serve --lookup-draft)",
                      [&engine] { return double(engine.stats().draft_tokens); }});
  metrics_.add_gauge({"llmrt_draft_accepted_tokens_total",
                      "Speculative draft tokens the model agreed with",
                      [&engine] { return double(engine.stats().draft_accepted); }});
  std::lock_guard<std::mutex> lock(mu_);
  ready_ = std::move(r);
}

std::shared_ptr<Server::Ready> Server::ready() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ready_;
}

void Server::shutdown() {
  if (shut_down_.exchange(true)) return;
  stopping_ = true;
  const auto deadline = Clock::now() + std::chrono::duration<double>(opts_.shutdown_grace_s);
  while (in_flight_ > 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (auto r = ready()) r->engine->shutdown();  // cancels what is left
  const auto hard = Clock::now() + std::chrono::seconds(5);
  while (in_flight_ > 0 && Clock::now() < hard)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  http_->stop();
}

void Server::routes() {
  using httplib::Request;
  using httplib::Response;

  http_->set_pre_routing_handler([this](const Request& req, Response& res) {
    if (stopping_) {
      reply_error(res, ApiError(503, "the server is shutting down", "", "server_error"));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (std::optional<ApiError> e = check_body_framing(req, opts_.max_body)) {
      reply_error(res, *e);
      res.set_header("Connection", "close");  // the body, if any, is left unread
      return httplib::Server::HandlerResponse::Handled;
    }
    const bool guarded = req.path.rfind("/v1/", 0) == 0 || req.path.rfind("/api/", 0) == 0 ||
                         req.path == "/tokenize" || req.path == "/detokenize" ||
                         req.path == "/completion" || req.path == "/completions" ||
                         req.path == "/infill";
    // Anthropic's clients send the key as x-api-key.
    if (!opts_.api_key.empty() && guarded &&
        !bearer_matches(req.get_header_value("Authorization"), opts_.api_key) &&
        !(req.has_header("x-api-key") &&
          same_key(req.get_header_value("x-api-key"), opts_.api_key))) {
      const bool missing = !req.has_header("Authorization") && !req.has_header("x-api-key");
      reply_error(res, ApiError(401,
                                missing ? "missing API key: send 'Authorization: Bearer KEY'"
                                        : "invalid API key",
                                "", "invalid_request_error", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // Statuses httplib sets by itself (unknown route, body too large ...) get a JSON body.
  http_->set_error_handler([this](const Request& req, Response& res) {
    if (!res.body.empty()) return;
    std::string msg;
    switch (res.status) {
      case 404:
        if (const Route* r = find_route(req.path)) {
          res.status = 405;
          res.set_header("Allow", r->method);
          msg = "method " + req.method + " not allowed on " + req.path + " (use " + r->method + ")";
        } else {
          msg = "unknown route " + req.method + " " + req.path;
        }
        break;
      case 413:
        msg = "request body larger than " + std::to_string(opts_.max_body) + " bytes";
        break;
      case 405:
        msg = "method " + req.method + " not allowed on " + req.path;
        break;
      default:
        msg = "bad request";
    }
    reply_json(res, res.status, error_body(msg, "invalid_request_error", "", ""));
  });
  http_->set_exception_handler([](const Request&, Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    reply_json(res, 500, error_body(what, "server_error", "", ""));
  });
  // Counted once the status is final but before the response goes out (httplib's
  // logger runs after it is written, so a client could read /metrics before its own
  // request was counted).
  http_->set_post_routing_handler([this](const Request& req, Response& res) {
    metrics_.count_request(route_label(req.path), res.status);
  });

  http_->Get("/health", [this](const Request&, Response& res) {
    if (ready())
      reply_json(res, 200, {{"status", "ok"}});
    else
      reply_json(res, 503, {{"status", "loading"}});
  });
  // llama.cpp's tokenizer routes: {"content", "add_special", "with_pieces"} -> {"tokens"},
  // and {"tokens"} -> {"content"}.
  http_->Post("/tokenize", [this](const Request& req, Response& res) {
    try {
      const std::shared_ptr<Ready> r = ready();
      if (!r) throw ApiError(503, "the model is still loading", "", "server_error");
      const TokenizeRequest t = parse_tokenize_request(parse_body(req.body));
      const std::vector<int32_t> ids = r->tokenizer->encode(t.content, t.add_special);
      json tokens = json::array();
      for (int32_t id : ids) {
        if (t.with_pieces)
          tokens.push_back({{"id", id}, {"piece", r->tokenizer->token_bytes(id)}});
        else
          tokens.push_back(id);
      }
      reply_json(res, 200, {{"tokens", tokens}, {"count", ids.size()}});
    } catch (const ApiError& e) {
      reply_error(res, e);
    }
  });
  http_->Post("/detokenize", [this](const Request& req, Response& res) {
    try {
      const std::shared_ptr<Ready> r = ready();
      if (!r) throw ApiError(503, "the model is still loading", "", "server_error");
      const std::vector<int32_t> ids =
          parse_detokenize_request(parse_body(req.body), r->tokenizer->vocab_size());
      reply_json(res, 200, {{"content", r->tokenizer->decode(ids)}});
    } catch (const ApiError& e) {
      reply_error(res, e);
    }
  });
  auto model_object = [this] {
    return json{{"id", opts_.model_name},
                {"object", "model"},
                {"created", static_cast<int64_t>(std::time(nullptr))},
                {"owned_by", "llmrt"}};
  };
  http_->Get("/v1/models", [model_object](const Request&, Response& res) {
    reply_json(res, 200, {{"object", "list"}, {"data", json::array({model_object()})}});
  });
  http_->Get(R"(/v1/models/(.+))", [this, model_object](const Request& req, Response& res) {
    const std::string id = req.matches[1].str();
    if (id != opts_.model_name)
      return reply_error(res, ApiError(404, "The model '" + id + "' does not exist", "model",
                                       "invalid_request_error", "model_not_found"));
    reply_json(res, 200, model_object());
  });
  http_->Get("/metrics", [this](const Request&, Response& res) {
    res.set_content(metrics_.render(), "text/plain; version=0.0.4");
  });

  http_->Post("/v1/embeddings", [this](const Request& req, Response& res) {
    InFlight guard(in_flight_);
    const auto start = Clock::now();
    try {
      const std::shared_ptr<Ready> r = ready();
      if (!r) throw ApiError(503, "the model is still loading", "", "server_error");
      if (r->pooling == Pooling::None)
        throw ApiError(400,
                       "the server runs with --pooling none (a vector per token), which "
                       "/v1/embeddings cannot return; restart it with mean, last or cls pooling");
      const EmbeddingsRequest e = parse_embeddings_request(
          parse_body(req.body), r->engine->vocab_size(), r->engine->hidden_size());
      const auto prompts =
          embedding_prompts(e, *r->tokenizer, r->engine->context_size(), /*truncate=*/false);
      int prompt_tokens = 0;
      for (const auto& p : prompts) prompt_tokens += static_cast<int>(p.size());
      const std::vector<std::vector<float>> out =
          run_embeddings(*r->engine, prompts, r->pooling, true, e.dimensions);
      metrics_.observe_request(seconds(start, Clock::now()));
      metrics_.add_tokens(prompt_tokens, 0);
      reply_json(res, 200, embeddings_response(opts_.model_name, out, e.base64, prompt_tokens));
    } catch (const ApiError& ex) {
      reply_error(res, ex);
    }
  });

  auto completion = [this](bool chat) {
    return [this, chat](const Request& req, Response& res) {
      auto job = std::make_shared<Job>(in_flight_);
      try {
        job->ready = ready();
        if (!job->ready) throw ApiError(503, "the model is still loading", "", "server_error");
        const Ready& r = *job->ready;
        const int vocab = r.engine->vocab_size();
        const nlohmann::ordered_json body = parse_body(req.body);
        job->req = chat ? parse_chat_request(body, vocab) : parse_completion_request(body, vocab);
        const ParsedRequest& p = job->req;

        GenerationPlan plan = plan_generation(p, *r.tokenizer, r.chat, opts_.split_reasoning,
                                              r.engine->context_size());
        GenerationRequest& g = plan.request;
        job->format = plan.format;
        const uint64_t seed = g.sampling.seed;
        // n choices: as many engine requests, each seeded with seed + its index.
        job->choices.resize(static_cast<size_t>(p.n));
        try {
          for (int i = 0; i < p.n; i++) {
            g.sampling.seed = seed + static_cast<uint64_t>(i);
            job->choices[static_cast<size_t>(i)].stream = r.engine->submit(g);
          }
        } catch (const QueueFullError& e) {
          job->cancel_all();
          throw ApiError(429, e.what(), "", "rate_limit_exceeded");
        } catch (const Error& e) {
          job->cancel_all();
          throw ApiError(400, e.what(), chat ? "messages" : "prompt");
        }
      } catch (const ApiError& e) {
        reply_error(res, e);
        return;
      }
      job->id = random_id(chat ? "chatcmpl-" : "cmpl-");
      job->model = opts_.model_name;
      job->created = static_cast<int64_t>(std::time(nullptr));
      const Tokenizer& tok = *job->ready->tokenizer;

      // Bookkeeping of one event of a choice: metrics and usage.
      auto account = [this](Job& j, Job::Choice& c, const GenerationEvent& ev) {
        const auto now = Clock::now();
        if (!ev.tokens.empty()) {
          if (!j.any_token)
            metrics_.observe_ttft(seconds(j.start, now));
          else
            metrics_.observe_token_latency(seconds(j.last_token, now));
          j.any_token = true;
          j.last_token = now;
        }
        j.usage.prompt_tokens = ev.prompt_tokens;
        if (&c == &j.choices.front()) j.usage.cached_tokens = ev.cached_tokens;
        c.completion_tokens = ev.completion_tokens;
        j.usage.completion_tokens = 0;
        for (const Job::Choice& o : j.choices) j.usage.completion_tokens += o.completion_tokens;
        if (ev.finish != FinishReason::None) {
          c.done = true;
          if (j.all_done()) {
            metrics_.observe_request(seconds(j.start, now));
            metrics_.add_tokens(j.usage.prompt_tokens, j.usage.completion_tokens);
          }
        }
      };

      if (!job->req.stream) {
        const size_t n = job->choices.size();
        std::vector<ChoiceOut> outs(n);
        std::vector<std::vector<TokenLogprob>> lps(n);
        for (size_t i = 0; i < n; i++) {
          Job::Choice& c = job->choices[i];
          std::string text;
          GenerationEvent ev;
          for (;;) {
            ev = c.stream->next();
            account(*job, c, ev);
            text += ev.text;
            if (job->req.logprobs) {
              auto more = to_logprobs(tok, ev.logprobs);
              lps[i].insert(lps[i].end(), more.begin(), more.end());
            }
            if (ev.finish != FinishReason::None) break;
          }
          if (ev.finish == FinishReason::Error || ev.finish == FinishReason::Cancelled) {
            job->cancel_all();
            return reply_error(
                res, ev.finish == FinishReason::Error
                         ? ApiError(500, ev.error, "", "server_error")
                         : ApiError(503, "the server is shutting down", "", "server_error"));
          }
          ChoiceOut& o = outs[i];
          o.finish_reason = finish_name(ev.finish);
          o.logprobs = job->req.logprobs ? &lps[i] : nullptr;
          if (!chat) {
            o.text = std::move(text);
            continue;
          }
          ShownReply shown = show_reply(job->format, std::move(text));
          o.text = std::move(shown.content);
          o.reasoning = std::move(shown.reasoning);
          o.tool_calls = std::move(shown.calls);
          if (!o.tool_calls.empty()) o.finish_reason = "tool_calls";
        }
        reply_json(res, 200,
                   chat ? chat_response(job->id, job->created, job->model, outs, job->usage)
                        : completion_response(job->id, job->created, job->model, outs, job->usage));
        return;
      }

      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [job, chat, account](size_t, httplib::DataSink& sink) {
            const Tokenizer& tok = *job->ready->tokenizer;
            if (job->done) {
              sink.done();
              return true;
            }
            // The next event of any choice: each one still running is asked without
            // waiting (in turn, so none starves), then the first of them with a wait.
            GenerationEvent ev;
            const size_t n = job->choices.size();
            size_t which = n;
            for (size_t k = 0; k < n && which == n; k++) {
              const size_t i = (job->next_poll + k) % n;
              Job::Choice& c = job->choices[i];
              if (!c.done && c.stream->next(ev, std::chrono::milliseconds(0))) which = i;
            }
            if (which == n) {
              size_t wait = 0;
              while (job->choices[wait].done) wait++;
              if (!job->choices[wait].stream->next(ev, std::chrono::milliseconds(200))) {
                // A comment now and then notices a client that went away while queued.
                if (seconds(job->last_write, Clock::now()) < 5) return true;
                job->last_write = Clock::now();
                static const char kAlive[] = ": keep-alive\n\n";
                return sink.write(kAlive, sizeof kAlive - 1);
              }
              which = wait;
            }
            job->next_poll = which + 1;
            Job::Choice& c = job->choices[which];
            const int index = static_cast<int>(which);
            account(*job, c, ev);
            std::string out;
            const bool finished = ev.finish != FinishReason::None;
            std::vector<TokenLogprob> lps;
            if (job->req.logprobs) lps = to_logprobs(tok, ev.logprobs);
            const auto* lp = job->req.logprobs && !lps.empty() ? &lps : nullptr;
            const bool ended_well = finished && ev.finish != FinishReason::Error &&
                                    ev.finish != FinishReason::Cancelled;
            ShownReply shown;
            if (chat) {
              if (!c.reply) c.reply = std::make_unique<StreamedReply>(job->format);
              shown = c.reply->push(ev.text, ended_well);
            } else {
              shown.content = ev.text;
            }
            if (!shown.content.empty() || !shown.reasoning.empty() || lp || c.first) {
              out += sse_event(chat ? chat_chunk(job->id, job->created, job->model, index,
                                                 shown.content, c.first, "", lp, shown.reasoning)
                                    : completion_chunk(job->id, job->created, job->model, index,
                                                       shown.content, "", lp));
              c.first = false;
            }
            if (!shown.calls.empty())
              out += sse_event(
                  chat_tool_calls_chunk(job->id, job->created, job->model, index, shown.calls));
            if (finished && !ended_well) {
              // One choice failing ends them all.
              job->cancel_all();
              const std::string msg = ev.finish == FinishReason::Error
                                          ? ev.error
                                          : std::string("the request was cancelled");
              out += sse_event(error_body(msg, "server_error", "", ""));
              out += kSseDone;
              job->done = true;
            } else if (finished) {
              const char* why = shown.calls.empty() ? finish_name(ev.finish) : "tool_calls";
              out += sse_event(chat ? chat_chunk(job->id, job->created, job->model, index, "",
                                                 false, why, nullptr)
                                    : completion_chunk(job->id, job->created, job->model, index, "",
                                                       why, nullptr));
              if (job->all_done()) {
                if (job->req.include_usage)
                  out +=
                      sse_event(usage_chunk(job->id, job->created, job->model, chat, job->usage));
                out += kSseDone;
                job->done = true;
              }
            }
            if (out.empty()) return true;  // a zero-length chunk would end the response
            job->last_write = Clock::now();
            if (!sink.write(out.data(), out.size())) return false;
            if (job->done) sink.done();
            return true;
          },
          [job](bool success) {
            // The client went away (or the write failed): stop generating for it.
            if (!success || !job->done) job->cancel_all();
          });
    };
  };
  http_->Post("/v1/chat/completions", completion(true));
  http_->Post("/v1/completions", completion(false));
  ollama_routes();
  llama_routes();
  anthropic_routes();
  responses_routes();
}

}  // namespace llm::server
