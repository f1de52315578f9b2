#include "core/tokenizer/unicode.h"

#include <array>

namespace llm::unicode {

int utf8_len(uint8_t lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp <= 0x10FFFF) {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    append_utf8(0xFFFD, out);
  }
}

namespace {

// Valid range of the second byte for a lead byte (RFC 3629 table), and how many
// continuation bytes follow; need == 0 marks a byte that cannot start a sequence.
struct LeadInfo {
  int need;
  uint8_t lo, hi;
};

LeadInfo lead_info(uint8_t b) {
  if (b >= 0xC2 && b <= 0xDF) return {1, 0x80, 0xBF};
  if (b == 0xE0) return {2, 0xA0, 0xBF};
  if (b == 0xED) return {2, 0x80, 0x9F};  // no UTF-16 surrogates
  if (b >= 0xE1 && b <= 0xEF) return {2, 0x80, 0xBF};
  if (b == 0xF0) return {3, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {3, 0x80, 0xBF};
  if (b == 0xF4) return {3, 0x80, 0x8F};
  return {0, 0, 0};
}

}  // namespace

uint32_t next_codepoint(std::string_view s, size_t* pos) {
  const size_t i = *pos;
  const uint8_t b = static_cast<uint8_t>(s[i]);
  if (b < 0x80) {
    *pos = i + 1;
    return b;
  }
  const LeadInfo info = lead_info(b);
  if (info.need == 0 || i + info.need >= s.size()) {  // invalid lead or truncated
    *pos = i + 1;
    return 0xFFFD;
  }
  uint32_t cp = b & (0x3F >> info.need);
  for (int j = 1; j <= info.need; ++j) {
    const uint8_t c = static_cast<uint8_t>(s[i + j]);
    const uint8_t lo = j == 1 ? info.lo : 0x80;
    const uint8_t hi = j == 1 ? info.hi : 0xBF;
    if (c < lo || c > hi) {
      *pos = i + 1;
      return 0xFFFD;
    }
    cp = (cp << 6) | (c & 0x3F);
  }
  *pos = i + 1 + info.need;
  return cp;
}

std::string take_valid_utf8(std::string* buf, bool final) {
  static const char kReplacement[] = "\xEF\xBF\xBD";
  const std::string& s = *buf;
  const size_t n = s.size();
  std::string out;
  out.reserve(n);
  size_t i = 0;
  while (i < n) {
    const uint8_t b = static_cast<uint8_t>(s[i]);
    if (b < 0x80) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    const LeadInfo info = lead_info(b);
    if (info.need == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    int j = 1;
    bool waiting = false;
    for (; j <= info.need; ++j) {
      if (i + j >= n) {
        waiting = true;
        break;
      }
      const uint8_t c = static_cast<uint8_t>(s[i + j]);
      const uint8_t lo = j == 1 ? info.lo : 0x80;
      const uint8_t hi = j == 1 ? info.hi : 0xBF;
      if (c < lo || c > hi) break;
    }
    if (waiting) {
      if (!final) break;  // the rest may still complete this character
      out += kReplacement;
      i = n;
      break;
    }
    if (j <= info.need) {  // a bad byte at position j ends the maximal subpart
      out += kReplacement;
      i += j;
      continue;
    }
    out.append(s, i, info.need + 1);
    i += info.need + 1;
  }
  buf->erase(0, i);
  return out;
}

namespace {

struct ByteTables {
  std::array<uint32_t, 256> to_cp{};
  std::array<std::string, 256> to_utf8;
  std::array<int16_t, 512> from_cp{};  // every mapped code point is below 512

  ByteTables() {
    from_cp.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? static_cast<uint32_t>(b) : next++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
      append_utf8(to_cp[b], &to_utf8[b]);
    }
  }
};

const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

}  // namespace

uint32_t byte_to_codepoint(uint8_t b) { return tables().to_cp[b]; }

const std::string& byte_to_utf8(uint8_t b) { return tables().to_utf8[b]; }

int codepoint_to_byte(uint32_t cp) { return cp < 512 ? tables().from_cp[cp] : -1; }

std::string bytes_to_byte_level(std::string_view bytes) {
  const ByteTables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.to_utf8[static_cast<uint8_t>(c)];
  return out;
}

}  // namespace llm::unicode
