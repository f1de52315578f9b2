#include "core/chat/jinja_value.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>

#include "core/chat/jinja_strings.h"

namespace llm::jinja {

namespace {

// Nesting limit for repr/JSON/conversion, so self-referencing lists fail instead of
// overflowing the stack.
constexpr int kMaxNesting = 512;

void check_depth(int depth) {
  if (depth > kMaxNesting) render_fail("maximum nesting depth exceeded");
}

}  // namespace

void note_child(int* depth, const Value& child) {
  int d = child.is_seq() ? child.list().depth : child.is_dict() ? child.dict().depth : 0;
  if (d + 1 > *depth) {
    if (d + 1 > kMaxValueNesting) render_fail("value nesting too deep");
    *depth = d + 1;
  }
}

void check_string_size(size_t bytes) {
  if (bytes > kMaxStringBytes) render_fail("string too large (over %zu bytes)", kMaxStringBytes);
}

void check_list_size(size_t items) {
  if (items > kMaxListItems) render_fail("list too large (over %zu items)", kMaxListItems);
}

void render_fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  throw RenderError(buf);
}

Value::Value(std::string s)
    : kind_(Kind::kString), ptr_(std::make_shared<std::string>(std::move(s))) {}

Value Value::markup(std::string s) {
  Value v(std::move(s));
  v.markup_ = true;
  return v;
}

Value Value::none() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::undefined(std::string message) {
  Value v;
  v.ptr_ = std::make_shared<std::string>(std::move(message));
  return v;
}

Value Value::make_list(std::vector<Value> items, SeqKind kind, std::string label) {
  Value v;
  v.kind_ = Kind::kList;
  auto l = std::make_shared<List>();
  for (const Value& item : items) note_child(&l->depth, item);
  l->items = std::move(items);
  l->kind = kind;
  l->label = std::move(label);
  v.ptr_ = std::move(l);
  return v;
}

Value Value::make_dict(DictKind kind) {
  Value v;
  v.kind_ = Kind::kDict;
  v.ptr_ = std::make_shared<Dict>(kind);
  return v;
}

Value Value::make_callable(std::string name, NativeFn fn, bool is_macro) {
  Value v;
  v.kind_ = Kind::kCallable;
  auto c = std::make_shared<Callable>();
  c->name = std::move(name);
  c->fn = std::move(fn);
  c->is_macro = is_macro;
  v.ptr_ = std::move(c);
  return v;
}

// ---- Dict ----------------------------------------------------------------------------------

// Hash key with Python's equality: 1, 1.0 and True are the same key.
static std::string dict_key(const Value& k) {
  switch (k.kind()) {
    case Value::Kind::kString:
      return "s" + k.str();
    case Value::Kind::kBool:
    case Value::Kind::kInt:
      return "n" + std::to_string(k.as_int());
    case Value::Kind::kFloat: {
      double f = k.as_float();
      if (f == std::floor(f) && std::fabs(f) < 9e18) {
        return "n" + std::to_string(static_cast<int64_t>(f));
      }
      return "f" + float_repr(f);
    }
    case Value::Kind::kNone:
      return "N";
    case Value::Kind::kUndefined:
      return "U";
    case Value::Kind::kList:
      if (k.is_tuple()) return "t" + repr(k);
      break;
    default:
      break;
  }
  render_fail("unhashable type: '%s'", type_name(k).c_str());
}

const Value* Dict::find(const Value& key) const {
  auto it = index_.find(dict_key(key));
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

Value* Dict::find(const Value& key) {
  auto it = index_.find(dict_key(key));
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

void Dict::set(const Value& key, Value v) {
  note_child(&depth, v);
  std::string k = dict_key(key);
  auto it = index_.find(k);
  if (it != index_.end()) {
    entries_[it->second].second = std::move(v);
    return;
  }
  index_.emplace(std::move(k), entries_.size());
  entries_.emplace_back(key, std::move(v));
}

bool Dict::erase(const Value& key) {
  auto it = index_.find(dict_key(key));
  if (it == index_.end()) return false;
  size_t pos = it->second;
  entries_.erase(entries_.begin() + pos);
  index_.erase(it);
  for (auto& kv : index_) {
    if (kv.second > pos) --kv.second;
  }
  return true;
}

// ---- Python protocols ------------------------------------------------------------------------

bool truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return v.as_bool();
    case Value::Kind::kInt:
      return v.as_int() != 0;
    case Value::Kind::kFloat:
      return v.as_float() != 0.0;
    case Value::Kind::kString:
      return !v.str().empty();
    case Value::Kind::kList:
      // Iterators have no __len__/__bool__, so Python treats them as true even when empty.
      return v.seq_kind() == SeqKind::kGenerator || v.seq_kind() == SeqKind::kReverseIterator ||
             !v.list().items.empty();
    case Value::Kind::kDict:
      return v.dict().kind != DictKind::kDict || v.dict().size() > 0;
    case Value::Kind::kCallable:
      return true;
  }
  return false;
}

std::string type_name(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return v.is_markup() ? "Markup" : "str";
    case Value::Kind::kList:
      switch (v.seq_kind()) {
        case SeqKind::kList:
          return "list";
        case SeqKind::kTuple:
          return "tuple";
        case SeqKind::kGenerator:
          return "generator";
        case SeqKind::kReverseIterator:
          return "list_reverseiterator";
        case SeqKind::kRange:
          return "range";
        case SeqKind::kDictItems:
          return "dict_items";
        case SeqKind::kDictKeys:
          return "dict_keys";
        case SeqKind::kDictValues:
          return "dict_values";
      }
      return "list";
    case Value::Kind::kDict:
      switch (v.dict().kind) {
        case DictKind::kNamespace:
          return "Namespace";
        case DictKind::kLoop:
          return "LoopContext";
        default:
          return "dict";
      }
    case Value::Kind::kCallable:
      return v.callable().is_macro ? "Macro" : "function";
  }
  return "object";
}

static void repr_into(const Value& v, std::string& out, int depth);

static void repr_items(const Value& v, std::string& out, int depth) {
  const Dict& d = v.dict();
  out += '{';
  bool first = true;
  for (const auto& [k, val] : d.entries()) {
    if (!first) out += ", ";
    first = false;
    repr_into(k, out, depth + 1);
    out += ": ";
    repr_into(val, out, depth + 1);
  }
  out += '}';
}

static void repr_into(const Value& v, std::string& out, int depth) {
  check_depth(depth);
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      out += "Undefined";
      return;
    case Value::Kind::kString:
      if (v.is_markup()) out += "Markup(";
      out += py_repr_string(v.str());
      if (v.is_markup()) out += ")";
      return;
    case Value::Kind::kList: {
      const List& l = v.list();
      switch (l.kind) {
        case SeqKind::kGenerator:
          out += "<generator object " + l.label + ">";
          return;
        case SeqKind::kReverseIterator:
          out += "<list_reverseiterator object>";
          return;
        case SeqKind::kRange:
          out += l.label;
          return;
        case SeqKind::kDictItems:
        case SeqKind::kDictKeys:
        case SeqKind::kDictValues:
          out += type_name(v) + "(";
          break;
        default:
          break;
      }
      bool tuple = l.kind == SeqKind::kTuple;
      out += tuple ? '(' : '[';
      for (size_t i = 0; i < l.items.size(); ++i) {
        if (i) out += ", ";
        repr_into(l.items[i], out, depth + 1);
      }
      if (tuple && l.items.size() == 1) out += ',';
      out += tuple ? ')' : ']';
      if (l.kind != SeqKind::kList && !tuple) out += ')';
      return;
    }
    case Value::Kind::kDict:
      if (v.dict().kind == DictKind::kNamespace) {
        out += "<Namespace ";
        repr_items(v, out, depth);
        out += '>';
      } else if (v.dict().kind == DictKind::kLoop) {
        out += "<LoopContext>";
      } else {
        repr_items(v, out, depth);
      }
      return;
    case Value::Kind::kCallable:
      out += v.callable().is_macro ? "<Macro '" + v.callable().name + "'>"
                                   : "<function " + v.callable().name + ">";
      return;
    default:
      out += to_str(v);
  }
}

std::string repr(const Value& v) {
  std::string out;
  repr_into(v, out, 0);
  return out;
}

std::string to_str(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "";
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return v.as_bool() ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(v.as_int());
    case Value::Kind::kFloat:
      return float_repr(v.as_float());
    case Value::Kind::kString:
      return v.str();
    default:
      return repr(v);
  }
}

static bool is_numeric(const Value& v) { return v.is_bool() || v.is_number(); }

bool values_equal(const Value& a, const Value& b) {
  if (is_numeric(a) && is_numeric(b)) {
    if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.str() == b.str();
    case Value::Kind::kList: {
      const List& x = a.list();
      const List& y = b.list();
      if (x.kind == SeqKind::kGenerator || x.kind == SeqKind::kReverseIterator) {
        return a.identity() == b.identity();
      }
      if (x.kind != y.kind || x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i) {
        if (!values_equal(x.items[i], y.items[i])) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      if (!a.is_mapping() || !b.is_mapping()) return a.identity() == b.identity();
      const Dict& x = a.dict();
      const Dict& y = b.dict();
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x.entries()) {
        const Value* other = y.find(k);
        if (!other || !values_equal(v, *other)) return false;
      }
      return true;
    }
    default:
      return a.identity() == b.identity();
  }
}

int compare_values(const Value& a, const Value& b, const char* op) {
  if (a.is_undefined()) render_fail("%s", a.str().c_str());
  if (b.is_undefined()) render_fail("%s", b.str().c_str());
  if (is_numeric(a) && is_numeric(b)) {
    if (a.is_float() || b.is_float()) {
      double x = a.as_float(), y = b.as_float();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    int c = a.str().compare(b.str());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list() && a.seq_kind() == b.seq_kind()) {
    const auto& x = a.list().items;
    const auto& y = b.list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!values_equal(x[i], y[i])) return compare_values(x[i], y[i], op);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  render_fail("'%s' not supported between instances of '%s' and '%s'", op, type_name(a).c_str(),
              type_name(b).c_str());
}

// ---- JSON ----------------------------------------------------------------------------------

static std::string json_key(const Value& k) {
  switch (k.kind()) {
    case Value::Kind::kString:
      return k.str();
    case Value::Kind::kBool:
      return k.as_bool() ? "true" : "false";
    case Value::Kind::kNone:
      return "null";
    case Value::Kind::kInt:
      return std::to_string(k.as_int());
    case Value::Kind::kFloat:
      return float_repr(k.as_float());
    default:
      render_fail("keys must be str, int, float, bool or None, not %s", type_name(k).c_str());
  }
}

static void json_into(const Value& v, const JsonStyle& st, int depth, std::string& out) {
  check_depth(depth);
  auto newline = [&](int level) {
    if (!st.pretty) return;
    out += '\n';
    for (int i = 0; i < level; ++i) out += st.indent;
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      out += "null";
      return;
    case Value::Kind::kBool:
      out += v.as_bool() ? "true" : "false";
      return;
    case Value::Kind::kInt:
      out += std::to_string(v.as_int());
      return;
    case Value::Kind::kFloat: {
      double f = v.as_float();
      out += std::isnan(f)   ? "NaN"
             : std::isinf(f) ? (f > 0 ? "Infinity" : "-Infinity")
                             : float_repr(f);
      return;
    }
    case Value::Kind::kString:
      out += json_quote(v.str(), st.ensure_ascii);
      return;
    case Value::Kind::kList: {
      if (!v.is_list()) break;
      const auto& items = v.list().items;
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += st.item_sep;
        newline(depth + 1);
        json_into(items[i], st, depth + 1, out);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::kDict: {
      if (!v.is_mapping()) break;
      std::vector<std::pair<std::string, const Value*>> items;
      for (const auto& [k, val] : v.dict().entries()) items.emplace_back(json_key(k), &val);
      if (items.empty()) {
        out += "{}";
        return;
      }
      if (st.sort_keys) {
        std::stable_sort(items.begin(), items.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
      }
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += st.item_sep;
        newline(depth + 1);
        out += json_quote(items[i].first, st.ensure_ascii);
        out += st.key_sep;
        json_into(*items[i].second, st, depth + 1, out);
      }
      newline(depth);
      out += '}';
      return;
    }
    default:
      break;
  }
  render_fail("Object of type %s is not JSON serializable", type_name(v).c_str());
}

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string to_json(const Value& v, const JsonStyle& style) {
  std::string out;
  json_into(v, style, 0, out);
  return out;
}

template <typename J>
static Value convert_json(const J& j, int depth) {
  check_depth(depth);
  switch (j.type()) {
    case nlohmann::json::value_t::object: {
      Value d = Value::make_dict();
      for (auto it = j.begin(); it != j.end(); ++it) {
        d.dict().set(Value(it.key()), convert_json(it.value(), depth + 1));
      }
      return d;
    }
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(convert_json(e, depth + 1));
      return Value::make_list(std::move(items));
    }
    case nlohmann::json::value_t::string:
      return Value(j.template get<std::string>());
    case nlohmann::json::value_t::boolean:
      return Value(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value(j.template get<double>());
    default:
      return Value::none();
  }
}

Value from_json(const nlohmann::json& j) { return convert_json(j, 0); }
Value from_json(const nlohmann::ordered_json& j) { return convert_json(j, 0); }

}  // namespace llm::jinja
