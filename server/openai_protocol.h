// OpenAI's request and response shapes for /v1/chat/completions and
// /v1/completions: parsing and validating requests, building responses and
// server-sent-event chunks, and errors in OpenAI's `{"error": {...}}` shape.
// Engine-neutral: the HTTP layer maps ParsedRequest onto an engine request.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/chat/infill_prompt.h"
#include "core/engine/json_schema.h"
#include "core/error.h"

namespace llm::server {

// An error answered in OpenAI's shape with an HTTP status.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "",
           std::string type = "invalid_request_error", std::string code = "")
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type;
  std::string param;
  std::string code;
};

// {"error": {"message", "type", "param", "code"}} (param/code null when empty).
nlohmann::json error_body(const std::string& message, const std::string& type,
                          const std::string& param, const std::string& code);
nlohmann::json error_body(const ApiError& e);

// Rejects JSON nested deeper than max_depth before parsing it: a recursive parser
// would otherwise exhaust the stack on "[[[[...".
bool json_too_deep(const std::string& body, int max_depth);

// Parses a request body: 400 on malformed JSON (or invalid UTF-8), a body that is
// not an object, or nesting deeper than 64. Ordered: what goes to the chat template
// (tools, tool calls) keeps the client's key order.
nlohmann::ordered_json parse_body(const std::string& body);
// Content as a string, or the text of a list of parts whose type is one of text_types
// ({"type": ..., "text": ...}); other parts are 400 naming param.
std::string text_of_parts(const nlohmann::ordered_json& content, const std::string& param,
                          std::initializer_list<const char*> text_types);
// An optional string (bool) field of the object at param ("" for a body's top level): def
// when absent or null, 400 naming it when it is of another type.
std::string optional_string(const nlohmann::ordered_json& o, const char* key,
                            const std::string& def, const std::string& param);
bool optional_bool(const nlohmann::ordered_json& o, const char* key, bool def,
                   const std::string& param);
// An optional field of a body: absent and null both mean "use the default".
bool present(const nlohmann::ordered_json& body, const char* key);

struct ChatMessage {
  std::string role;
  std::string content;
  // tool_calls (assistant), tool_call_id and name (tool), passed to the template as sent.
  nlohmann::ordered_json tool_fields = nlohmann::ordered_json::object();
};

// A validated completion request (both routes).
struct ParsedRequest {
  bool chat = false;
  std::string model;
  std::vector<ChatMessage> messages;  // chat
  nlohmann::ordered_json tools;       // chat: the tools for the template (null: none)
  // tool_choice that forces a call: "*" (required: any tool) or the tool's name.
  std::string forced_tool;
  bool parallel_tool_calls = true;  // false: a reply's first tool call only
  // chat_template_kwargs: more variables for the chat template (null: none).
  nlohmann::ordered_json template_kwargs;
  std::string prompt;                  // completions: text prompt
  std::vector<int32_t> prompt_tokens;  // completions: token-id prompt (used when non-empty)
  // completions: the text after the cursor; the prompt is then the text before it, and the
  // reply fills the middle (core/chat/infill_prompt.h), with other files in infill_extra.
  std::optional<std::string> suffix;
  std::vector<InfillFile> infill_extra;
  std::optional<int> max_tokens;  // absent: until EOS or the context is full
  float temperature = 1.f;
  float top_p = 1.f;
  int top_k = 0;
  float min_p = 0.f;
  float presence_penalty = 0.f;
  float frequency_penalty = 0.f;
  float repetition_penalty = 1.f;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  std::map<int32_t, float> logit_bias;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;
  int top_logprobs = 0;  // alternatives per token (chat: top_logprobs; completions: logprobs)
  bool echo = false;     // completions: not supported (400 when true)
  int n = 1;             // choices, each sampled with seed + its index
  // response_format json_object (any object) or json_schema (compiled): null for text.
  std::shared_ptr<const JsonSchema> json;
};

// POST /tokenize (llama.cpp's shape).
struct TokenizeRequest {
  std::string content;
  bool add_special = false;  // the tokenizer's BOS (and the like)
  bool with_pieces = false;  // each token as {"id", "piece"}
};
TokenizeRequest parse_tokenize_request(const nlohmann::ordered_json& body);
// POST /detokenize: the ids, each below vocab_size.
std::vector<int32_t> parse_detokenize_request(const nlohmann::ordered_json& body, int vocab_size);

// Validates a parsed body; throws ApiError (400) naming the offending param.
// vocab_size bounds logit_bias keys and prompt token ids.
ParsedRequest parse_chat_request(const nlohmann::ordered_json& body, int vocab_size);
ParsedRequest parse_completion_request(const nlohmann::ordered_json& body, int vocab_size);

// One generated token as the response reports it.
struct TokenLogprob {
  std::string token;  // its text (may be part of a UTF-8 sequence)
  float logprob = 0.f;
  std::vector<std::pair<std::string, float>> top;  // alternatives, best first
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;  // prompt tokens the prefix cache held (the first choice's)
};

// A tool call as the response reports it (function.arguments is a JSON string).
struct ResponseToolCall {
  std::string id;  // "call_..."
  std::string name;
  std::string arguments;
};

// One choice of a finished request: its text (a chat message's content), finish reason
// and logprobs; chat replies also tool calls and reasoning_content.
struct ChoiceOut {
  std::string text;
  std::string finish_reason;
  const std::vector<TokenLogprob>* logprobs = nullptr;
  std::vector<ResponseToolCall> tool_calls;
  std::string reasoning;
};

// The response of a finished request, not streamed, choice i at index i. With tool
// calls a message's content is null when empty and `tool_calls` lists them.
nlohmann::json chat_response(const std::string& id, int64_t created, const std::string& model,
                             const std::vector<ChoiceOut>& choices, const Usage& usage);
nlohmann::json completion_response(const std::string& id, int64_t created, const std::string& model,
                                   const std::vector<ChoiceOut>& choices, const Usage& usage);

// One streamed chunk of choice `index`. `role_first` adds the assistant role to a chat
// chunk's delta (the choice's first chunk); an empty finish_reason is null; reasoning
// goes out as delta.reasoning_content.
nlohmann::json chat_chunk(const std::string& id, int64_t created, const std::string& model,
                          int index, const std::string& delta, bool role_first,
                          const std::string& finish_reason,
                          const std::vector<TokenLogprob>* logprobs,
                          const std::string& reasoning = "");
// A streamed chunk whose delta carries every tool call of a choice's reply, whole.
nlohmann::json chat_tool_calls_chunk(const std::string& id, int64_t created,
                                     const std::string& model, int index,
                                     const std::vector<ResponseToolCall>& tool_calls);
nlohmann::json completion_chunk(const std::string& id, int64_t created, const std::string& model,
                                int index, const std::string& delta,
                                const std::string& finish_reason,
                                const std::vector<TokenLogprob>* logprobs);
// The last chunk of a stream with stream_options.include_usage: no choices, usage.
nlohmann::json usage_chunk(const std::string& id, int64_t created, const std::string& model,
                           bool chat, const Usage& usage);

// A fresh id: prefix and 16 random hex digits ("chatcmpl-...", "call_...").
std::string random_id(const char* prefix);

// "data: <json>\n\n", and the stream's end "data: [DONE]\n\n".
std::string sse_event(const nlohmann::json& j);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

// JSON text that never throws on invalid UTF-8 in generated text (replaced by U+FFFD).
std::string dump(const nlohmann::json& j);

}  // namespace llm::server
