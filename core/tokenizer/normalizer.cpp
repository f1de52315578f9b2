#include "core/tokenizer/normalizer.h"

namespace llm {

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  if (from.empty()) return std::string(s);
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s, pos, hit - pos).append(to);
    pos = hit + from.size();
  }
  out.append(s, pos, std::string_view::npos);
  return out;
}

void Normalizer::add_prepend(const std::string& prefix) {
  steps_.push_back(Step{Kind::kPrepend, prefix, "", nullptr});
}

void Normalizer::add_replace(const std::string& pattern, const std::string& content,
                             bool is_regex) {
  Step s{Kind::kReplace, pattern, content, nullptr};
  if (is_regex) s.regex = std::make_shared<Regex>(pattern);
  steps_.push_back(std::move(s));
}

void Normalizer::add_strip(bool left, bool right) {
  Step s{Kind::kStrip, "", "", nullptr};
  s.left = left;
  s.right = right;
  steps_.push_back(std::move(s));
}

void Normalizer::add_lowercase() { steps_.push_back(Step{Kind::kLowercase, "", "", nullptr}); }

namespace {

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Full Unicode lower-casing needs case tables; ASCII covers the vocabularies we load
// (lower-casing normalizers belong to BERT-style models, which are out of scope).
void lowercase_ascii(std::string* s) {
  for (char& c : *s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
}

}  // namespace

std::string Normalizer::apply(std::string_view text) const {
  std::string s(text);
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kPrepend:
        if (!s.empty()) s.insert(0, step.a);  // as HF: nothing is added to empty text
        break;
      case Kind::kReplace:
        if (!step.regex) {
          s = replace_all(s, step.a, step.b);
        } else {
          std::vector<std::pair<size_t, size_t>> hits;
          step.regex->find_all(s, &hits);
          std::string out;
          size_t pos = 0;
          for (const auto& [b, e] : hits) {
            out.append(s, pos, b - pos).append(step.b);
            pos = e;
          }
          out.append(s, pos, std::string::npos);
          s.swap(out);
        }
        break;
      case Kind::kStrip: {
        size_t b = 0, e = s.size();
        if (step.left) {
          while (b < e && is_ascii_space(s[b])) ++b;
        }
        if (step.right) {
          while (e > b && is_ascii_space(s[e - 1])) --e;
        }
        s = s.substr(b, e - b);
        break;
      }
      case Kind::kLowercase:
        lowercase_ascii(&s);
        break;
    }
  }
  return s;
}

}  // namespace llm
