#include "core/chat/jinja_lexer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "core/chat/jinja_strings.h"
#include "core/error.h"

namespace llm::jinja {

namespace {

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) {
    // Jinja normalizes newlines and drops one trailing newline before lexing.
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') newlines_.push_back(i);
    }
  }

  std::vector<Token> run() {
    const size_t n = src_.size();
    while (pos_ < n) {
      size_t p = find_tag(pos_);
      if (p == std::string::npos) {
        emit_text(src_.substr(pos_), pos_);
        break;
      }
      char kind = src_[p + 1];
      size_t q = p + 2;
      char mark = q < n && (src_[q] == '-' || src_[q] == '+') ? src_[q] : 0;
      if (mark) ++q;
      std::string text = src_.substr(pos_, p - pos_);
      strip_before_tag(text, mark, kind != '{');
      emit_text(text, pos_);

      size_t raw_body = 0;
      if (kind == '%' && match_raw_begin(q, &raw_body)) {
        lex_raw(raw_body, p);
      } else if (kind == '#') {
        lex_comment(q, p);
      } else {
        lex_tag(q, p, kind == '%');
      }
    }
    Token eof;
    eof.type = TokenType::kEof;
    eof.line = line_at(n);
    out_.push_back(eof);
    return std::move(out_);
  }

 private:
  [[noreturn]] void error(size_t offset, const std::string& msg) {
    throw llm::Error("template line " + std::to_string(line_at(offset)) + ": " + msg);
  }

  int line_at(size_t offset) const {
    return 1 + static_cast<int>(std::lower_bound(newlines_.begin(), newlines_.end(), offset) -
                                newlines_.begin());
  }

  size_t find_tag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return std::string::npos;
  }

  // `{%-` strips all whitespace before the tag; otherwise lstrip_blocks removes the spaces
  // and tabs that open the tag's line (only when the line holds nothing else before it).
  void strip_before_tag(std::string& text, char mark, bool lstrip_applies) {
    if (mark == '-') {
      size_t e = text.size();
      while (e > 0 && is_ws(text[e - 1])) --e;
      text.resize(e);
    } else if (mark != '+' && lstrip_applies) {
      size_t nl = text.rfind('\n');
      size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if (l_pos > 0 || line_starting_) {
        bool blank = std::all_of(text.begin() + l_pos, text.end(),
                                 [](char c) { return c == ' ' || c == '\t'; });
        if (blank) text.resize(l_pos);
      }
    }
  }

  void emit_text(std::string text, size_t offset) {
    if (text.empty()) return;
    Token t;
    t.type = TokenType::kText;
    t.text = std::move(text);
    t.line = line_at(offset);
    out_.push_back(std::move(t));
  }

  void push(TokenType type, std::string text, size_t offset) {
    Token t;
    t.type = type;
    t.text = std::move(text);
    t.line = line_at(offset);
    out_.push_back(std::move(t));
  }

  // Consumes what follows a closing tag: everything blank after `-`, one newline after a plain
  // block/comment end (trim_blocks), nothing after `+` or a plain `}}`.
  void finish_tag(size_t after, char mark, bool trim_newline) {
    size_t i = after;
    if (mark == '-') {
      while (i < src_.size() && is_ws(src_[i])) ++i;
    } else if (mark != '+' && trim_newline && i < src_.size() && src_[i] == '\n') {
      ++i;
    }
    line_starting_ = i > 0 && src_[i - 1] == '\n' && i > after;
    pos_ = i;
  }

  void lex_comment(size_t q, size_t start) {
    size_t e = src_.find("#}", q);
    if (e == std::string::npos && q >= src_.size()) {  // jinja2 accepts a bare final `{#`
      pos_ = src_.size();
      return;
    }
    if (e == std::string::npos) error(start, "unclosed comment (missing '#}')");
    char mark = e > q && (src_[e - 1] == '-' || src_[e - 1] == '+') ? src_[e - 1] : 0;
    finish_tag(e + 2, mark, true);
  }

  // `{% raw %}`: the block end may be `-%}` (strip what follows) or `%}` (no newline trim).
  bool match_raw_begin(size_t q, size_t* body) {
    size_t i = q;
    while (i < src_.size() && is_ws(src_[i])) ++i;
    if (src_.compare(i, 3, "raw") != 0) return false;
    i += 3;
    if (i < src_.size() && is_name_char(src_[i])) return false;
    while (i < src_.size() && is_ws(src_[i])) ++i;
    if (src_.compare(i, 3, "-%}") == 0) {
      i += 3;
      while (i < src_.size() && is_ws(src_[i])) ++i;
    } else if (src_.compare(i, 2, "%}") == 0) {
      i += 2;
    } else {
      return false;
    }
    *body = i;
    return true;
  }

  void lex_raw(size_t body, size_t start) {
    line_starting_ = body > 0 && src_[body - 1] == '\n';
    for (size_t p = src_.find("{%", body); p != std::string::npos; p = src_.find("{%", p + 1)) {
      size_t i = p + 2;
      char mark = i < src_.size() && (src_[i] == '-' || src_[i] == '+') ? src_[i] : 0;
      if (mark) ++i;
      while (i < src_.size() && is_ws(src_[i])) ++i;
      if (src_.compare(i, 6, "endraw") != 0) continue;
      i += 6;
      while (i < src_.size() && is_ws(src_[i])) ++i;
      char end_mark = 0;
      if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) end_mark = src_[i++];
      if (src_.compare(i, 2, "%}") != 0) continue;
      std::string text = src_.substr(body, p - body);
      strip_before_tag(text, mark, true);
      emit_text(text, body);
      finish_tag(i + 2, end_mark, true);
      return;
    }
    error(start, "unclosed 'raw' block (missing 'endraw')");
  }

  void lex_tag(size_t q, size_t start, bool block) {
    push(block ? TokenType::kBlockBegin : TokenType::kVarBegin, block ? "{%" : "{{", start);
    std::string brackets;  // open ( [ { not yet closed: end markers inside them are operators
    size_t i = q;
    const size_t n = src_.size();
    while (true) {
      while (i < n && is_ws(src_[i])) ++i;
      if (i >= n)
        error(start, block ? "unclosed tag (missing '%}')" : "unclosed tag (missing '}}')");
      if (brackets.empty()) {
        const char* end = block ? "%}" : "}}";
        char mark = src_[i] == '-' || (block && src_[i] == '+') ? src_[i] : 0;
        if (src_.compare(i + (mark ? 1 : 0), 2, end) == 0) {
          push(block ? TokenType::kBlockEnd : TokenType::kVarEnd, end, i);
          finish_tag(i + (mark ? 3 : 2), mark, block);
          return;
        }
      }
      char c = src_[i];
      if (name_char_len(i, true)) {
        size_t j = i;
        while (size_t len = name_char_len(j, j == i)) j += len;
        push(TokenType::kName, src_.substr(i, j - i), i);
        i = j;
      } else if (is_digit(c)) {
        i = lex_number(i);
      } else if (c == '\'' || c == '"') {
        i = lex_string(i);
      } else {
        i = lex_operator(i, brackets);
      }
    }
  }

  // Byte length of the identifier character at i, or 0. Like jinja2's `[^\W\d]\w*`,
  // non-ASCII letters and digits count.
  size_t name_char_len(size_t i, bool first) const {
    if (i >= src_.size()) return 0;
    char c = src_[i];
    if (static_cast<unsigned char>(c) < 0x80)
      return (first ? is_name_start(c) : is_name_char(c)) ? 1 : 0;
    size_t len = 1;
    while (len < 4 && i + len < src_.size() &&
           (static_cast<unsigned char>(src_[i + len]) & 0xC0) == 0x80) {
      ++len;
    }
    std::u32string cp = decode_utf8(std::string_view(src_).substr(i, len));
    if (cp.size() != 1) return 0;
    return py_isalpha(cp[0]) || (!first && py_isdigit(cp[0])) ? len : 0;
  }

  size_t lex_number(size_t i) {
    const size_t n = src_.size();
    size_t j = i;
    auto digits = [&](auto pred) {
      while (j < n && (pred(src_[j]) || (src_[j] == '_' && j + 1 < n && pred(src_[j + 1])))) ++j;
    };
    std::string clean;
    if (src_[i] == '0' && i + 1 < n &&
        std::string("xXoObB").find(src_[i + 1]) != std::string::npos && i + 2 < n &&
        hex_value(src_[i + 2]) >= 0) {
      char base_ch = static_cast<char>(src_[i + 1] | 0x20);
      int base = base_ch == 'x' ? 16 : base_ch == 'o' ? 8 : 2;
      j = i + 2;
      digits([base](char ch) {
        int v = hex_value(ch);
        return v >= 0 && v < base;
      });
      for (size_t k = i + 2; k < j; ++k) {
        if (src_[k] != '_') clean += src_[k];
      }
      Token t;
      t.type = TokenType::kInt;
      t.int_value = static_cast<int64_t>(std::strtoull(clean.c_str(), nullptr, base));
      t.text = src_.substr(i, j - i);
      t.line = line_at(i);
      out_.push_back(std::move(t));
      return j;
    }
    digits(is_digit);
    bool is_float = false;
    // `x.0.1` is attribute access, so no float directly after a dot.
    bool after_dot = i > 0 && src_[i - 1] == '.';
    if (!after_dot && j + 1 < n && src_[j] == '.' && is_digit(src_[j + 1])) {
      ++j;
      digits(is_digit);
      is_float = true;
    }
    if (!after_dot && j < n && (src_[j] == 'e' || src_[j] == 'E')) {
      size_t k = j + 1;
      if (k < n && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < n && is_digit(src_[k])) {
        j = k;
        digits(is_digit);
        is_float = true;
      }
    }
    for (size_t k = i; k < j; ++k) {
      if (src_[k] != '_') clean += src_[k];
    }
    Token t;
    t.type = is_float ? TokenType::kFloat : TokenType::kInt;
    t.text = src_.substr(i, j - i);
    t.line = line_at(i);
    if (is_float) {
      t.float_value = std::strtod(clean.c_str(), nullptr);
    } else {
      errno = 0;
      unsigned long long v = std::strtoull(clean.c_str(), nullptr, 10);
      if (errno == ERANGE || v > static_cast<unsigned long long>(INT64_MAX)) {
        error(i, "integer literal too large: " + clean);
      }
      t.int_value = static_cast<int64_t>(v);
    }
    out_.push_back(std::move(t));
    return j;
  }

  // Python 'unicode-escape' decoding of a string literal's body.
  size_t lex_string(size_t i) {
    const char quote = src_[i];
    const size_t n = src_.size();
    std::string value;
    size_t j = i + 1;
    while (true) {
      if (j >= n) error(i, "unterminated string literal");
      char c = src_[j];
      if (c == quote) break;
      if (c != '\\' || j + 1 >= n) {
        value += c;
        ++j;
        continue;
      }
      char e = src_[j + 1];
      j += 2;
      switch (e) {
        case '\n':
          break;  // line continuation
        case '\\':
          value += '\\';
          break;
        case '\'':
          value += '\'';
          break;
        case '"':
          value += '"';
          break;
        case 'a':
          value += '\a';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'n':
          value += '\n';
          break;
        case 'r':
          value += '\r';
          break;
        case 't':
          value += '\t';
          break;
        case 'v':
          value += '\v';
          break;
        case 'x':
        case 'u':
        case 'U': {
          int len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (int k = 0; k < len; ++k) {
            int h = j + k < n ? hex_value(src_[j + k]) : -1;
            if (h < 0) error(i, std::string("truncated \\") + e + " escape in string literal");
            cp = cp * 16 + static_cast<uint32_t>(h);
          }
          j += len;
          // Join a \uD83D\uDE00 surrogate pair into one code point.
          if (cp >= 0xD800 && cp < 0xDC00 && j + 6 <= n && src_[j] == '\\' && src_[j + 1] == 'u') {
            uint32_t lo = 0;
            bool ok = true;
            for (int k = 0; k < 4; ++k) {
              int h = hex_value(src_[j + 2 + k]);
              ok = ok && h >= 0;
              lo = lo * 16 + static_cast<uint32_t>(std::max(h, 0));
            }
            if (ok && lo >= 0xDC00 && lo < 0xE000) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
              j += 6;
            }
          }
          if (cp > 0x10FFFF) error(i, "illegal Unicode character in string literal");
          append_utf8(value, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && j < n && src_[j] >= '0' && src_[j] <= '7'; ++k, ++j) {
              cp = cp * 8 + static_cast<uint32_t>(src_[j] - '0');
            }
            append_utf8(value, cp);
          } else if (static_cast<unsigned char>(e) >= 0x80) {
            // jinja2 decodes literals with s.encode("ascii", "backslashreplace")
            // .decode("unicode-escape"), so a backslash before a non-ASCII character
            // leaves a backslash and that character's hex escape (x.., u...., U........).
            size_t len = 1;
            while (len < 4 && j - 1 + len < n &&
                   (static_cast<unsigned char>(src_[j - 1 + len]) & 0xC0) == 0x80) {
              ++len;
            }
            std::u32string cp = decode_utf8(std::string_view(src_).substr(j - 1, len));
            char buf[16];
            unsigned v = static_cast<unsigned>(cp.empty() ? 0 : cp[0]);
            if (v >= 0xDC80 && v <= 0xDCFF) v -= 0xDC00;  // an invalid byte
            std::snprintf(buf, sizeof buf,
                          v < 0x100     ? "x%02x"
                          : v < 0x10000 ? "u%04x"
                                        : "U%08x",
                          v);
            value += '\\';
            value += buf;
            j += encode_utf8(cp.substr(0, 1)).size() - 1;  // the rest of this character
          } else {                                         // unknown escapes stay as written
            value += '\\';
            value += e;
          }
      }
    }
    push(TokenType::kString, std::move(value), i);
    return j + 1;
  }

  size_t lex_operator(size_t i, std::string& brackets) {
    static const char* kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : kTwo) {
      if (src_.compare(i, 2, op) == 0) {
        push(TokenType::kOp, op, i);
        return i + 2;
      }
    }
    char c = src_[i];
    if (std::string("+-/*%~[](){}><=.:|,;").find(c) == std::string::npos) {
      error(i, std::string("unexpected character '") + c + "'");
    }
    if (c == '(' || c == '[' || c == '{') {
      brackets.push_back(c);
    } else if (c == ')' || c == ']' || c == '}') {
      char open = c == ')' ? '(' : c == ']' ? '[' : '{';
      if (brackets.empty() || brackets.back() != open) {
        error(i, std::string("unexpected '") + c + "'");
      }
      brackets.pop_back();
    }
    push(TokenType::kOp, std::string(1, c), i);
    return i + 1;
  }

  std::string src_;
  std::vector<size_t> newlines_;
  std::vector<Token> out_;
  size_t pos_ = 0;
  bool line_starting_ = true;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) { return Lexer(source).run(); }

}  // namespace llm::jinja
