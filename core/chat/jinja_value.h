// Runtime values of the Jinja engine, modelled on the Python objects jinja2 works with:
// lists and dicts are shared by reference (a namespace or list mutated in a loop is seen
// everywhere), strings are immutable, and Undefined carries the message Jinja would raise.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace llm::jinja {

// Raised while rendering. `line` stays 0 until the interpreter attaches the line of the
// innermost template node that was being evaluated.
class RenderError : public std::runtime_error {
 public:
  explicit RenderError(const std::string& msg, int line = 0)
      : std::runtime_error(msg), line(line) {}
  int line;
};

// raise_exception(msg) called by a template: surfaces as exactly `msg`.
class RaisedError : public std::runtime_error {
 public:
  explicit RaisedError(const std::string& msg) : std::runtime_error(msg) {}
};

[[noreturn]] void render_fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Cap on strings and lists a template builds (`'x' * n`, `s ~ s` or `l + l` in a loop), so
// repeated doubling fails cleanly instead of exhausting memory.
constexpr size_t kMaxStringBytes = size_t{256} << 20;
constexpr size_t kMaxListItems = size_t{16} << 20;
void check_string_size(size_t bytes);
void check_list_size(size_t items);

class Value;
class Interpreter;
struct List;
class Dict;
struct Callable;

// Arguments of a call: positional then keyword, as written in the template.
struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

using NativeFn = std::function<Value(Interpreter&, CallArgs&)>;

// A Dict is a plain dict, a namespace() object or a for-loop's `loop` variable.
enum class DictKind : uint8_t { kDict, kNamespace, kLoop };

// The Python type behind a sequence value. Only lists and tuples are real sequences; the
// others reproduce what jinja2 filters and dict methods return: generators (always true,
// no len(), consumed by one iteration, not JSON-serializable), reversed() iterators, range
// objects and dict views.
enum class SeqKind : uint8_t {
  kList,
  kTuple,
  kGenerator,
  kReverseIterator,
  kRange,
  kDictItems,
  kDictKeys,
  kDictValues
};

class Value {
 public:
  enum class Kind : uint8_t {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kCallable
  };

  Value() = default;                            // undefined
  Value(bool b) : kind_(Kind::kBool), b_(b) {}  // NOLINT: implicit like Python literals
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Value(T i) : kind_(Kind::kInt), i_(static_cast<int64_t>(i)) {}  // NOLINT
  Value(double f) : kind_(Kind::kFloat), f_(f) {}                 // NOLINT
  Value(std::string s);                                           // NOLINT
  Value(const char* s) : Value(std::string(s)) {}                 // NOLINT

  // A markupsafe.Markup string (from |safe or |escape): `+` HTML-escapes the other operand.
  static Value markup(std::string s);
  static Value none();
  // An Undefined whose use raises `message` (e.g. "'x' is undefined").
  static Value undefined(std::string message);
  // `label` names a generator's function or holds a range's repr.
  static Value make_list(std::vector<Value> items = {}, SeqKind kind = SeqKind::kList,
                         std::string label = "");
  static Value make_dict(DictKind kind = DictKind::kDict);
  static Value make_callable(std::string name, NativeFn fn, bool is_macro = false);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  // int or float; Python bools count as ints for arithmetic but not here.
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_markup() const { return kind_ == Kind::kString && markup_; }
  bool is_seq() const { return kind_ == Kind::kList; }  // any SeqKind
  bool is_list() const;                                 // a Python list or tuple
  bool is_tuple() const;
  SeqKind seq_kind() const;
  bool is_dict() const { return kind_ == Kind::kDict; }  // dict, namespace or loop
  bool is_mapping() const;                               // a plain dict
  bool is_callable() const { return kind_ == Kind::kCallable; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return kind_ == Kind::kBool ? (b_ ? 1 : 0) : i_; }
  double as_float() const { return kind_ == Kind::kFloat ? f_ : static_cast<double>(as_int()); }
  // The text of a string, or the error message of an undefined.
  const std::string& str() const { return *static_cast<const std::string*>(ptr_.get()); }
  List& list() const { return *static_cast<List*>(ptr_.get()); }
  Dict& dict() const { return *static_cast<Dict*>(ptr_.get()); }
  Callable& callable() const { return *static_cast<Callable*>(ptr_.get()); }
  // Identity of a reference value (Python's `is`).
  const void* identity() const { return ptr_.get(); }

 private:
  Kind kind_ = Kind::kUndefined;
  bool markup_ = false;
  union {
    bool b_;
    int64_t i_ = 0;
    double f_;
  };
  std::shared_ptr<void> ptr_;  // std::string, List, Dict or Callable, by kind_
};

// Containers record how deeply they nest (1 + deepest child, never lowered), so runaway
// structures like `{% set ns.x = [ns.x] %}` in a loop fail instead of overflowing the stack
// when they are printed or destroyed.
constexpr int kMaxValueNesting = 1000;
// Raises `*depth` to cover `child`; fails past kMaxValueNesting.
void note_child(int* depth, const Value& child);

struct List {
  std::vector<Value> items;
  SeqKind kind = SeqKind::kList;
  std::string label;
  int depth = 1;

  void push_back(Value v) {
    note_child(&depth, v);
    items.push_back(std::move(v));
  }
};

// Insertion-ordered dict with Python key equality (1 == 1.0 == True).
class Dict {
 public:
  explicit Dict(DictKind k = DictKind::kDict) : kind(k) {}

  const Value* find(const Value& key) const;
  Value* find(const Value& key);
  void set(const Value& key, Value v);
  bool erase(const Value& key);
  void clear() {
    entries_.clear();
    index_.clear();
  }
  size_t size() const { return entries_.size(); }
  const std::vector<std::pair<Value, Value>>& entries() const { return entries_; }

  DictKind kind;
  int depth = 1;  // see kMaxValueNesting
  // A recursive for-loop's `loop(...)` makes the loop object callable.
  std::shared_ptr<Callable> call;

 private:
  std::vector<std::pair<Value, Value>> entries_;
  std::unordered_map<std::string, size_t> index_;
};

struct Callable {
  std::string name;
  NativeFn fn;
  bool is_macro = false;
};

inline SeqKind Value::seq_kind() const { return list().kind; }
inline bool Value::is_tuple() const {
  return kind_ == Kind::kList && list().kind == SeqKind::kTuple;
}
inline bool Value::is_list() const {
  return kind_ == Kind::kList && (list().kind == SeqKind::kList || list().kind == SeqKind::kTuple);
}
inline bool Value::is_mapping() const {
  return kind_ == Kind::kDict && dict().kind == DictKind::kDict;
}

// Python semantics of the basic protocols.
bool truthy(const Value& v);
std::string to_str(const Value& v);  // str(v); Undefined prints as ""
std::string repr(const Value& v);    // repr(v)
std::string type_name(const Value& v);
bool values_equal(const Value& a, const Value& b);
// Three-way comparison for <, <=, >, >=; throws like Python for unorderable types.
int compare_values(const Value& a, const Value& b, const char* op);

// json.dumps options, as transformers' tojson passes them.
struct JsonStyle {
  bool ensure_ascii = false;
  bool pretty = false;  // indent given
  std::string indent;   // per-level indent when pretty
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonStyle& style);
// markupsafe.escape: & < > " ' as HTML entities.
std::string html_escape(const std::string& s);

Value from_json(const nlohmann::json& j);
Value from_json(const nlohmann::ordered_json& j);

}  // namespace llm::jinja
