// Builtin filters, following jinja2's implementations (argument names, defaults, edge cases).
// `tojson` is transformers' override: json.dumps(x, ensure_ascii=False, indent=..., ...).
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <unordered_map>

#include "core/chat/jinja_interp.h"
#include "core/chat/jinja_strings.h"

namespace llm::jinja {

namespace {

std::string str_of(const Value& v) { return to_str(v); }

// String filters keep Markup-ness, as markupsafe's str methods do.
Value like(const Value& input, std::string s) {
  return input.is_markup() ? Value::markup(std::move(s)) : Value(std::move(s));
}

// jinja2 filters that `yield` return generators; see SeqKind.
Value generator(std::vector<Value> items, const char* function) {
  return Value::make_list(std::move(items), SeqKind::kGenerator, function);
}

// Filters without parameters still reject stray arguments, like Python would.
void no_args(const char* name, const CallArgs& args) { ArgParser(name, args, {}); }

// Filters that need a concrete value raise the undefined's error, as jinja2 does.
void require_defined(const Value& v) {
  if (v.is_undefined()) render_fail("%s", v.str().c_str());
}

bool is_iterator(const Value& v) {
  return v.is_seq() &&
         (v.seq_kind() == SeqKind::kGenerator || v.seq_kind() == SeqKind::kReverseIterator);
}

// jinja2's make_attrgetter: "a.b.0" walks items/attributes; missing parts give Undefined.
Value lookup_path(const Value& item, const Value& attribute) {
  if (!attribute.is_string()) return get_item(item, attribute);
  Value v = item;
  const std::string& path = attribute.str();
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                               [](char c) { return c >= '0' && c <= '9'; });
    v = get_item(v, digits ? Value(static_cast<int64_t>(std::strtoll(part.c_str(), nullptr, 10)))
                           : Value(part));
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

// Sort/unique key: strings are lower-cased unless case_sensitive.
Value fold_case(const Value& v, bool case_sensitive) {
  return !case_sensitive && v.is_string() ? Value(py_lower(v.str())) : v;
}

size_t length_of(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return utf8_length(v.str());
    case Value::Kind::kList:
      if (is_iterator(v)) break;
      return v.list().items.size();
    case Value::Kind::kDict:
      if (v.is_mapping()) return v.dict().size();
      break;
    default:
      break;
  }
  render_fail("object of type '%s' has no len()", type_name(v).c_str());
}

Value f_length(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("length", args, {});
  return static_cast<int64_t>(length_of(v));
}

Value f_trim(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("trim", args, {"chars"});
  std::optional<std::string> chars;
  if (a.has(0) && !a.get(0).is_none()) chars = str_of(a.get(0));
  return like(v, py_strip(str_of(v), chars, true, true));
}

Value f_tojson(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonStyle st;
  st.ensure_ascii = truthy(a.get_or(0, false));
  const Value& indent = a.get(1);
  if (a.has(1) && !indent.is_none()) {
    st.pretty = true;
    if (indent.is_string()) {
      st.indent = indent.str();
    } else {
      int64_t n = std::clamp<int64_t>(indent.as_int(), 0, 64);
      st.indent = std::string(static_cast<size_t>(n), ' ');
    }
    st.item_sep = ",";
  }
  if (a.has(2) && !a.get(2).is_none()) {
    std::vector<Value> seps = iterate(a.get(2));
    if (seps.size() != 2) render_fail("separators must be an (item_separator, key_separator) pair");
    st.item_sep = str_of(seps[0]);
    st.key_sep = str_of(seps[1]);
  }
  st.sort_keys = truthy(a.get_or(3, false));
  return to_json(v, st);
}

Value f_upper(Interpreter&, const Value& v, CallArgs& args) {
  no_args("upper", args);
  return like(v, py_upper(str_of(v)));
}
Value f_lower(Interpreter&, const Value& v, CallArgs& args) {
  no_args("lower", args);
  return like(v, py_lower(str_of(v)));
}
Value f_title(Interpreter&, const Value& v, CallArgs& args) {
  no_args("title", args);
  return like(v, jinja_title(str_of(v)));
}
Value f_capitalize(Interpreter&, const Value& v, CallArgs& args) {
  no_args("capitalize", args);
  return like(v, py_capitalize(str_of(v)));
}
Value f_string(Interpreter&, const Value& v, CallArgs& args) {
  no_args("string", args);
  return like(v, str_of(v));
}

Value f_replace(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("replace", args, {"old", "new", "count"});
  std::optional<std::string> out =
      py_replace(str_of(v), str_of(a.get(0)), str_of(a.get(1)), a.get_int(2, -1), kMaxStringBytes);
  if (!out) check_string_size(kMaxStringBytes + 1);
  return *out;
}

Value f_join(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("join", args, {"d", "attribute"});
  std::string sep = a.get_str(0, "");
  std::string out;
  bool first = true;
  for (const Value& item : iterate(v)) {
    if (!first) out += sep;
    first = false;
    out += str_of(a.has(1) && !a.get(1).is_none() ? lookup_path(item, a.get(1)) : item);
  }
  return out;
}

Value f_default(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("default", args, {"default_value", "boolean"});
  bool use_default = v.is_undefined() || (truthy(a.get_or(1, false)) && !truthy(v));
  return use_default ? a.get_or(0, Value("")) : v;
}

std::vector<Value> item_pairs(const Value& v) {
  std::vector<Value> out;
  for (const auto& [k, val] : v.dict().entries()) {
    out.push_back(Value::make_list({k, val}, SeqKind::kTuple));
  }
  return out;
}

Value f_items(Interpreter&, const Value& v, CallArgs& args) {
  no_args("items", args);
  if (v.is_undefined()) return generator({}, "do_items");
  if (!v.is_mapping()) render_fail("Can only get item pairs from a mapping.");
  return generator(item_pairs(v), "do_items");
}

Value f_keys(Interpreter&, const Value& v, CallArgs& args) {
  no_args("keys", args);
  if (!v.is_mapping()) render_fail("Can only get keys from a mapping.");
  return Value::make_list(iterate(v));
}

Value f_values(Interpreter&, const Value& v, CallArgs& args) {
  no_args("values", args);
  if (!v.is_mapping()) render_fail("Can only get values from a mapping.");
  std::vector<Value> out;
  for (const auto& kv : v.dict().entries()) out.push_back(kv.second);
  return Value::make_list(std::move(out));
}

Value f_dictsort(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("dictsort", args, {"case_sensitive", "by", "reverse"});
  require_defined(v);
  if (!v.is_mapping()) render_fail("dictsort filter requires a mapping");
  bool cs = truthy(a.get_or(0, false));
  std::string by = a.get_str(1, "key");
  if (by != "key" && by != "value") render_fail("You can only sort by either \"key\" or \"value\"");
  size_t pos = by == "key" ? 0 : 1;
  bool rev = truthy(a.get_or(2, false));
  std::vector<Value> items = item_pairs(v);
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    Value kx = fold_case(x.list().items[pos], cs), ky = fold_case(y.list().items[pos], cs);
    return rev ? compare_values(ky, kx, "<") < 0 : compare_values(kx, ky, "<") < 0;
  });
  return Value::make_list(std::move(items));
}

Value f_list(Interpreter&, const Value& v, CallArgs& args) {
  no_args("list", args);
  return Value::make_list(iterate(v));
}

Value f_first(Interpreter&, const Value& v, CallArgs& args) {
  no_args("first", args);
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value f_last(Interpreter&, const Value& v, CallArgs& args) {
  no_args("last", args);
  if (is_iterator(v)) render_fail("'%s' object is not reversible", type_name(v).c_str());
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

// select / reject / selectattr / rejectattr share jinja2's prepare_select_or_reject.
template <bool kAttr, bool kKeep>
Value f_select(Interpreter& in, const Value& v, CallArgs& args) {
  if (!truthy(v)) return generator({}, "select_or_reject");  // jinja2 skips falsy input (None)
  size_t off = 0;
  Value attr;
  if (kAttr) {
    if (args.pos.empty()) render_fail("Missing parameter for attribute name");
    attr = args.pos[0];
    off = 1;
  }
  std::string test;
  CallArgs test_args;
  bool has_test = args.pos.size() > off;
  if (has_test) {
    test = str_of(args.pos[off]);
    test_args.pos.assign(args.pos.begin() + static_cast<std::ptrdiff_t>(off + 1), args.pos.end());
    test_args.kw = args.kw;
  }
  std::vector<Value> out;
  for (const Value& item : iterate(v)) {
    Value probe = kAttr ? lookup_path(item, attr) : item;
    CallArgs ta = test_args;
    bool ok = has_test ? in.apply_test(test, probe, ta) : truthy(probe);
    if (ok == kKeep) out.push_back(item);
  }
  return generator(std::move(out), "select_or_reject");
}

Value f_map(Interpreter& in, const Value& v, CallArgs& args) {
  std::vector<Value> out;
  if (!truthy(v)) return generator({}, "do_map");  // jinja2 skips falsy input (None)
  if (args.pos.empty()) {
    Value attribute, fallback;
    bool has_attr = false;
    for (const auto& [k, val] : args.kw) {
      if (k == "attribute") {
        attribute = val;
        has_attr = true;
      } else if (k == "default") {
        fallback = val;
      } else {
        render_fail("Unexpected keyword argument '%s'", k.c_str());
      }
    }
    if (!has_attr) render_fail("map requires a filter argument");
    for (const Value& item : iterate(v)) {
      Value r = lookup_path(item, attribute);
      out.push_back(r.is_undefined() && !fallback.is_undefined() ? fallback : r);
    }
    return generator(std::move(out), "do_map");
  }
  std::string name = str_of(args.pos[0]);
  CallArgs rest;
  rest.pos.assign(args.pos.begin() + 1, args.pos.end());
  rest.kw = args.kw;
  for (const Value& item : iterate(v)) {
    CallArgs ra = rest;
    out.push_back(in.apply_filter(name, item, ra));
  }
  return generator(std::move(out), "do_map");
}

// Python's int(str): optional sign, surrounding whitespace, `_` between digits.
bool parse_int(const std::string& s, int base, int64_t* out) {
  std::string t = py_strip(s, std::nullopt, true, true);
  std::string clean;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '_' && i > 0 && i + 1 < t.size() && t[i - 1] != '_') continue;
    clean += t[i];
  }
  if (clean.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(clean.c_str(), &end, base);
  if (errno || *end || clean == "+" || clean == "-" ||
      std::isspace(static_cast<unsigned char>(clean[0]))) {
    return false;
  }
  *out = v;
  return true;
}

bool parse_float(const std::string& s, double* out) {
  std::string t = py_strip(s, std::nullopt, true, true);
  if (t.empty()) return false;
  std::string low = py_lower(t);
  if (low == "nan" || low == "+nan" || low == "-nan") {
    *out = NAN;
    return true;
  }
  if (low == "inf" || low == "+inf" || low == "infinity" || low == "+infinity") {
    *out = INFINITY;
    return true;
  }
  if (low == "-inf" || low == "-infinity") {
    *out = -INFINITY;
    return true;
  }
  if (low.find_first_not_of("0123456789+-.e_") != std::string::npos) return false;
  char* end = nullptr;
  *out = std::strtod(t.c_str(), &end);
  return *end == 0;
}

Value f_int(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("int", args, {"default", "base"});
  require_defined(v);
  Value fallback = a.get_or(0, Value(0));
  if (v.is_int() || v.is_bool()) return v.as_int();
  if (v.is_float()) {
    double f = v.as_float();
    if (!std::isfinite(f) || std::fabs(f) > 9.2e18) return fallback;
    return static_cast<int64_t>(std::trunc(f));
  }
  if (v.is_string()) {
    int64_t i;
    if (parse_int(v.str(), static_cast<int>(a.get_int(1, 10)), &i)) return i;
    double f;
    if (parse_float(v.str(), &f) && std::isfinite(f) && std::fabs(f) < 9.2e18) {
      return static_cast<int64_t>(std::trunc(f));
    }
  }
  return fallback;
}

Value f_float(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("float", args, {"default"});
  require_defined(v);
  if (v.is_number() || v.is_bool()) return v.as_float();
  double f;
  if (v.is_string() && parse_float(v.str(), &f)) return f;
  return a.get_or(0, Value(0.0));
}

Value f_abs(Interpreter&, const Value& v, CallArgs& args) {
  no_args("abs", args);
  if (v.is_int() || v.is_bool()) {
    if (v.as_int() == INT64_MIN) render_fail("integer overflow");
    return std::abs(v.as_int());
  }
  if (v.is_float()) return std::fabs(v.as_float());
  render_fail("bad operand type for abs(): '%s'", type_name(v).c_str());
}

Value f_round(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("round", args, {"precision", "method"});
  int64_t prec = std::clamp<int64_t>(a.get_int(0, 0), -300, 300);
  std::string method = a.get_str(1, "common");
  if (method != "common" && method != "ceil" && method != "floor") {
    render_fail("method must be common, ceil or floor");
  }
  if (!v.is_number() && !v.is_bool())
    render_fail("type %s doesn't define __round__ method", type_name(v).c_str());
  if (method == "common" && !v.is_float() && prec >= 0) return v.as_int();
  double x = v.as_float();
  if (method != "common") {
    double scale = std::pow(10.0, static_cast<double>(prec));
    return (method == "ceil" ? std::ceil(x * scale) : std::floor(x * scale)) / scale;
  }
  if (prec < 0) {
    double scale = std::pow(10.0, static_cast<double>(-prec));
    double r = std::nearbyint(x / scale) * scale;
    return v.is_float() ? Value(r) : Value(static_cast<int64_t>(r));
  }
  // printf rounds the exact binary value half-to-even, like Python's round().
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(prec), x);
  return std::strtod(buf, nullptr);
}

template <bool kUnique>
Value sort_or_unique(const Value& v, CallArgs& args) {
  std::vector<Value> items = iterate(v);
  bool rev = false, cs = false;
  Value attr;
  if (kUnique) {
    ArgParser a("unique", args, {"case_sensitive", "attribute"});
    cs = truthy(a.get_or(0, false));
    attr = a.get_or(1, Value::none());
  } else {
    ArgParser a("sort", args, {"reverse", "case_sensitive", "attribute"});
    rev = truthy(a.get_or(0, false));
    cs = truthy(a.get_or(1, false));
    attr = a.get_or(2, Value::none());
  }
  // `attribute` may list several comma-separated keys for sort.
  std::vector<Value> attrs;
  if (attr.is_string() && !kUnique) {
    for (const std::string& p : py_split(attr.str(), std::string(","), -1))
      attrs.push_back(Value(p));
  } else if (!attr.is_none()) {
    attrs.push_back(attr);
  }
  auto key = [&](const Value& item) {
    if (attrs.empty()) return fold_case(item, cs);
    std::vector<Value> parts;
    for (const Value& at : attrs) parts.push_back(fold_case(lookup_path(item, at), cs));
    return parts.size() == 1 ? parts[0] : Value::make_list(std::move(parts));
  };
  if (kUnique) {
    std::vector<Value> out, seen;
    for (const Value& item : items) {
      Value k = key(item);
      if (std::none_of(seen.begin(), seen.end(),
                       [&](const Value& s) { return values_equal(s, k); })) {
        seen.push_back(k);
        out.push_back(item);
      }
    }
    return generator(std::move(out), "do_unique");
  }
  std::vector<std::pair<Value, Value>> keyed;
  for (const Value& item : items) keyed.emplace_back(key(item), item);
  std::stable_sort(keyed.begin(), keyed.end(), [rev](const auto& x, const auto& y) {
    return rev ? compare_values(y.first, x.first, "<") < 0
               : compare_values(x.first, y.first, "<") < 0;
  });
  std::vector<Value> out;
  for (auto& kv : keyed) out.push_back(kv.second);
  return Value::make_list(std::move(out));
}

Value f_sort(Interpreter&, const Value& v, CallArgs& args) {
  return sort_or_unique<false>(v, args);
}
Value f_unique(Interpreter&, const Value& v, CallArgs& args) {
  return sort_or_unique<true>(v, args);
}

template <bool kMax>
Value f_minmax(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a(kMax ? "max" : "min", args, {"case_sensitive", "attribute"});
  bool cs = truthy(a.get_or(0, false));
  Value attr = a.get_or(1, Value::none());
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  auto key = [&](const Value& item) {
    return fold_case(attr.is_none() ? item : lookup_path(item, attr), cs);
  };
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    int c = compare_values(key(items[i]), key(items[best]), "<");
    if (kMax ? c > 0 : c < 0) best = i;
  }
  return items[best];
}

Value f_sum(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("sum", args, {"attribute", "start"});
  Value total = a.get_or(1, Value(0));
  Value attr = a.get_or(0, Value::none());
  for (const Value& item : iterate(v)) {
    total = op_binary("+", total, attr.is_none() ? item : lookup_path(item, attr));
  }
  return total;
}

Value f_reverse(Interpreter&, const Value& v, CallArgs& args) {
  no_args("reverse", args);
  if (v.is_string()) {
    std::u32string u = decode_utf8(v.str());
    return like(v, encode_utf8(std::u32string(u.rbegin(), u.rend())));
  }
  // reversed() where Python allows it, else a reversed list (jinja2's fallback).
  bool reversible = !is_iterator(v) && (v.is_seq() || v.is_mapping() || v.is_undefined());
  std::vector<Value> items = iterate(v);
  std::vector<Value> rev(items.rbegin(), items.rend());
  return Value::make_list(std::move(rev), reversible ? SeqKind::kReverseIterator : SeqKind::kList);
}

Value f_indent(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("indent", args, {"width", "first", "blank"});
  std::string ind;
  if (a.has(0) && a.get(0).is_string()) {
    ind = a.get(0).str();
  } else {
    ind = std::string(static_cast<size_t>(std::clamp<int64_t>(a.get_int(0, 4), 0, 1000)), ' ');
  }
  bool first = truthy(a.get_or(1, false));
  bool blank = truthy(a.get_or(2, false));
  // jinja2 appends "\n" before splitlines() so a trailing newline yields an empty last line.
  std::vector<std::string> lines = py_splitlines(str_of(v) + "\n", false);
  std::string out;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) out += "\n" + ind;
      out += lines[i];
    }
  } else if (!lines.empty()) {
    out = lines[0];
    for (size_t i = 1; i < lines.size(); ++i)
      out += "\n" + (lines[i].empty() ? "" : ind + lines[i]);
  }
  return first ? ind + out : out;
}

Value f_escape(Interpreter&, const Value& v, CallArgs& args) {
  no_args("escape", args);
  return v.is_markup() ? v : Value::markup(html_escape(str_of(v)));
}

Value f_forceescape(Interpreter&, const Value& v, CallArgs& args) {
  no_args("forceescape", args);
  return Value::markup(html_escape(str_of(v)));
}

Value f_safe(Interpreter&, const Value& v, CallArgs& args) {
  no_args("safe", args);
  return Value::markup(str_of(v));
}

Value f_wordcount(Interpreter&, const Value& v, CallArgs& args) {
  no_args("wordcount", args);
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : decode_utf8(str_of(v))) {
    bool w =
        c == '_' || py_isalpha(c) || py_isdigit(c) || (c >= 0x80 && !py_isspace(c) && c > 0xBF);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return n;
}

Value f_batch(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("batch", args, {"linecount", "fill_with"});
  int64_t n = a.get_int(0, 0);
  if (n <= 0) render_fail("batch size must be positive");
  std::vector<Value> out, cur;
  for (const Value& item : iterate(v)) {
    cur.push_back(item);
    if (static_cast<int64_t>(cur.size()) == n) {
      out.push_back(Value::make_list(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (a.has(1) && !a.get(1).is_none()) {
      while (static_cast<int64_t>(cur.size()) < n) cur.push_back(a.get(1));
    }
    out.push_back(Value::make_list(std::move(cur)));
  }
  return generator(std::move(out), "do_batch");
}

Value f_slice(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("slice", args, {"slices", "fill_with"});
  int64_t slices = a.get_int(0, 0);
  if (slices <= 0) render_fail("slice count must be positive");
  std::vector<Value> seq = iterate(v);
  int64_t length = static_cast<int64_t>(seq.size());
  int64_t per = length / slices, extra = length % slices, offset = 0;
  std::vector<Value> out;
  for (int64_t i = 0; i < slices; ++i) {
    int64_t start = offset + i * per;
    if (i < extra) ++offset;
    int64_t end = offset + (i + 1) * per;
    std::vector<Value> part(seq.begin() + start, seq.begin() + end);
    if (a.has(1) && !a.get(1).is_none() && i >= extra) part.push_back(a.get(1));
    out.push_back(Value::make_list(std::move(part)));
  }
  return generator(std::move(out), "do_slice");
}

Value f_center(Interpreter& in, const Value& v, CallArgs& args) {
  ArgParser a("center", args, {"width"});
  CallArgs ca;
  ca.pos.push_back(a.get_or(0, Value(80)));
  return in.call(find_method(Value(str_of(v)), "center"), ca);
}

Value f_truncate(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("truncate", args, {"length", "killwords", "end", "leeway"});
  std::u32string s = decode_utf8(str_of(v));
  int64_t length = a.get_int(0, 255);
  bool killwords = truthy(a.get_or(1, false));
  std::u32string end = decode_utf8(a.get_str(2, "..."));
  int64_t leeway = a.get_int(3, 5);
  int64_t end_len = static_cast<int64_t>(end.size());
  if (length < end_len)
    render_fail("expected length >= %lld, got %lld", static_cast<long long>(end_len),
                static_cast<long long>(length));
  if (static_cast<int64_t>(s.size()) <= length + leeway) return encode_utf8(s);
  std::u32string head = s.substr(0, static_cast<size_t>(length - end_len));
  if (!killwords) {
    size_t sp = head.rfind(U' ');
    if (sp != std::u32string::npos) head.resize(sp);
  }
  return encode_utf8(head + end);
}

Value f_format(Interpreter&, const Value& v, CallArgs& args) {
  if (!args.pos.empty() && !args.kw.empty()) {
    render_fail("can't handle positional and keyword arguments at the same time");
  }
  if (!args.kw.empty()) {
    Value d = Value::make_dict();
    for (const auto& [k, val] : args.kw) d.dict().set(Value(k), val);
    return like(v, percent_format(str_of(v), d, v.is_markup()));
  }
  return like(
      v, percent_format(str_of(v), Value::make_list(args.pos, SeqKind::kTuple), v.is_markup()));
}

// Python getattr() only: methods, namespace/loop attributes, but not dict keys.
Value f_attr(Interpreter&, const Value& v, CallArgs& args) {
  ArgParser a("attr", args, {"name"});
  std::string name = str_of(a.get(0));
  require_defined(v);
  if (v.is_dict() && !v.is_mapping()) return get_attr(v, name);
  Value m = find_method(v, name);
  if (!m.is_undefined()) return m;
  return Value::undefined("'" + type_name(v) + " object' has no attribute '" + name + "'");
}

Value f_pprint(Interpreter&, const Value& v, CallArgs& args) {
  no_args("pprint", args);
  return repr(v);
}

const std::unordered_map<std::string, FilterFn>& filters() {
  static const std::unordered_map<std::string, FilterFn> table = {
      {"abs", f_abs},
      {"attr", f_attr},
      {"batch", f_batch},
      {"capitalize", f_capitalize},
      {"center", f_center},
      {"count", f_length},
      {"d", f_default},
      {"default", f_default},
      {"dictsort", f_dictsort},
      {"e", f_escape},
      {"escape", f_escape},
      {"first", f_first},
      {"float", f_float},
      {"forceescape", f_forceescape},
      {"format", f_format},
      {"indent", f_indent},
      {"int", f_int},
      {"items", f_items},
      {"join", f_join},
      {"keys", f_keys},
      {"last", f_last},
      {"length", f_length},
      {"list", f_list},
      {"lower", f_lower},
      {"map", f_map},
      {"max", f_minmax<true>},
      {"min", f_minmax<false>},
      {"pprint", f_pprint},
      {"reject", f_select<false, false>},
      {"rejectattr", f_select<true, false>},
      {"replace", f_replace},
      {"reverse", f_reverse},
      {"round", f_round},
      {"safe", f_safe},
      {"select", f_select<false, true>},
      {"selectattr", f_select<true, true>},
      {"slice", f_slice},
      {"sort", f_sort},
      {"string", f_string},
      {"sum", f_sum},
      {"title", f_title},
      {"tojson", f_tojson},
      {"trim", f_trim},
      {"truncate", f_truncate},
      {"unique", f_unique},
      {"upper", f_upper},
      {"values", f_values},
      {"wordcount", f_wordcount},
  };
  return table;
}

}  // namespace

FilterFn find_filter(const std::string& name) {
  auto it = filters().find(name);
  return it == filters().end() ? nullptr : it->second;
}

}  // namespace llm::jinja
