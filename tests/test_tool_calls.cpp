// Tool calls in replies: the syntax each real chat template teaches, calls parsed back
// out of what the template itself renders for an assistant's tool_calls, hand-written
// replies (malformed calls stay text), and the streaming hold-back.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/chat/chat_template.h"
#include "core/chat/tool_calls.h"
#include "core/engine/json_grammar.h"
#include "core/error.h"
#include "server/chat_reply.h"
#include "test_util.h"

using namespace llm;
using nlohmann::ordered_json;

namespace {

const std::string kDir = llm::test::data_dir() + "/chat-templates";

std::string read_template(const std::string& name) {
  std::ifstream f(kDir + "/" + name + ".jinja", std::ios::binary);
  REQUIRE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const ordered_json kTools = ordered_json::parse(R"([
  {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
   "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}}}}},
  {"type": "function", "function": {"name": "get_time", "description": "Local time",
   "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}])");

ordered_json tool_call(const std::string& id, const std::string& name, const ordered_json& args) {
  return {{"id", id}, {"type", "function"}, {"function", {{"name", name}, {"arguments", args}}}};
}

// What the template writes for an assistant turn holding `calls`: the rendering of the
// conversation with it, less the rendering up to the generation prompt, cut at the
// end-of-turn token. Empty when the template does not render that way.
std::string rendered_reply(const std::string& source, const ordered_json& calls) {
  const ordered_json user = {{"role", "user"}, {"content", "Weather in Paris, and the time?"}};
  ChatTemplateOptions opts;
  opts.date = "2026-01-15";
  opts.extra_context = {{"tools", kTools}};
  opts.add_generation_prompt = true;
  std::string prefix = render_chat_template(source, ordered_json::array({user}), opts);
  opts.add_generation_prompt = false;
  const ordered_json assistant = {{"role", "assistant"}, {"content", ""}, {"tool_calls", calls}};
  const std::string full =
      render_chat_template(source, ordered_json::array({user, assistant}), opts);
  // A generation prompt may open (or open and close) a think block that past turns do
  // not show (GLM, DeepSeek-R1): the reply is then what follows the prompt without it.
  const size_t think = prefix.rfind("<think>");
  if (full.compare(0, prefix.size(), prefix) != 0 && think != std::string::npos)
    prefix.resize(think);
  if (full.compare(0, prefix.size(), prefix) != 0) return "";
  std::string reply = full.substr(prefix.size());
  for (const char* end : {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "</s>", "<|end|>", "<|im_end|>",
                          "<|user|>", "<|observation|>", "<｜end▁of▁sentence｜>", "<seed:eos>"}) {
    const size_t at = reply.find(end);
    if (at != std::string::npos) reply.resize(at);
  }
  return reply;
}

}  // namespace

TEST_CASE("tool call syntax is found from the template's text", "[tool_calls]") {
  const std::vector<std::pair<std::string, ToolCallSyntax>> cases = {
      {"Qwen-Qwen2.5-7B-Instruct", ToolCallSyntax::HermesJson},
      {"Qwen-Qwen3-0.6B", ToolCallSyntax::HermesJson},
      {"NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", ToolCallSyntax::HermesJson},
      {"NousResearch-Hermes-3-Llama-3.1-8B-tool_use", ToolCallSyntax::HermesJson},
      {"Qwen3.5-4B", ToolCallSyntax::QwenXml},
      {"GLM-4.7-Flash", ToolCallSyntax::GlmXml},
      {"mistralai-Mistral-Nemo-Instruct-2407", ToolCallSyntax::Mistral},
      {"Mistral-Small-3.2-24B-Instruct-2506", ToolCallSyntax::Mistral},
      {"meta-llama-Llama-3.1-8B-Instruct", ToolCallSyntax::Llama3Json},
      {"meta-llama-Llama-3.3-70B-Instruct", ToolCallSyntax::Llama3Json},
      {"meetkai-functionary-medium-v3.1", ToolCallSyntax::FunctionTags},
      {"moonshotai-Kimi-K2", ToolCallSyntax::KimiK2},
      {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", ToolCallSyntax::DeepSeek},
      {"ByteDance-Seed-OSS", ToolCallSyntax::SeedXml},
      {"ibm-granite-granite-3.3-2B-Instruct", ToolCallSyntax::GraniteList},
      {"fireworks-ai-llama-3-firefunction-v2", ToolCallSyntax::Functools},
      {"Apriel-1.6-15b-Thinker-fixed", ToolCallSyntax::TaggedList},
      {"CohereForAI-c4ai-command-r7b-12-2024-tool_use", ToolCallSyntax::None},
      {"google-gemma-2-2b-it", ToolCallSyntax::None},
  };
  for (const auto& [name, want] : cases) {
    INFO(name);
    CHECK(tool_call_syntax_name(detect_tool_call_syntax(read_template(name))) ==
          std::string(tool_call_syntax_name(want)));
  }
}

TEST_CASE("tool calls the templates render parse back into the same calls", "[tool_calls]") {
  const ordered_json weather = {{"city", "Paris"}, {"days", 3}};
  const ordered_json time = {{"zone", "Europe/Paris"}};
  // Llama 3.1-3.3 and Functionary write one call a turn.
  const std::vector<std::pair<std::string, int>> templates = {
      {"Qwen-Qwen2.5-7B-Instruct", 2},
      {"Qwen-Qwen3-0.6B", 2},
      {"NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", 2},
      {"NousResearch-Hermes-3-Llama-3.1-8B-tool_use", 2},
      {"Qwen3.5-4B", 2},
      {"GLM-4.7-Flash", 2},
      {"mistralai-Mistral-Nemo-Instruct-2407", 2},
      {"Mistral-Small-3.2-24B-Instruct-2506", 2},
      {"meta-llama-Llama-3.1-8B-Instruct", 1},
      {"meta-llama-Llama-3.3-70B-Instruct", 1},
      {"meetkai-functionary-medium-v3.1", 1},
      {"moonshotai-Kimi-K2", 2},
      {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", 2},
      {"ByteDance-Seed-OSS", 2},
      {"unsloth-Apriel-1.5", 2},
  };
  for (const auto& [name, n] : templates) {
    INFO(name);
    const std::string source = read_template(name);
    ordered_json calls = ordered_json::array({tool_call("abcDEF123", "get_weather", weather)});
    if (n == 2) calls.push_back(tool_call("ghiJKL456", "get_time", time));
    const std::string reply = rendered_reply(source, calls);
    INFO("reply: " << reply);
    REQUIRE(!reply.empty());
    const ParsedReply got = parse_tool_calls(detect_tool_call_syntax(source), reply);
    CHECK(got.content.empty());
    REQUIRE(got.calls.size() == static_cast<size_t>(n));
    CHECK(got.calls[0].name == "get_weather");
    CHECK(ordered_json::parse(got.calls[0].arguments) == weather);
    if (n == 2) {
      CHECK(got.calls[1].name == "get_time");
      CHECK(ordered_json::parse(got.calls[1].arguments) == time);
    }
  }
}

TEST_CASE("tool calls in hand-written replies; what does not parse stays text", "[tool_calls]") {
  using S = ToolCallSyntax;
  {
    const ParsedReply r = parse_tool_calls(
        S::HermesJson,
        "Let me check.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, \"}\"]}}\n"
        "</tool_call>\n<tool_call>{\"name\": \"g\", \"arguments\": \"{\\\"b\\\": true}\"}");
    CHECK(r.content == "Let me check.");
    REQUIRE(r.calls.size() == 2);  // the second is unterminated: the reply ended
    CHECK(r.calls[0].arguments == R"({"a":[1,"}"]})");
    CHECK(r.calls[1].name == "g");
    CHECK(r.calls[1].arguments == R"({"b":true})");
  }
  {
    const std::string broken = "<tool_call>{\"name\": \"f\", \"arguments\": {</tool_call>";
    const ParsedReply r = parse_tool_calls(S::HermesJson, "x " + broken);
    CHECK(r.calls.empty());
    CHECK(r.content == "x " + broken);
  }
  {
    const ParsedReply r = parse_tool_calls(
        S::QwenXml,
        "<tool_call>\n<function=run>\n<parameter=code>\nprint(1)\nprint(2)\n</parameter>\n"
        "<parameter=n>\n7\n</parameter>\n</function>\n</tool_call>");
    REQUIRE(r.calls.size() == 1);
    CHECK(ordered_json::parse(r.calls[0].arguments) ==
          ordered_json{{"code", "print(1)\nprint(2)"}, {"n", 7}});
  }
  {
    const ParsedReply r =
        parse_tool_calls(S::Mistral, "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"x\": 1}}]");
    REQUIRE(r.calls.size() == 1);
    CHECK(r.calls[0].arguments == R"({"x":1})");
    CHECK(parse_tool_calls(S::Mistral, "[TOOL_CALLS][{\"nam").calls.empty());
  }
  {
    const ParsedReply r =
        parse_tool_calls(S::Llama3Json, "<|python_tag|>{\"name\": \"f\", \"parameters\": {}}");
    REQUIRE(r.calls.size() == 1);
    CHECK(r.calls[0].arguments == "{}");
    // JSON that is not the whole reply, or not a call, is text.
    CHECK(parse_tool_calls(S::Llama3Json, "{\"name\": \"f\", \"parameters\": {}} and more")
              .calls.empty());
    CHECK(parse_tool_calls(S::Llama3Json, "{\"a\": 1}").content == "{\"a\": 1}");
  }
  {
    // Granite's template only describes its syntax: a list after <|tool_call|>.
    const ParsedReply r = parse_tool_calls(
        S::GraniteList, "<|tool_call|>[{\"name\": \"f\", \"arguments\": {\"a\": 1}}]");
    REQUIRE(r.calls.size() == 1);
    CHECK(r.calls[0].arguments == R"({"a":1})");
    CHECK(r.content.empty());
    const ParsedReply d =
        parse_tool_calls(S::DeepSeek,
                         "ok<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>g<｜tool▁sep｜>{\"b\": 2}"
                         "<｜tool▁call▁end｜><｜tool▁calls▁end｜>");  // V3.1's form
    REQUIRE(d.calls.size() == 1);
    CHECK(d.calls[0].name == "g");
    CHECK(d.content == "ok");
    // FireFunction's list after "functools" (its template needs a `functions` list).
    const ParsedReply f = parse_tool_calls(S::Functools,
                                           " functools[{\"name\": \"h\", \"arguments\": {}}, "
                                           "{\"name\": \"i\", \"arguments\": {\"c\": [3]}}]");
    REQUIRE(f.calls.size() == 2);
    CHECK(f.calls[1].arguments == R"({"c":[3]})");
  }
  CHECK(parse_tool_calls(S::None, "  <tool_call>{}</tool_call> ").content ==
        "<tool_call>{}</tool_call>");
}

TEST_CASE("streamed replies hold back what may start a tool call", "[tool_calls]") {
  using S = ToolCallSyntax;
  CHECK(tool_call_free_prefix(S::HermesJson, "Hello") == 5);
  CHECK(tool_call_free_prefix(S::HermesJson, "Hello <tool") == 6);
  CHECK(tool_call_free_prefix(S::HermesJson, "Hello <tool_call>{") == 6);
  CHECK(tool_call_free_prefix(S::HermesJson, "a < b") == 5);
  CHECK(tool_call_free_prefix(S::Mistral, "ok [TOOL") == 3);
  CHECK(tool_call_free_prefix(S::Llama3Json, "  {\"na") == 0);
  CHECK(tool_call_free_prefix(S::Llama3Json, "<|python") == 0);
  CHECK(tool_call_free_prefix(S::Llama3Json, "Sure, {x}") == 9);
  CHECK(tool_call_free_prefix(S::None, "<tool_call>") == 11);

  // Pieces as a model streams them: content before the call goes out at once, the
  // call at the end.
  ToolCallStream s(S::HermesJson);
  std::string sent;
  for (const char* piece : {"Checking", " now <", "tool_", "call>{\"name\": \"f\",",
                            " \"arguments\": {}}", "</tool_call>"})
    sent += s.push(piece);
  CHECK(sent == "Checking now ");
  const ParsedReply end = s.finish();
  CHECK(end.content.empty());
  REQUIRE(end.calls.size() == 1);
  CHECK(end.calls[0].name == "f");

  // A "<" that turns out not to start a call is sent once it cannot.
  ToolCallStream t(S::HermesJson);
  CHECK(t.push("a <") == "a ");
  CHECK(t.push("b") == "<b");
  const ParsedReply plain = t.finish();
  CHECK(plain.calls.empty());
  CHECK(plain.content.empty());
  // No calls at the end: whatever was held goes out as content.
  ToolCallStream u(S::Llama3Json);
  CHECK(u.push("{not a call").empty());
  CHECK(u.finish().content == "{not a call");
}

TEST_CASE("a forced call is one JSON object after the syntax's opener", "[tool_calls]") {
  const nlohmann::json tools = nlohmann::json::parse(R"([
    {"type": "function", "function": {"name": "a", "parameters": {"type": "object",
     "properties": {"x": {"type": "integer"}}}}},
    {"type": "function", "function": {"name": "b"}}])");
  const ForcedToolCall one = forced_tool_call(ToolCallSyntax::HermesJson, tools, "a");
  CHECK(one.opener == "<tool_call>\n");
  CHECK(one.schema["properties"]["name"]["const"] == "a");
  CHECK(one.schema["properties"]["arguments"] == tools[0]["function"]["parameters"]);
  const ForcedToolCall any = forced_tool_call(ToolCallSyntax::Llama3Json, tools, "");
  CHECK(any.opener.empty());
  CHECK(any.loose_schema["properties"]["name"]["enum"].size() == 2);
  CHECK(any.loose_schema["properties"]["parameters"] == nlohmann::json{{"type", "object"}});
  // Any of several tools: each call with its own parameters.
  const auto schema = JsonSchema::compile(any.schema);
  auto whole = [&](const std::string& doc) {
    JsonReply r(*schema);
    return r.feed(doc) && r.done();
  };
  CHECK(whole(R"({"name": "a", "parameters": {"x": 1}})"));
  CHECK(whole(R"({"name": "b", "parameters": {"y": "free"}})"));
  CHECK_FALSE(whole(R"({"name": "a", "parameters": {"x": "one"}})"));
  CHECK_FALSE(whole(R"({"name": "c", "parameters": {}})"));
  CHECK_THROWS_WITH(forced_tool_call(ToolCallSyntax::QwenXml, tools, "a"),
                    Catch::Contains("qwen-xml"));
  ToolCall c;
  REQUIRE(forced_call_from_reply(any, " {\"parameters\": {\"x\": 1}, \"name\": \"a\"}", &c));
  CHECK(c.name == "a");
  CHECK(c.arguments == R"({"x":1})");
  CHECK_FALSE(forced_call_from_reply(any, "{\"name\": \"a\", \"parame", &c));
}

TEST_CASE("parallel_tool_calls false: a reply's first call only", "[tool_calls][server]") {
  server::ReplyFormat f;
  f.tools = ToolCallSyntax::HermesJson;
  const std::string reply =
      "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"b\", \"arguments\": {\"x\": 1}}\n</tool_call>";
  CHECK(server::show_reply(f, reply).calls.size() == 2);
  f.one_call = true;
  const server::ShownReply one = server::show_reply(f, reply);
  REQUIRE(one.calls.size() == 1);
  CHECK(one.calls[0].name == "a");
  server::StreamedReply streamed(f);
  const size_t half = reply.size() / 2;
  const server::ShownReply a = streamed.push(reply.substr(0, half), false);
  const server::ShownReply b = streamed.push(reply.substr(half), true);
  REQUIRE(a.calls.size() + b.calls.size() == 1);
  CHECK(b.calls[0].name == "a");
  // The request field is a boolean.
  const auto body = nlohmann::ordered_json::parse(
      R"({"messages": [{"role": "user", "content": "hi"}], "parallel_tool_calls": false})");
  CHECK_FALSE(server::parse_chat_request(body, 100).parallel_tool_calls);
  auto bad = body;
  bad["parallel_tool_calls"] = "no";
  CHECK_THROWS_AS(server::parse_chat_request(bad, 100), server::ApiError);
}
