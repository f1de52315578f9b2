#include "core/engine/json_grammar.h"

#include <algorithm>
#include <cmath>
#include <optional>

namespace llm {

JsonGrammar::JsonGrammar(const JsonSchema& schema) : schema_(&schema), value_node_(schema.root()) {}

bool JsonGrammar::feed(const std::string& bytes) {
  for (char c : bytes)
    if (!feed(static_cast<uint8_t>(c))) return false;
  return true;
}

void JsonGrammar::assign(const JsonGrammar& o) {
  schema_ = o.schema_;
  mode_ = o.mode_;
  num_ = o.num_;
  integer_ = o.integer_;
  hex_left_ = o.hex_left_;
  utf8_left_ = o.utf8_left_;
  utf8_lo_ = o.utf8_lo_;
  utf8_hi_ = o.utf8_hi_;
  spaces_ = o.spaces_;
  str_len_ = o.str_len_;
  str_min_ = o.str_min_;
  str_max_ = o.str_max_;
  fmt_ = o.fmt_;
  fmt_state_ = o.fmt_state_;
  fmt_prev_ = o.fmt_prev_;
  pat_ = o.pat_;
  pat_state_ = o.pat_state_;
  lit_ = o.lit_;
  value_node_ = o.value_node_;
  enum_trie_ = o.enum_trie_;
  enum_pos_ = o.enum_pos_;
  bounds_ = o.bounds_;
  neg_ = o.neg_;
  int_part_ = o.int_part_;
  frac_part_ = o.frac_part_;
  frac_scale_ = o.frac_scale_;
  digits_mod_ = o.digits_mod_;
  decimals_ = o.decimals_;
  depth_ = o.depth_;
  std::copy(o.stack_.begin(), o.stack_.begin() + o.depth_, stack_.begin());
}

bool JsonGrammar::in_plain_string() const {
  return mode_ == Mode::String && utf8_left_ == 0 && str_max_ == UINT32_MAX &&
         fmt_ == StringFormat::None && pat_ < 0 &&
         !(depth_ > 0 && stack_[depth_ - 1].phase == Phase::InKey);
}

bool JsonGrammar::may_add_key(const Frame& f) const {
  const JsonSchema::Node& n = schema_->node(f.node);
  if (f.count >= n.max_props) return false;
  if (n.extra_keys) return true;
  return n.key_trie >= 0 && (schema_->trie(n.key_trie).nodes[0].below & ~f.seen) != 0;
}

JsonGrammar::Frame* JsonGrammar::unique_items_frame() {
  if (depth_ == 0) return nullptr;
  Frame& f = stack_[depth_ - 1];
  if (f.object) return nullptr;
  const JsonSchema::Node& n = schema_->node(f.node);
  return n.unique_enum && schema_->node(n.items).enum_trie == enum_trie_ ? &f : nullptr;
}

bool JsonGrammar::enum_open(int next) {
  const Frame* f = unique_items_frame();
  return !f || (schema_->trie(enum_trie_).nodes[static_cast<size_t>(next)].below & ~f->taken) != 0;
}

bool JsonGrammar::start_value(uint8_t c) {
  int n = value_node_;
  uint8_t type = 0;
  // anyOf: the alternative of the byte's type (a few hops at most).
  for (int hop = 0; hop < 8; hop++) {
    const JsonSchema::Node& nd = schema_->node(n);
    if (nd.enum_trie >= 0) {
      const int next = schema_->trie(nd.enum_trie).child(0, c);
      if (next < 0) return false;
      mode_ = Mode::Enum;
      enum_trie_ = nd.enum_trie;
      if (!enum_open(next)) return false;
      enum_pos_ = next;
      return true;
    }
    if (c == '{')
      type = JsonSchema::kObject;
    else if (c == '[')
      type = JsonSchema::kArray;
    else if (c == '"')
      type = JsonSchema::kString;
    else if (c == '-' || (c >= '0' && c <= '9'))
      type = (nd.types & JsonSchema::kNumber) ? JsonSchema::kNumber : JsonSchema::kInteger;
    else if (c == 't' || c == 'f')
      type = JsonSchema::kBool;
    else if (c == 'n')
      type = JsonSchema::kNull;
    else
      return false;
    if (!(nd.types & type)) return false;
    if (nd.alternatives.empty()) break;
    // anyOf: the alternatives of the byte's type (numbers: integer or number).
    const uint8_t wanted = type & (JsonSchema::kInteger | JsonSchema::kNumber)
                               ? JsonSchema::kInteger | JsonSchema::kNumber
                               : type;
    int only = -1, count = 0;
    for (int a : nd.alternatives)
      if (schema_->node(a).types & wanted) {
        only = a;
        count++;
      }
    if (count == 0) return false;
    if (count > 1) return fork(nd.alternatives, wanted, c);
    n = only;
  }
  spaces_ = 0;
  switch (c) {
    case '{':
    case '[':
      if (depth_ == kMaxDepth) return false;
      stack_[depth_++] = Frame{
          0, n, -1, JsonSchema::kAny, c == '{', c == '{' ? Phase::KeyFirst : Phase::First, 0, 0};
      mode_ = Mode::Between;
      return true;
    case '"':
      mode_ = Mode::String;
      str_len_ = 0;
      str_min_ = schema_->node(n).min_length;
      str_max_ = schema_->node(n).max_length;
      fmt_ = schema_->node(n).format;
      fmt_state_ = fmt_prev_ = 0;
      pat_ = schema_->node(n).pattern;
      pat_state_ = PatternDfa::kStart;
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
    default:
      integer_ = type == JsonSchema::kInteger;
      num_ = c == '-' ? Num::Minus : c == '0' ? Num::Zero : Num::Int;
      mode_ = Mode::Number;
      bounds_ = schema_->node(n).bounded ? &schema_->node(n) : nullptr;
      neg_ = c == '-';
      int_part_ = c == '-' ? 0 : c - '0';
      frac_part_ = 0;
      frac_scale_ = 1;
      decimals_ = 0;
      digits_mod_ = bounds_ && bounds_->step ? static_cast<uint64_t>(int_part_) % step_units() : 0;
      return !bounds_ || number_possible();
  }
}

bool JsonGrammar::fork(const std::vector<int>& alternatives, uint8_t wanted, uint8_t c) {
  // This state goes on under the first alternative that takes c; each other one that
  // takes it goes to forks_ (without a sink it is dropped: JsonReply keeps them).
  std::optional<JsonGrammar> first;
  for (int a : alternatives) {
    if (!(schema_->node(a).types & wanted)) continue;
    JsonGrammar g = *this;
    g.value_node_ = a;
    if (!g.start_value(c)) continue;
    if (!first)
      first = std::move(g);
    else if (forks_)
      forks_->push_back(std::move(g));
  }
  if (!first) return false;
  *this = std::move(*first);
  return true;
}

// A value just ended: its container goes on (or the reply is complete).
bool JsonGrammar::end_value() {
  spaces_ = 0;
  if (depth_ == 0) {
    mode_ = Mode::Done;
    return true;
  }
  mode_ = Mode::Between;
  stack_[depth_ - 1].phase = Phase::AfterValue;
  return true;
}

// A byte of a key string (escapes and the closing quote included), walked through the
// object's declared keys while it can still become one not given yet.
bool JsonGrammar::key_byte(uint8_t c) {
  Frame& f = stack_[depth_ - 1];
  const JsonSchema::Node& n = schema_->node(f.node);
  if (f.key_pos >= 0) {
    const JsonSchema::Trie& t = schema_->trie(n.key_trie);
    const int next = t.child(f.key_pos, c);
    f.key_pos = next >= 0 && (t.nodes[static_cast<size_t>(next)].below & ~f.seen) != 0 ? next : -1;
  }
  return f.key_pos >= 0 || n.extra_keys;
}

bool JsonGrammar::string_byte(uint8_t c) {
  // A value with a pattern (keys have none): every byte of its text goes through the
  // pattern's automaton; it is written without escapes.
  const bool in_key = depth_ > 0 && stack_[depth_ - 1].phase == Phase::InKey;
  if (pat_ >= 0 && !in_key && c != '"') {
    if (c == '\\') return false;
    pat_state_ = schema_->pattern(pat_).next(pat_state_, c);
    if (pat_state_ < 0) return false;
  }
  if (utf8_left_ > 0) {
    if (c < utf8_lo_ || c > utf8_hi_) return false;
    utf8_left_--;
    utf8_lo_ = 0x80;
    utf8_hi_ = 0xbf;
    return true;
  }
  if (c == '"') {
    if (depth_ > 0 && stack_[depth_ - 1].phase == Phase::InKey) {
      // The key is done: a declared one (the trie took the quote too) or an extra one.
      Frame& f = stack_[depth_ - 1];
      const JsonSchema::Node& n = schema_->node(f.node);
      const int k = f.key_pos >= 0
                        ? schema_->trie(n.key_trie).nodes[static_cast<size_t>(f.key_pos)].value
                        : -1;
      if (k >= 0) {
        f.seen |= uint64_t{1} << k;
        f.key_value = n.key_values[static_cast<size_t>(k)];
      } else if (n.extra_keys) {
        f.key_value = n.extra_value;
      } else {
        return false;
      }
      f.count++;
      f.phase = Phase::Colon;
      mode_ = Mode::Between;
      spaces_ = 0;
      return true;
    }
    return str_len_ >= str_min_ && format_complete(fmt_, fmt_state_) &&
           (pat_ < 0 || schema_->pattern(pat_).accepting(pat_state_)) && end_value();
  }
  if (c < 0x20 || c == 0x7f) return false;
  // A formatted value (keys have none) is plain ASCII, no escapes.
  if (fmt_ != StringFormat::None && !in_key && !format_step(fmt_, fmt_state_, fmt_prev_, c))
    return false;
  // A character begins here (an escape counts as one).
  if (++str_len_ > str_max_) return false;
  if (c == '\\') {
    mode_ = Mode::Escape;
    return true;
  }
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
}

bool JsonGrammar::number_byte(uint8_t c) {
  const bool digit = c >= '0' && c <= '9';
  const bool exp = (c == 'e' || c == 'E') && !integer_ && !bounds_;
  bool took = false;
  switch (num_) {
    case Num::Minus:
      if (!digit) return false;
      num_ = c == '0' ? Num::Zero : Num::Int;
      took = true;
      break;
    case Num::Zero:
    case Num::Int:
      if (digit && num_ == Num::Int) {
        took = true;
      } else if (c == '.' && !integer_) {
        num_ = Num::Dot;
        took = true;
      } else if (exp) {
        num_ = Num::Exp;
        took = true;
      }
      break;
    case Num::Dot:
      if (!digit) return false;
      num_ = Num::Frac;
      took = true;
      break;
    case Num::Frac:
      if (digit) {
        took = true;
      } else if (exp) {
        num_ = Num::Exp;
        took = true;
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
  if (took) {
    if (!bounds_) return true;
    const uint64_t step = bounds_->step ? step_units() : 0;
    if (digit && num_ == Num::Frac) {
      // With multipleOf, decimals past the step's are zeros (they change nothing).
      if (step && decimals_ >= bounds_->step_decimals && c != '0') return false;
      if (step && decimals_ < bounds_->step_decimals)
        digits_mod_ = (digits_mod_ * 10 + static_cast<uint64_t>(c - '0')) % step;
      decimals_++;
      frac_scale_ /= 10;
      frac_part_ += (c - '0') * frac_scale_;
    } else if (digit) {
      if (step) digits_mod_ = (digits_mod_ * 10 + static_cast<uint64_t>(c - '0')) % step;
      int_part_ = int_part_ * 10 + (c - '0');
    }
    return number_possible();
  }
  // The number ended at a complete part; c belongs to what follows it.
  if (bounds_ && !number_in_bounds()) return false;
  end_value();
  return feed(c);
}

bool JsonGrammar::number_possible() const {
  const JsonSchema::Node& n = *bounds_;
  const long double inf = HUGE_VALL;
  // The magnitudes [a, b) that numbers starting so may take, as values.
  const long double step = JsonSchema::step_value(n, integer_);
  auto range = [&](long double a, long double b) {
    if (integer_)
      return neg_ ? JsonSchema::meets_integer(n, -(b - 1), -a, step)
                  : JsonSchema::meets_integer(n, a, b - 1, step);
    return neg_ ? JsonSchema::meets(n, -b, true, -a, false, step)
                : JsonSchema::meets(n, a, false, b, true, step);
  };
  switch (num_) {
    case Num::Minus:
      return range(0, inf);
    case Num::Zero:
      return range(0, 1);
    case Num::Dot:
      return range(int_part_, int_part_ + 1);
    case Num::Frac:
      return range(int_part_ + frac_part_, int_part_ + frac_part_ + frac_scale_);
    case Num::Int: {
      // More digits scale the range by 10 each: [m·10^j, (m+1)·10^j).
      const long double far = neg_ ? -static_cast<long double>(n.lo) : n.hi;
      if (std::isinf(far)) return true;  // unbounded on this side: enough digits get inside
      for (long double a = int_part_, b = int_part_ + 1; a <= far; a *= 10, b *= 10)
        if (range(a, b)) return true;
      return false;
    }
    default:
      return true;  // exponents are not taken with bounds
  }
}

bool JsonGrammar::number_in_bounds() const {
  const JsonSchema::Node& n = *bounds_;
  if (n.step) {
    // Exactly: the digits as an integer, scaled to the step's decimals, modulo the step.
    uint64_t r = digits_mod_;
    const uint64_t step = step_units();
    if (!integer_)
      for (int d = decimals_; d < n.step_decimals; d++) r = r * 10 % step;
    if (r != 0) return false;
  }
  // Compared as the double the text reads as (the bounds are doubles too).
  const long double mag = static_cast<double>(int_part_ + frac_part_);
  const long double v = neg_ ? -mag : mag;
  return integer_ ? JsonSchema::meets_integer(n, v, v, 0)
                  : JsonSchema::meets(n, v, false, v, false, 0);
}

uint64_t JsonGrammar::step_units() const {
  return integer_ ? JsonSchema::integer_step(*bounds_) : bounds_->step;
}

bool JsonGrammar::between(uint8_t c) {
  Frame& f = stack_[depth_ - 1];
  const JsonSchema::Node& n = schema_->node(f.node);
  auto close = [&]() {
    depth_--;
    return end_value();
  };
  switch (f.phase) {
    case Phase::KeyFirst:
      if (c == '}') return n.required == 0 && n.min_props == 0 && close();
      [[fallthrough]];
    case Phase::Key:
      if (c != '"' || (f.phase == Phase::KeyFirst && !may_add_key(f))) return false;
      f.phase = Phase::InKey;
      f.key_pos = n.key_trie >= 0 ? 0 : -1;
      mode_ = Mode::String;
      str_len_ = 0;
      str_min_ = 0;
      str_max_ = UINT32_MAX;
      return true;
    case Phase::Colon:
      if (c != ':') return false;
      value_node_ = f.key_value;
      mode_ = Mode::Value;
      return true;
    case Phase::First:
      if (c == ']') return n.min_items == 0 && close();
      if (n.max_items == 0) return false;
      f.seen = 1;
      value_node_ = item_node(n, 0);
      return start_value(c);
    case Phase::AfterValue:
      if (c == ',') {
        if (f.object) {
          if (!may_add_key(f)) return false;
          f.phase = Phase::Key;
        } else {
          if (f.seen >= n.max_items) return false;
          // Unique enum items: a value not yet taken must remain for the next one.
          if (n.unique_enum &&
              (schema_->trie(schema_->node(n.items).enum_trie).nodes[0].below & ~f.taken) == 0)
            return false;
          f.seen++;
          value_node_ = item_node(n, f.seen - 1);
          mode_ = Mode::Value;
        }
        return true;
      }
      if (f.object ? c == '}' : c == ']')
        return (f.object ? (n.required & ~f.seen) == 0 && f.count >= n.min_props
                         : f.seen >= n.min_items) &&
               close();
      return false;
    case Phase::InKey:
      break;
  }
  return false;
}

bool JsonGrammar::feed(uint8_t c) {
  const bool in_key = depth_ > 0 && stack_[depth_ - 1].phase == Phase::InKey;
  switch (mode_) {
    case Mode::Done:
      return false;
    case Mode::String:
      if (in_key && !key_byte(c)) return false;
      return string_byte(c);
    case Mode::Escape:
      if (in_key && !key_byte(c)) return false;
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
      if (in_key && !key_byte(c)) return false;
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
        return false;
      if (--hex_left_ == 0) mode_ = Mode::String;
      return true;
    case Mode::Literal:
      if (*lit_ != static_cast<char>(c)) return false;
      if (*++lit_ == '\0') return end_value();
      return true;
    case Mode::Number:
      return number_byte(c);
    case Mode::Enum: {
      const JsonSchema::Trie& t = schema_->trie(enum_trie_);
      const int next = t.child(enum_pos_, c);
      if (next >= 0) {
        if (!enum_open(next)) return false;
        enum_pos_ = next;
        return true;
      }
      const int value = t.nodes[static_cast<size_t>(enum_pos_)].value;
      if (value < 0) return false;
      if (Frame* f = unique_items_frame()) {
        const uint64_t bit = uint64_t{1} << value;
        if (f->taken & bit) return false;
        f->taken |= bit;
      }
      end_value();
      return feed(c);
    }
    case Mode::Value:
    case Mode::Between:
      break;
  }
  // Between tokens: whitespace (a few in a row), then what comes next.
  if (space(c)) {
    const int most = depth_ == 0 && mode_ == Mode::Value ? kMaxLeadingSpaces : kMaxSpaces;
    return ++spaces_ <= most;
  }
  spaces_ = 0;
  return mode_ == Mode::Value ? start_value(c) : between(c);
}

namespace {

// Whether bytes are plain string characters: no quote, backslash or control byte, and
// whole, valid UTF-8 sequences (what a string takes in any order and amount).
bool plain_string_bytes(const std::string& bytes) {
  if (bytes.empty()) return false;
  JsonGrammar g;
  // {"": then an open string value: a plain state to test the bytes in.
  if (!g.feed(std::string("{\"\":\"")) || !g.in_plain_string()) return false;
  for (char c : bytes) {
    const uint8_t u = static_cast<uint8_t>(c);
    if (u == '"' || u == '\\' || !g.feed(u)) return false;
  }
  return g.in_plain_string();
}

}  // namespace

JsonTokenMask::JsonTokenMask(std::vector<std::string> token_bytes)
    : bytes_(std::move(token_bytes)),
      lead_(bytes_.size(), 0),
      length_(bytes_.size(), 0),
      plain_(bytes_.size(), 0) {
  for (size_t i = 0; i < bytes_.size(); i++) {
    const std::string& b = bytes_[i];
    length_[i] = static_cast<uint8_t>(std::min<size_t>(b.size(), 255));
    if (!b.empty()) lead_[i] = static_cast<uint8_t>(b[0]);
    if (b.size() > 1) lead_[i] = static_cast<uint16_t>(lead_[i] | static_cast<uint8_t>(b[1]) << 8);
    plain_[i] = plain_string_bytes(b) ? 1 : 0;
  }
}

bool JsonReply::feed(uint8_t c) {
  std::vector<JsonGrammar> next, forks;
  for (JsonGrammar& g : states_) {
    forks.clear();
    g.set_fork_sink(&forks);
    const bool took = g.feed(c);
    g.set_fork_sink(nullptr);
    if (took) next.push_back(std::move(g));
    for (JsonGrammar& f : forks) {
      f.set_fork_sink(nullptr);
      next.push_back(std::move(f));
    }
  }
  if (next.size() > kMaxStates) next.resize(kMaxStates);
  states_ = std::move(next);
  return !states_.empty();
}

bool JsonReply::feed(const std::string& bytes) {
  for (char c : bytes)
    if (!feed(static_cast<uint8_t>(c))) return false;
  return true;
}

namespace {

// Whether state, or a state it forks into, takes bytes [p, p + n); g is scratch.
bool takes(const JsonGrammar& state, const uint8_t* p, size_t n, JsonGrammar& g) {
  g.assign(state);
  std::vector<JsonGrammar> forks;
  g.set_fork_sink(&forks);
  bool ok = true;
  for (size_t i = 0; i < n && ok; i++) {
    ok = g.feed(p[i]);
    if (forks.empty()) continue;
    const std::vector<JsonGrammar> fs = std::move(forks);
    forks.clear();
    for (const JsonGrammar& f : fs) {
      JsonGrammar h = f;
      if (takes(f, p + i + 1, n - i - 1, h)) {
        g.set_fork_sink(nullptr);
        return true;
      }
    }
  }
  g.set_fork_sink(nullptr);
  return ok;
}

bool takes(const JsonGrammar& state, const std::string& bytes, JsonGrammar& g) {
  return takes(state, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), g);
}

}  // namespace

namespace {

// -inf for the tokens not allowed; whether an allowed one can still be drawn.
bool mask_logits(const std::vector<char>& allowed, float* logits, int n_vocab) {
  bool any = false;
  for (int id = 0; id < n_vocab; id++) {
    if (allowed[static_cast<size_t>(id)])
      any = any || !std::isinf(logits[id]) || logits[id] > 0;
    else
      logits[id] = -INFINITY;
  }
  return any;
}

}  // namespace

bool JsonTokenMask::apply(const JsonGrammar& state, float* logits, int n_vocab) const {
  std::vector<char> allowed(static_cast<size_t>(std::max(n_vocab, 0)), 0);
  mark_allowed(state, allowed);
  return mask_logits(allowed, logits, n_vocab);
}

bool JsonTokenMask::apply(const JsonReply& reply, float* logits, int n_vocab) const {
  std::vector<char> allowed(static_cast<size_t>(std::max(n_vocab, 0)), 0);
  for (const JsonGrammar& state : reply.states()) mark_allowed(state, allowed);
  return mask_logits(allowed, logits, n_vocab);
}

void JsonTokenMask::mark_allowed(const JsonGrammar& state, std::vector<char>& allowed) const {
  // Which first bytes the state takes, and (outside plain string text, where most tokens
  // take the shortcut below) which second bytes after each: a token refused there needs
  // no closer look. Between a container's parts that is nearly all of them (most
  // tokens start with a space, which is taken, and then a letter, which is not).
  std::array<bool, 256> first_ok{};
  JsonGrammar next = state;
  for (int c = 0; c < 256; c++) {
    const uint8_t b = static_cast<uint8_t>(c);
    first_ok[static_cast<size_t>(c)] = takes(state, &b, 1, next);
  }
  const bool plain = state.in_plain_string();
  std::vector<uint8_t> second_ok;
  if (!plain) {
    second_ok.assign(256 * 256, 0);
    std::vector<JsonGrammar> after_first, forks;
    for (int a = 0; a < 256; a++) {
      if (!first_ok[static_cast<size_t>(a)]) continue;
      // The states after byte a (forks included), each tried with every second byte.
      JsonGrammar g = state;
      forks.clear();
      g.set_fork_sink(&forks);
      const bool took = g.feed(static_cast<uint8_t>(a));
      g.set_fork_sink(nullptr);
      after_first.clear();
      if (took) after_first.push_back(g);
      for (JsonGrammar& f : forks) {
        f.set_fork_sink(nullptr);
        after_first.push_back(f);
      }
      for (const JsonGrammar& s : after_first)
        for (int b = 0; b < 256; b++) {
          uint8_t& ok = second_ok[static_cast<size_t>(a * 256 + b)];
          const uint8_t bb = static_cast<uint8_t>(b);
          if (!ok) ok = takes(s, &bb, 1, next) ? 1 : 0;
        }
    }
  }
  const int n_vocab = static_cast<int>(allowed.size());
  for (int id = 0; id < n_vocab; id++) {
    const size_t i = static_cast<size_t>(id);
    if (allowed[i]) continue;
    const int len = id < size() ? length_[i] : 0;
    const unsigned lead = id < size() ? lead_[i] : 0;
    bool ok = len > 0 && first_ok[lead & 0xff];
    if (ok && !plain && len >= 2) ok = second_ok[(lead & 0xff) * 256 + (lead >> 8)] != 0;
    if (ok && len > 1 && !(plain && plain_[i])) ok = takes(state, bytes_[i], next);
    if (ok) allowed[i] = 1;
  }
}

}  // namespace llm
