// Anthropic's Messages API beside OpenAI's (POST /v1/messages and
// /v1/messages/count_tokens), so clients written for it (Claude Code, the Anthropic SDKs)
// can use a local model. A request is translated to the OpenAI chat body this server
// validates (openai_protocol.h); the message and the events of its stream are built here.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/engine/engine.h"
#include "server/openai_protocol.h"
#include "server/single_reply.h"

namespace llm::server {

// system (text or text blocks), messages (user text and tool_result blocks, assistant
// text and tool_use blocks; thinking blocks are dropped), max_tokens, temperature, top_p,
// top_k, stop_sequences, tools (name, description, input_schema), tool_choice (auto, any,
// tool, none; disable_parallel_tool_use), thinking (the template's enable_thinking),
// stream, as the OpenAI chat body they mean (its "stream" says whether to stream). Throws
// ApiError (400) for images, documents, server tools and malformed fields.
nlohmann::ordered_json parse_anthropic_request(const nlohmann::ordered_json& body);

// The reply as a message: thinking, text and tool_use blocks, stop_reason (end_turn,
// max_tokens, tool_use) and usage.
nlohmann::json anthropic_message(const std::string& id, const std::string& model,
                                 const ShownReply& reply, FinishReason why, const ReplyTimings& t);

// The events of a streamed message: message_start before the first block, a block per
// kind of content in the order it comes (thinking_delta, text_delta, a tool_use block
// per call with its input as one input_json_delta), then message_delta and message_stop.
class AnthropicStream {
 public:
  AnthropicStream(std::string id, std::string model)
      : id_(std::move(id)), model_(std::move(model)) {}
  std::string piece(const ShownReply& shown, const ReplyTimings& t);
  std::string last(FinishReason why, const ReplyTimings& t);
  std::string error(const std::string& message);

 private:
  std::string start(const ReplyTimings& t);
  // Closes the open block unless it is of `type`, then opens one of `type` if needed.
  std::string block(const char* type, const nlohmann::json& content_block);
  std::string close();

  std::string id_, model_;
  bool started_ = false, any_call_ = false;
  int index_ = -1;    // of the open block, or the last one
  std::string open_;  // the open block's type ("" when none)
};

// Anthropic's error body: {"type": "error", "error": {"type", "message"}}.
nlohmann::json anthropic_error(const ApiError& e);

}  // namespace llm::server
