#include "server/anthropic_api.h"

namespace llm::server {

using nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

// Anthropic's usage: input_tokens counts the prompt tokens run, cache_read_input_tokens
// those the prefix cache held (nothing is written to a cache on request).
json usage_of(const ReplyTimings& t, int output_tokens) {
  return {{"input_tokens", t.prompt_tokens - t.cached_tokens},
          {"cache_creation_input_tokens", 0},
          {"cache_read_input_tokens", t.cached_tokens},
          {"output_tokens", output_tokens}};
}

std::string block_text(const ojson& content, const std::string& param) {
  return text_of_parts(content, param, {"text"});
}

// One Anthropic message as OpenAI messages: a user's tool results become tool messages
// (before the user's text), an assistant's tool_use blocks its tool_calls.
void translate_message(const ojson& m, size_t i, ojson& out) {
  const std::string param = "messages[" + std::to_string(i) + "]";
  if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
    throw ApiError(400, param + " must be an object with a role", param);
  const std::string role = m["role"].get<std::string>();
  if (role != "user" && role != "assistant")
    throw ApiError(400, param + ".role must be \"user\" or \"assistant\"", param + ".role");
  if (!m.contains("content")) throw ApiError(400, param + ".content is required", param);
  const ojson& content = m["content"];
  if (content.is_string()) {
    out.push_back({{"role", role}, {"content", content}});
    return;
  }
  if (!content.is_array())
    throw ApiError(400, param + ".content must be a string or a list of blocks", param);
  const size_t before = out.size();
  std::string text;
  ojson calls = ojson::array();
  for (size_t k = 0; k < content.size(); k++) {
    const ojson& b = content[k];
    const std::string bp = param + ".content[" + std::to_string(k) + "]";
    const std::string type = b.is_object() ? optional_string(b, "type", "", bp) : "";
    if (type == "text" && b.contains("text") && b["text"].is_string()) {
      text += b["text"].get<std::string>();
    } else if (type == "tool_result" && role == "user") {
      if (!b.contains("tool_use_id") || !b["tool_use_id"].is_string())
        throw ApiError(400, bp + ".tool_use_id must be a string", bp);
      std::string result = b.contains("content") ? block_text(b["content"], bp + ".content") : "";
      if (optional_bool(b, "is_error", false, bp)) result = "Error: " + result;
      out.push_back({{"role", "tool"}, {"tool_call_id", b["tool_use_id"]}, {"content", result}});
    } else if (type == "tool_use" && role == "assistant") {
      if (!b.contains("name") || !b["name"].is_string() || !b.contains("id") ||
          !b["id"].is_string())
        throw ApiError(400, bp + " needs an id and a name", bp);
      calls.push_back({{"id", b["id"]},
                       {"type", "function"},
                       {"function",
                        {{"name", b["name"]},
                         {"arguments", b.contains("input") ? b["input"] : ojson::object()}}}});
    } else if ((type == "thinking" || type == "redacted_thinking") && role == "assistant") {
      // Earlier thinking is not shown to the model again (as chat templates drop it).
    } else if (type == "image" || type == "document") {
      throw ApiError(400, bp + ": " + type + " blocks are not supported", bp);
    } else {
      throw ApiError(400,
                     bp + ": a " + (type.empty() ? "block without a type" : type + " block") +
                         " is not supported in a " + role + " message",
                     bp);
    }
  }
  // The text (or the calls); an empty message stays one unless it held tool results.
  if (!text.empty() || !calls.empty() || out.size() == before) {
    ojson msg = {{"role", role}, {"content", text}};
    if (!calls.empty()) msg["tool_calls"] = std::move(calls);
    out.push_back(std::move(msg));
  }
}

const char* stop_reason(FinishReason why, bool calls, const std::string& stop_string) {
  if (calls) return "tool_use";
  if (why == FinishReason::Length) return "max_tokens";
  return stop_string.empty() ? "end_turn" : "stop_sequence";
}

json stop_sequence(const std::string& stop_string) {
  return stop_string.empty() ? json(nullptr) : json(stop_string);
}

json tool_input(const std::string& arguments) {
  try {
    json input = json::parse(arguments);
    if (input.is_object()) return input;
  } catch (const json::exception&) {
  }
  return json::object();
}

std::string event(const char* name, const json& data) {
  return std::string("event: ") + name + "\ndata: " + dump(data) + "\n\n";
}

}  // namespace

ojson parse_anthropic_request(const ojson& body) {
  ojson o = ojson::object();
  if (present(body, "model")) o["model"] = body["model"];
  ojson messages = ojson::array();
  if (present(body, "system"))
    messages.push_back({{"role", "system"}, {"content", block_text(body["system"], "system")}});
  if (!present(body, "messages") || !body["messages"].is_array() || body["messages"].empty())
    throw ApiError(400, "'messages' must be a non-empty list", "messages");
  for (size_t i = 0; i < body["messages"].size(); i++)
    translate_message(body["messages"][i], i, messages);
  o["messages"] = std::move(messages);
  if (present(body, "max_tokens")) o["max_tokens"] = body["max_tokens"];
  for (const char* key : {"temperature", "top_p", "top_k"})
    if (present(body, key)) o[key] = body[key];
  if (present(body, "stop_sequences")) o["stop"] = body["stop_sequences"];
  o["stream"] = optional_bool(body, "stream", false, "");
  if (present(body, "tools")) {
    const ojson& tools = body["tools"];
    if (!tools.is_array()) throw ApiError(400, "'tools' must be a list", "tools");
    ojson out = ojson::array();
    for (size_t i = 0; i < tools.size(); i++) {
      const ojson& t = tools[i];
      const std::string param = "tools[" + std::to_string(i) + "]";
      if (!t.is_object() || !t.contains("name") || !t["name"].is_string())
        throw ApiError(400, param + " must be an object with a name", param);
      if (!t.contains("input_schema") || (t.contains("type") && t["type"] != "custom"))
        throw ApiError(400,
                       param + " ('" + t["name"].get<std::string>() +
                           "'): only client tools with an input_schema are supported",
                       param);
      ojson fn = {{"name", t["name"]}, {"parameters", t["input_schema"]}};
      if (present(t, "description")) fn["description"] = t["description"];
      out.push_back({{"type", "function"}, {"function", std::move(fn)}});
    }
    o["tools"] = std::move(out);
  }
  if (present(body, "tool_choice")) {
    const ojson& c = body["tool_choice"];
    const std::string type = c.is_object() ? optional_string(c, "type", "", "tool_choice") : "";
    if (type == "auto") {
      o["tool_choice"] = "auto";
    } else if (type == "any") {
      o["tool_choice"] = "required";
    } else if (type == "none") {
      o["tool_choice"] = "none";
    } else if (type == "tool" && c.contains("name") && c["name"].is_string()) {
      o["tool_choice"] = {{"type", "function"}, {"function", {{"name", c["name"]}}}};
    } else {
      throw ApiError(400,
                     "'tool_choice' must be {\"type\": \"auto\" | \"any\" | \"none\"} or "
                     "{\"type\": \"tool\", \"name\": ...}",
                     "tool_choice");
    }
    if (optional_bool(c, "disable_parallel_tool_use", false, "tool_choice"))
      o["parallel_tool_calls"] = false;
  }
  if (present(body, "thinking")) {
    const ojson& t = body["thinking"];
    const std::string type = t.is_object() ? optional_string(t, "type", "", "thinking") : "";
    if (type != "enabled" && type != "disabled")
      throw ApiError(400, "'thinking' must be {\"type\": \"enabled\" | \"disabled\"}", "thinking");
    o["chat_template_kwargs"] = {{"enable_thinking", type == "enabled"}};
  }
  return o;
}

json anthropic_message(const std::string& id, const std::string& model, const ShownReply& reply,
                       FinishReason why, const ReplyTimings& t) {
  json content = json::array();
  if (!reply.reasoning.empty())
    content.push_back({{"type", "thinking"}, {"thinking", reply.reasoning}, {"signature", ""}});
  if (!reply.content.empty()) content.push_back({{"type", "text"}, {"text", reply.content}});
  for (const ResponseToolCall& c : reply.calls)
    content.push_back(
        {{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", tool_input(c.arguments)}});
  return {{"id", id},
          {"type", "message"},
          {"role", "assistant"},
          {"model", model},
          {"content", std::move(content)},
          {"stop_reason", stop_reason(why, !reply.calls.empty(), t.stop_string)},
          {"stop_sequence", stop_sequence(t.stop_string)},
          {"usage", usage_of(t, t.eval_tokens)}};
}

std::string AnthropicStream::start(const ReplyTimings& t) {
  if (started_) return "";
  started_ = true;
  return event("message_start", {{"type", "message_start"},
                                 {"message",
                                  {{"id", id_},
                                   {"type", "message"},
                                   {"role", "assistant"},
                                   {"model", model_},
                                   {"content", json::array()},
                                   {"stop_reason", nullptr},
                                   {"stop_sequence", nullptr},
                                   {"usage", usage_of(t, 0)}}}});
}

std::string AnthropicStream::close() {
  if (open_.empty()) return "";
  open_.clear();
  return event("content_block_stop", {{"type", "content_block_stop"}, {"index", index_}});
}

std::string AnthropicStream::block(const char* type, const json& content_block) {
  if (open_ == type) return "";
  std::string out = close();
  open_ = type;
  index_++;
  return out + event("content_block_start", {{"type", "content_block_start"},
                                             {"index", index_},
                                             {"content_block", content_block}});
}

std::string AnthropicStream::piece(const ShownReply& shown, const ReplyTimings& t) {
  std::string out = start(t);
  auto delta = [&](const json& d) {
    out += event("content_block_delta",
                 {{"type", "content_block_delta"}, {"index", index_}, {"delta", d}});
  };
  if (!shown.reasoning.empty()) {
    out += block("thinking", {{"type", "thinking"}, {"thinking", ""}});
    delta({{"type", "thinking_delta"}, {"thinking", shown.reasoning}});
  }
  if (!shown.content.empty()) {
    out += block("text", {{"type", "text"}, {"text", ""}});
    delta({{"type", "text_delta"}, {"text", shown.content}});
  }
  for (const ResponseToolCall& c : shown.calls) {
    any_call_ = true;
    out += close();
    out += block("tool_use",
                 {{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", json::object()}});
    delta({{"type", "input_json_delta"}, {"partial_json", dump(tool_input(c.arguments))}});
  }
  return out;
}

std::string AnthropicStream::last(FinishReason why, const ReplyTimings& t) {
  std::string out = start(t);
  out += close();
  out += event("message_delta", {{"type", "message_delta"},
                                 {"delta",
                                  {{"stop_reason", stop_reason(why, any_call_, t.stop_string)},
                                   {"stop_sequence", stop_sequence(t.stop_string)}}},
                                 {"usage", {{"output_tokens", t.eval_tokens}}}});
  return out + event("message_stop", {{"type", "message_stop"}});
}

std::string AnthropicStream::error(const std::string& message) {
  return event("error", anthropic_error(ApiError(500, message, "", "server_error")));
}

json anthropic_error(const ApiError& e) {
  const char* type = "invalid_request_error";
  if (e.status == 401) type = "authentication_error";
  if (e.status == 404) type = "not_found_error";
  if (e.status == 413) type = "request_too_large";
  if (e.status == 429) type = "rate_limit_error";
  if (e.status >= 500) type = e.status == 503 ? "overloaded_error" : "api_error";
  return {{"type", "error"}, {"error", {{"type", type}, {"message", e.what()}}}};
}

}  // namespace llm::server
