// Finds stop strings in streamed text, also when one is split across tokens:
// text that might be the start of a stop string is held back until it is known
// not to be one.
#pragma once

#include <string>
#include <vector>

namespace llm {

// The length of the longest end of text that is the start (a proper prefix) of one of
// strings: what a stream must hold back until the next piece tells.
size_t partial_match_at_end(const std::string& text, const std::vector<std::string>& strings);

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  // Adds text; returns what can be shown now. Sets stopped() when a stop string
  // appeared: the returned text then ends right before it (OpenAI's behaviour).
  std::string push(const std::string& text);
  // The held-back text, at the end of the generation.
  std::string flush();
  bool stopped() const { return stopped_; }
  // The stop string that matched (empty when none).
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // pushed but not yet returned
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace llm
