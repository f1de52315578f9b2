// Reasoning models' think blocks split from the answer: whole replies, replies streamed
// in pieces that cut the tags, and prompts whose generation prompt opens the block.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/chat/chat_template.h"
#include "core/chat/reasoning.h"
#include "test_util.h"

using namespace llm;

TEST_CASE("think blocks are split from the answer", "[reasoning]") {
  auto check = [](const std::string& text, bool inside, const std::string& reasoning,
                  const std::string& content) {
    INFO(text << " inside=" << inside);
    const ReasoningSplit s = split_reasoning(text, inside);
    CHECK(s.reasoning == reasoning);
    CHECK(s.content == content);
  };
  check("<think>\nLet me see.\n</think>\n\nParis.", false, "Let me see.", "Paris.");
  check("\n<think></think>Paris.", false, "", "Paris.");
  check("Let me see.</think>\n\nParis.", true, "Let me see.", "Paris.");
  check("Still thinking when cut", true, "Still thinking when cut", "");
  check("<think>never closed", false, "never closed", "");
  check("Paris.", false, "", "Paris.");
  check("Paris <think>is</think> nice", false, "", "Paris <think>is</think> nice");
  check("<thin", false, "", "<thin");
}

TEST_CASE("streamed think blocks: tags cut across pieces are held", "[reasoning]") {
  ReasoningStream s(false);
  std::string reasoning, content;
  std::vector<std::pair<std::string, std::string>> steps;  // what each piece released
  for (const char* piece : {"<thi", "nk>Let", " me</th", "ink>\n", "\nPar", "is."}) {
    const ReasoningSplit r = s.push(piece);
    steps.emplace_back(r.reasoning, r.content);
    reasoning += r.reasoning;
    content += r.content;
  }
  const ReasoningSplit end = s.finish();
  CHECK(end.reasoning.empty());
  CHECK(end.content.empty());
  CHECK(reasoning == "Let me");
  CHECK(content == "Paris.");
  CHECK(steps[0] == std::make_pair(std::string(), std::string()));
  CHECK(steps[1].first == "Let");
  CHECK(steps[2].first == " me");                                   // "</th" held
  CHECK(steps[3] == std::make_pair(std::string(), std::string()));  // blank lines dropped
  CHECK(steps[4].second == "Par");

  // A reply that does not think is content from its first byte on.
  ReasoningStream plain(false);
  CHECK(plain.push("Hi").content == "Hi");
  // Inside a block the prompt opened, a cut reply is all reasoning.
  ReasoningStream inside(true);
  CHECK(inside.push("abc</").reasoning == "abc");
  CHECK(inside.finish().reasoning == "</");
}

TEST_CASE("generation prompts that open a think block", "[reasoning]") {
  CHECK(prompt_opens_think("<|im_start|>assistant\n<think>\n"));
  CHECK(prompt_opens_think("<|assistant|><think>"));
  CHECK_FALSE(prompt_opens_think("<|im_start|>assistant\n"));
  CHECK_FALSE(prompt_opens_think("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
  // GLM-4.7's template opens it; Qwen3's does not (it thinks when the model starts to).
  auto opens = [](const std::string& name) {
    std::ifstream f(llm::test::data_dir() + "/chat-templates/" + name + ".jinja");
    REQUIRE(f.good());
    std::stringstream ss;
    ss << f.rdbuf();
    ChatTemplateOptions o;
    o.add_generation_prompt = true;
    o.date = "2026-01-15";
    const nlohmann::ordered_json msgs =
        nlohmann::ordered_json::array({{{"role", "user"}, {"content", "Hi"}}});
    return prompt_opens_think(render_chat_template(ss.str(), msgs, o));
  };
  CHECK(opens("GLM-4.7-Flash"));
  CHECK_FALSE(opens("Qwen-Qwen3-0.6B"));
}
