// Ollama's API beside OpenAI's (/api/chat, /api/generate, /api/embed, /api/embeddings,
// /api/tags, /api/show, /api/ps, /api/version), so Ollama's clients work unchanged. A
// request is translated to the OpenAI-shaped body this server validates
// (openai_protocol.h); replies and the lines of their NDJSON stream are built here.
#pragma once

#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/chat_reply.h"
#include "server/single_reply.h"

namespace llm::server {

struct OllamaRequest {
  nlohmann::ordered_json openai;  // an OpenAI chat or completion body
  bool chat = false;              // through the chat template (openai is a chat body)
  bool stream = true;             // Ollama streams unless "stream": false
};

// /api/chat (chat_route) or /api/generate: messages / prompt (+ system, raw), tools,
// format ("json" or a schema), options (temperature, top_p, top_k, min_p, seed, stop,
// num_predict, repeat_penalty, presence_penalty, frequency_penalty; Ollama's defaults
// temperature 0.8, top_k 40, top_p 0.9 where not given), think (the template's
// enable_thinking). A generate prompt goes through
// the chat template as a user message unless raw or there is no template. Throws ApiError
// (400) for what it cannot serve (images) or malformed fields. A generate request with a
// suffix fills in the middle (a completion body with suffix, no template).
OllamaRequest parse_ollama_request(const nlohmann::ordered_json& body, bool chat_route,
                                   bool has_template);

// An empty request (no messages, or an empty prompt): Ollama's way to load a model,
// answered at once with done_reason "load".
bool ollama_load_only(const nlohmann::ordered_json& body, bool chat_route);

// One line of a reply: a streamed piece (done false), or the last one (done true, with
// done_reason "stop" / "length" and the timings). Chat replies carry message (content,
// thinking, tool_calls with object arguments), generate replies response (and thinking).
nlohmann::json ollama_reply(const std::string& model, bool chat_route, const ShownReply& shown,
                            bool done, const std::string& done_reason, const ReplyTimings& t);

// RFC 3339 UTC, as Ollama writes times.
std::string ollama_time(std::time_t t);
// {"error": message}: Ollama's error body.
nlohmann::json ollama_error(const std::string& message);

}  // namespace llm::server
