#include "server/responses_api.h"

#include <algorithm>
#include <cstdlib>

namespace llm::server {

using nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

std::string item_text(const ojson& content, const std::string& param) {
  return text_of_parts(content, param, {"input_text", "output_text", "text"});
}

std::string string_of(const ojson& item, const char* key, const std::string& param) {
  if (!item.contains(key) || !item[key].is_string())
    throw ApiError(400, param + "." + key + " must be a string", param);
  return item[key].get<std::string>();
}

// Input items as chat messages: consecutive function calls become one assistant message's
// tool_calls, their outputs tool messages.
ojson translate_input(const ojson& input) {
  ojson messages = ojson::array();
  if (input.is_string()) {
    messages.push_back({{"role", "user"}, {"content", input}});
    return messages;
  }
  if (!input.is_array() || input.empty())
    throw ApiError(400, "'input' must be a string or a non-empty list of items", "input");
  for (size_t i = 0; i < input.size(); i++) {
    const ojson& item = input[i];
    const std::string param = "input[" + std::to_string(i) + "]";
    if (!item.is_object()) throw ApiError(400, param + " must be an object", param);
    const std::string type = optional_string(item, "type", "message", param);
    if (type == "message") {
      std::string role = string_of(item, "role", param);
      if (role == "developer") role = "system";
      if (role != "system" && role != "user" && role != "assistant")
        throw ApiError(400, param + ".role must be user, assistant, system or developer", param);
      if (!item.contains("content")) throw ApiError(400, param + ".content is required", param);
      messages.push_back({{"role", role}, {"content", item_text(item["content"], param)}});
    } else if (type == "function_call") {
      const ojson call = {{"id", string_of(item, "call_id", param)},
                          {"type", "function"},
                          {"function",
                           {{"name", string_of(item, "name", param)},
                            {"arguments", string_of(item, "arguments", param)}}}};
      const bool extend = !messages.empty() && messages.back()["role"] == "assistant" &&
                          messages.back().contains("tool_calls");
      if (extend)
        messages.back()["tool_calls"].push_back(call);
      else
        messages.push_back({{"role", "assistant"}, {"content", ""}, {"tool_calls", {call}}});
    } else if (type == "function_call_output") {
      const ojson& out = item.contains("output") ? item["output"] : ojson("");
      messages.push_back({{"role", "tool"},
                          {"tool_call_id", string_of(item, "call_id", param)},
                          {"content", out.is_string() ? out : ojson(item_text(out, param))}});
    } else if (type == "reasoning") {
      // Earlier reasoning is not shown to the model again (as chat templates drop it).
    } else {
      throw ApiError(400, param + ": items of type " + type + " are not supported", param);
    }
  }
  return messages;
}

// The input as OpenAI lists it back: a string as one user message, every item with an id
// (those without one get "msg_..." for messages, "item_..." for the others).
json input_items_of(const ojson& input) {
  json items = json::array();
  if (input.is_string()) {
    items.push_back({{"type", "message"},
                     {"id", random_id("msg_")},
                     {"role", "user"},
                     {"content", json::array({{{"type", "input_text"}, {"text", input}}})}});
    return items;
  }
  for (const ojson& item : input) {
    json j = item;
    if (!j.contains("type")) j["type"] = "message";
    if (!j.contains("id") || !j["id"].is_string())
      j["id"] = j["type"] == "message" ? random_id("msg_") : random_id("item_");
    if (j["type"] == "message" && j.contains("content") && j["content"].is_string())
      j["content"] = json::array({{{"type", "input_text"}, {"text", j["content"]}}});
    items.push_back(std::move(j));
  }
  return items;
}

json usage_of(const ReplyTimings& t) {
  return {{"input_tokens", t.prompt_tokens},
          {"input_tokens_details", {{"cached_tokens", t.cached_tokens}}},
          {"output_tokens", t.eval_tokens},
          {"output_tokens_details", {{"reasoning_tokens", 0}}},
          {"total_tokens", t.prompt_tokens + t.eval_tokens}};
}

json message_item(const std::string& id, const std::string& text, const char* status) {
  json content = json::array();
  if (status == std::string("completed"))
    content.push_back({{"type", "output_text"}, {"text", text}, {"annotations", json::array()}});
  return {{"type", "message"},
          {"id", id},
          {"status", status},
          {"role", "assistant"},
          {"content", std::move(content)}};
}

json reasoning_item(const std::string& id, const std::string& text, bool done) {
  json item = {{"type", "reasoning"}, {"id", id}, {"summary", json::array()}};
  if (done) item["content"] = json::array({{{"type", "reasoning_text"}, {"text", text}}});
  return item;
}

json call_item(const ResponseToolCall& c, const std::string& id, bool done) {
  return {{"type", "function_call"},
          {"id", id},
          {"call_id", c.id},
          {"name", c.name},
          {"arguments", done ? c.arguments : ""},
          {"status", done ? "completed" : "in_progress"}};
}

json response_json(const ResponseMeta& m, const char* status, json output, const json& usage,
                   bool cut) {
  json r = {{"id", m.id},
            {"object", "response"},
            {"created_at", m.created},
            {"status", status},
            {"model", m.model},
            {"output", std::move(output)},
            {"parallel_tool_calls", true},
            {"previous_response_id", m.previous_id.empty() ? json(nullptr) : json(m.previous_id)},
            {"store", m.store},
            {"error", nullptr},
            {"incomplete_details", nullptr},
            {"usage", usage}};
  for (const auto& [key, value] : m.echo.items()) r[key] = value;
  if (cut) r["incomplete_details"] = {{"reason", "max_output_tokens"}};
  return r;
}

}  // namespace

ResponsesRequest parse_responses_request(const ojson& body, const TurnLookup& stored) {
  ResponsesRequest req;
  ojson& o = req.chat;
  o = ojson::object();
  if (present(body, "previous_response_id")) {
    const ojson& id = body["previous_response_id"];
    if (!id.is_string())
      throw ApiError(400, "'previous_response_id' must be a string", "previous_response_id");
    req.previous_id = id.get<std::string>();
    req.previous = stored(req.previous_id);
    if (!req.previous)
      throw ApiError(404,
                     "no response '" + req.previous_id +
                         "' is stored (this server keeps recent responses in memory, none "
                         "across restarts; send the whole conversation in 'input')",
                     "previous_response_id");
  }
  req.store = optional_bool(body, "store", true, "");
  if (present(body, "metadata") && !body["metadata"].is_object())
    throw ApiError(400, "'metadata' must be an object", "metadata");
  auto echo = [&](const char* key, json fallback) {
    req.echo[key] = present(body, key) ? json(body[key]) : std::move(fallback);
  };
  echo("instructions", nullptr);
  echo("metadata", json::object());
  echo("temperature", 1.0);
  echo("top_p", 1.0);
  echo("tool_choice", "auto");
  echo("tools", json::array());
  echo("max_output_tokens", nullptr);
  echo("text", {{"format", {{"type", "text"}}}});
  const std::string truncation = optional_string(body, "truncation", "disabled", "truncation");
  if (truncation != "auto" && truncation != "disabled")
    throw ApiError(400, "'truncation' must be auto or disabled", "truncation");
  req.truncate = truncation == "auto";
  req.echo["truncation"] = truncation;
  if (present(body, "model")) o["model"] = body["model"];
  ojson messages = ojson::array();
  if (present(body, "instructions")) {
    if (!body["instructions"].is_string())
      throw ApiError(400, "'instructions' must be a string", "instructions");
    messages.push_back({{"role", "system"}, {"content", body["instructions"]}});
  }
  if (req.previous)
    for (ojson& m : conversation_messages(*req.previous)) messages.push_back(std::move(m));
  if (!present(body, "input")) throw ApiError(400, "'input' is required", "input");
  req.input_messages = translate_input(body["input"]);
  req.input_items = input_items_of(body["input"]);
  for (const ojson& m : req.input_messages) messages.push_back(m);
  o["messages"] = std::move(messages);
  if (present(body, "max_output_tokens")) o["max_tokens"] = body["max_output_tokens"];
  for (const char* key : {"temperature", "top_p", "parallel_tool_calls"})
    if (present(body, key)) o[key] = body[key];
  // reasoning: {"effort": ...} is chat completions' reasoning_effort (checked there).
  echo("reasoning", {{"effort", nullptr}, {"summary", nullptr}});
  if (present(body, "reasoning")) {
    const ojson& rs = body["reasoning"];
    if (!rs.is_object()) throw ApiError(400, "'reasoning' must be an object", "reasoning");
    if (present(rs, "effort")) o["reasoning_effort"] = rs["effort"];
  }
  o["stream"] = optional_bool(body, "stream", false, "");
  if (present(body, "tools")) {
    const ojson& tools = body["tools"];
    if (!tools.is_array()) throw ApiError(400, "'tools' must be a list", "tools");
    ojson out = ojson::array();
    for (size_t i = 0; i < tools.size(); i++) {
      const ojson& t = tools[i];
      const std::string param = "tools[" + std::to_string(i) + "]";
      if (!t.is_object() || optional_string(t, "type", "", param) != "function")
        throw ApiError(400, param + ": only function tools are supported", param);
      ojson fn = {{"name", string_of(t, "name", param)}};
      if (present(t, "description")) fn["description"] = t["description"];
      fn["parameters"] = present(t, "parameters") ? t["parameters"] : ojson::object();
      out.push_back({{"type", "function"}, {"function", std::move(fn)}});
    }
    o["tools"] = std::move(out);
  }
  if (present(body, "tool_choice")) {
    const ojson& c = body["tool_choice"];
    if (c.is_string())
      o["tool_choice"] = c;
    else if (c.is_object() && optional_string(c, "type", "", "tool_choice") == "function" &&
             c.contains("name") && c["name"].is_string())
      o["tool_choice"] = {{"type", "function"}, {"function", {{"name", c["name"]}}}};
    else
      throw ApiError(400,
                     "'tool_choice' must be \"auto\", \"none\", \"required\" or "
                     "{\"type\": \"function\", \"name\": ...}",
                     "tool_choice");
  }
  if (present(body, "text") && body["text"].is_object() && present(body["text"], "format")) {
    const ojson& f = body["text"]["format"];
    const std::string type = f.is_object() ? optional_string(f, "type", "", "text.format") : "";
    if (type == "json_schema") {
      if (!f.contains("schema")) throw ApiError(400, "'text.format.schema' is required", "text");
      o["response_format"] = {{"type", "json_schema"},
                              {"json_schema",
                               {{"name", optional_string(f, "name", "schema", "text.format")},
                                {"schema", f["schema"]}}}};
    } else if (type == "json_object") {
      o["response_format"] = {{"type", "json_object"}};
    } else if (type != "text") {
      throw ApiError(400, "'text.format.type' must be text, json_object or json_schema", "text");
    }
  }
  return req;
}

bool drop_oldest_turn(ojson& messages) {
  size_t first = 0;
  if (!messages.empty() && messages[0].value("role", "") == "system") first = 1;
  if (messages.size() < first + 2) return false;
  messages.erase(messages.begin() + static_cast<std::ptrdiff_t>(first));
  // Tool results whose call went with it.
  while (messages.size() > first + 1 && messages[first].value("role", "") == "tool")
    messages.erase(messages.begin() + static_cast<std::ptrdiff_t>(first));
  return true;
}

json input_items_page(const json& items, const std::string& order, const std::string& limit,
                      const std::string& after) {
  if (order != "asc" && order != "desc")
    throw ApiError(400, "'order' must be asc or desc", "order");
  int n = 20;
  if (!limit.empty()) {
    char* end = nullptr;
    const long v = std::strtol(limit.c_str(), &end, 10);
    if (*end != '\0' || v < 1 || v > 100)
      throw ApiError(400, "'limit' must be an integer from 1 to 100", "limit");
    n = static_cast<int>(v);
  }
  std::vector<json> ordered(items.begin(), items.end());
  if (order == "desc") std::reverse(ordered.begin(), ordered.end());
  size_t from = 0;
  if (!after.empty()) {
    while (from < ordered.size() && ordered[from].value("id", "") != after) from++;
    if (from == ordered.size()) throw ApiError(400, "no input item '" + after + "'", "after");
    from++;
  }
  json data = json::array();
  for (size_t i = from; i < ordered.size() && static_cast<int>(data.size()) < n; i++)
    data.push_back(ordered[i]);
  const bool more = from + data.size() < ordered.size();
  return {{"object", "list"},
          {"data", data},
          {"first_id", data.empty() ? json(nullptr) : data.front()["id"]},
          {"last_id", data.empty() ? json(nullptr) : data.back()["id"]},
          {"has_more", more}};
}

ojson output_messages(const json& output) {
  std::string text;
  ojson calls = ojson::array();
  for (const json& item : output) {
    const std::string type = item.value("type", "");
    if (type == "message") {
      for (const json& part : item.value("content", json::array()))
        if (part.value("type", "") == "output_text") text += part.value("text", "");
    } else if (type == "function_call") {
      calls.push_back(
          {{"id", item.value("call_id", "")},
           {"type", "function"},
           {"function",
            {{"name", item.value("name", "")}, {"arguments", item.value("arguments", "")}}}});
    }
  }
  ojson m = {{"role", "assistant"}, {"content", text}};
  if (!calls.empty()) m["tool_calls"] = std::move(calls);
  return ojson::array({std::move(m)});
}

json responses_object(const ResponseMeta& meta, const ShownReply& reply, FinishReason why,
                      const ReplyTimings& t) {
  json output = json::array();
  if (!reply.reasoning.empty())
    output.push_back(reasoning_item(random_id("rs_"), reply.reasoning, true));
  if (!reply.content.empty())
    output.push_back(message_item(random_id("msg_"), reply.content, "completed"));
  for (const ResponseToolCall& c : reply.calls)
    output.push_back(call_item(c, random_id("fc_"), true));
  const bool cut = why == FinishReason::Length;
  return response_json(meta, cut ? "incomplete" : "completed", std::move(output), usage_of(t), cut);
}

std::string ResponsesStream::event(const char* type, json data) {
  data["type"] = type;
  data["sequence_number"] = seq_++;
  return std::string("event: ") + type + "\ndata: " + dump(data) + "\n\n";
}

std::string ResponsesStream::start() {
  if (started_) return "";
  started_ = true;
  const json r = response_json(meta_, "in_progress", json::array(), nullptr, false);
  std::string out = event("response.created", {{"response", r}});
  return out + event("response.in_progress", {{"response", r}});  // numbered in this order
}

std::string ResponsesStream::open(const char* type) {
  if (open_ == type) return "";
  std::string out = close();
  open_ = type;
  text_.clear();
  const int index = static_cast<int>(items_.size());
  const bool message = open_ == "message";
  json item = message ? message_item(random_id("msg_"), "", "in_progress")
                      : reasoning_item(random_id("rs_"), "", false);
  items_.push_back(item);
  out += event("response.output_item.added", {{"output_index", index}, {"item", item}});
  if (message)
    out +=
        event("response.content_part.added",
              {{"item_id", item["id"]},
               {"output_index", index},
               {"content_index", 0},
               {"part", {{"type", "output_text"}, {"text", ""}, {"annotations", json::array()}}}});
  return out;
}

std::string ResponsesStream::close() {
  if (open_.empty()) return "";
  const int index = static_cast<int>(items_.size()) - 1;
  json& item = items_[index];
  const json id = item["id"];
  std::string out;
  if (open_ == "message") {
    item = message_item(id, text_, "completed");
    out += event("response.output_text.done",
                 {{"item_id", id}, {"output_index", index}, {"content_index", 0}, {"text", text_}});
    out += event("response.content_part.done", {{"item_id", id},
                                                {"output_index", index},
                                                {"content_index", 0},
                                                {"part", item["content"][0]}});
  } else {
    item = reasoning_item(id, text_, true);
    out += event("response.reasoning_text.done",
                 {{"item_id", id}, {"output_index", index}, {"content_index", 0}, {"text", text_}});
  }
  out += event("response.output_item.done", {{"output_index", index}, {"item", item}});
  open_.clear();
  return out;
}

std::string ResponsesStream::piece(const ShownReply& shown, const ReplyTimings&) {
  std::string out = start();
  auto delta = [&](const char* type, const std::string& text) {
    text_ += text;
    const int index = static_cast<int>(items_.size()) - 1;
    out += event(type, {{"item_id", items_[index]["id"]},
                        {"output_index", index},
                        {"content_index", 0},
                        {"delta", text}});
  };
  if (!shown.reasoning.empty()) {
    out += open("reasoning");
    delta("response.reasoning_text.delta", shown.reasoning);
  }
  if (!shown.content.empty()) {
    out += open("message");
    delta("response.output_text.delta", shown.content);
  }
  for (const ResponseToolCall& c : shown.calls) {
    out += close();
    const int index = static_cast<int>(items_.size());
    const std::string id = random_id("fc_");
    items_.push_back(call_item(c, id, true));
    out += event("response.output_item.added",
                 {{"output_index", index}, {"item", call_item(c, id, false)}});
    out += event("response.function_call_arguments.delta",
                 {{"item_id", id}, {"output_index", index}, {"delta", c.arguments}});
    out += event("response.function_call_arguments.done",
                 {{"item_id", id}, {"output_index", index}, {"arguments", c.arguments}});
    out += event("response.output_item.done", {{"output_index", index}, {"item", items_[index]}});
  }
  return out;
}

std::string ResponsesStream::last(FinishReason why, const ReplyTimings& t) {
  std::string out = start();
  out += close();
  const bool cut = why == FinishReason::Length;
  const json r = response_json(meta_, cut ? "incomplete" : "completed", items_, usage_of(t), cut);
  if (on_finished) on_finished(r);
  return out + event(cut ? "response.incomplete" : "response.completed", {{"response", r}});
}

std::string ResponsesStream::error(const std::string& message) {
  return event("error", {{"code", "server_error"}, {"message", message}, {"param", nullptr}});
}

}  // namespace llm::server
