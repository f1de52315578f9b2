// Methods of str, list and dict values (`s.strip()`, `d.items()`, `l.append(x)`), bound to
// their object on attribute access like Python's bound methods.
#include <algorithm>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include "core/chat/jinja_interp.h"
#include "core/chat/jinja_strings.h"

namespace llm::jinja {

namespace {

using Method = Value (*)(Interpreter&, const Value& self, CallArgs& args);

std::optional<std::string> opt_str(const ArgParser& a, size_t i, const char* what) {
  if (!a.has(i) || a.get(i).is_none()) return std::nullopt;
  if (!a.get(i).is_string()) render_fail("%s arg must be None or str", what);
  return a.get(i).str();
}

Value str_list(const std::vector<std::string>& parts) {
  std::vector<Value> out(parts.begin(), parts.end());
  return Value::make_list(std::move(out));
}

// ---- str -----------------------------------------------------------------------------------

template <bool kLeft, bool kRight>
Value m_strip(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("strip", args, {"chars"});
  return py_strip(self.str(), opt_str(a, 0, "strip"), kLeft, kRight);
}

template <bool kEnd>
Value m_startswith(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a(kEnd ? "endswith" : "startswith", args, {"prefix", "start", "end"});
  std::string s = self.str();
  if (a.has(1) || a.has(2)) {  // start/end are code-point offsets
    Value sub =
        get_slice(self, a.get_or(1, Value::none()), a.get_or(2, Value::none()), Value::none());
    s = sub.is_string() ? sub.str() : "";
  }
  auto test = [&](const Value& p) {
    if (!p.is_string()) render_fail("expected str or a tuple of str, not %s", type_name(p).c_str());
    const std::string& x = p.str();
    return x.size() <= s.size() && (kEnd ? s.compare(s.size() - x.size(), x.size(), x) == 0
                                         : s.compare(0, x.size(), x) == 0);
  };
  const Value& p = a.get(0);
  if (p.is_list()) {
    for (const Value& item : p.list().items) {
      if (test(item)) return true;
    }
    return false;
  }
  return test(p);
}

template <bool kReverse>
Value m_split(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("split", args, {"sep", "maxsplit"});
  std::optional<std::string> sep = opt_str(a, 0, "split");
  if (sep && sep->empty()) render_fail("empty separator");
  long maxsplit = static_cast<long>(a.get_int(1, -1));
  return str_list(kReverse ? py_rsplit(self.str(), sep, maxsplit)
                           : py_split(self.str(), sep, maxsplit));
}

Value m_splitlines(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("splitlines", args, {"keepends"});
  return str_list(py_splitlines(self.str(), truthy(a.get_or(0, false))));
}

Value m_upper(Interpreter&, const Value& self, CallArgs&) { return py_upper(self.str()); }
Value m_lower(Interpreter&, const Value& self, CallArgs&) { return py_lower(self.str()); }
Value m_title(Interpreter&, const Value& self, CallArgs&) { return py_title(self.str()); }
Value m_capitalize(Interpreter&, const Value& self, CallArgs&) { return py_capitalize(self.str()); }
Value m_swapcase(Interpreter&, const Value& self, CallArgs&) {
  std::string out;
  for (char32_t c : decode_utf8(self.str())) {
    char32_t u = py_toupper(c);
    append_utf8(out, u != c ? u : py_tolower(c));
  }
  return out;
}

Value m_replace(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("replace", args, {"old", "new", "count"});
  if (!a.get(0).is_string() || !a.get(1).is_string())
    render_fail("replace() arguments must be str");
  std::optional<std::string> out =
      py_replace(self.str(), a.get(0).str(), a.get(1).str(), a.get_int(2, -1), kMaxStringBytes);
  if (!out) check_string_size(kMaxStringBytes + 1);  // reports the size error
  return *out;
}

template <bool kReverse, bool kRaise>
Value m_find(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a(kRaise ? "index" : "find", args, {"sub"});
  if (!a.get(0).is_string()) render_fail("must be str, not %s", type_name(a.get(0)).c_str());
  long i = py_find(self.str(), a.get(0).str(), kReverse);
  if (i < 0 && kRaise) render_fail("substring not found");
  return static_cast<int64_t>(i);
}

Value m_count(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("count", args, {"sub"});
  if (!a.get(0).is_string()) render_fail("must be str, not %s", type_name(a.get(0)).c_str());
  return static_cast<int64_t>(py_count(self.str(), a.get(0).str()));
}

Value m_join(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("join", args, {"iterable"});
  std::string out;
  bool first = true;
  for (const Value& v : iterate(a.get(0))) {
    if (!v.is_string()) {
      render_fail("sequence item: expected str instance, %s found", type_name(v).c_str());
    }
    if (!first) out += self.str();
    out += v.str();
    first = false;
  }
  return out;
}

template <bool (*kPred)(char32_t)>
Value m_is(Interpreter&, const Value& self, CallArgs&) {
  std::u32string u = decode_utf8(self.str());
  return !u.empty() && std::all_of(u.begin(), u.end(), kPred);
}
bool is_alnum(char32_t c) { return py_isalpha(c) || py_isdigit(c); }

Value m_case_test(const Value& self, bool want_upper) {
  bool cased = false;
  for (char32_t c : decode_utf8(self.str())) {
    if (py_toupper(c) != c) {  // a lowercase letter
      if (want_upper) return false;
      cased = true;
    } else if (py_tolower(c) != c) {
      if (!want_upper) return false;
      cased = true;
    }
  }
  return cased;
}
Value m_isupper(Interpreter&, const Value& self, CallArgs&) { return m_case_test(self, true); }
Value m_islower(Interpreter&, const Value& self, CallArgs&) { return m_case_test(self, false); }
Value m_istitle(Interpreter&, const Value& self, CallArgs&) {
  return !self.str().empty() && py_title(self.str()) == self.str() &&
         py_lower(self.str()) != py_upper(self.str());
}

// center / ljust / rjust
template <char kAlign>
Value m_justify(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("justify", args, {"width", "fillchar"});
  int64_t width = std::min<int64_t>(a.get_int(0, 0), 1 << 20);
  std::string fill = a.get_str(1, " ");
  if (utf8_length(fill) != 1) render_fail("The fill character must be exactly one character long");
  int64_t len = static_cast<int64_t>(utf8_length(self.str()));
  if (width <= len) return self;
  int64_t total = width - len;
  int64_t left = kAlign == '<' ? 0 : kAlign == '>' ? total : total / 2 + (total & width & 1);
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += self.str();
  for (int64_t i = 0; i < total - left; ++i) out += fill;
  return out;
}

Value m_zfill(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("zfill", args, {"width"});
  const std::string& s = self.str();
  int64_t width = std::min<int64_t>(a.get_int(0, 0), 1 << 20);
  int64_t len = static_cast<int64_t>(utf8_length(s));
  if (width <= len) return self;
  size_t sign = !s.empty() && (s[0] == '+' || s[0] == '-') ? 1 : 0;
  return s.substr(0, sign) + std::string(static_cast<size_t>(width - len), '0') + s.substr(sign);
}

template <bool kReverse>
Value m_partition(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("partition", args, {"sep"});
  if (!a.get(0).is_string() || a.get(0).str().empty()) render_fail("empty separator");
  const std::string& s = self.str();
  const std::string& sep = a.get(0).str();
  size_t hit = kReverse ? s.rfind(sep) : s.find(sep);
  if (hit == std::string::npos) {
    return kReverse ? Value::make_list({"", "", s}, SeqKind::kTuple)
                    : Value::make_list({s, "", ""}, SeqKind::kTuple);
  }
  return Value::make_list({s.substr(0, hit), sep, s.substr(hit + sep.size())}, SeqKind::kTuple);
}

template <bool kSuffix>
Value m_remove_affix(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("removeprefix", args, {"affix"});
  std::string x = a.get_str(0, "");
  const std::string& s = self.str();
  if (x.size() > s.size()) return self;
  if (kSuffix) {
    return s.compare(s.size() - x.size(), x.size(), x) == 0 ? s.substr(0, s.size() - x.size()) : s;
  }
  return s.compare(0, x.size(), x) == 0 ? s.substr(x.size()) : s;
}

// Inserts ',' every three digits of the integer part ("{:,}").
std::string group_thousands(const std::string& num) {
  size_t start = num.find_first_of("0123456789");
  if (start == std::string::npos) return num;
  size_t end = num.find_first_not_of("0123456789", start);
  if (end == std::string::npos) end = num.size();
  std::string digits = num.substr(start, end - start), grouped;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) grouped += ',';
    grouped += digits[i];
  }
  return num.substr(0, start) + grouped + num.substr(end);
}

// Applies a str.format() spec: [[fill]align][sign][0][width][,][.precision][type].
std::string apply_format_spec(const Value& v, const std::string& spec) {
  if (spec.empty()) return to_str(v);
  size_t i = 0;
  std::string fill = " ";
  char align = 0;
  std::u32string u = decode_utf8(spec);
  auto is_align = [](char32_t c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  if (u.size() >= 2 && is_align(u[1])) {
    fill = encode_utf8(u.substr(0, 1));
    align = static_cast<char>(u[1]);
    i = 2;
  } else if (!u.empty() && is_align(u[0])) {
    align = static_cast<char>(u[0]);
    i = 1;
  }
  std::string rest = encode_utf8(u.substr(i));
  size_t j = 0;
  char sign = 0;
  if (j < rest.size() && (rest[j] == '+' || rest[j] == '-' || rest[j] == ' ')) sign = rest[j++];
  if (j < rest.size() && rest[j] == '0') {
    if (!align) {
      fill = "0";
      align = '=';
    }
    ++j;
  }
  int width = 0;
  while (j < rest.size() && rest[j] >= '0' && rest[j] <= '9')
    width = std::min(width * 10 + (rest[j++] - '0'), 1000);
  bool group = j < rest.size() && rest[j] == ',';
  if (group) ++j;
  int prec = -1;
  if (j < rest.size() && rest[j] == '.') {
    ++j;
    prec = 0;
    while (j < rest.size() && rest[j] >= '0' && rest[j] <= '9')
      prec = std::min(prec * 10 + (rest[j++] - '0'), 100);
  }
  char type = j < rest.size() ? rest[j] : 0;
  std::string body;
  char buf[256];
  bool is_num = v.is_number() || v.is_bool();
  if (type == 'f' || type == 'F' || type == 'e' || type == 'E' || type == 'g' || type == 'G' ||
      type == '%') {
    if (!is_num)
      render_fail("Unknown format code '%c' for object of type '%s'", type, type_name(v).c_str());
    double x = v.as_float() * (type == '%' ? 100.0 : 1.0);
    std::string f = std::string("%") +
                    (sign == '+'   ? "+"
                     : sign == ' ' ? " "
                                   : "") +
                    "." + std::to_string(prec < 0 ? 6 : prec) + (type == '%' ? 'f' : type);
    std::snprintf(buf, sizeof buf, f.c_str(), x);
    body = std::string(buf) + (type == '%' ? "%" : "");
  } else if (type == 'd' || type == 'x' || type == 'X' || type == 'o' || type == 'b') {
    if (!v.is_int() && !v.is_bool())
      render_fail("Unknown format code '%c' for object of type '%s'", type, type_name(v).c_str());
    int64_t x = v.as_int();
    if (type == 'b') {
      uint64_t m = x < 0 ? static_cast<uint64_t>(-(x + 1)) + 1 : static_cast<uint64_t>(x);
      do {
        body.insert(body.begin(), static_cast<char>('0' + (m & 1)));
        m >>= 1;
      } while (m);
      if (x < 0) body.insert(body.begin(), '-');
    } else {
      std::string f = std::string("%") +
                      (sign == '+'   ? "+"
                       : sign == ' ' ? " "
                                     : "") +
                      "ll" + (type == 'd' ? 'd' : type);
      std::snprintf(buf, sizeof buf, f.c_str(), static_cast<long long>(x));
      body = buf;
    }
  } else {
    body = to_str(v);
    if (prec >= 0 && v.is_string())
      body = encode_utf8(decode_utf8(body).substr(0, static_cast<size_t>(prec)));
    if (prec >= 0 && v.is_float()) {
      std::snprintf(buf, sizeof buf, "%.*g", prec, v.as_float());
      body = buf;
    }
  }
  if (group && is_num) body = group_thousands(body);
  if (!align) align = is_num ? '>' : '<';
  int len = static_cast<int>(utf8_length(body));
  if (width <= len) return body;
  int pad = width - len;
  auto fills = [&](int n) {
    std::string s;
    for (int k = 0; k < n; ++k) s += fill;
    return s;
  };
  switch (align) {
    case '<':
      return body + fills(pad);
    case '^':
      return fills(pad / 2) + body + fills(pad - pad / 2);
    case '=':
      if (!body.empty() && (body[0] == '-' || body[0] == '+' || body[0] == ' ')) {
        return body.substr(0, 1) + fills(pad) + body.substr(1);
      }
      return fills(pad) + body;
    default:
      return fills(pad) + body;
  }
}

Value m_format(Interpreter&, const Value& self, CallArgs& args) {
  const std::string& f = self.str();
  std::string out;
  size_t auto_index = 0;
  bool used_auto = false, used_manual = false;
  for (size_t i = 0; i < f.size(); ++i) {
    char c = f[i];
    if (c == '}') {
      if (i + 1 < f.size() && f[i + 1] == '}') {
        out += '}';
        ++i;
        continue;
      }
      render_fail("Single '}' encountered in format string");
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < f.size() && f[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    size_t close = f.find('}', i);
    if (close == std::string::npos) render_fail("Single '{' encountered in format string");
    std::string field = f.substr(i + 1, close - i - 1);
    i = close;
    std::string spec, conv;
    size_t colon = field.find(':');
    if (colon != std::string::npos) {
      spec = field.substr(colon + 1);
      field.resize(colon);
    }
    size_t bang = field.find('!');
    if (bang != std::string::npos) {
      conv = field.substr(bang + 1);
      field.resize(bang);
    }
    size_t end = field.find_first_of(".[");
    std::string head = field.substr(0, end);
    Value v;
    bool numbered = !head.empty() && std::all_of(head.begin(), head.end(),
                                                 [](char ch) { return ch >= '0' && ch <= '9'; });
    if (head.empty() && used_manual) {
      render_fail("cannot switch from manual field specification to automatic field numbering");
    }
    if (numbered && used_auto) {
      render_fail("cannot switch from automatic field numbering to manual field specification");
    }
    used_auto = used_auto || head.empty();
    used_manual = used_manual || numbered;
    if (head.empty()) {
      if (auto_index >= args.pos.size())
        render_fail("Replacement index %zu out of range", auto_index);
      v = args.pos[auto_index++];
    } else if (numbered) {
      size_t k = std::stoul(head);
      if (k >= args.pos.size()) render_fail("Replacement index %zu out of range", k);
      v = args.pos[k];
    } else {
      auto it = std::find_if(args.kw.begin(), args.kw.end(),
                             [&](const auto& kv) { return kv.first == head; });
      if (it == args.kw.end()) render_fail("'%s'", head.c_str());
      v = it->second;
    }
    // Trailing .attr and [key] accessors.
    while (end != std::string::npos && end < field.size()) {
      if (field[end] == '.') {
        size_t next = field.find_first_of(".[", end + 1);
        v = get_attr(v, field.substr(end + 1, next == std::string::npos ? std::string::npos
                                                                        : next - end - 1));
        end = next;
      } else {
        size_t rb = field.find(']', end);
        if (rb == std::string::npos) render_fail("Missing ']' in format string");
        std::string key = field.substr(end + 1, rb - end - 1);
        bool digits = !key.empty() && std::all_of(key.begin(), key.end(),
                                                  [](char ch) { return ch >= '0' && ch <= '9'; });
        v = get_item(v, digits ? Value(static_cast<int64_t>(std::stoll(key))) : Value(key));
        end = rb + 1;
      }
    }
    if (conv == "r" || conv == "a") v = repr(v);
    out += apply_format_spec(v, spec);
  }
  return out;
}

// ---- dict ----------------------------------------------------------------------------------

Value m_items(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("items", args, {});
  std::vector<Value> out;
  for (const auto& [k, v] : self.dict().entries()) {
    out.push_back(Value::make_list({k, v}, SeqKind::kTuple));
  }
  return Value::make_list(std::move(out), SeqKind::kDictItems);
}

Value m_keys(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("keys", args, {});
  std::vector<Value> out;
  for (const auto& kv : self.dict().entries()) out.push_back(kv.first);
  return Value::make_list(std::move(out), SeqKind::kDictKeys);
}

Value m_values(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("values", args, {});
  std::vector<Value> out;
  for (const auto& kv : self.dict().entries()) out.push_back(kv.second);
  return Value::make_list(std::move(out), SeqKind::kDictValues);
}

Value m_get(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("get", args, {"key", "default"});
  const Value* v = self.dict().find(a.get(0));
  return v ? *v : a.get_or(1, Value::none());
}

Value m_dict_pop(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("pop", args, {"key", "default"});
  const Value* v = self.dict().find(a.get(0));
  if (!v) {
    if (a.has(1)) return a.get(1);
    render_fail("%s", repr(a.get(0)).c_str());
  }
  Value out = *v;
  self.dict().erase(a.get(0));
  return out;
}

Value m_setdefault(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("setdefault", args, {"key", "default"});
  const Value* v = self.dict().find(a.get(0));
  if (v) return *v;
  Value d = a.get_or(1, Value::none());
  self.dict().set(a.get(0), d);
  return d;
}

Value m_update(Interpreter&, const Value& self, CallArgs& args) {
  if (args.pos.size() > 1) render_fail("update expected at most 1 argument");
  if (!args.pos.empty()) {
    const Value& other = args.pos[0];
    if (other.is_mapping()) {
      for (const auto& [k, v] : other.dict().entries()) self.dict().set(k, v);
    } else {
      for (const Value& pair : iterate(other)) {
        std::vector<Value> kv = iterate(pair);
        if (kv.size() != 2) render_fail("dictionary update sequence element has wrong length");
        self.dict().set(kv[0], kv[1]);
      }
    }
  }
  for (const auto& [k, v] : args.kw) self.dict().set(Value(k), v);
  return Value::none();
}

Value m_dict_copy(Interpreter&, const Value& self, CallArgs&) {
  Value d = Value::make_dict();
  for (const auto& [k, v] : self.dict().entries()) d.dict().set(k, v);
  return d;
}

// ---- list ----------------------------------------------------------------------------------

std::vector<Value>& items_of(const Value& self) { return self.list().items; }

Value m_append(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("append", args, {"object"});
  self.list().push_back(a.get(0));
  return Value::none();
}

Value m_extend(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("extend", args, {"iterable"});
  for (Value& v : iterate(a.get(0))) self.list().push_back(std::move(v));
  return Value::none();
}

Value m_insert(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("insert", args, {"index", "object"});
  auto& items = items_of(self);
  int64_t n = static_cast<int64_t>(items.size());
  int64_t i = a.get_int(0, 0);
  if (i < 0) i = std::max<int64_t>(0, i + n);
  i = std::min(i, n);
  note_child(&self.list().depth, a.get(1));
  items.insert(items.begin() + i, a.get(1));
  return Value::none();
}

Value m_list_pop(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("pop", args, {"index"});
  auto& items = items_of(self);
  if (items.empty()) render_fail("pop from empty list");
  int64_t n = static_cast<int64_t>(items.size());
  int64_t i = a.get_int(0, -1);
  if (i < 0) i += n;
  if (i < 0 || i >= n) render_fail("pop index out of range");
  Value out = items[static_cast<size_t>(i)];
  items.erase(items.begin() + i);
  return out;
}

Value m_list_index(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("index", args, {"value"});
  const auto& items = items_of(self);
  for (size_t i = 0; i < items.size(); ++i) {
    if (values_equal(items[i], a.get(0))) return static_cast<int64_t>(i);
  }
  render_fail("%s is not in list", repr(a.get(0)).c_str());
}

Value m_list_count(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("count", args, {"value"});
  int64_t n = 0;
  for (const Value& v : items_of(self)) n += values_equal(v, a.get(0)) ? 1 : 0;
  return n;
}

Value m_remove(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("remove", args, {"value"});
  auto& items = items_of(self);
  for (size_t i = 0; i < items.size(); ++i) {
    if (values_equal(items[i], a.get(0))) {
      items.erase(items.begin() + static_cast<std::ptrdiff_t>(i));
      return Value::none();
    }
  }
  render_fail("list.remove(x): x not in list");
}

Value m_reverse(Interpreter&, const Value& self, CallArgs&) {
  std::reverse(items_of(self).begin(), items_of(self).end());
  return Value::none();
}

Value m_sort(Interpreter&, const Value& self, CallArgs& args) {
  ArgParser a("sort", args, {"reverse"});
  bool rev = truthy(a.get_or(0, false));
  std::stable_sort(items_of(self).begin(), items_of(self).end(),
                   [rev](const Value& x, const Value& y) {
                     return rev ? compare_values(y, x, "<") < 0 : compare_values(x, y, "<") < 0;
                   });
  return Value::none();
}

Value m_list_copy(Interpreter&, const Value& self, CallArgs&) {
  return Value::make_list(items_of(self));
}

Value m_clear(Interpreter&, const Value& self, CallArgs&) {
  if (self.is_list()) {
    items_of(self).clear();
  } else {
    std::vector<Value> keys;
    for (const auto& kv : self.dict().entries()) keys.push_back(kv.first);
    for (const Value& k : keys) self.dict().erase(k);
  }
  return Value::none();
}

const std::unordered_map<std::string, Method>& str_methods() {
  static const std::unordered_map<std::string, Method> m = {
      {"strip", m_strip<true, true>},
      {"lstrip", m_strip<true, false>},
      {"rstrip", m_strip<false, true>},
      {"startswith", m_startswith<false>},
      {"endswith", m_startswith<true>},
      {"split", m_split<false>},
      {"rsplit", m_split<true>},
      {"splitlines", m_splitlines},
      {"upper", m_upper},
      {"lower", m_lower},
      {"casefold", m_lower},
      {"title", m_title},
      {"capitalize", m_capitalize},
      {"swapcase", m_swapcase},
      {"replace", m_replace},
      {"find", m_find<false, false>},
      {"rfind", m_find<true, false>},
      {"index", m_find<false, true>},
      {"rindex", m_find<true, true>},
      {"count", m_count},
      {"join", m_join},
      {"format", m_format},
      {"isdigit", m_is<py_isdigit>},
      {"isdecimal", m_is<py_isdigit>},
      {"isnumeric", m_is<py_isdigit>},
      {"isalpha", m_is<py_isalpha>},
      {"isalnum", m_is<is_alnum>},
      {"isspace", m_is<py_isspace>},
      {"isupper", m_isupper},
      {"islower", m_islower},
      {"istitle", m_istitle},
      {"center", m_justify<'^'>},
      {"ljust", m_justify<'<'>},
      {"rjust", m_justify<'>'>},
      {"zfill", m_zfill},
      {"partition", m_partition<false>},
      {"rpartition", m_partition<true>},
      {"removeprefix", m_remove_affix<false>},
      {"removesuffix", m_remove_affix<true>},
  };
  return m;
}

const std::unordered_map<std::string, Method>& dict_methods() {
  static const std::unordered_map<std::string, Method> m = {
      {"items", m_items},   {"keys", m_keys},      {"values", m_values},
      {"get", m_get},       {"pop", m_dict_pop},   {"setdefault", m_setdefault},
      {"update", m_update}, {"copy", m_dict_copy}, {"clear", m_clear},
  };
  return m;
}

const std::unordered_map<std::string, Method>& list_methods() {
  static const std::unordered_map<std::string, Method> m = {
      {"append", m_append},  {"extend", m_extend},    {"insert", m_insert},
      {"pop", m_list_pop},   {"index", m_list_index}, {"count", m_list_count},
      {"remove", m_remove},  {"reverse", m_reverse},  {"sort", m_sort},
      {"copy", m_list_copy}, {"clear", m_clear},
  };
  return m;
}

const std::unordered_map<std::string, Method>& tuple_methods() {
  static const std::unordered_map<std::string, Method> m = {
      {"index", m_list_index},
      {"count", m_list_count},
  };
  return m;
}

}  // namespace

Value find_method(const Value& obj, const std::string& name) {
  const std::unordered_map<std::string, Method>* table = nullptr;
  if (obj.is_string()) {
    table = &str_methods();
  } else if (obj.is_mapping()) {
    table = &dict_methods();
  } else if (obj.is_list()) {
    table = obj.is_tuple() ? &tuple_methods() : &list_methods();
  }
  if (!table) return Value();
  auto it = table->find(name);
  if (it == table->end()) return Value();
  Method m = it->second;
  // jinja2.sandbox's _mutable_spec for lists and dicts.
  static const std::unordered_set<std::string> kMutating = {
      "append", "clear",  "pop",    "reverse",    "insert",
      "sort",   "extend", "remove", "setdefault", "update"};
  bool mutating = !obj.is_string() && kMutating.count(name) > 0;
  return Value::make_callable(name, [obj, m, mutating, name](Interpreter& in, CallArgs& args) {
    if (mutating && in.options().immutable_sandbox) {
      render_fail("access to attribute '%s' of '%s' object is unsafe.", name.c_str(),
                  type_name(obj).c_str());
    }
    if (mutating) in.track_mutation(obj);
    return m(in, obj, args);
  });
}

}  // namespace llm::jinja
