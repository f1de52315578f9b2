// OpenAI's Responses API beside Chat Completions (POST /v1/responses), which newer clients
// speak (the OpenAI Agents SDK, Codex CLI). A request carries its input, and may continue a
// stored response's conversation (server/response_store.h).
// It is translated to the chat body this server validates (openai_protocol.h); the response
// object and the events of its stream are built here.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/engine/engine.h"
#include "server/openai_protocol.h"
#include "server/response_store.h"
#include "server/single_reply.h"

namespace llm::server {

// The conversation a stored response ends, by its id; nullptr when none is stored.
using TurnLookup =
    std::function<std::shared_ptr<const ConversationTurn>(const std::string& response_id)>;

struct ResponsesRequest {
  nlohmann::ordered_json chat;            // the OpenAI chat body it means ("stream" in it)
  nlohmann::ordered_json input_messages;  // its input as chat messages, instructions apart
  nlohmann::json input_items;             // its input as items, each with an id
  std::shared_ptr<const ConversationTurn> previous;  // previous_response_id's, or nullptr
  std::string previous_id;
  bool store = true;
  bool truncate = false;  // truncation "auto": drop the oldest turns to fit the context
  // What the response object repeats of the request (instructions, metadata, temperature,
  // top_p, tool_choice, tools, max_output_tokens, text), with OpenAI's defaults.
  nlohmann::json echo = nlohmann::json::object();
};

// instructions, input (a string, or items: messages with text content, function_call,
// function_call_output; reasoning items are dropped), previous_response_id (its
// conversation goes first, its instructions do not), store, metadata (echoed), tools (function
// tools), tool_choice, parallel_tool_calls, max_output_tokens, temperature, top_p, text.format
// (text, json_object, json_schema), stream. Throws ApiError: 404 for a
// previous_response_id not stored, 400 for images, files, built-in tools and malformed
// fields.
ResponsesRequest parse_responses_request(const nlohmann::ordered_json& body,
                                         const TurnLookup& stored);

// What the response objects of one request say besides their output.
struct ResponseMeta {
  std::string id, model;
  int64_t created = 0;
  std::string previous_id;  // empty: none
  bool store = true;
  nlohmann::json echo = nlohmann::json::object();  // ResponsesRequest::echo
};

// The response object: output items (reasoning, message with output_text, function_call),
// status completed or incomplete (max_output_tokens), usage.
nlohmann::json responses_object(const ResponseMeta& meta, const ShownReply& reply, FinishReason why,
                                const ReplyTimings& t);

// truncation "auto": drops the conversation's oldest turn (after a leading system
// message: a message, with the tool results that answer its calls); false when only the
// last message is left.
bool drop_oldest_turn(nlohmann::ordered_json& messages);

// GET /v1/responses/{id}/input_items: a page of a stored response's input items as
// OpenAI lists them; query: order ("desc", the default, or "asc"), limit (1-100,
// default 20), after (an item id). Throws ApiError (400) for a bad query value.
nlohmann::json input_items_page(const nlohmann::json& items, const std::string& order,
                                const std::string& limit, const std::string& after);

// A response's output items as the chat messages that continue its conversation: one
// assistant message with its text and function calls (reasoning dropped).
nlohmann::ordered_json output_messages(const nlohmann::json& output);

// The events of a streamed response: response.created and response.in_progress first,
// then per output item its added / delta / done events, then response.completed (or
// response.incomplete) with the whole response.
class ResponsesStream {
 public:
  explicit ResponsesStream(ResponseMeta meta) : meta_(std::move(meta)) {}
  std::string piece(const ShownReply& shown, const ReplyTimings& t);
  std::string last(FinishReason why, const ReplyTimings& t);
  std::string error(const std::string& message);
  // Called by last() with the whole response (to store it).
  std::function<void(const nlohmann::json& response)> on_finished;

 private:
  std::string event(const char* type, nlohmann::json data);
  std::string start();
  // Opens an item of `type` ("message", "reasoning") unless one is open.
  std::string open(const char* type);
  std::string close();

  ResponseMeta meta_;
  int seq_ = 0;
  bool started_ = false;
  nlohmann::json items_ = nlohmann::json::array();  // the output so far
  std::string open_;                                // the open item's type, "" when none
  std::string text_;                                // the open item's text so far
};

}  // namespace llm::server
