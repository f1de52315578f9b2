// The thinking of reasoning models (Qwen3, DeepSeek-R1, GLM-4.5+, SmolLM3, ...), written
// between <think> and </think>, split from the answer, as OpenAI-compatible servers
// report it (`reasoning_content`). Used by the server for chat replies.
#pragma once

#include <string>

namespace llm {

struct ReasoningSplit {
  std::string reasoning;  // the text inside the think block, trimmed
  std::string content;    // the rest
};

// Whether a rendered prompt leaves the reply inside a think block (the template's
// generation prompt opened it: "<think>\n").
bool prompt_opens_think(const std::string& rendered_prompt);

// A finished reply: the think block at its start (or, with inside, everything up to
// </think>; all of it when the block never closes) is reasoning, the rest content.
ReasoningSplit split_reasoning(const std::string& text, bool inside);

// A reply streamed in pieces: each push returns what became reasoning and what became
// content; a piece of a tag is held until it is known.
class ReasoningStream {
 public:
  explicit ReasoningStream(bool inside) : state_(inside ? State::Inside : State::Start) {}
  ReasoningSplit push(const std::string& text);
  // The end of the reply: whatever was held.
  ReasoningSplit finish();

 private:
  enum class State { Start, Inside, After };
  State state_;
  bool trim_lead_ = false;  // blank lines after </think> are not content
  std::string held_;
};

}  // namespace llm
