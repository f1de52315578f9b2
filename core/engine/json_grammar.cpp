#include "core/engine/json_grammar.h"

#include <cmath>

namespace llm {

bool JsonGrammar::feed(const std::string& bytes) {
  for (char c : bytes)
    if (!feed(static_cast<uint8_t>(c))) return false;
  return true;
}

bool JsonGrammar::value_start(uint8_t c) {
  switch (c) {
    case '{':
    case '[':
      if (depth_ == kMaxDepth) return false;
      stack_[depth_++] = static_cast<char>(c);
      mode_ = c == '{' ? Mode::KeyFirst : Mode::ArrayFirst;
      return true;
    case '"':
      mode_ = Mode::String;
      key_ = false;
      return true;
    case 't':
      lit_ = "rue";
      mode_ = Mode::Literal;
      return true;
    case 'f':
      lit_ = "alse";
      mode_ = Mode::Literal;
      return true;
    case 'n':
      lit_ = "ull";
      mode_ = Mode::Literal;
      return true;
    case '-':
      num_ = Num::Minus;
      mode_ = Mode::Number;
      return true;
    default:
      if (c >= '0' && c <= '9') {
        num_ = c == '0' ? Num::Zero : Num::Int;
        mode_ = Mode::Number;
        return true;
      }
      return false;
  }
}

// A value just ended inside its container.
bool JsonGrammar::end_value() {
  mode_ = Mode::AfterValue;
  spaces_ = 0;
  return true;
}

// c closes the innermost container (if it matches).
bool JsonGrammar::close(uint8_t c) {
  if (depth_ == 0 || stack_[depth_ - 1] != (c == '}' ? '{' : '[')) return false;
  depth_--;
  if (depth_ == 0) {
    mode_ = Mode::Done;
    return true;
  }
  return end_value();
}

bool JsonGrammar::feed(uint8_t c) {
  switch (mode_) {
    case Mode::Done:
      return false;
    case Mode::String:
      if (utf8_left_ > 0) {
        if (c < utf8_lo_ || c > utf8_hi_) return false;
        utf8_left_--;
        utf8_lo_ = 0x80;
        utf8_hi_ = 0xbf;
        return true;
      }
      if (c == '"') {
        if (key_) {
          mode_ = Mode::Colon;
          spaces_ = 0;
          return true;
        }
        return end_value();
      }
      if (c == '\\') {
        mode_ = Mode::Escape;
        return true;
      }
      if (c < 0x20 || c == 0x7f) return false;
      if (c >= 0x80) {
        // A UTF-8 lead byte: how many continuation bytes it wants, and the range of the
        // first (no overlong forms, surrogates or code points past U+10FFFF).
        utf8_lo_ = 0x80;
        utf8_hi_ = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
          utf8_left_ = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
          utf8_left_ = 2;
          if (c == 0xe0) utf8_lo_ = 0xa0;
          if (c == 0xed) utf8_hi_ = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
          utf8_left_ = 3;
          if (c == 0xf0) utf8_lo_ = 0x90;
          if (c == 0xf4) utf8_hi_ = 0x8f;
        } else {
          return false;
        }
      }
      return true;
    case Mode::Escape:
      if (c == 'u') {
        mode_ = Mode::Unicode;
        hex_left_ = 4;
        return true;
      }
      if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
          c == 't') {
        mode_ = Mode::String;
        return true;
      }
      return false;
    case Mode::Unicode:
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
        return false;
      if (--hex_left_ == 0) mode_ = Mode::String;
      return true;
    case Mode::Literal:
      if (*lit_ != static_cast<char>(c)) return false;
      if (*++lit_ == '\0') return end_value();
      return true;
    case Mode::Number: {
      const bool digit = c >= '0' && c <= '9';
      switch (num_) {
        case Num::Minus:
          if (!digit) return false;
          num_ = c == '0' ? Num::Zero : Num::Int;
          return true;
        case Num::Zero:
        case Num::Int:
          if (digit && num_ == Num::Int) return true;
          if (c == '.') {
            num_ = Num::Dot;
            return true;
          }
          if (c == 'e' || c == 'E') {
            num_ = Num::Exp;
            return true;
          }
          break;
        case Num::Dot:
          if (!digit) return false;
          num_ = Num::Frac;
          return true;
        case Num::Frac:
          if (digit) return true;
          if (c == 'e' || c == 'E') {
            num_ = Num::Exp;
            return true;
          }
          break;
        case Num::Exp:
          if (c == '+' || c == '-') {
            num_ = Num::ExpSign;
            return true;
          }
          [[fallthrough]];
        case Num::ExpSign:
          if (!digit) return false;
          num_ = Num::ExpInt;
          return true;
        case Num::ExpInt:
          if (digit) return true;
          break;
      }
      // The number ended at a complete part; c belongs to what follows it.
      end_value();
      return feed(c);
    }
    default:
      break;
  }
  // Between tokens: whitespace (a few in a row), then what the mode expects.
  if (space(c)) return ++spaces_ <= (mode_ == Mode::Start ? kMaxLeadingSpaces : kMaxSpaces);
  spaces_ = 0;
  switch (mode_) {
    case Mode::Start:
      return c == '{' && value_start(c);
    case Mode::Value:
      return value_start(c);
    case Mode::ArrayFirst:
      return c == ']' ? close(c) : value_start(c);
    case Mode::KeyFirst:
    case Mode::Key:
      if (c == '}' && mode_ == Mode::KeyFirst) return close(c);
      if (c != '"') return false;
      mode_ = Mode::String;
      key_ = true;
      return true;
    case Mode::Colon:
      if (c != ':') return false;
      mode_ = Mode::Value;
      return true;
    case Mode::AfterValue:
      if (c == ',') {
        mode_ = stack_[depth_ - 1] == '{' ? Mode::Key : Mode::Value;
        return true;
      }
      return (c == '}' || c == ']') && close(c);
    default:
      return false;
  }
}

bool JsonTokenMask::apply(const JsonGrammar& state, float* logits, int n_vocab) const {
  bool any = false;
  for (int id = 0; id < n_vocab; id++) {
    const std::string& b = id < size() ? bytes_[static_cast<size_t>(id)] : std::string();
    JsonGrammar next = state;
    if (!b.empty() && next.feed(b)) {
      any = any || !std::isinf(logits[id]) || logits[id] > 0;
    } else {
      logits[id] = -INFINITY;
    }
  }
  return any;
}

}  // namespace llm
