// Global functions: jinja2's range/namespace/dict/joiner and transformers' additions
// raise_exception() and strftime_now().
#include <ctime>

#include "core/chat/jinja_interp.h"

namespace llm::jinja {

bool parse_date(const std::string& date, std::tm* out) {
  int y = 0, m = 0, d = 0;
  char tail = 0;
  if (std::sscanf(date.c_str(), "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || date.size() != 10 ||
      m < 1 || m > 12 || d < 1 || d > 31)
    return false;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = m - 1;
  tm.tm_mday = d;
  const std::time_t t = timegm(&tm);  // normalizes and fills in weekday / day of year
  gmtime_r(&t, &tm);
  if (tm.tm_mday != d || tm.tm_mon != m - 1) return false;  // Feb 30 became Mar 2
  *out = tm;
  return true;
}

namespace {

// range() materializes a list; jinja2's sandbox caps it at MAX_RANGE items too.
constexpr int64_t kMaxRange = 100'000;

int64_t range_arg(const Value& v) {
  if (!v.is_int() && !v.is_bool()) {
    render_fail("'%s' object cannot be interpreted as an integer", type_name(v).c_str());
  }
  return v.as_int();
}

Value g_range(Interpreter&, CallArgs& args) {
  if (!args.kw.empty()) render_fail("range() takes no keyword arguments");
  if (args.pos.empty() || args.pos.size() > 3) {
    render_fail("range expected 1 to 3 arguments, got %zu", args.pos.size());
  }
  int64_t start = 0, stop, step = 1;
  if (args.pos.size() == 1) {
    stop = range_arg(args.pos[0]);
  } else {
    start = range_arg(args.pos[0]);
    stop = range_arg(args.pos[1]);
    if (args.pos.size() == 3) step = range_arg(args.pos[2]);
  }
  if (step == 0) render_fail("range() arg 3 must not be zero");
  // Count without overflow: ceil((stop - start) / step) when positive.
  __int128 span = static_cast<__int128>(stop) - start;
  __int128 n = step > 0 ? (span > 0 ? (span + step - 1) / step : 0)
                        : (span < 0 ? (-span + (-static_cast<__int128>(step)) - 1) / -step : 0);
  if (n > kMaxRange) {
    render_fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (%lld).",
                static_cast<long long>(kMaxRange));
  }
  std::vector<Value> items;
  items.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) items.push_back(start + i * step);
  std::string label = "range(" + std::to_string(start) + ", " + std::to_string(stop) +
                      (step != 1 ? ", " + std::to_string(step) : "") + ")";
  return Value::make_list(std::move(items), SeqKind::kRange, label);
}

// namespace(...) / dict(...): a positional mapping and/or keyword arguments.
Value build_dict(CallArgs& args, DictKind kind, const char* what) {
  Value d = Value::make_dict(kind);
  if (args.pos.size() > 1) render_fail("%s expected at most 1 positional argument", what);
  if (!args.pos.empty()) {
    const Value& src = args.pos[0];
    if (src.is_undefined()) render_fail("%s", src.str().c_str());
    if (src.is_mapping()) {
      for (const auto& [k, v] : src.dict().entries()) d.dict().set(k, v);
    } else {
      for (const Value& pair : iterate(src)) {
        std::vector<Value> kv = iterate(pair);
        if (kv.size() != 2) render_fail("%s: sequence element has wrong length", what);
        d.dict().set(kv[0], kv[1]);
      }
    }
  }
  for (const auto& [k, v] : args.kw) d.dict().set(Value(k), v);
  return d;
}

Value g_namespace(Interpreter&, CallArgs& args) {
  return build_dict(args, DictKind::kNamespace, "namespace()");
}

Value g_dict(Interpreter&, CallArgs& args) { return build_dict(args, DictKind::kDict, "dict()"); }

Value g_raise_exception(Interpreter&, CallArgs& args) {
  ArgParser a("raise_exception", args, {"message"});
  throw RaisedError(to_str(a.get(0)));
}

Value g_strftime_now(Interpreter& in, CallArgs& args) {
  ArgParser a("strftime_now", args, {"format"});
  std::string fmt = to_str(a.get(0));
  std::tm tm{};
  const std::string& date = in.options().date;
  if (date.empty()) {
    std::time_t now = std::time(nullptr);
    localtime_r(&now, &tm);
  } else if (!parse_date(date, &tm)) {
    render_fail("invalid date '%s' (expected YYYY-MM-DD)", date.c_str());
  }
  // A sentinel character tells an empty result apart from a too-small buffer.
  std::string f = fmt + "\x01";
  for (size_t cap = 256; cap <= (size_t{1} << 20); cap *= 4) {
    std::string buf(cap, '\0');
    size_t n = std::strftime(&buf[0], cap, f.c_str(), &tm);
    if (n > 0) {
      buf.resize(n - 1);
      return buf;
    }
  }
  render_fail("strftime_now: formatted date too long");
}

Value g_joiner(Interpreter&, CallArgs& args) {
  ArgParser a("joiner", args, {"sep"});
  std::string sep = a.has(0) ? to_str(a.get(0)) : ", ";
  auto used = std::make_shared<bool>(false);
  return Value::make_callable("joiner", [sep, used](Interpreter&, CallArgs&) -> Value {
    if (!*used) {
      *used = true;
      return "";
    }
    return sep;
  });
}

}  // namespace

void install_globals(Scope& scope) {
  scope.set("range", Value::make_callable("range", g_range));
  scope.set("namespace", Value::make_callable("namespace", g_namespace));
  scope.set("dict", Value::make_callable("dict", g_dict));
  scope.set("joiner", Value::make_callable("joiner", g_joiner));
  scope.set("raise_exception", Value::make_callable("raise_exception", g_raise_exception));
  scope.set("strftime_now", Value::make_callable("strftime_now", g_strftime_now));
}

}  // namespace llm::jinja
