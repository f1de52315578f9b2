// What a chat reply shows through the API: its content, a reasoning model's
// reasoning_content, and the tool calls parsed out of it (or the one call a forced
// tool_choice constrained it to). Whole replies and streamed ones, piece by piece.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/chat/reasoning.h"
#include "core/chat/tool_calls.h"
#include "server/openai_protocol.h"

namespace llm::server {

// How a request's replies are read.
struct ReplyFormat {
  ToolCallSyntax tools = ToolCallSyntax::None;  // parse calls in this syntax
  bool thinks = false;                          // a think block at the start is reasoning_content
  bool think_inside = false;                    // ... and the prompt opened it
  std::optional<ForcedToolCall> forced;         // the reply is this call's JSON object
  bool one_call = false;                        // parallel_tool_calls false: the first only
};

struct ShownReply {
  std::string content, reasoning;
  std::vector<ResponseToolCall> calls;
};

// A whole reply.
ShownReply show_reply(const ReplyFormat& format, std::string text);

// A streamed reply: each piece gives what can go out now; text that may start a tool
// call, or a piece of a think tag, is held until it is known.
class StreamedReply {
 public:
  explicit StreamedReply(const ReplyFormat& format) : format_(format) {}
  // ended: the reply ended with this piece (everything held goes out).
  ShownReply push(const std::string& text, bool ended);

 private:
  const ReplyFormat& format_;
  std::unique_ptr<ReasoningStream> reasoning_;
  std::unique_ptr<ToolCallStream> tools_;
  std::string held_;  // a forced call: the reply so far
};

}  // namespace llm::server
