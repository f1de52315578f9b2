// UTF-8 helpers and the GPT-2 byte <-> unicode table used by byte-level BPE.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace llm::unicode {

// Number of bytes of the UTF-8 sequence announced by this lead byte; 1 for bytes that
// cannot start a sequence (so callers always make progress).
int utf8_len(uint8_t lead);

// Appends the UTF-8 encoding of a code point (U+FFFD for values beyond U+10FFFF).
void append_utf8(uint32_t cp, std::string* out);

// Decodes the code point at s[*pos] and advances *pos; an invalid or truncated
// sequence yields U+FFFD and advances by one byte.
uint32_t next_codepoint(std::string_view s, size_t* pos);

// Consumes from the front of *buf every byte whose meaning is settled and returns it as
// valid UTF-8: complete characters are copied, each maximal invalid subsequence
// becomes one U+FFFD. An incomplete character at the end stays in *buf unless `final`
// is set, in which case it becomes U+FFFD as well. Calling this piecewise on a byte
// stream gives the same text as calling it once on the whole stream.
std::string take_valid_utf8(std::string* buf, bool final);

// GPT-2's reversible byte -> printable code point table: printable Latin-1 bytes map
// to themselves, the other 68 bytes to U+0100 and up, so every byte string becomes
// a string of visible characters.
uint32_t byte_to_codepoint(uint8_t b);
// The UTF-8 text of byte_to_codepoint(b).
const std::string& byte_to_utf8(uint8_t b);
// The byte a code point stands for, or -1 when it is not in the table.
int codepoint_to_byte(uint32_t cp);

// Maps every byte of `bytes` through the table (the text byte-level BPE merges on).
std::string bytes_to_byte_level(std::string_view bytes);

}  // namespace llm::unicode
