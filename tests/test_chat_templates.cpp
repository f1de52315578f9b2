// Conformance of the chat-template renderer against Hugging Face's: every real template in
// tests/data/chat-templates × every conversation in expected.json, with and without the
// generation prompt, must render exactly what jinja2 rendered (or fail with its message).
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/chat/chat_template.h"
#include "core/error.h"
#include "test_util.h"

using nlohmann::ordered_json;

namespace {

const std::string kDir = llm::test::data_dir() + "/chat-templates";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Our runtime errors carry "template line N: " in front of the Python message; a template's
// raise_exception() message comes through unchanged.
std::string without_line_prefix(const std::string& msg) {
  const std::string head = "template line ";
  if (msg.compare(0, head.size(), head) != 0) return msg;
  size_t colon = msg.find(": ", head.size());
  return colon == std::string::npos ? msg : msg.substr(colon + 2);
}

}  // namespace

TEST_CASE("chat templates render like transformers", "[chat_template]") {
  // ordered_json keeps each message's key order (role, content), as Python dicts do.
  const ordered_json expected = ordered_json::parse(read_file(kDir + "/expected.json"));
  const ordered_json& conversations = expected.at("conversations");
  int total = 0, passed = 0;
  for (const ordered_json& c : expected.at("cases")) {
    const std::string name = c.at("template").get<std::string>();
    const std::string conv = c.at("conversation").get<std::string>();
    llm::ChatTemplateOptions opts;
    opts.add_generation_prompt = c.at("add_generation_prompt").get<bool>();
    opts.date = "2026-01-15";
    INFO(name << " / " << conv << " / add_generation_prompt=" << opts.add_generation_prompt);
    ++total;
    std::string got, error;
    try {
      got = llm::render_chat_template(read_file(kDir + "/" + name), conversations.at(conv), opts);
    } catch (const llm::Error& e) {
      error = e.what();
    }
    bool ok;
    if (c.contains("error")) {
      const std::string want = c.at("error").get<std::string>();
      INFO("expected error: " << want << "\ngot error: " << error << "\ngot text: " << got);
      ok = !error.empty() && without_line_prefix(error) == want;
      CHECK(ok);
    } else {
      const std::string want = c.at("expected").get<std::string>();
      INFO("error: " << error);
      ok = error.empty() && got == want;
      CHECK(got == want);
    }
    passed += ok ? 1 : 0;
  }
  INFO("passed " << passed << " of " << total);
  CHECK(total == 304);
  CHECK(passed == total);
}

TEST_CASE("raise_exception message is passed through verbatim", "[chat_template]") {
  const std::string src = read_file(kDir + "/google-gemma-2-2b-it.jinja");
  const ordered_json messages = ordered_json::parse(
      R"([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}])");
  try {
    llm::render_chat_template(src, messages, llm::ChatTemplateOptions{});
    FAIL("expected an error");
  } catch (const llm::Error& e) {
    CHECK(std::string(e.what()) == "System role not supported");
  }
}

TEST_CASE("extra_context variables reach the template", "[chat_template]") {
  const std::string src =
      "{% if tools is not none %}{{ tools | tojson }}{% endif %}"
      "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
      "{% if enable_thinking is defined %}think={{ enable_thinking }}{% endif %}"
      "{{ strftime_now('%Y-%m-%d') }}";
  llm::ChatTemplateOptions opts;
  opts.date = "2026-01-15";
  opts.extra_context = {{"tools", {{{"name", "f"}}}}, {"enable_thinking", false}};
  const nlohmann::json messages = {{{"role", "user"}, {"content", "hi"}}};
  CHECK(llm::render_chat_template(src, messages, opts) ==
        "[{\"name\": \"f\"}][user]hithink=False2026-01-15");
  // A tool's keys come out in the order given (transformers keeps insertion order;
  // sorted keys show models schemas in an order they were not trained on).
  opts.extra_context = nlohmann::ordered_json::parse(
      R"({"tools": [{"type": "function", "function": {"name": "f", "description": "d"}}]})");
  CHECK(llm::render_chat_template(src, messages, opts) ==
        "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": "
        "\"d\"}}][user]hi2026-01-15");

  llm::ChatTemplateOptions plain;
  plain.date = "2026-01-15";
  CHECK(llm::render_chat_template(src, messages, plain) == "[user]hi2026-01-15");
}

TEST_CASE("ChatTemplate parses once and renders many times", "[chat_template]") {
  llm::ChatTemplate t(
      "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}"
      "{% endfor %}{% if add_generation_prompt %}>{% endif %}");
  llm::ChatTemplateOptions opts;
  opts.bos_token = "<|begin|>";
  opts.eos_token = "<|end|>";
  const ordered_json one = ordered_json::parse(R"([{"role": "user", "content": "a"}])");
  CHECK(t.render(one, opts) == "<|begin|>a<|end|>");
  opts.add_generation_prompt = true;
  CHECK(t.render(one, opts) == "<|begin|>a<|end|>>");
  CHECK_THROWS_WITH(t.render(ordered_json::object(), opts), "chat messages must be a JSON array");
  CHECK_THROWS_WITH(llm::ChatTemplate("{% if x %}"),
                    "template line 1: unclosed 'if' (missing 'endif')");
}
