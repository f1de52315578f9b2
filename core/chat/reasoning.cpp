#include "core/chat/reasoning.h"

#include <algorithm>

namespace llm {

namespace {

const std::string kOpen = "<think>";
const std::string kClose = "</think>";

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) b++;
  while (e > b && is_space(s[e - 1])) e--;
  return s.substr(b, e - b);
}

// How many bytes at the end of text could begin tag.
size_t partial_tag(const std::string& text, const std::string& tag) {
  for (size_t n = std::min(tag.size() - 1, text.size()); n > 0; n--)
    if (text.compare(text.size() - n, n, tag, 0, n) == 0) return n;
  return 0;
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
      const size_t keep = partial_tag(held_, kClose);
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
