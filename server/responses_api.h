// OpenAI's Responses API beside Chat Completions (POST /v1/responses), which newer clients
// speak (the OpenAI Agents SDK, Codex CLI). Stateless: a request carries its whole input.
// It is translated to the chat body this server validates (openai_protocol.h); the response
// object and the events of its stream are built here.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/engine/engine.h"
#include "server/openai_protocol.h"
#include "server/single_reply.h"

namespace llm::server {

// instructions, input (a string, or items: messages with text content, function_call,
// function_call_output; reasoning items are dropped), tools (function tools), tool_choice,
// parallel_tool_calls, max_output_tokens, temperature, top_p, text.format (text,
// json_object, json_schema), stream, as the OpenAI chat body they mean (its "stream" says
// whether to stream). Throws ApiError (400) for images, files, built-in tools,
// previous_response_id (nothing is stored) and malformed fields.
nlohmann::ordered_json parse_responses_request(const nlohmann::ordered_json& body);

// The response object: output items (reasoning, message with output_text, function_call),
// status completed or incomplete (max_output_tokens), usage.
nlohmann::json responses_object(const std::string& id, const std::string& model, int64_t created,
                                const ShownReply& reply, FinishReason why, const ReplyTimings& t);

// The events of a streamed response: response.created and response.in_progress first,
// then per output item its added / delta / done events, then response.completed (or
// response.incomplete) with the whole response.
class ResponsesStream {
 public:
  ResponsesStream(std::string id, std::string model, int64_t created)
      : id_(std::move(id)), model_(std::move(model)), created_(created) {}
  std::string piece(const ShownReply& shown, const ReplyTimings& t);
  std::string last(FinishReason why, const ReplyTimings& t);
  std::string error(const std::string& message);

 private:
  std::string event(const char* type, nlohmann::json data);
  std::string start();
  // Opens an item of `type` ("message", "reasoning") unless one is open.
  std::string open(const char* type);
  std::string close();

  std::string id_, model_;
  int64_t created_ = 0;
  int seq_ = 0;
  bool started_ = false;
  nlohmann::json items_ = nlohmann::json::array();  // the output so far
  std::string open_;                                // the open item's type, "" when none
  std::string text_;                                // the open item's text so far
};

}  // namespace llm::server
