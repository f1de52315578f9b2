#include "server/openai_protocol.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

namespace llm::server {

using nlohmann::json;
using ojson = nlohmann::ordered_json;  // requests: key order kept for the template

json error_body(const std::string& message, const std::string& type, const std::string& param,
                const std::string& code) {
  json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return json{{"error", e}};
}

json error_body(const ApiError& e) { return error_body(e.what(), e.type, e.param, e.code); }

bool json_too_deep(const std::string& body, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return true;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return false;
}

ojson parse_body(const std::string& body) {
  constexpr int kMaxDepth = 64;
  if (json_too_deep(body, kMaxDepth))
    throw ApiError(400, "request body nests JSON deeper than 64 levels");
  ojson j;
  try {
    j = ojson::parse(body);
  } catch (const json::parse_error& e) {
    throw ApiError(400, std::string("malformed JSON in request body: ") + e.what());
  }
  if (!j.is_object()) throw ApiError(400, "request body must be a JSON object");
  return j;
}

namespace {

// A field's name in messages: 'key' at the top level, param.key inside param.
std::string field_name(const std::string& param, const char* key) {
  return param.empty() ? std::string("'") + key + "'" : param + "." + key;
}

}  // namespace

std::string optional_string(const ojson& o, const char* key, const std::string& def,
                            const std::string& param) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return def;
  if (!it->is_string())
    throw ApiError(400, field_name(param, key) + " must be a string, got " + it->type_name(),
                   param.empty() ? key : param);
  return it->get<std::string>();
}

bool optional_bool(const ojson& o, const char* key, bool def, const std::string& param) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return def;
  if (!it->is_boolean())
    throw ApiError(400, field_name(param, key) + " must be a boolean, got " + it->type_name(),
                   param.empty() ? key : param);
  return it->get<bool>();
}

std::string text_of_parts(const ojson& content, const std::string& param,
                          std::initializer_list<const char*> text_types) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw ApiError(400, param + " must be a string or a list of text parts", param);
  std::string text;
  for (const ojson& part : content) {
    const std::string type = part.is_object() ? optional_string(part, "type", "", param) : "";
    bool known = false;
    for (const char* t : text_types) known = known || type == t;
    if (!known || !part.contains("text") || !part["text"].is_string())
      throw ApiError(400,
                     param + ": " + (type.empty() ? std::string("a part without a type") : type) +
                         " parts are not supported (text only)",
                     param);
    text += part["text"].get<std::string>();
  }
  return text;
}

bool present(const ojson& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

namespace {

const char* type_name(const ojson& v) { return v.type_name(); }

double number_field(const ojson& body, const char* key, double lo, double hi) {
  const ojson& v = body.at(key);
  if (!v.is_number())
    throw ApiError(400, std::string("'") + key + "' must be a number, got " + type_name(v), key);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    char msg[160];
    std::snprintf(msg, sizeof msg, "'%s' must be between %g and %g, got %g", key, lo, hi, x);
    throw ApiError(400, msg, key);
  }
  return x;
}

int64_t int_field(const ojson& body, const char* key, int64_t lo, int64_t hi) {
  const ojson& v = body.at(key);
  if (!v.is_number_integer() &&
      !(v.is_number_float() && v.get<double>() == std::floor(v.get<double>())))
    throw ApiError(400, std::string("'") + key + "' must be an integer, got " + type_name(v), key);
  const double x = v.get<double>();
  if (x < static_cast<double>(lo) || x > static_cast<double>(hi)) {
    char msg[160];
    std::snprintf(msg, sizeof msg, "'%s' must be between %lld and %lld, got %.0f", key,
                  static_cast<long long>(lo), static_cast<long long>(hi), x);
    throw ApiError(400, msg, key);
  }
  return static_cast<int64_t>(x);
}

std::string string_field(const ojson& body, const char* key) {
  const ojson& v = body.at(key);
  if (!v.is_string())
    throw ApiError(400, std::string("'") + key + "' must be a string, got " + type_name(v), key);
  return v.get<std::string>();
}

// Content of a message: a string, or a list of parts of which only text is supported.
std::string message_content(const ojson& m, size_t i) {
  auto it = m.find("content");
  if (it == m.end() || it->is_null()) return "";
  return text_of_parts(*it, "messages[" + std::to_string(i) + "].content", {"text"});
}

void parse_common(const ojson& body, int vocab_size, ParsedRequest& r) {
  if (present(body, "model")) r.model = string_field(body, "model");
  if (present(body, "n")) r.n = int_field(body, "n", 1, 16);
  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (present(body, key)) r.max_tokens = static_cast<int>(int_field(body, key, 1, 1 << 30));
  if (present(body, "temperature"))
    r.temperature = static_cast<float>(number_field(body, "temperature", 0, 2));
  if (present(body, "top_p")) r.top_p = static_cast<float>(number_field(body, "top_p", 0, 1));
  if (present(body, "top_k")) r.top_k = static_cast<int>(int_field(body, "top_k", -1, vocab_size));
  if (r.top_k < 0) r.top_k = 0;  // -1: off, as in vLLM
  if (present(body, "min_p")) r.min_p = static_cast<float>(number_field(body, "min_p", 0, 1));
  if (present(body, "presence_penalty"))
    r.presence_penalty = static_cast<float>(number_field(body, "presence_penalty", -2, 2));
  if (present(body, "frequency_penalty"))
    r.frequency_penalty = static_cast<float>(number_field(body, "frequency_penalty", -2, 2));
  if (present(body, "repetition_penalty"))
    r.repetition_penalty = static_cast<float>(number_field(body, "repetition_penalty", 0.01, 10));
  if (present(body, "seed"))
    r.seed = static_cast<uint64_t>(int_field(body, "seed", INT64_MIN / 2, INT64_MAX / 2));
  if (present(body, "stop")) {
    const ojson& s = body["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      if (s.size() > 16) throw ApiError(400, "'stop' has more than 16 strings", "stop");
      for (const ojson& x : s) {
        if (!x.is_string())
          throw ApiError(400, "'stop' must be a string or a list of strings", "stop");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      throw ApiError(400, "'stop' must be a string or a list of strings", "stop");
    }
    for (const std::string& x : r.stop)
      if (x.empty()) throw ApiError(400, "'stop' strings must not be empty", "stop");
  }
  if (present(body, "stop_token_ids")) {
    // vLLM's extension: ids that end the reply like the model's EOS.
    const ojson& ids = body["stop_token_ids"];
    if (!ids.is_array() || ids.size() > 64)
      throw ApiError(400, "'stop_token_ids' must be a list of at most 64 token ids",
                     "stop_token_ids");
    for (const ojson& t : ids) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab_size)
        throw ApiError(400, "'stop_token_ids' must be integers below " + std::to_string(vocab_size),
                       "stop_token_ids");
      r.stop_token_ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
  }
  if (present(body, "logit_bias")) {
    const ojson& b = body["logit_bias"];
    if (!b.is_object()) throw ApiError(400, "'logit_bias' must be an object", "logit_bias");
    for (auto it = b.begin(); it != b.end(); ++it) {
      char* end = nullptr;
      const long id = std::strtol(it.key().c_str(), &end, 10);
      if (it.key().empty() || *end != '\0' || id < 0 || id >= vocab_size)
        throw ApiError(400,
                       "'logit_bias' key '" + it.key() + "' is not a token id below " +
                           std::to_string(vocab_size),
                       "logit_bias");
      if (!it->is_number() || it->get<double>() < -100 || it->get<double>() > 100)
        throw ApiError(400, "'logit_bias' values must be numbers between -100 and 100",
                       "logit_bias");
      r.logit_bias[static_cast<int32_t>(id)] = it->get<float>();
    }
  }
  if (present(body, "response_format")) {
    const ojson& f = body["response_format"];
    if (!f.is_object() || !f.contains("type") || !f["type"].is_string())
      throw ApiError(400, "'response_format' must be an object with a 'type'", "response_format");
    if (f["type"] == "json_object") {
      r.json = JsonSchema::any_object();
    } else if (f["type"] == "json_schema") {
      if (!f.contains("json_schema") || !f["json_schema"].is_object() ||
          !f["json_schema"].contains("schema"))
        throw ApiError(400,
                       "'response_format' json_schema needs {\"json_schema\": {\"schema\": ...}}",
                       "response_format");
      try {
        r.json = JsonSchema::compile(nlohmann::json::parse(f["json_schema"]["schema"].dump()));
      } catch (const llm::Error& e) {
        throw ApiError(400, std::string("'response_format' schema: ") + e.what(),
                       "response_format");
      }
    } else if (f["type"] != "text") {
      throw ApiError(400,
                     "'response_format' type '" + f["type"].get<std::string>() +
                         "' is not supported; 'text', 'json_object' and 'json_schema' are",
                     "response_format");
    }
  }
  r.stream = optional_bool(body, "stream", r.stream, "");
  if (present(body, "stream_options")) {
    const ojson& so = body["stream_options"];
    if (!so.is_object())
      throw ApiError(400, "'stream_options' must be an object", "stream_options");
    if (!r.stream)
      throw ApiError(400, "'stream_options' is only allowed when 'stream' is true",
                     "stream_options");
    r.include_usage = optional_bool(so, "include_usage", r.include_usage, "stream_options");
  }
}

}  // namespace

ParsedRequest parse_chat_request(const ojson& body, int vocab_size) {
  ParsedRequest r;
  r.chat = true;
  parse_common(body, vocab_size, r);
  if (!body.contains("messages")) throw ApiError(400, "'messages' is required", "messages");
  const ojson& msgs = body["messages"];
  if (!msgs.is_array() || msgs.empty())
    throw ApiError(400, "'messages' must be a non-empty list", "messages");
  for (size_t i = 0; i < msgs.size(); i++) {
    const ojson& m = msgs[i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw ApiError(400, param + " must be an object", param);
    if (!m.contains("role") || !m["role"].is_string())
      throw ApiError(400, param + ".role must be a string", param + ".role");
    ChatMessage cm;
    cm.role = m["role"].get<std::string>();
    if (cm.role == "developer") cm.role = "system";
    if (cm.role != "system" && cm.role != "user" && cm.role != "assistant" && cm.role != "tool")
      throw ApiError(400,
                     param + ".role '" + cm.role + "' is not one of system, user, assistant, tool",
                     param + ".role");
    cm.content = message_content(m, i);
    if (present(m, "tool_calls")) {
      if (!m["tool_calls"].is_array())
        throw ApiError(400, param + ".tool_calls must be a list", param + ".tool_calls");
      for (const ojson& call : m["tool_calls"])
        if (!call.is_object())
          throw ApiError(400, param + ".tool_calls must hold objects", param + ".tool_calls");
      cm.tool_fields["tool_calls"] = m["tool_calls"];
    }
    for (const char* key : {"tool_call_id", "name"})
      if (present(m, key)) {
        if (!m[key].is_string())
          throw ApiError(400, param + "." + key + " must be a string", param + "." + key);
        cm.tool_fields[key] = m[key];
      }
    r.messages.push_back(std::move(cm));
  }
  // Tools go to the chat template, which writes them into the prompt; the server parses
  // the reply's calls (and constrains it to one when tool_choice forces a call).
  if (present(body, "tools")) {
    const ojson& tools = body["tools"];
    if (!tools.is_array()) throw ApiError(400, "'tools' must be a list", "tools");
    for (const ojson& t : tools)
      if (!t.is_object() || !t.contains("function") || !t["function"].is_object())
        throw ApiError(400, "'tools' must hold objects with a 'function' object", "tools");
    if (!tools.empty()) r.tools = tools;
  }
  if (present(body, "tool_choice")) {
    const ojson& c = body["tool_choice"];
    if (c == "required") {
      r.forced_tool = "*";
    } else if (c.is_object() && c.contains("function") && c["function"].is_object() &&
               c["function"].contains("name") && c["function"]["name"].is_string()) {
      r.forced_tool = c["function"]["name"].get<std::string>();
      bool known = false;
      if (r.tools.is_array())
        for (const ojson& t : r.tools)
          known = known || optional_string(t["function"], "name", "", "tools") == r.forced_tool;
      if (!known)
        throw ApiError(400, "'tool_choice' names '" + r.forced_tool + "', which is not in 'tools'",
                       "tool_choice");
    } else if (c != "auto" && c != "none") {
      throw ApiError(400,
                     "'tool_choice' must be \"auto\", \"none\", \"required\" or "
                     "{\"type\": \"function\", \"function\": {\"name\": ...}}",
                     "tool_choice");
    }
    if (c == "none") r.tools = nullptr;
    if (!r.forced_tool.empty() && r.tools.is_null())
      throw ApiError(400, "'tool_choice' forces a call but there are no 'tools'", "tool_choice");
  }
  if (present(body, "chat_template_kwargs")) {
    const ojson& k = body["chat_template_kwargs"];
    if (!k.is_object())
      throw ApiError(400, "'chat_template_kwargs' must be an object", "chat_template_kwargs");
    for (const char* reserved : {"messages", "tools", "add_generation_prompt"})
      if (k.contains(reserved))
        throw ApiError(400, std::string("'chat_template_kwargs' may not set '") + reserved + "'",
                       "chat_template_kwargs");
    r.template_kwargs = k;
  }
  // reasoning_effort: a variable of the templates that read it (Solar Open, Command A
  // reasoning, gpt-oss); chat_template_kwargs, where it sets one, wins.
  if (present(body, "reasoning_effort")) {
    const ojson& e = body["reasoning_effort"];
    static const char* const kEfforts[] = {"none", "minimal", "low", "medium", "high"};
    if (!e.is_string() || std::find(std::begin(kEfforts), std::end(kEfforts),
                                    e.get<std::string>()) == std::end(kEfforts))
      throw ApiError(400, "'reasoning_effort' must be none, minimal, low, medium or high",
                     "reasoning_effort");
    if (r.template_kwargs.is_null()) r.template_kwargs = ojson::object();
    if (!r.template_kwargs.contains("reasoning_effort")) r.template_kwargs["reasoning_effort"] = e;
  }
  r.parallel_tool_calls = optional_bool(body, "parallel_tool_calls", r.parallel_tool_calls, "");
  r.logprobs = optional_bool(body, "logprobs", r.logprobs, "");
  if (present(body, "top_logprobs")) {
    r.top_logprobs = static_cast<int>(int_field(body, "top_logprobs", 0, 20));
    if (!r.logprobs && r.top_logprobs > 0)
      throw ApiError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs");
  }
  return r;
}

TokenizeRequest parse_tokenize_request(const ojson& body) {
  TokenizeRequest t;
  if (!body.contains("content") || !body["content"].is_string())
    throw ApiError(400, "'content' must be a string", "content");
  t.content = body["content"].get<std::string>();
  t.add_special = optional_bool(body, "add_special", t.add_special, "");
  t.with_pieces = optional_bool(body, "with_pieces", t.with_pieces, "");
  return t;
}

std::vector<int32_t> parse_detokenize_request(const ojson& body, int vocab_size) {
  if (!body.contains("tokens") || !body["tokens"].is_array())
    throw ApiError(400, "'tokens' must be a list of token ids", "tokens");
  std::vector<int32_t> ids;
  for (const ojson& t : body["tokens"]) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab_size)
      throw ApiError(400, "'tokens' must hold token ids below " + std::to_string(vocab_size),
                     "tokens");
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return ids;
}

ParsedRequest parse_completion_request(const ojson& body, int vocab_size) {
  ParsedRequest r;
  r.chat = false;
  parse_common(body, vocab_size, r);
  if (!body.contains("prompt")) throw ApiError(400, "'prompt' is required", "prompt");
  const ojson& p = body["prompt"];
  auto token_list = [&](const ojson& a) {
    for (const ojson& t : a) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab_size)
        throw ApiError(400,
                       "'prompt' token ids must be integers below " + std::to_string(vocab_size),
                       "prompt");
      r.prompt_tokens.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
  };
  if (p.is_string()) {
    r.prompt = p.get<std::string>();
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    r.prompt = p[0].get<std::string>();
  } else if (p.is_array() && !p.empty() && p[0].is_number()) {
    token_list(p);
  } else if (p.is_array() && p.size() == 1 && p[0].is_array() && !p[0].empty()) {
    token_list(p[0]);
  } else if (p.is_array() && p.size() > 1) {
    throw ApiError(400, "only one prompt per request is supported", "prompt");
  } else {
    throw ApiError(400, "'prompt' must be a string, a list of token ids, or a list of one of those",
                   "prompt");
  }
  if (present(body, "logprobs")) {
    r.top_logprobs = static_cast<int>(int_field(body, "logprobs", 0, 20));
    r.logprobs = true;
  }
  if (optional_bool(body, "echo", false, ""))
    throw ApiError(400, "'echo' is not supported", "echo");
  if (present(body, "suffix")) {
    // Fill in the middle: the prompt is the code before the cursor, suffix the code after.
    r.suffix = string_field(body, "suffix");
    if (!r.prompt_tokens.empty())
      throw ApiError(400, "'suffix' needs a text prompt, not token ids", "suffix");
  }
  if (present(body, "input_extra")) {
    // llama.cpp's /infill field: other files of the project, [{"filename", "text"}].
    const ojson& extra = body["input_extra"];
    if (!extra.is_array())
      throw ApiError(400, "'input_extra' must be a list of {\"filename\", \"text\"} objects",
                     "input_extra");
    for (const ojson& f : extra) {
      if (!f.is_object() || (f.contains("text") && !f["text"].is_string()) ||
          (f.contains("filename") && !f["filename"].is_string()))
        throw ApiError(400, "'input_extra' items must be {\"filename\": string, \"text\": string}",
                       "input_extra");
      r.infill_extra.push_back({f.value("filename", "file"), f.value("text", "")});
    }
    if (!r.suffix) throw ApiError(400, "'input_extra' needs 'suffix'", "input_extra");
  }
  if (present(body, "best_of") && int_field(body, "best_of", 1, 128) != 1)
    throw ApiError(400, "only best_of=1 is supported", "best_of");
  return r;
}

namespace {

json token_bytes(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

json chat_logprobs(const std::vector<TokenLogprob>& lp) {
  json content = json::array();
  for (const TokenLogprob& t : lp) {
    json top = json::array();
    for (const auto& [tok, l] : t.top)
      top.push_back({{"token", tok}, {"logprob", l}, {"bytes", token_bytes(tok)}});
    content.push_back({{"token", t.token},
                       {"logprob", t.logprob},
                       {"bytes", token_bytes(t.token)},
                       {"top_logprobs", top}});
  }
  return json{{"content", content}};
}

// The legacy completions shape; text_offset counts bytes from the start of the text
// generated in this response (or chunk).
json completion_logprobs(const std::vector<TokenLogprob>& lp) {
  json tokens = json::array(), logprobs = json::array(), tops = json::array(),
       offsets = json::array();
  size_t offset = 0;
  for (const TokenLogprob& t : lp) {
    tokens.push_back(t.token);
    logprobs.push_back(t.logprob);
    json top = json::object();
    for (const auto& [tok, l] : t.top) top[tok] = l;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += t.token.size();
  }
  return json{{"tokens", tokens},
              {"token_logprobs", logprobs},
              {"top_logprobs", tops},
              {"text_offset", offsets}};
}

json usage_json(const Usage& u) {
  return json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

json nullable(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

}  // namespace

namespace {

json tool_calls_json(const std::vector<ResponseToolCall>& calls, bool indexed) {
  json list = json::array();
  for (size_t i = 0; i < calls.size(); i++) {
    json c = json::object();
    if (indexed) c["index"] = i;
    c["id"] = calls[i].id;
    c["type"] = "function";
    c["function"] = {{"name", calls[i].name}, {"arguments", calls[i].arguments}};
    list.push_back(std::move(c));
  }
  return list;
}

}  // namespace

json chat_response(const std::string& id, int64_t created, const std::string& model,
                   const std::vector<ChoiceOut>& choices, const Usage& usage) {
  json list = json::array();
  for (size_t i = 0; i < choices.size(); i++) {
    const ChoiceOut& c = choices[i];
    json message = {{"role", "assistant"}, {"content", c.text}};
    if (!c.reasoning.empty()) message["reasoning_content"] = c.reasoning;
    if (!c.tool_calls.empty()) {
      if (c.text.empty()) message["content"] = nullptr;
      message["tool_calls"] = tool_calls_json(c.tool_calls, false);
    }
    list.push_back({{"index", i},
                    {"message", message},
                    {"logprobs", c.logprobs ? chat_logprobs(*c.logprobs) : json(nullptr)},
                    {"finish_reason", nullable(c.finish_reason)}});
  }
  return json{{"id", id},           {"object", "chat.completion"},
              {"created", created}, {"model", model},
              {"choices", list},    {"usage", usage_json(usage)}};
}

json completion_response(const std::string& id, int64_t created, const std::string& model,
                         const std::vector<ChoiceOut>& choices, const Usage& usage) {
  json list = json::array();
  for (size_t i = 0; i < choices.size(); i++) {
    const ChoiceOut& c = choices[i];
    list.push_back({{"index", i},
                    {"text", c.text},
                    {"logprobs", c.logprobs ? completion_logprobs(*c.logprobs) : json(nullptr)},
                    {"finish_reason", nullable(c.finish_reason)}});
  }
  return json{{"id", id},           {"object", "text_completion"},
              {"created", created}, {"model", model},
              {"choices", list},    {"usage", usage_json(usage)}};
}

json chat_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                const std::string& delta, bool role_first, const std::string& finish_reason,
                const std::vector<TokenLogprob>* logprobs, const std::string& reasoning) {
  json d = json::object();
  if (role_first) d["role"] = "assistant";
  if (!delta.empty() || role_first) d["content"] = delta;
  if (!reasoning.empty()) d["reasoning_content"] = reasoning;
  json choice = {{"index", index},
                 {"delta", d},
                 {"logprobs", logprobs ? chat_logprobs(*logprobs) : json(nullptr)},
                 {"finish_reason", nullable(finish_reason)}};
  return json{{"id", id},
              {"object", "chat.completion.chunk"},
              {"created", created},
              {"model", model},
              {"choices", json::array({choice})}};
}

json chat_tool_calls_chunk(const std::string& id, int64_t created, const std::string& model,
                           int index, const std::vector<ResponseToolCall>& tool_calls) {
  json choice = {{"index", index},
                 {"delta", {{"tool_calls", tool_calls_json(tool_calls, true)}}},
                 {"logprobs", nullptr},
                 {"finish_reason", nullptr}};
  return json{{"id", id},
              {"object", "chat.completion.chunk"},
              {"created", created},
              {"model", model},
              {"choices", json::array({choice})}};
}

json completion_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                      const std::string& delta, const std::string& finish_reason,
                      const std::vector<TokenLogprob>* logprobs) {
  json choice = {{"index", index},
                 {"text", delta},
                 {"logprobs", logprobs ? completion_logprobs(*logprobs) : json(nullptr)},
                 {"finish_reason", nullable(finish_reason)}};
  return json{{"id", id},
              {"object", "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", json::array({choice})}};
}

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s%016llx", prefix, static_cast<unsigned long long>(rng()));
  return buf;
}

json usage_chunk(const std::string& id, int64_t created, const std::string& model, bool chat,
                 const Usage& usage) {
  return json{{"id", id},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", json::array()},
              {"usage", usage_json(usage)}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_event(const json& j) { return "data: " + dump(j) + "\n\n"; }

}  // namespace llm::server
