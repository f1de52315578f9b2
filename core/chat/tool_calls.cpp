#include "core/chat/tool_calls.h"

#include <algorithm>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/chat/jinja_strings.h"
#include "core/engine/stop_matcher.h"
#include "core/error.h"

namespace llm {

namespace {

using json = nlohmann::ordered_json;

std::string trim(const std::string& s) {
  static const std::optional<std::string> kSpace(" \t\r\n");
  return jinja::py_strip(s, kSpace, true, true);
}

bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

// The end of the JSON object or array that starts at text[pos] ('{' or '['), found by
// matching brackets outside strings; npos if it does not close.
size_t json_end(const std::string& text, size_t pos) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = pos; i < text.size(); i++) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      depth++;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return std::string::npos;
}

// text as JSON; a discarded value when it is not.
json parse_json(const std::string& text) { return json::parse(text, nullptr, false); }

// A call from {"name": ..., "arguments" | "parameters": {...} or "..."}; false when the
// object is not one.
bool call_from_object(const json& j, ToolCall* out) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return false;
  const char* key = j.contains("arguments") ? "arguments" : "parameters";
  json args = j.contains(key) ? j[key] : json::object();
  if (args.is_string()) {
    // Some models write the arguments as a JSON string: keep it if it is JSON.
    const json inner = parse_json(args.get<std::string>());
    if (inner.is_discarded()) return false;
    args = inner;
  }
  if (!args.is_object()) return false;
  out->name = j["name"].get<std::string>();
  out->arguments = args.dump();
  return true;
}

// An XML-ish parameter value as JSON: numbers, booleans, null, objects and arrays as
// written; anything else is a string.
json xml_value(const std::string& raw) {
  std::string v = raw;
  if (!v.empty() && v.front() == '\n') v.erase(0, 1);
  if (!v.empty() && v.back() == '\n') v.pop_back();
  const json j = parse_json(v);
  if (!j.is_discarded() && !j.is_string()) return j;
  return json(v);
}

// Calls inside open ... close blocks (the close may be missing at the end of the reply),
// each block's inside given to parse_block; text outside the blocks, and blocks that do
// not parse, are content.
template <typename ParseBlock>
ParsedReply parse_blocks(const std::string& text, const std::string& open, const std::string& close,
                         ParseBlock parse_block) {
  ParsedReply r;
  std::string content;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = text.find(open, pos);
    if (start == std::string::npos) break;
    content += text.substr(pos, start - pos);
    const size_t inner = start + open.size();
    size_t end = text.find(close, inner);
    const size_t next = end == std::string::npos ? text.size() : end + close.size();
    if (end == std::string::npos) end = text.size();
    ToolCall call;
    if (parse_block(text.substr(inner, end - inner), &call))
      r.calls.push_back(std::move(call));
    else
      content += text.substr(start, next - start);
    pos = next;
  }
  if (pos < text.size()) content += text.substr(pos);
  r.content = trim(content);
  return r;
}

bool parse_hermes(const std::string& inner, ToolCall* out) {
  return call_from_object(parse_json(trim(inner)), out);
}

// <function=NAME><parameter=K>V</parameter>...</function>
bool parse_qwen_xml(const std::string& inner, ToolCall* out) {
  const std::string body = trim(inner);
  const std::string fn = "<function=";
  if (body.rfind(fn, 0) != 0) return false;
  const size_t name_end = body.find('>');
  if (name_end == std::string::npos) return false;
  json args = json::object();
  size_t pos = name_end + 1;
  for (;;) {
    const size_t p = body.find("<parameter=", pos);
    if (p == std::string::npos) break;
    const size_t key_end = body.find('>', p);
    if (key_end == std::string::npos) return false;
    const size_t v_end = body.find("</parameter>", key_end);
    if (v_end == std::string::npos) return false;
    args[trim(body.substr(p + 11, key_end - p - 11))] =
        xml_value(body.substr(key_end + 1, v_end - key_end - 1));
    pos = v_end + 12;
  }
  out->name = trim(body.substr(fn.size(), name_end - fn.size()));
  out->arguments = args.dump();
  return !out->name.empty();
}

// NAME<arg_key>K</arg_key><arg_value>V</arg_value>...
bool parse_glm_xml(const std::string& inner, ToolCall* out) {
  const size_t first = inner.find("<arg_key>");
  out->name = trim(inner.substr(0, first));
  if (out->name.empty() || out->name.find('<') != std::string::npos) return false;
  json args = json::object();
  size_t pos = first;
  while (pos != std::string::npos) {
    const size_t k_end = inner.find("</arg_key>", pos);
    const size_t v = inner.find("<arg_value>", pos);
    const size_t v_end = inner.find("</arg_value>", pos);
    if (k_end == std::string::npos || v == std::string::npos || v_end == std::string::npos)
      return false;
    args[trim(inner.substr(pos + 9, k_end - pos - 9))] =
        xml_value(inner.substr(v + 11, v_end - v - 11));
    pos = inner.find("<arg_key>", v_end);
  }
  out->arguments = args.dump();
  return true;
}

// <function=NAME>{...}
bool parse_function_tag(const std::string& inner, ToolCall* out) {
  const size_t name_end = inner.find('>');
  if (name_end == std::string::npos) return false;
  out->name = trim(inner.substr(0, name_end));
  const json args = parse_json(trim(inner.substr(name_end + 1)));
  if (out->name.empty() || !args.is_object()) return false;
  out->arguments = args.dump();
  return true;
}

// functions.NAME:i<|tool_call_argument_begin|>{...}
bool parse_kimi(const std::string& inner, ToolCall* out) {
  const std::string sep = "<|tool_call_argument_begin|>";
  const size_t s = inner.find(sep);
  if (s == std::string::npos) return false;
  std::string id = trim(inner.substr(0, s));
  if (id.rfind("functions.", 0) == 0) id = id.substr(10);
  out->name = id.substr(0, id.rfind(':'));
  const json args = parse_json(trim(inner.substr(s + sep.size())));
  if (out->name.empty() || !args.is_object()) return false;
  out->arguments = args.dump();
  return true;
}

// A JSON list of calls after marker (up to end_marker, if any); content is what comes
// before the marker.
ParsedReply parse_marked_list(const std::string& text, const std::string& marker,
                              const std::string& end_marker) {
  ParsedReply r;
  const size_t start = text.find(marker);
  if (start == std::string::npos) {
    r.content = trim(text);
    return r;
  }
  std::string rest = trim(text.substr(start + marker.size()));
  if (!end_marker.empty()) {
    const size_t e = rest.find(end_marker);
    if (e != std::string::npos) rest = trim(rest.substr(0, e));
  }
  const size_t e = rest.empty() || rest[0] != '[' ? std::string::npos : json_end(rest, 0);
  const json list = e == std::string::npos ? json() : parse_json(rest.substr(0, e));
  bool ok = list.is_array() && !list.empty();
  for (size_t i = 0; ok && i < list.size(); i++) {
    ToolCall c;
    ok = call_from_object(list[i], &c);
    r.calls.push_back(std::move(c));
  }
  if (!ok) {
    r.calls.clear();
    r.content = trim(text);
    return r;
  }
  r.content = trim(text.substr(0, start));
  return r;
}

// [TOOL_CALLS] then a JSON list of calls, or calls by name.
ParsedReply parse_mistral(const std::string& text) {
  const std::string tag = "[TOOL_CALLS]";
  const size_t start = text.find(tag);
  if (start == std::string::npos) return {trim(text), {}};
  ParsedReply r;
  const std::string rest = trim(text.substr(start + tag.size()));
  if (!rest.empty() && rest[0] == '[') return parse_marked_list(text, tag, "");
  // NAME[ARGS]{...} (Mistral Small 3.2: NAME[CALL_ID]ID[ARGS]{...}), each maybe after
  // its own [TOOL_CALLS].
  for (size_t pos = 0; pos < rest.size();) {
    const size_t a = rest.find("[ARGS]", pos);
    const size_t e = a == std::string::npos ? a : json_end(rest, a + 6);
    ToolCall c;
    c.name = trim(rest.substr(pos, std::min(a, rest.find("[CALL_ID]", pos)) - pos));
    const json args = e == std::string::npos ? json() : parse_json(rest.substr(a + 6, e - a - 6));
    if (c.name.empty() || !args.is_object()) return {trim(text), {}};
    c.arguments = args.dump();
    r.calls.push_back(std::move(c));
    pos = e;
    while (pos < rest.size() && (rest[pos] == ' ' || rest[pos] == '\n')) pos++;
    if (rest.compare(pos, tag.size(), tag) == 0) pos += tag.size();
  }
  r.content = trim(text.substr(0, start));
  return r;
}

// TYPE<｜tool▁sep｜>NAME\n```json\n{...}\n``` (R1, V3) or NAME<｜tool▁sep｜>{...} (V3.1).
bool parse_deepseek(const std::string& inner, ToolCall* out) {
  const std::string sep = "<｜tool▁sep｜>";
  const size_t s = inner.find(sep);
  if (s == std::string::npos) return false;
  std::string right = inner.substr(s + sep.size());
  const size_t fence = right.find("```json");
  std::string args;
  if (fence != std::string::npos) {
    out->name = trim(right.substr(0, fence));
    const size_t close = right.find("```", fence + 7);
    args =
        right.substr(fence + 7, close == std::string::npos ? std::string::npos : close - fence - 7);
  } else {
    out->name = trim(inner.substr(0, s));
    args = right;
  }
  const json j = parse_json(trim(args));
  if (out->name.empty() || !j.is_object()) return false;
  out->arguments = j.dump();
  return true;
}

// r with the markers that wrap a section of calls taken out of its content.
ParsedReply without_markers(ParsedReply r, std::initializer_list<const char*> markers) {
  for (const char* m : markers) {
    size_t p;
    while ((p = r.content.find(m)) != std::string::npos) r.content.erase(p, std::string(m).size());
  }
  r.content = trim(r.content);
  return r;
}

const char* kPythonTag = "<|python_tag|>";

// {"name": ..., "parameters": {...}} (several separated by ';'), after an optional
// <|python_tag|>: only when that is the whole reply.
ParsedReply parse_llama3(const std::string& text) {
  ParsedReply r;
  std::string body = trim(text);
  if (body.rfind(kPythonTag, 0) == 0) body = trim(body.substr(std::string(kPythonTag).size()));
  size_t pos = 0;
  while (pos < body.size() && body[pos] == '{') {
    const size_t e = json_end(body, pos);
    ToolCall c;
    if (e == std::string::npos || !call_from_object(parse_json(body.substr(pos, e - pos)), &c))
      break;
    r.calls.push_back(std::move(c));
    pos = e;
    while (pos < body.size() && (body[pos] == ';' || body[pos] == ' ' || body[pos] == '\n')) pos++;
  }
  if (r.calls.empty() || pos < body.size()) {
    r.calls.clear();
    r.content = trim(text);
  }
  return r;
}

// The strings that open a call in each syntax.
std::vector<std::string> call_markers(ToolCallSyntax s) {
  switch (s) {
    case ToolCallSyntax::HermesJson:
    case ToolCallSyntax::QwenXml:
    case ToolCallSyntax::GlmXml:
      return {"<tool_call>"};
    case ToolCallSyntax::Mistral:
      return {"[TOOL_CALLS]"};
    case ToolCallSyntax::FunctionTags:
      return {"<function=", kPythonTag};
    case ToolCallSyntax::KimiK2:
      return {"<|tool_calls_section_begin|>", "<|tool_call_begin|>"};
    case ToolCallSyntax::DeepSeek:
      return {"<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>"};
    case ToolCallSyntax::SeedXml:
      return {"<seed:tool_call>"};
    case ToolCallSyntax::GraniteList:
      return {"<|tool_call|>"};
    case ToolCallSyntax::Functools:
      return {"functools["};
    case ToolCallSyntax::TaggedList:
      return {"<tool_calls>"};
    case ToolCallSyntax::Llama3Json:
    case ToolCallSyntax::None:
      break;
  }
  return {};
}

}  // namespace

const char* tool_call_syntax_name(ToolCallSyntax s) {
  switch (s) {
    case ToolCallSyntax::None:
      return "none";
    case ToolCallSyntax::HermesJson:
      return "hermes";
    case ToolCallSyntax::QwenXml:
      return "qwen-xml";
    case ToolCallSyntax::GlmXml:
      return "glm-xml";
    case ToolCallSyntax::Mistral:
      return "mistral";
    case ToolCallSyntax::Llama3Json:
      return "llama3-json";
    case ToolCallSyntax::FunctionTags:
      return "function-tags";
    case ToolCallSyntax::KimiK2:
      return "kimi-k2";
    case ToolCallSyntax::DeepSeek:
      return "deepseek";
    case ToolCallSyntax::SeedXml:
      return "seed-xml";
    case ToolCallSyntax::GraniteList:
      return "granite";
    case ToolCallSyntax::Functools:
      return "functools";
    case ToolCallSyntax::TaggedList:
      return "tagged-list";
  }
  return "?";
}

ToolCallSyntax detect_tool_call_syntax(const std::string& t) {
  if (contains(t, "<|tool_call_begin|>")) return ToolCallSyntax::KimiK2;
  if (contains(t, "<｜tool▁call▁begin｜>")) return ToolCallSyntax::DeepSeek;
  if (contains(t, "<seed:tool_call>")) return ToolCallSyntax::SeedXml;
  if (contains(t, "<tool_calls>[")) return ToolCallSyntax::TaggedList;
  if (contains(t, "<|tool_call|>")) return ToolCallSyntax::GraniteList;
  if (contains(t, "functools[")) return ToolCallSyntax::Functools;
  if (contains(t, "[TOOL_CALLS]")) return ToolCallSyntax::Mistral;
  if (contains(t, "<tool_call>")) {
    if (contains(t, "<arg_key>")) return ToolCallSyntax::GlmXml;
    if (contains(t, "<function=") && contains(t, "<parameter=")) return ToolCallSyntax::QwenXml;
    return ToolCallSyntax::HermesJson;
  }
  if (contains(t, "<function=")) return ToolCallSyntax::FunctionTags;
  // Llama 3's headers: Cohere's templates describe "parameters" too.
  if (contains(t, "\"parameters\": ") && contains(t, "tool_call") &&
      contains(t, "<|start_header_id|>"))
    return ToolCallSyntax::Llama3Json;
  return ToolCallSyntax::None;
}

namespace {

// A reasoning model's empty think block (or the close of one the prompt opened) is not
// content: "<think>\n\n</think>" before a call is all Qwen3 writes when it skips thinking.
std::string without_empty_think(std::string content) {
  for (;;) {
    const size_t open = content.find("<think>");
    if (open == std::string::npos) break;
    const size_t close = content.find("</think>", open);
    if (close == std::string::npos || !trim(content.substr(open + 7, close - open - 7)).empty())
      break;
    content.erase(open, close + 8 - open);
  }
  content = trim(content);
  if (content.rfind("</think>", 0) == 0) content = trim(content.substr(8));
  return content;
}

ParsedReply parse_any(ToolCallSyntax syntax, const std::string& text);

}  // namespace

ParsedReply parse_tool_calls(ToolCallSyntax syntax, const std::string& text) {
  ParsedReply r = parse_any(syntax, text);
  if (!r.calls.empty()) r.content = without_empty_think(std::move(r.content));
  return r;
}

namespace {

ParsedReply parse_any(ToolCallSyntax syntax, const std::string& text) {
  switch (syntax) {
    case ToolCallSyntax::HermesJson:
      return parse_blocks(text, "<tool_call>", "</tool_call>", parse_hermes);
    case ToolCallSyntax::QwenXml:
      return parse_blocks(text, "<tool_call>", "</tool_call>", parse_qwen_xml);
    case ToolCallSyntax::GlmXml:
      return parse_blocks(text, "<tool_call>", "</tool_call>", parse_glm_xml);
    case ToolCallSyntax::Mistral:
      return parse_mistral(text);
    case ToolCallSyntax::Llama3Json:
      return parse_llama3(text);
    case ToolCallSyntax::FunctionTags: {
      // Functionary's python calls (<|python_tag|>CODE) stay content.
      return parse_blocks(text, "<function=", "</function>", parse_function_tag);
    }
    case ToolCallSyntax::DeepSeek:
      return without_markers(
          parse_blocks(text, "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", parse_deepseek),
          {"<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"});
    case ToolCallSyntax::SeedXml:
      return parse_blocks(text, "<seed:tool_call>", "</seed:tool_call>", parse_qwen_xml);
    case ToolCallSyntax::GraniteList:
      return parse_marked_list(text, "<|tool_call|>", "");
    case ToolCallSyntax::Functools:
      return parse_marked_list(text, "functools", "");
    case ToolCallSyntax::TaggedList:
      return parse_marked_list(text, "<tool_calls>", "</tool_calls>");
    case ToolCallSyntax::KimiK2:
      return without_markers(
          parse_blocks(text, "<|tool_call_begin|>", "<|tool_call_end|>", parse_kimi),
          {"<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"});
    case ToolCallSyntax::None:
      break;
  }
  return {trim(text), {}};
}

}  // namespace

size_t tool_call_free_prefix(ToolCallSyntax syntax, const std::string& text) {
  if (syntax == ToolCallSyntax::None) return text.size();
  if (syntax == ToolCallSyntax::Llama3Json) {
    // A call is the whole reply: held while the reply may still become one.
    const std::string body = trim(text);
    const std::string tag = kPythonTag;
    if (body.empty() || body[0] == '{' || tag.rfind(body.substr(0, tag.size()), 0) == 0 ||
        body.rfind(tag, 0) == 0)
      return 0;
    return text.size();
  }
  const std::vector<std::string> markers = call_markers(syntax);
  size_t free = text.size();
  for (const std::string& m : markers) free = std::min(free, text.find(m));
  // Before any marker, the reply's end may still be the start of one.
  if (free == text.size()) free -= partial_match_at_end(text, markers);
  return free;
}

std::string ToolCallStream::push(const std::string& text) {
  reply_ += text;
  const size_t upto = std::max(sent_, tool_call_free_prefix(syntax_, reply_));
  std::string out = reply_.substr(sent_, upto - sent_);
  sent_ = upto;
  return out;
}

ParsedReply ToolCallStream::finish() {
  ParsedReply parsed = parse_tool_calls(syntax_, reply_);
  const size_t upto = parsed.calls.empty()
                          ? reply_.size()
                          : std::max(sent_, tool_call_free_prefix(syntax_, reply_));
  parsed.content = reply_.substr(sent_, upto - sent_);
  sent_ = upto;
  return parsed;
}

ForcedToolCall forced_tool_call(ToolCallSyntax syntax, const nlohmann::json& tools,
                                const std::string& name) {
  ForcedToolCall f;
  if (syntax == ToolCallSyntax::HermesJson) {
    f.opener = "<tool_call>\n";
    f.arguments_key = "arguments";
  } else if (syntax == ToolCallSyntax::Llama3Json) {
    f.arguments_key = "parameters";
  } else {
    fail(
        "forcing a tool call needs a chat template whose calls are one JSON object "
        "(Hermes/Qwen <tool_call>, Llama 3); this one's are %s",
        tool_call_syntax_name(syntax));
  }
  // One object per tool that may be called: its name and its parameters (anyOf when
  // several; the recognizer follows each until the name tells them apart). The loose
  // schema takes any arguments object, for parameters that cannot be enforced.
  nlohmann::json names = nlohmann::json::array(), calls = nlohmann::json::array();
  auto call = [&](const nlohmann::json& name, const nlohmann::json& params) {
    return nlohmann::json{{"type", "object"},
                          {"properties", {{"name", name}, {f.arguments_key, params}}},
                          {"required", {"name", f.arguments_key}},
                          {"additionalProperties", false}};
  };
  for (const auto& t : tools) {
    const nlohmann::json& fn = t.at("function");
    const std::string n = fn.value("name", "");
    if (!name.empty() && n != name) continue;
    names.push_back(n);
    calls.push_back(call({{"const", n}}, fn.contains("parameters")
                                             ? fn["parameters"]
                                             : nlohmann::json{{"type", "object"}}));
  }
  f.loose_schema = call({{"enum", names}}, {{"type", "object"}});
  f.schema = calls.size() == 1 ? calls[0] : nlohmann::json{{"anyOf", calls}};
  return f;
}

bool forced_call_from_reply(const ForcedToolCall& forced, const std::string& reply, ToolCall* out) {
  const json j = parse_json(trim(reply));
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string() ||
      !j.contains(forced.arguments_key) || !j[forced.arguments_key].is_object())
    return false;
  out->name = j["name"].get<std::string>();
  out->arguments = j[forced.arguments_key].dump();
  return true;
}

}  // namespace llm
