#include "core/engine/json_formats.h"

namespace llm {

namespace {

bool digit(uint8_t c, char lo = '0', char hi = '9') { return c >= lo && c <= hi; }

bool hex(uint8_t c) { return digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// full-date "YYYY-MM-DD", positions 0..9 (10: complete); months 01-12, days 01-31.
bool date_step(uint8_t pos, uint8_t prev, uint8_t c) {
  switch (pos) {
    case 4:
    case 7:
      return c == '-';
    case 5:
      return digit(c, '0', '1');
    case 6:
      return prev == '0' ? digit(c, '1', '9') : digit(c, '0', '2');
    case 8:
      return digit(c, '0', '3');
    case 9:
      return prev == '0' ? digit(c, '1', '9') : prev == '3' ? digit(c, '0', '1') : digit(c);
    default:
      return pos < 4 && digit(c);
  }
}

// full-time "HH:MM:SS[.frac](Z|±HH:MM)" (RFC 3339; a leap second 60 allowed). States:
// 0-7 "HH:MM:SS", 8 after the seconds, 9 after '.', 10 in the fraction, 11-15 the
// offset's "HH:MM", 16 complete.
constexpr uint8_t kTimeDone = 16;
bool time_step(uint8_t& s, uint8_t prev, uint8_t c) {
  auto next = [&](bool ok, uint8_t to) {
    if (ok) s = to;
    return ok;
  };
  switch (s) {
    case 0:
    case 11:
      return next(digit(c, '0', '2'), s + 1);
    case 1:
    case 12:
      return next(prev == '2' ? digit(c, '0', '3') : digit(c), s + 1);
    case 2:
    case 5:
    case 13:
      return next(c == ':', s + 1);
    case 3:
    case 14:
      return next(digit(c, '0', '5'), s + 1);
    case 4:
      return next(digit(c), s + 1);
    case 7:
      return next(prev == '6' ? c == '0' : digit(c), 8);
    case 15:
      return next(digit(c), kTimeDone);
    case 6:
      return next(digit(c, '0', '6'), 7);
    case 8:
    case 10:
      if (s == 10 && digit(c)) return true;
      if (s == 8 && c == '.') return next(true, 9);
      if (c == 'Z' || c == 'z') return next(true, kTimeDone);
      return next(c == '+' || c == '-', 11);
    case 9:
      return next(digit(c), 10);
    default:
      return false;
  }
}

}  // namespace

StringFormat parse_string_format(const std::string& name) {
  if (name == "date") return StringFormat::Date;
  if (name == "time") return StringFormat::Time;
  if (name == "date-time") return StringFormat::DateTime;
  if (name == "uuid") return StringFormat::Uuid;
  return StringFormat::None;
}

bool format_step(StringFormat f, uint8_t& state, uint8_t& prev, uint8_t c) {
  bool ok = false;
  switch (f) {
    case StringFormat::None:
      return true;
    case StringFormat::Date:
      ok = state < 10 && date_step(state, prev, c);
      if (ok) state++;
      break;
    case StringFormat::Time:
      ok = time_step(state, prev, c);
      break;
    case StringFormat::DateTime:
      // "YYYY-MM-DD" (0-9), 'T' (10), then the time's states from 11.
      if (state < 10) {
        ok = date_step(state, prev, c);
        if (ok) state++;
      } else if (state == 10) {
        ok = c == 'T' || c == 't';
        if (ok) state++;
      } else {
        uint8_t t = static_cast<uint8_t>(state - 11);
        ok = time_step(t, prev, c);
        if (ok) state = static_cast<uint8_t>(t + 11);
      }
      break;
    case StringFormat::Uuid:
      ok = state < 36 &&
           ((state == 8 || state == 13 || state == 18 || state == 23) ? c == '-' : hex(c));
      if (ok) state++;
      break;
  }
  if (ok) prev = c;
  return ok;
}

bool format_complete(StringFormat f, uint8_t state) {
  switch (f) {
    case StringFormat::None:
      return true;
    case StringFormat::Date:
      return state == 10;
    case StringFormat::Time:
      return state == kTimeDone;
    case StringFormat::DateTime:
      return state == 11 + kTimeDone;
    case StringFormat::Uuid:
      return state == 36;
  }
  return false;
}

}  // namespace llm
