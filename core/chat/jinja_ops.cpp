// Python semantics of operators, attribute/item access, slicing and iteration, with the
// error messages Python and jinja2 give.
#include <cmath>
#include <cstdio>

#include "core/chat/jinja_interp.h"
#include "core/chat/jinja_strings.h"

namespace llm::jinja {

namespace {

bool numeric(const Value& v) { return v.is_bool() || v.is_number(); }
bool int_like(const Value& v) { return v.is_bool() || v.is_int(); }

// jinja2's object_type_repr, used in "has no attribute" messages.
std::string object_type(const Value& v) {
  if (v.is_none()) return "None";
  if (v.is_dict() && v.dict().kind == DictKind::kNamespace) return "jinja2.utils.Namespace object";
  if (v.is_dict() && v.dict().kind == DictKind::kLoop) return "jinja2.runtime.LoopContext object";
  return type_name(v) + " object";
}

Value missing_attr(const Value& obj, const std::string& name) {
  return Value::undefined("'" + object_type(obj) + "' has no attribute '" + name + "'");
}

Value missing_item(const Value& obj, const Value& key) {
  if (key.is_string()) return missing_attr(obj, key.str());
  return Value::undefined(object_type(obj) + " has no element " + repr(key));
}

[[noreturn]] void unsupported(const std::string& op, const Value& a, const Value& b) {
  render_fail("unsupported operand type(s) for %s: '%s' and '%s'", op.c_str(), type_name(a).c_str(),
              type_name(b).c_str());
}

// Python ints are unbounded; ours are int64, so overflow is an error rather than a wrap.
int64_t checked_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) render_fail("integer overflow");
  return r;
}
int64_t checked_sub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) render_fail("integer overflow");
  return r;
}
int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) render_fail("integer overflow");
  return r;
}

int64_t int_pow(int64_t base, int64_t exp) {
  int64_t result = 1;
  while (exp > 0) {
    if (exp & 1) result = checked_mul(result, base);
    exp >>= 1;
    if (exp > 0) base = checked_mul(base, base);
  }
  return result;
}

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (int_like(a) && int_like(b)) {
    int64_t x = a.as_int(), y = b.as_int();
    if (op == "+") return checked_add(x, y);
    if (op == "-") return checked_sub(x, y);
    if (op == "*") return checked_mul(x, y);
    if (op == "/") {
      if (y == 0) render_fail("division by zero");
      return static_cast<double>(x) / static_cast<double>(y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) render_fail("integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) render_fail("integer overflow");
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {  // Python floors toward negative infinity
        --q;
        m += y;
      }
      return op == "//" ? q : m;
    }
    if (op == "**") {
      if (y >= 0) return int_pow(x, y);
      if (x == 0) render_fail("0.0 cannot be raised to a negative power");
      return std::pow(static_cast<double>(x), static_cast<double>(y));
    }
  }
  double x = a.as_float(), y = b.as_float();
  if (op == "+") return x + y;
  if (op == "-") return x - y;
  if (op == "*") return x * y;
  if (op == "/") {
    if (y == 0) render_fail("float division by zero");
    return x / y;
  }
  if (op == "//" || op == "%") {
    if (y == 0) render_fail("float modulo");
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    if (op == "%") return m;
    return std::round((x - m) / y);
  }
  if (op == "**") {
    if (x == 0 && y < 0) render_fail("0.0 cannot be raised to a negative power");
    return std::pow(x, y);
  }
  unsupported(op, a, b);
}

Value repeat(const Value& seq, const Value& count) {
  int64_t n = std::max<int64_t>(0, count.as_int());
  if (seq.is_string()) {
    if (n > 0) check_string_size(seq.str().size() * static_cast<uint64_t>(n));
    std::string out;
    out.reserve(seq.str().size() * static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) out += seq.str();
    return seq.is_markup() ? Value::markup(std::move(out)) : Value(std::move(out));
  }
  const auto& items = seq.list().items;
  if (n > 0) check_list_size(items.size() * static_cast<uint64_t>(n));
  std::vector<Value> out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), items.begin(), items.end());
  return Value::make_list(std::move(out), seq.seq_kind());
}

}  // namespace

Value op_binary(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) render_fail("%s", a.str().c_str());
  if (b.is_undefined()) render_fail("%s", b.str().c_str());
  if (numeric(a) && numeric(b)) return arithmetic(op, a, b);
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      check_string_size(a.str().size() + b.str().size());
      if (!a.is_markup() && !b.is_markup()) return a.str() + b.str();
      // Markup + str escapes the plain side (markupsafe), as `"x"|safe + y` relies on.
      return Value::markup((a.is_markup() ? a.str() : html_escape(a.str())) +
                           (b.is_markup() ? b.str() : html_escape(b.str())));
    }
    if (a.is_list() && b.is_list() && a.seq_kind() == b.seq_kind()) {
      check_list_size(a.list().items.size() + b.list().items.size());
      std::vector<Value> items = a.list().items;
      items.insert(items.end(), b.list().items.begin(), b.list().items.end());
      return Value::make_list(std::move(items), a.seq_kind());
    }
    if ((a.is_string() && !a.is_markup()) || a.is_list()) {
      render_fail("can only concatenate %s (not \"%s\") to %s", type_name(a).c_str(),
                  type_name(b).c_str(), type_name(a).c_str());
    }
  }
  if (op == "*") {
    if ((a.is_string() || a.is_list()) && int_like(b)) return repeat(a, b);
    if ((b.is_string() || b.is_list()) && int_like(a)) return repeat(b, a);
  }
  if (op == "%" && a.is_string()) {
    if (!a.is_markup()) return percent_format(a.str(), b);
    return Value::markup(percent_format(a.str(), b, true));
  }
  unsupported(op, a, b);
}

Value op_neg(const Value& v, bool negate) {
  if (v.is_undefined()) render_fail("%s", v.str().c_str());
  if (int_like(v)) {
    if (!negate) return v.as_int();
    if (v.as_int() == INT64_MIN) render_fail("integer overflow");
    return -v.as_int();
  }
  if (v.is_float()) return negate ? -v.as_float() : v.as_float();
  render_fail("bad operand type for unary %c: '%s'", negate ? '-' : '+', type_name(v).c_str());
}

bool op_contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        render_fail("'in <string>' requires string as left operand, not %s",
                    type_name(item).c_str());
      }
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& v : container.list().items) {
        if (values_equal(v, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      if (container.is_mapping()) return container.dict().find(item) != nullptr;
      break;
    default:
      break;
  }
  render_fail("argument of type '%s' is not iterable", type_name(container).c_str());
}

bool op_compare(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return values_equal(a, b);
  if (op == "!=") return !values_equal(a, b);
  if (op == "in") return op_contains(b, a);
  if (op == "not in") return !op_contains(b, a);
  int c = compare_values(a, b, op.c_str());
  if (op == "<") return c < 0;
  if (op == "<=") return c <= 0;
  if (op == ">") return c > 0;
  return c >= 0;
}

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) render_fail("%s", obj.str().c_str());
  if (obj.is_mapping() || obj.is_string() || obj.is_list()) {
    // Python attributes (methods) win over keys for `a.b`.
    Value m = find_method(obj, name);
    if (!m.is_undefined()) return m;
  }
  if (obj.is_dict()) {
    const Value* v = obj.dict().find(Value(name));
    if (v) return *v;
  }
  return missing_attr(obj, name);
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) render_fail("%s", obj.str().c_str());
  bool is_range = obj.is_seq() && obj.seq_kind() == SeqKind::kRange;
  if ((obj.is_list() || is_range || obj.is_string()) && int_like(key)) {
    int64_t i = key.as_int();
    if (obj.is_seq()) {
      const auto& items = obj.list().items;
      int64_t n = static_cast<int64_t>(items.size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return items[static_cast<size_t>(i)];
    } else {
      std::u32string u = decode_utf8(obj.str());
      int64_t n = static_cast<int64_t>(u.size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return encode_utf8(u.substr(static_cast<size_t>(i), 1));
    }
    return missing_item(obj, key);
  }
  if (obj.is_dict() && (obj.is_mapping() || key.is_string())) {
    const Value* v = obj.dict().find(key);
    if (v) return *v;
  }
  // jinja2 falls back to attribute lookup for string keys (so d['items'] finds the method).
  if (key.is_string() && (obj.is_mapping() || obj.is_string() || obj.is_list())) {
    Value m = find_method(obj, key.str());
    if (!m.is_undefined()) return m;
  }
  return missing_item(obj, key);
}

Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) render_fail("%s", obj.str().c_str());
  for (const Value* b : {&start, &stop, &step}) {
    if (!b->is_none() && !int_like(*b)) return Value::undefined("invalid slice index");
  }
  bool is_range = obj.is_seq() && obj.seq_kind() == SeqKind::kRange;
  if (obj.is_mapping()) render_fail("unhashable type: 'slice'");  // dict[a:b] in Python
  if (!obj.is_list() && !is_range && !obj.is_string()) {
    return Value::undefined("object is not sliceable");
  }
  int64_t st = step.is_none() ? 1 : step.as_int();
  if (st == 0) render_fail("slice step cannot be zero");

  std::u32string chars;
  if (obj.is_string()) chars = decode_utf8(obj.str());
  const int64_t n = obj.is_string() ? static_cast<int64_t>(chars.size())
                                    : static_cast<int64_t>(obj.list().items.size());
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](const Value& v, int64_t dflt) {
    if (v.is_none()) return dflt;
    int64_t i = v.as_int();
    if (i < 0) {
      i += n;
      if (i < 0) i = st < 0 ? -1 : 0;
    } else if (i >= n) {
      i = st < 0 ? n - 1 : n;
    }
    return i;
  };
  int64_t lo = adjust(start, st < 0 ? n - 1 : 0);
  int64_t hi = adjust(stop, st < 0 ? -1 : n);
  std::vector<int64_t> idx;
  for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) idx.push_back(i);

  if (obj.is_string()) {
    std::u32string out;
    for (int64_t i : idx) out.push_back(chars[static_cast<size_t>(i)]);
    return encode_utf8(out);
  }
  std::vector<Value> out;
  for (int64_t i : idx) out.push_back(obj.list().items[static_cast<size_t>(i)]);
  return Value::make_list(std::move(out), obj.is_tuple() ? SeqKind::kTuple : SeqKind::kList);
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList: {
      if (v.seq_kind() != SeqKind::kGenerator && v.seq_kind() != SeqKind::kReverseIterator) {
        return v.list().items;
      }
      std::vector<Value> items;  // an iterator is used up by one pass, as in Python
      items.swap(v.list().items);
      return items;
    }
    case Value::Kind::kString: {
      std::vector<Value> out;
      for (char32_t c : decode_utf8(v.str())) out.push_back(encode_utf8(std::u32string(1, c)));
      return out;
    }
    case Value::Kind::kDict:
      if (v.is_mapping()) {
        std::vector<Value> out;
        for (const auto& kv : v.dict().entries()) out.push_back(kv.first);
        return out;
      }
      break;
    default:
      break;
  }
  render_fail("'%s' object is not iterable", type_name(v).c_str());
}

// printf-style `str % args`, as Python formats it.
std::string percent_format(const std::string& fmt, const Value& args, bool escape_args) {
  std::vector<Value> pos;
  const Value* mapping = nullptr;
  if (args.is_tuple()) {
    pos = args.list().items;
  } else {
    pos.push_back(args);
    if (args.is_mapping()) mapping = &args;
  }
  size_t next_arg = 0;
  bool used_mapping = false;
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    if (++i >= fmt.size()) render_fail("incomplete format");
    Value arg;
    bool have_arg = false;
    if (fmt[i] == '(') {
      size_t close = fmt.find(')', i);
      if (close == std::string::npos) render_fail("incomplete format key");
      if (!mapping) render_fail("format requires a mapping");
      const Value* v = mapping->dict().find(Value(fmt.substr(i + 1, close - i - 1)));
      if (!v) render_fail("'%s'", fmt.substr(i + 1, close - i - 1).c_str());
      arg = *v;
      have_arg = used_mapping = true;
      i = close + 1;
    }
    std::string flags;
    while (i < fmt.size() && std::string("-+ 0#").find(fmt[i]) != std::string::npos) {
      flags += fmt[i++];
    }
    auto take = [&]() -> Value {
      if (next_arg >= pos.size()) render_fail("not enough arguments for format string");
      return pos[next_arg++];
    };
    auto number = [&]() -> int {
      if (i < fmt.size() && fmt[i] == '*') {
        ++i;
        return static_cast<int>(std::min<int64_t>(take().as_int(), 1000));
      }
      int n = 0;
      while (i < fmt.size() && fmt[i] >= '0' && fmt[i] <= '9')
        n = std::min(n * 10 + (fmt[i++] - '0'), 1000);
      return n;
    };
    int width = number();
    int prec = -1;
    if (i < fmt.size() && fmt[i] == '.') {
      ++i;
      prec = number();
    }
    while (i < fmt.size() && (fmt[i] == 'l' || fmt[i] == 'h' || fmt[i] == 'L')) ++i;
    if (i >= fmt.size()) render_fail("incomplete format");
    char conv = fmt[i];
    if (conv == '%') {
      out += '%';
      continue;
    }
    if (!have_arg) arg = take();
    std::string piece;
    char buf[1200];
    std::string spec = "%" + flags + (width ? std::to_string(width) : "") +
                       (prec >= 0 ? "." + std::to_string(prec) : "");
    switch (conv) {
      case 's':
      case 'r':
      case 'a': {
        piece = conv == 's' ? to_str(arg) : repr(arg);
        if (escape_args && !arg.is_markup()) piece = html_escape(piece);
        if (prec >= 0) piece = encode_utf8(decode_utf8(piece).substr(0, static_cast<size_t>(prec)));
        size_t len = utf8_length(piece);
        if (static_cast<size_t>(width) > len) {
          std::string pad(static_cast<size_t>(width) - len, ' ');
          piece = flags.find('-') != std::string::npos ? piece + pad : pad + piece;
        }
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o':
        if (!numeric(arg)) {
          render_fail("%%%c format: a real number is required, not %s", conv,
                      type_name(arg).c_str());
        }
        std::snprintf(
            buf, sizeof buf, (spec + "ll" + (conv == 'i' || conv == 'u' ? 'd' : conv)).c_str(),
            static_cast<long long>(arg.is_float() ? std::trunc(arg.as_float()) : arg.as_int()));
        piece = buf;
        break;
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G':
        if (!numeric(arg)) {
          render_fail("must be real number, not %s", type_name(arg).c_str());
        }
        std::snprintf(buf, sizeof buf, (spec + conv).c_str(), arg.as_float());
        piece = buf;
        break;
      case 'c':
        if (arg.is_string()) {
          piece = arg.str();
        } else {
          append_utf8(piece, static_cast<char32_t>(arg.as_int()));
        }
        break;
      default:
        render_fail("unsupported format character '%c'", conv);
    }
    out += piece;
  }
  if (!mapping && !used_mapping && next_arg < pos.size()) {
    render_fail("not all arguments converted during string formatting");
  }
  return out;
}

}  // namespace llm::jinja
