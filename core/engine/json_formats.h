// String formats of JSON schemas that constrained decoding enforces (`format`: date,
// time, date-time, uuid; RFC 3339's full-date / full-time, RFC 4122's 8-4-4-4-12 hex),
// as a byte recognizer with a one-byte state, so JsonGrammar stays a fixed-size value.
#pragma once

#include <cstdint>
#include <string>

namespace llm {

enum class StringFormat : uint8_t { None, Date, Time, DateTime, Uuid };

// The format a schema's `format` names; None for the ones not enforced (email, uri, ...).
StringFormat parse_string_format(const std::string& name);

// Takes byte c of a string in format f: state is 0 at the string's start, prev the byte
// before (for ranges such as a month's second digit); false if no string of the format
// goes on so.
bool format_step(StringFormat f, uint8_t& state, uint8_t& prev, uint8_t c);
// Whether the string may end at state.
bool format_complete(StringFormat f, uint8_t state);

}  // namespace llm
