#include "server/chat_reply.h"

#include <utility>

namespace llm::server {

namespace {

std::vector<ResponseToolCall> response_calls(const std::vector<ToolCall>& calls, bool one_call) {
  std::vector<ResponseToolCall> out;
  for (const ToolCall& c : calls) {
    if (one_call && !out.empty()) break;
    out.push_back({random_id("call_"), c.name, c.arguments});
  }
  return out;
}

}  // namespace

ShownReply show_reply(const ReplyFormat& format, std::string text) {
  ShownReply out;
  ToolCall call;
  if (format.forced && forced_call_from_reply(*format.forced, text, &call)) {
    out.calls = response_calls({call}, true);
    return out;
  }
  if (format.thinks) {
    ReasoningSplit split = split_reasoning(text, format.think_inside);
    out.reasoning = std::move(split.reasoning);
    text = std::move(split.content);
  }
  if (format.tools != ToolCallSyntax::None) {
    ParsedReply parsed = parse_tool_calls(format.tools, text);
    if (!parsed.calls.empty()) {
      out.calls = response_calls(parsed.calls, format.one_call);
      text = std::move(parsed.content);
    }
  }
  out.content = std::move(text);
  return out;
}

ShownReply StreamedReply::push(const std::string& text, bool ended) {
  if (format_.forced) {
    // The call's JSON goes out as a tool call, at the end.
    held_ += text;
    return ended ? show_reply(format_, held_) : ShownReply{};
  }
  ShownReply out;
  out.content = text;
  if (format_.thinks) {
    // The think block goes out as reasoning_content, the rest as content.
    if (!reasoning_) reasoning_ = std::make_unique<ReasoningStream>(format_.think_inside);
    ReasoningSplit part = reasoning_->push(text);
    if (ended) {
      ReasoningSplit end = reasoning_->finish();
      part.reasoning += end.reasoning;
      part.content += end.content;
    }
    out.reasoning = std::move(part.reasoning);
    out.content = std::move(part.content);
  }
  if (format_.tools != ToolCallSyntax::None) {
    // Content goes out up to where a tool call may start; at the end the held text is
    // parsed, and its calls go out whole.
    if (!tools_) tools_ = std::make_unique<ToolCallStream>(format_.tools);
    out.content = tools_->push(out.content);
    if (ended) {
      ParsedReply end = tools_->finish();
      out.content += end.content;
      out.calls = response_calls(end.calls, format_.one_call);
    }
  }
  return out;
}

}  // namespace llm::server
