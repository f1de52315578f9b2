#include "core/chat/reasoning.h"

#include <algorithm>
#include <optional>

#include "core/chat/jinja_strings.h"
#include "core/engine/stop_matcher.h"

namespace llm {

namespace {

const std::string kOpen = "<think>";
const std::string kClose = "</think>";

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

std::string trim(const std::string& s) {
  static const std::optional<std::string> kSpace(" \t\r\n");
  return jinja::py_strip(s, kSpace, true, true);
}

}  // namespace

bool prompt_opens_think(const std::string& rendered_prompt) {
  size_t e = rendered_prompt.size();
  while (e > 0 && is_space(rendered_prompt[e - 1])) e--;
  return e >= kOpen.size() && rendered_prompt.compare(e - kOpen.size(), kOpen.size(), kOpen) == 0;
}

ReasoningSplit ReasoningStream::push(const std::string& text) {
  ReasoningSplit out;
  held_ += text;
  if (state_ == State::Start) {
    size_t b = 0;
    while (b < held_.size() && is_space(held_[b])) b++;
    const std::string rest = held_.substr(b);
    if (rest.size() < kOpen.size() && kOpen.compare(0, rest.size(), rest) == 0)
      return out;  // nothing yet, or a piece of <think>
    if (rest.compare(0, kOpen.size(), kOpen) == 0) {
      state_ = State::Inside;
      held_ = rest.substr(kOpen.size());
    } else {
      state_ = State::After;
      out.content = std::move(held_);
      held_.clear();
      return out;
    }
  }
  if (state_ == State::Inside) {
    const size_t close = held_.find(kClose);
    if (close == std::string::npos) {
      const size_t keep = partial_match_at_end(held_, {kClose});
      out.reasoning = held_.substr(0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
      return out;
    }
    out.reasoning = held_.substr(0, close);
    held_.erase(0, close + kClose.size());
    state_ = State::After;
    trim_lead_ = true;
  }
  if (trim_lead_) {
    // The answer starts after the blank lines that follow the block.
    size_t b = 0;
    while (b < held_.size() && is_space(held_[b])) b++;
    held_.erase(0, b);
    if (held_.empty()) return out;
    trim_lead_ = false;
  }
  out.content += held_;
  held_.clear();
  return out;
}

ReasoningSplit ReasoningStream::finish() {
  ReasoningSplit out;
  if (state_ == State::Inside)
    out.reasoning = std::move(held_);
  else
    out.content = std::move(held_);
  held_.clear();
  return out;
}

ReasoningSplit split_reasoning(const std::string& text, bool inside) {
  ReasoningStream s(inside);
  ReasoningSplit a = s.push(text), b = s.finish();
  return {trim(a.reasoning + b.reasoning), trim(a.content + b.content)};
}

}  // namespace llm
