// What the server's route files share (private to server/): the loaded model as the
// routes see it, the in-flight count, and timing.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>

#include "server/http_server.h"
#include "server/openai_protocol.h"

namespace llm::server {

using Clock = std::chrono::steady_clock;

struct Server::Ready {
  Engine* engine = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const ChatPrompt* chat = nullptr;
  Pooling pooling = Pooling::Mean;
  ModelDetails details;
};

// A JSON response (429 and 503 say when to retry).
template <class Response>
void reply_json(Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  if (status == 429 || status == 503) res.set_header("Retry-After", "1");
  res.set_content(dump(body), "application/json");
}

inline double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Counts a request as in flight for as long as this lives.
class InFlight {
 public:
  explicit InFlight(std::atomic<int>& n) : n_(n) { n_++; }
  ~InFlight() { n_--; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<int>& n_;
};

}  // namespace llm::server
