#include "core/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"
#include "core/tokenizer/unicode.h"

namespace llm {

namespace {

// One match-data block per thread, reused by every find_all call: allocating one per
// word would dominate the cost of short matches.
struct ThreadMatchData {
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  ~ThreadMatchData() { pcre2_match_data_free(md); }
};

pcre2_match_data* thread_match_data() {
  thread_local ThreadMatchData data;
  return data.md;
}

}  // namespace

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  uint32_t options = PCRE2_UTF | PCRE2_UCP;
#ifdef PCRE2_MATCH_INVALID_UTF  // PCRE2 >= 10.34
  // User text may hold invalid UTF-8; with this option such bytes simply never match
  // (older PCRE2 reports an error for them instead).
  options |= PCRE2_MATCH_INVALID_UTF;
#endif
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &err, &err_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    fail("invalid regex '%s' at offset %zu: %s", pattern.c_str(), static_cast<size_t>(err_offset),
         reinterpret_cast<const char*>(msg));
  }
  // JIT is an optimisation only: when unavailable the interpreter gives the same matches.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const {
  pcre2_code* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = thread_match_data();
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  size_t offset = 0;
  uint32_t options = 0;
  while (offset <= n) {
    const int rc = pcre2_match(code, subject, n, offset, options, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) {
      if (options == 0 || offset >= n) break;
      // No non-empty match where the empty one was: step over one character.
      offset += unicode::utf8_len(static_cast<uint8_t>(text[offset]));
      options = 0;
      continue;
    }
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      fail("regex '%s' failed: %s", pattern_.c_str(), reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    out->emplace_back(ov[0], ov[1]);
    offset = ov[1];
    // After an empty match, look for a non-empty one at the same place first.
    options = ov[0] == ov[1] ? (PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED) : 0;
  }
}

std::string Regex::escape(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x80 && !((u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') ||
                      u == '_' || u == ' ')) {
      out.push_back('\\');
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace llm
