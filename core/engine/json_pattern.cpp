#include "core/engine/json_pattern.h"

#include <algorithm>
#include <bitset>
#include <cctype>
#include <map>

#include "core/error.h"

namespace llm {

namespace {

using ByteSet = std::bitset<256>;

// A pattern as error messages quote it: long ones cut.
std::string quoted(const std::string& pattern) {
  return pattern.size() <= 80 ? pattern : pattern.substr(0, 77) + "...";
}

// Bytes a JSON string's raw text may hold (a pattern's string is written without escapes,
// so '"', '\' and control characters cannot appear in it).
ByteSet text_bytes() {
  ByteSet s;
  for (int c = 0x20; c < 256; c++) s.set(static_cast<size_t>(c));
  s.reset('"');
  s.reset('\\');
  s.reset(0x7f);
  return s;
}

// A set of characters: ASCII ones, any non-ASCII character, or listed UTF-8 sequences.
struct CharSet {
  std::bitset<128> ascii;
  bool non_ascii = false;
  std::vector<std::string> sequences;
};

// The pattern's syntax tree.
struct Re {
  enum Kind { Chars, Seq, Alt, Repeat } kind = Seq;
  CharSet chars;
  std::vector<Re> kids;
  int min = 0, max = -1;  // Repeat: -1 unbounded
};

class Parser {
 public:
  // p: the pattern without its anchors; whole and offset for messages.
  Parser(const std::string& p, const std::string& whole, size_t offset)
      : p_(p), whole_(whole), offset_(offset) {}

  Re parse() {
    Re r = alternation();
    if (i_ < p_.size()) bad(p_[i_] == ')' ? "an unmatched ')'" : "a misplaced character");
    return r;
  }

 private:
  [[noreturn]] void bad(const char* what) const {
    fail("pattern '%s': %s at offset %zu is not supported", quoted(whole_).c_str(), what,
         i_ + offset_);
  }
  bool more() const { return i_ < p_.size(); }
  char peek() const { return p_[i_]; }

  Re alternation() {
    Re alt;
    alt.kind = Re::Alt;
    alt.kids.push_back(sequence());
    while (more() && peek() == '|') {
      i_++;
      alt.kids.push_back(sequence());
    }
    return alt.kids.size() == 1 ? std::move(alt.kids[0]) : alt;
  }

  Re sequence() {
    Re seq;
    seq.kind = Re::Seq;
    while (more() && peek() != '|' && peek() != ')') seq.kids.push_back(quantified(atom()));
    return seq;
  }

  int number() {
    if (!more() || !std::isdigit(static_cast<unsigned char>(peek()))) bad("a bad repetition");
    int n = 0;
    while (more() && std::isdigit(static_cast<unsigned char>(peek()))) {
      n = n * 10 + (p_[i_++] - '0');
      if (n > 1000) bad("a repetition count over 1000");
    }
    return n;
  }

  Re quantified(Re atom) {
    while (more()) {
      int lo = 0, hi = -1;
      const char c = peek();
      if (c == '*') {
        i_++;
      } else if (c == '+') {
        lo = 1;
        i_++;
      } else if (c == '?') {
        hi = 1;
        i_++;
      } else if (c == '{') {
        i_++;
        lo = hi = number();
        if (more() && peek() == ',') {
          i_++;
          hi = more() && peek() == '}' ? -1 : number();
        }
        if (!more() || peek() != '}') bad("a bad repetition");
        i_++;
        if (hi >= 0 && hi < lo) bad("a repetition {n,m} with m < n");
      } else {
        break;
      }
      if (more() && peek() == '?') i_++;  // lazy: the same strings
      Re r;
      r.kind = Re::Repeat;
      r.min = lo;
      r.max = hi;
      r.kids.push_back(std::move(atom));
      atom = std::move(r);
    }
    return atom;
  }

  static Re chars(CharSet s) {
    Re r;
    r.kind = Re::Chars;
    r.chars = std::move(s);
    return r;
  }

  // One UTF-8 character of the pattern's text, as its bytes.
  std::string utf8_char() {
    std::string s(1, p_[i_++]);
    while (more() && (static_cast<uint8_t>(peek()) & 0xc0) == 0x80) s += p_[i_++];
    return s;
  }

  static std::string utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xc0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      s += static_cast<char>(0xe0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    }
    return s;
  }

  uint32_t hex_digits(int n) {
    uint32_t v = 0;
    for (int k = 0; k < n; k++) {
      if (!more() || !std::isxdigit(static_cast<unsigned char>(peek()))) bad("a bad \\x or \\u");
      const char c = p_[i_++];
      v = v * 16 +
          static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(c))
                                    ? c - '0'
                                    : std::tolower(static_cast<unsigned char>(c)) - 'a' + 10);
    }
    return v;
  }

  static CharSet named_class(char c) {
    CharSet s;
    const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (int b = 0; b < 128; b++) {
      const bool in = lower == 'd'   ? std::isdigit(b)
                      : lower == 'w' ? std::isalnum(b) || b == '_'
                                     : b == ' ' || (b >= '\t' && b <= '\r');
      s.ascii[static_cast<size_t>(b)] = in;
    }
    if (c != lower) {  // \D \W \S
      s.ascii.flip();
      s.non_ascii = true;
    }
    return s;
  }

  // After '\': a class escape (\d ...) into set, or the escaped character's bytes.
  bool escape(CharSet* set, std::string* literal, bool in_class) {
    if (!more()) bad("a trailing '\\'");
    const char c = p_[i_++];
    switch (c) {
      case 'd':
      case 'D':
      case 'w':
      case 'W':
      case 's':
      case 'S':
        *set = named_class(c);
        return true;
      case 't':
        *literal = "\t";
        return false;
      case 'n':
        *literal = "\n";
        return false;
      case 'r':
        *literal = "\r";
        return false;
      case 'f':
        *literal = "\f";
        return false;
      case 'v':
        *literal = "\v";
        return false;
      case '0':
        *literal = std::string(1, '\0');
        return false;
      case 'x':
        *literal = utf8(hex_digits(2));
        return false;
      case 'u':
        *literal = utf8(hex_digits(4));
        return false;
      case 'b':
        if (in_class) {
          *literal = "\b";
          return false;
        }
        bad("a word boundary \\b");
      default:
        if (std::isalnum(static_cast<unsigned char>(c)))
          bad("a backreference, \\B, \\p, \\k or another letter escape");
        i_--;
        *literal = utf8_char();
        return false;
    }
  }

  static CharSet one(const std::string& bytes) {
    CharSet s;
    if (bytes.size() == 1 && static_cast<uint8_t>(bytes[0]) < 0x80)
      s.ascii.set(static_cast<uint8_t>(bytes[0]));
    else
      s.sequences.push_back(bytes);
    return s;
  }

  Re char_class() {
    CharSet s;
    const bool negated = more() && peek() == '^';
    if (negated) i_++;
    bool first = true;
    while (more() && (peek() != ']' || first)) {
      first = false;
      CharSet item;
      std::string lo;
      if (peek() == '\\') {
        i_++;
        if (escape(&item, &lo, true)) {
          s.ascii |= item.ascii;
          s.non_ascii |= item.non_ascii;
          continue;
        }
      } else {
        lo = utf8_char();
      }
      if (more() && peek() == '-' && i_ + 1 < p_.size() && p_[i_ + 1] != ']') {
        i_++;
        std::string hi;
        if (peek() == '\\') {
          i_++;
          if (escape(&item, &hi, true)) bad("a class escape as a range's end");
        } else {
          hi = utf8_char();
        }
        if (lo.size() != 1 || hi.size() != 1 || static_cast<uint8_t>(lo[0]) >= 0x80 ||
            static_cast<uint8_t>(hi[0]) >= 0x80)
          bad("a range over non-ASCII characters");
        if (hi[0] < lo[0]) bad("a range out of order");
        for (int b = lo[0]; b <= hi[0]; b++) s.ascii.set(static_cast<size_t>(b));
        continue;
      }
      const CharSet c = one(lo);
      s.ascii |= c.ascii;
      s.sequences.insert(s.sequences.end(), c.sequences.begin(), c.sequences.end());
    }
    if (!more()) bad("an unterminated '['");
    i_++;  // ']'
    if (negated) {
      if (!s.sequences.empty()) bad("a negated class with non-ASCII characters");
      s.ascii.flip();
      s.non_ascii = !s.non_ascii;
    }
    return chars(std::move(s));
  }

  Re atom() {
    const char c = peek();
    switch (c) {
      case '(': {
        i_++;
        if (more() && peek() == '?') {
          if (i_ + 1 < p_.size() && p_[i_ + 1] == ':')
            i_ += 2;
          else
            bad("a lookaround or named group");
        }
        if (++depth_ > kMaxDepth) bad("groups nested more than 32 deep");
        Re inner = alternation();
        depth_--;
        if (!more() || peek() != ')') bad("an unterminated '('");
        i_++;
        return inner;
      }
      case '[':
        i_++;
        return char_class();
      case '.': {
        i_++;
        CharSet s;
        s.ascii.set();
        s.ascii.reset('\n');
        s.ascii.reset('\r');
        s.non_ascii = true;
        return chars(std::move(s));
      }
      case '\\': {
        i_++;
        CharSet s;
        std::string lit;
        if (escape(&s, &lit, false)) return chars(std::move(s));
        return chars(one(lit));
      }
      case '*':
      case '+':
      case '?':
      case '{':
        bad("a repetition of nothing");
      case '^':
      case '$':
        bad("an anchor inside the pattern (only at its ends)");
      default:
        return chars(one(utf8_char()));
    }
  }

  static constexpr int kMaxDepth = 32;
  const std::string& p_;
  const std::string& whole_;
  size_t offset_;
  size_t i_ = 0;
  int depth_ = 0;
};

// Thompson's construction over bytes: each state has at most one byte-set edge.
class Nfa {
 public:
  struct State {
    ByteSet on;
    int to = -1;
    std::vector<int> eps;
  };
  struct Frag {
    int start, end;
  };
  static constexpr size_t kMaxNfaStates = 50000;

  int add() {
    if (states.size() >= kMaxNfaStates) fail("pattern: too large (its repetitions expand too far)");
    states.emplace_back();
    return static_cast<int>(states.size()) - 1;
  }
  Frag bytes(const ByteSet& set) {
    const int a = add(), b = add();
    states[static_cast<size_t>(a)].on = set & allowed_;
    states[static_cast<size_t>(a)].to = b;
    return {a, b};
  }
  Frag empty() {
    const int a = add();
    return {a, a};
  }
  Frag concat(Frag f, Frag g) {
    states[static_cast<size_t>(f.end)].eps.push_back(g.start);
    return {f.start, g.end};
  }
  Frag alternative(const std::vector<Frag>& fs) {
    const int a = add(), b = add();
    for (const Frag& f : fs) {
      states[static_cast<size_t>(a)].eps.push_back(f.start);
      states[static_cast<size_t>(f.end)].eps.push_back(b);
    }
    return {a, b};
  }
  Frag star(Frag f) {
    const int a = add(), b = add();
    states[static_cast<size_t>(a)].eps = {f.start, b};
    states[static_cast<size_t>(f.end)].eps.push_back(f.start);
    states[static_cast<size_t>(f.end)].eps.push_back(b);
    return {a, b};
  }
  Frag optional(Frag f) {
    const int a = add(), b = add();
    states[static_cast<size_t>(a)].eps = {f.start, b};
    states[static_cast<size_t>(f.end)].eps.push_back(b);
    return {a, b};
  }
  Frag sequence_of(const std::string& s) {
    Frag f = empty();
    for (char c : s) {
      ByteSet one;
      one.set(static_cast<uint8_t>(c));
      f = concat(f, bytes(one));
    }
    return f;
  }
  // Any non-ASCII UTF-8 character: a lead byte and its continuation bytes (the string's
  // own checks refuse the invalid ones).
  Frag non_ascii() {
    ByteSet cont;
    for (int c = 0x80; c < 0xc0; c++) cont.set(static_cast<size_t>(c));
    std::vector<Frag> alts;
    const int leads[3][2] = {{0xc2, 0xdf}, {0xe0, 0xef}, {0xf0, 0xf4}};
    for (int n = 0; n < 3; n++) {
      ByteSet lead;
      for (int c = leads[n][0]; c <= leads[n][1]; c++) lead.set(static_cast<size_t>(c));
      Frag f = bytes(lead);
      for (int k = 0; k <= n; k++) f = concat(f, bytes(cont));
      alts.push_back(f);
    }
    return alternative(alts);
  }
  Frag charset(const CharSet& s) {
    std::vector<Frag> alts;
    ByteSet ascii;
    for (size_t b = 0; b < 128; b++) ascii[b] = s.ascii[b];
    if ((ascii & allowed_).any()) alts.push_back(bytes(ascii));
    if (s.non_ascii) alts.push_back(non_ascii());
    for (const std::string& seq : s.sequences) alts.push_back(sequence_of(seq));
    if (alts.empty()) return bytes(ByteSet{});  // matches nothing
    return alts.size() == 1 ? alts[0] : alternative(alts);
  }
  Frag build(const Re& r) {
    switch (r.kind) {
      case Re::Chars:
        return charset(r.chars);
      case Re::Seq: {
        Frag f = empty();
        for (const Re& k : r.kids) f = concat(f, build(k));
        return f;
      }
      case Re::Alt: {
        std::vector<Frag> fs;
        for (const Re& k : r.kids) fs.push_back(build(k));
        return alternative(fs);
      }
      case Re::Repeat: {
        Frag f = empty();
        for (int k = 0; k < r.min; k++) f = concat(f, build(r.kids[0]));
        if (r.max < 0) return concat(f, star(build(r.kids[0])));
        // x(x(x)?)?)? rather than x?x?x?: a skip goes straight to the end, so the
        // closures stay small.
        Frag tail = empty();
        for (int k = r.min; k < r.max; k++) tail = optional(concat(build(r.kids[0]), tail));
        return concat(f, tail);
      }
    }
    return empty();
  }
  Frag any_text() {
    CharSet all;
    all.ascii.set();
    all.non_ascii = true;
    return star(charset(all));
  }

  std::vector<State> states;

 private:
  ByteSet allowed_ = text_bytes();
};

}  // namespace

PatternDfa PatternDfa::compile(const std::string& pattern) {
  std::string body = pattern;
  const bool from_start = !body.empty() && body[0] == '^';
  if (from_start) body.erase(0, 1);
  size_t slashes = 0;  // a final '$' is an anchor unless escaped
  while (body.size() >= 2 + slashes && body[body.size() - 2 - slashes] == '\\') slashes++;
  const bool to_end = !body.empty() && body.back() == '$' && slashes % 2 == 0;
  if (to_end) body.pop_back();
  const Re re = Parser(body, pattern, from_start ? 1 : 0).parse();

  Nfa nfa;
  Nfa::Frag f = nfa.build(re);
  if (!from_start) f = nfa.concat(nfa.any_text(), f);  // a match anywhere in the string
  if (!to_end) f = nfa.concat(f, nfa.any_text());
  const int final_state = f.end;

  // Bytes that no byte set tells apart share their transitions.
  std::vector<int> byte_class(256, 0);
  int n_classes = 1;
  {
    std::vector<ByteSet> seen;
    for (const auto& s : nfa.states) {
      if (s.to < 0 || std::find(seen.begin(), seen.end(), s.on) != seen.end()) continue;
      seen.push_back(s.on);
      std::map<std::pair<int, bool>, int> split;
      for (size_t c = 0; c < 256; c++)
        byte_class[c] =
            split.emplace(std::make_pair(byte_class[c], s.on[c]), static_cast<int>(split.size()))
                .first->second;
      n_classes = static_cast<int>(split.size());
    }
  }
  std::vector<int> representative(static_cast<size_t>(n_classes), -1);
  for (int c = 255; c >= 0; c--) representative[static_cast<size_t>(byte_class[c])] = c;

  // The subset construction's work is bounded, so that no pattern stalls a request.
  constexpr size_t kMaxWork = size_t{1} << 25;
  size_t work = 0;
  auto spend = [&](size_t n) {
    work += n;
    if (work > kMaxWork)
      fail("pattern '%s' is too complex to compile; simplify it", quoted(pattern).c_str());
  };
  std::vector<uint32_t> mark(nfa.states.size(), 0);  // == stamp: in the set being closed
  uint32_t stamp = 0;
  auto closure = [&](std::vector<int> set) {
    stamp++;
    std::vector<int> stack = set;
    for (int s : set) mark[static_cast<size_t>(s)] = stamp;
    while (!stack.empty()) {
      const int s = stack.back();
      stack.pop_back();
      for (int e : nfa.states[static_cast<size_t>(s)].eps)
        if (mark[static_cast<size_t>(e)] != stamp) {
          mark[static_cast<size_t>(e)] = stamp;
          set.push_back(e);
          stack.push_back(e);
        }
    }
    spend(set.size());
    std::sort(set.begin(), set.end());
    return set;
  };

  PatternDfa dfa;
  dfa.n_classes_ = static_cast<size_t>(n_classes);
  for (size_t c = 0; c < 256; c++) dfa.byte_class_[c] = static_cast<uint16_t>(byte_class[c]);
  std::map<std::vector<int>, int> ids;
  std::vector<std::vector<int>> sets = {closure({f.start})};
  ids[sets[0]] = 0;
  for (size_t d = 0; d < sets.size(); d++) {
    const std::vector<int> cur = sets[d];
    for (int k = 0; k < n_classes; k++) {
      const size_t c = static_cast<size_t>(representative[static_cast<size_t>(k)]);
      spend(cur.size());
      std::vector<int> next;
      for (int s : cur)
        if (nfa.states[static_cast<size_t>(s)].to >= 0 && nfa.states[static_cast<size_t>(s)].on[c])
          next.push_back(nfa.states[static_cast<size_t>(s)].to);
      int target = -1;
      if (!next.empty()) {
        next = closure(std::move(next));
        auto it = ids.find(next);
        if (it == ids.end()) {
          if (static_cast<int>(sets.size()) >= kMaxStates)
            fail("pattern '%s': more than %d automaton states; simplify it",
                 quoted(pattern).c_str(), kMaxStates);
          it = ids.emplace(next, static_cast<int>(sets.size())).first;
          sets.push_back(next);
        }
        target = it->second;
      }
      dfa.trans_.push_back(static_cast<int16_t>(target));
    }
    dfa.accept_.push_back(std::binary_search(cur.begin(), cur.end(), final_state) ? 1 : 0);
  }
  // States from which no accepting one is reachable are dead ends: cut the edges into
  // them, so a reply never enters a string it cannot finish.
  const size_t n = dfa.accept_.size(), nc = dfa.n_classes_;
  std::vector<char> live(dfa.accept_.begin(), dfa.accept_.end());
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t d = 0; d < n; d++) {
      if (live[d]) continue;
      for (size_t k = 0; k < nc; k++) {
        const int16_t t = dfa.trans_[d * nc + k];
        if (t >= 0 && live[static_cast<size_t>(t)]) {
          live[d] = 1;
          changed = true;
          break;
        }
      }
    }
  }
  if (!live[0])
    fail("pattern '%s' matches no string that can be written without escapes",
         quoted(pattern).c_str());
  for (int16_t& t : dfa.trans_)
    if (t >= 0 && !live[static_cast<size_t>(t)]) t = -1;
  return dfa;
}

}  // namespace llm
