// JSON mode (OpenAI's response_format json_object, Ollama's format "json"): a byte-level
// recognizer of one JSON object, and the mask of tokens that keep a reply inside it.
// The state is a small fixed-size value, so testing a token is a copy and a few steps.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace llm {

class JsonGrammar {
 public:
  static constexpr int kMaxDepth = 32;         // nested objects and arrays
  static constexpr int kMaxSpaces = 32;        // whitespace bytes in a row outside strings
  static constexpr int kMaxLeadingSpaces = 2;  // before the object's '{'

  // Takes one byte; false (the state then undefined) if no JSON object continues so.
  bool feed(uint8_t c);
  bool feed(const std::string& bytes);
  // The top-level object is closed: nothing may follow.
  bool done() const { return mode_ == Mode::Done; }

 private:
  enum class Mode : uint8_t {
    Start,       // before the top-level '{'
    Value,       // a value is expected
    ArrayFirst,  // after '[': a value or ']'
    KeyFirst,    // after '{': a key or '}'
    Key,         // after ',' in an object: a key
    Colon,       // after a key
    AfterValue,  // after a value in a container: ',' or its close
    String,      // inside a string (key_ says whether it is a key)
    Escape,      // after '\' in a string
    Unicode,     // in \uXXXX (hex_left more digits)
    Number,      // in a number (num_ its part)
    Literal,     // in true / false / null (lit_ the rest to match)
    Done,
  };
  enum class Num : uint8_t { Minus, Zero, Int, Dot, Frac, Exp, ExpSign, ExpInt };

  bool value_start(uint8_t c);
  bool end_value();
  bool close(uint8_t c);
  static bool space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

  Mode mode_ = Mode::Start;
  Num num_ = Num::Int;
  bool key_ = false;
  uint8_t hex_left_ = 0;
  uint8_t utf8_left_ = 0;                    // continuation bytes still due in a string
  uint8_t utf8_lo_ = 0x80, utf8_hi_ = 0xbf;  // the range of the next one
  uint8_t spaces_ = 0;
  const char* lit_ = nullptr;
  int depth_ = 0;
  std::array<char, kMaxDepth> stack_{};  // '{' or '['
};

// The bytes of every token (Tokenizer::token_bytes), for masks.
class JsonTokenMask {
 public:
  explicit JsonTokenMask(std::vector<std::string> token_bytes) : bytes_(std::move(token_bytes)) {}
  // Sets the logits of tokens that cannot follow `state` to -inf; false when none can.
  bool apply(const JsonGrammar& state, float* logits, int n_vocab) const;
  const std::string& bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }
  int size() const { return static_cast<int>(bytes_.size()); }

 private:
  std::vector<std::string> bytes_;
};

}  // namespace llm
