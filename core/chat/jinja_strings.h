// Python-compatible string helpers for the Jinja engine: UTF-8 <-> code points, case mapping,
// str methods (strip/split/splitlines/title...), float repr, Python repr and JSON quoting.
// Strings stay UTF-8 everywhere; only index-sensitive operations decode to code points.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llm::jinja {

// Lossless decoding: an invalid byte b becomes U+DC00+b and is re-encoded as that byte,
// so malformed input round-trips instead of failing (Python's surrogateescape).
std::u32string decode_utf8(std::string_view s);
std::string encode_utf8(std::u32string_view s);
void append_utf8(std::string& out, char32_t cp);
size_t utf8_length(std::string_view s);

bool py_isspace(char32_t c);
bool py_isalpha(char32_t c);
bool py_isdigit(char32_t c);
char32_t py_toupper(char32_t c);
char32_t py_tolower(char32_t c);

std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_title(std::string_view s);       // str.title()
std::string py_capitalize(std::string_view s);  // str.capitalize()
std::string jinja_title(std::string_view s);    // the |title filter (splits on -, space, brackets)

// str.strip / lstrip / rstrip; chars == nullopt strips Unicode whitespace.
std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                     bool right);
// str.split / str.rsplit; sep == nullopt splits on whitespace runs. maxsplit < 0 = no limit.
std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep,
                                  long maxsplit);
std::vector<std::string> py_rsplit(std::string_view s, const std::optional<std::string>& sep,
                                   long maxsplit);
std::vector<std::string> py_splitlines(std::string_view s, bool keepends);
// str.replace; nullopt if the result would exceed max_bytes.
std::optional<std::string> py_replace(std::string_view s, std::string_view old,
                                      std::string_view repl, long count, size_t max_bytes);
size_t py_count(std::string_view s, std::string_view sub);
// Code-point index of the first (or last) occurrence, or -1.
long py_find(std::string_view s, std::string_view sub, bool reverse);

// repr(float) / str(float): shortest round-trip digits, Python's fixed/exponent switch.
std::string float_repr(double v);
// repr(str): single quotes unless the text holds ' and no ".
std::string py_repr_string(std::string_view s);
// A JSON string literal as Python's json.dumps writes it.
std::string json_quote(std::string_view s, bool ensure_ascii);

}  // namespace llm::jinja
