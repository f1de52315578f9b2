// Constrained JSON replies (OpenAI's response_format json_object / json_schema, Ollama's
// format): a byte-level recognizer of one JSON object, optionally following a compiled
// JsonSchema, and the mask of tokens that keep a reply inside it. The state is a
// fixed-size value, so testing a token is a copy and a few steps.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/engine/json_schema.h"

namespace llm {

class JsonGrammar {
 public:
  static constexpr int kMaxDepth = 24;         // nested objects and arrays
  static constexpr int kMaxSpaces = 32;        // whitespace bytes in a row outside strings
  static constexpr int kMaxLeadingSpaces = 2;  // before the object's '{'

  // Any JSON object, or one that follows schema (which must outlive this state).
  JsonGrammar() : JsonGrammar(*JsonSchema::any_object()) {}
  explicit JsonGrammar(const JsonSchema& schema);

  // Takes one byte; false (the state then undefined) if no valid object continues so.
  bool feed(uint8_t c);
  bool feed(const std::string& bytes);
  // The top-level object is closed: nothing may follow.
  bool done() const { return mode_ == Mode::Done; }
  // Becomes a copy of o, copying only the containers open in it (a mask tests every
  // token from the same state: a full copy of the stack each time would dominate).
  void assign(const JsonGrammar& o);
  // Inside a string value, between characters: any run of plain characters (no quote,
  // backslash or control byte; whole UTF-8 sequences) is taken.
  bool in_plain_string() const;
  // Where a value may follow several anyOf alternatives of its type, this state takes
  // the first that fits and puts a state for each other one in *sink (null: dropped).
  // JsonReply follows them all.
  void set_fork_sink(std::vector<JsonGrammar>* sink) { forks_ = sink; }

 private:
  enum class Mode : uint8_t {
    Value,    // a value of node value_node_ is expected (Start at the top)
    Between,  // inside a container, between its parts (see Frame::phase)
    String,   // inside a string (a key when the top frame's phase is Key)
    Escape,   // after '\' in a string
    Unicode,  // in \uXXXX (hex_left_ more digits)
    Number,   // in a number (num_ its part)
    Literal,  // in true / false / null (lit_ the rest to match)
    Enum,     // in an enum value (enum_pos_ in the node's trie)
    Done,
  };
  enum class Num : uint8_t { Minus, Zero, Int, Dot, Frac, Exp, ExpSign, ExpInt };
  enum class Phase : uint8_t {
    KeyFirst,    // after '{': a key or '}'
    Key,         // after ',' in an object: a key
    InKey,       // inside a key string
    Colon,       // after a key
    First,       // after '[': a value or ']'
    AfterValue,  // after a value: ',' or the close
  };
  struct Frame {
    uint64_t seen;  // objects: the declared keys given so far; arrays: the items
    int32_t node;
    int32_t key_pos;    // objects, in a key: the position in the key trie (-1: off it)
    int32_t key_value;  // objects: the node of the current key's value
    bool object;
    Phase phase;
    uint32_t count;  // objects: the keys given so far (declared or not)
    uint64_t taken;  // arrays of unique enum items (Node::unique_enum): the values given
  };

  bool start_value(uint8_t c);
  bool fork(const std::vector<int>& alternatives, uint8_t wanted, uint8_t c);
  bool end_value();
  bool between(uint8_t c);
  bool key_byte(uint8_t c);
  bool string_byte(uint8_t c);
  bool number_byte(uint8_t c);
  // A bounded number (bounds_): whether a number that starts as this one can still lie
  // within the bounds, and whether the one that just ended does.
  bool number_possible() const;
  bool number_in_bounds() const;
  // multipleOf: the step values are multiples of, in units of its decimals (integers:
  // JsonSchema::integer_step).
  uint64_t step_units() const;
  // The node of an array's index-th item (tuples give the first ones their own).
  static int item_node(const JsonSchema::Node& n, uint64_t index) {
    return index < n.prefix_items.size() ? n.prefix_items[static_cast<size_t>(index)] : n.items;
  }
  // The array frame of unique enum items whose item is the enum value being read, or null.
  Frame* unique_items_frame();
  // Whether an enum value may still go on to trie node `next` (one not yet taken below it).
  bool enum_open(int next);
  // Whether an object may take one more declared (or extra) key.
  bool may_add_key(const Frame& f) const;
  static bool space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

  const JsonSchema* schema_;
  Mode mode_ = Mode::Value;
  Num num_ = Num::Int;
  bool integer_ = false;  // the number may have no fraction or exponent
  uint8_t hex_left_ = 0;
  uint8_t utf8_left_ = 0;                    // continuation bytes still due in a string
  uint8_t utf8_lo_ = 0x80, utf8_hi_ = 0xbf;  // the range of the next one
  uint8_t spaces_ = 0;
  uint32_t str_len_ = 0, str_min_ = 0, str_max_ = UINT32_MAX;  // the string's characters
  StringFormat fmt_ = StringFormat::None;  // a string value's format (json_formats.h)
  uint8_t fmt_state_ = 0, fmt_prev_ = 0;
  int32_t pat_ = -1, pat_state_ = 0;  // a string value's pattern, and its automaton's state
  const char* lit_ = nullptr;
  int32_t value_node_;
  int32_t enum_trie_ = -1, enum_pos_ = 0;
  // A number with bounds (its node, else null): its sign, and its digits' value so far;
  // with multipleOf, the digits as an integer modulo the step (those past the step's
  // decimals, zeros, not counted) and the decimals written.
  const JsonSchema::Node* bounds_ = nullptr;
  bool neg_ = false;
  long double int_part_ = 0, frac_part_ = 0, frac_scale_ = 1;
  uint64_t digits_mod_ = 0;
  int decimals_ = 0;
  int depth_ = 0;
  std::array<Frame, kMaxDepth> stack_{};
  std::vector<JsonGrammar>* forks_ = nullptr;
};

// A reply under a schema: the JsonGrammar states of every anyOf alternative it may still
// follow (one, unless alternatives share a type, as unions of objects do).
class JsonReply {
 public:
  static constexpr size_t kMaxStates = 64;  // more open alternatives are dropped

  explicit JsonReply(const JsonSchema& schema) : states_{JsonGrammar(schema)} {}
  // Takes one byte; false (nothing left to follow) if no state takes it.
  bool feed(uint8_t c);
  bool feed(const std::string& bytes);
  // The object is closed (every state left took the same bytes, so all are).
  bool done() const { return !states_.empty() && states_[0].done(); }
  const std::vector<JsonGrammar>& states() const { return states_; }

 private:
  std::vector<JsonGrammar> states_;
};

// The bytes of every token (Tokenizer::token_bytes), for masks.
class JsonTokenMask {
 public:
  explicit JsonTokenMask(std::vector<std::string> token_bytes);
  // Sets the logits of tokens that cannot follow `state` (or any state of `reply`) to -inf;
  // false when none can.
  bool apply(const JsonGrammar& state, float* logits, int n_vocab) const;
  bool apply(const JsonReply& reply, float* logits, int n_vocab) const;
  const std::string& bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }
  int size() const { return static_cast<int>(bytes_.size()); }

 private:
  // Sets allowed[id] for the tokens that can follow state.
  void mark_allowed(const JsonGrammar& state, std::vector<char>& allowed) const;

  std::vector<std::string> bytes_;
  // Per token, packed for the scan over the vocabulary: its first two bytes, its length
  // (capped at 255), and whether it is plain string characters only (taken whole inside
  // a string value, where most of a reply's tokens go: those skip the recognizer there).
  std::vector<uint16_t> lead_;
  std::vector<uint8_t> length_;
  std::vector<uint8_t> plain_;
};

}  // namespace llm
