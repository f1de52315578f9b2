#include "server/ollama_api.h"

#include <cmath>

#include "server/openai_protocol.h"

namespace llm::server {

using nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

// Ollama's assistant tool calls ({"function": {"name", "arguments": {...}}}) as OpenAI's,
// which the chat template is given (arguments as the object they are).
ojson openai_tool_calls(const ojson& calls, const std::string& param) {
  if (!calls.is_array()) throw ApiError(400, param + ".tool_calls must be a list", param);
  ojson out = ojson::array();
  for (size_t i = 0; i < calls.size(); i++) {
    const ojson& c = calls[i];
    if (!c.is_object() || !present(c, "function") || !c["function"].is_object())
      throw ApiError(400, param + ".tool_calls[" + std::to_string(i) + "] needs a function", param);
    out.push_back(
        {{"id", "call_" + std::to_string(i)}, {"type", "function"}, {"function", c["function"]}});
  }
  return out;
}

}  // namespace

OllamaRequest parse_ollama_request(const ojson& body, bool chat_route, bool has_template) {
  OllamaRequest r;
  ojson& o = r.openai;
  o = ojson::object();
  if (present(body, "model")) o["model"] = body["model"];
  r.stream = optional_bool(body, "stream", r.stream, "");
  if (chat_route) {
    if (!present(body, "messages") || !body["messages"].is_array())
      throw ApiError(400, "'messages' must be a list", "messages");
    ojson messages = ojson::array();
    for (size_t i = 0; i < body["messages"].size(); i++) {
      const ojson& m = body["messages"][i];
      const std::string param = "messages[" + std::to_string(i) + "]";
      if (!m.is_object()) throw ApiError(400, param + " must be an object", param);
      if (present(m, "images")) throw ApiError(400, "images are not supported", param);
      // As given: the OpenAI parser checks their types.
      ojson msg = {{"role", m.contains("role") ? m["role"] : ojson("")},
                   {"content", m.contains("content") ? m["content"] : ojson("")}};
      if (present(m, "tool_calls")) msg["tool_calls"] = openai_tool_calls(m["tool_calls"], param);
      if (present(m, "tool_name")) msg["name"] = m["tool_name"];
      messages.push_back(std::move(msg));
    }
    o["messages"] = std::move(messages);
    if (present(body, "tools")) o["tools"] = body["tools"];
    r.chat = true;
  } else {
    if (present(body, "images")) throw ApiError(400, "images are not supported", "images");
    if (!present(body, "prompt") || !body["prompt"].is_string())
      throw ApiError(400, "'prompt' must be a string", "prompt");
    if (present(body, "suffix") && !body["suffix"].is_string())
      throw ApiError(400, "'suffix' must be a string", "suffix");
    // A suffix asks to fill in the middle (code completion), without the chat template.
    const bool infill = present(body, "suffix") && body["suffix"] != "";
    if (infill) o["suffix"] = body["suffix"];
    const bool raw = present(body, "raw") && body["raw"] == true;
    r.chat = !raw && !infill && has_template;
    if (r.chat) {
      ojson messages = ojson::array();
      if (present(body, "system"))
        messages.push_back({{"role", "system"}, {"content", body["system"]}});
      messages.push_back({{"role", "user"}, {"content", body["prompt"]}});
      o["messages"] = std::move(messages);
    } else {
      o["prompt"] = body["prompt"];
    }
  }
  // think: the templates that take it (Qwen3 and the like) think or not; "low", "medium"
  // or "high" (as Ollama takes for gpt-oss) is the reasoning effort.
  if (present(body, "think")) {
    const ojson& t = body["think"];
    if (t.is_string() && (t == "low" || t == "medium" || t == "high")) {
      if (r.chat) o["reasoning_effort"] = t;
    } else if (t.is_boolean()) {
      if (r.chat) o["chat_template_kwargs"] = {{"enable_thinking", t}};
    } else {
      throw ApiError(400, "'think' must be a boolean or \"low\", \"medium\" or \"high\"", "think");
    }
  }
  if (present(body, "format")) {
    const ojson& f = body["format"];
    if (f == "json")
      o["response_format"] = {{"type", "json_object"}};
    else if (f.is_object())
      o["response_format"] = {{"type", "json_schema"},
                              {"json_schema", {{"name", "format"}, {"schema", f}}}};
    else if (f != "")
      throw ApiError(400, "'format' must be \"json\" or a JSON schema", "format");
  }
  // Ollama's defaults where the options do not say.
  o["temperature"] = 0.8;
  o["top_k"] = 40;
  o["top_p"] = 0.9;
  if (present(body, "options")) {
    const ojson& opts = body["options"];
    if (!opts.is_object()) throw ApiError(400, "'options' must be an object", "options");
    for (const char* key : {"temperature", "top_p", "top_k", "min_p", "seed", "stop",
                            "presence_penalty", "frequency_penalty"})
      if (present(opts, key)) o[key] = opts[key];
    if (present(opts, "repeat_penalty")) o["repetition_penalty"] = opts["repeat_penalty"];
    if (present(opts, "num_predict")) {
      const ojson& n = opts["num_predict"];
      if (!n.is_number_integer())
        throw ApiError(400, "'num_predict' must be an integer", "options");
      if (n.get<int64_t>() > 0) o["max_tokens"] = n;  // -1, -2: until the end or the context
    }
  }
  return r;
}

bool ollama_load_only(const ojson& body, bool chat_route) {
  if (chat_route) return body.contains("messages") && body["messages"] == ojson::array();
  return body.contains("prompt") && body["prompt"] == "" && !present(body, "images");
}

json ollama_reply(const std::string& model, bool chat_route, const ShownReply& shown, bool done,
                  const std::string& done_reason, const ReplyTimings& t) {
  json j = {{"model", model}, {"created_at", ollama_time(std::time(nullptr))}};
  if (chat_route) {
    json msg = {{"role", "assistant"}, {"content", shown.content}};
    if (!shown.reasoning.empty()) msg["thinking"] = shown.reasoning;
    if (!shown.calls.empty()) {
      json calls = json::array();
      for (const ResponseToolCall& c : shown.calls) {
        json args = json::parse(c.arguments, nullptr, false);
        if (args.is_discarded()) args = c.arguments;
        calls.push_back({{"function", {{"name", c.name}, {"arguments", args}}}});
      }
      msg["tool_calls"] = std::move(calls);
    }
    j["message"] = std::move(msg);
  } else {
    j["response"] = shown.content;
    if (!shown.reasoning.empty()) j["thinking"] = shown.reasoning;
  }
  j["done"] = done;
  if (done) {
    auto ns = [](double s) { return static_cast<int64_t>(std::llround(s * 1e9)); };
    j["done_reason"] = done_reason;
    j["total_duration"] = ns(t.total_s);
    j["load_duration"] = 0;
    j["prompt_eval_count"] = t.prompt_tokens;
    j["prompt_eval_duration"] = ns(t.prompt_s);
    j["eval_count"] = t.eval_tokens;
    j["eval_duration"] = ns(t.eval_s);
  }
  return j;
}

std::string ollama_time(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json ollama_error(const std::string& message) { return {{"error", message}}; }

}  // namespace llm::server
