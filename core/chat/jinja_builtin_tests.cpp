// Builtin tests (`x is defined`, `x is divisibleby 3`, ...), as jinja2 defines them.
#include <unordered_map>

#include "core/chat/jinja_interp.h"
#include "core/chat/jinja_strings.h"

namespace llm::jinja {

namespace {

const Value& arg0(CallArgs& args, const char* test) {
  if (args.pos.empty()) render_fail("test '%s' needs an argument", test);
  return args.pos[0];
}

bool t_defined(Interpreter&, const Value& v, CallArgs&) { return !v.is_undefined(); }
bool t_undefined(Interpreter&, const Value& v, CallArgs&) { return v.is_undefined(); }
bool t_none(Interpreter&, const Value& v, CallArgs&) { return v.is_none(); }
bool t_boolean(Interpreter&, const Value& v, CallArgs&) { return v.is_bool(); }
bool t_true(Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && v.as_bool(); }
bool t_false(Interpreter&, const Value& v, CallArgs&) { return v.is_bool() && !v.as_bool(); }
bool t_integer(Interpreter&, const Value& v, CallArgs&) { return v.is_int(); }
bool t_float(Interpreter&, const Value& v, CallArgs&) { return v.is_float(); }
// Python's bool is a numbers.Number.
bool t_number(Interpreter&, const Value& v, CallArgs&) { return v.is_number() || v.is_bool(); }
bool t_string(Interpreter&, const Value& v, CallArgs&) { return v.is_string(); }
bool t_mapping(Interpreter&, const Value& v, CallArgs&) { return v.is_mapping(); }
// Undefined iterates as empty in jinja2, so it counts as iterable and as a sequence.
bool t_iterable(Interpreter&, const Value& v, CallArgs&) {
  return v.is_undefined() || v.is_string() || v.is_seq() || v.is_mapping() ||
         (v.is_dict() && v.dict().kind == DictKind::kLoop);
}
bool t_sequence(Interpreter&, const Value& v, CallArgs&) {
  return v.is_undefined() || v.is_string() || v.is_list() || v.is_mapping() ||
         (v.is_seq() && v.seq_kind() == SeqKind::kRange);
}
bool t_callable(Interpreter&, const Value& v, CallArgs&) {
  return v.is_callable() || (v.is_dict() && v.dict().call);
}
bool t_escaped(Interpreter&, const Value& v, CallArgs&) { return v.is_markup(); }

bool t_odd(Interpreter&, const Value& v, CallArgs&) {
  return values_equal(op_binary("%", v, Value(2)), Value(1));
}
bool t_even(Interpreter&, const Value& v, CallArgs&) {
  return values_equal(op_binary("%", v, Value(2)), Value(0));
}
bool t_divisibleby(Interpreter&, const Value& v, CallArgs& args) {
  return values_equal(op_binary("%", v, arg0(args, "divisibleby")), Value(0));
}

template <const char* kOp>
bool t_compare(Interpreter&, const Value& v, CallArgs& args) {
  return op_compare(kOp, v, arg0(args, kOp));
}
constexpr char kEq[] = "==";
constexpr char kNe[] = "!=";
constexpr char kLt[] = "<";
constexpr char kLe[] = "<=";
constexpr char kGt[] = ">";
constexpr char kGe[] = ">=";

bool t_in(Interpreter&, const Value& v, CallArgs& args) { return op_contains(arg0(args, "in"), v); }

// Python `is`: identity for containers, equal value and type for scalars.
bool t_sameas(Interpreter&, const Value& v, CallArgs& args) {
  const Value& other = arg0(args, "sameas");
  if (v.kind() != other.kind()) return false;
  switch (v.kind()) {
    case Value::Kind::kList:
    case Value::Kind::kDict:
    case Value::Kind::kCallable:
      return v.identity() == other.identity();
    default:
      return values_equal(v, other);
  }
}

bool t_lower(Interpreter&, const Value& v, CallArgs&) {
  std::string s = to_str(v);
  return py_lower(s) == s;
}
bool t_upper(Interpreter&, const Value& v, CallArgs&) {
  std::string s = to_str(v);
  return py_upper(s) == s;
}
bool t_filter(Interpreter&, const Value& v, CallArgs&) {
  return v.is_string() && find_filter(v.str()) != nullptr;
}
bool t_test(Interpreter&, const Value& v, CallArgs&) {
  return v.is_string() && find_test(v.str()) != nullptr;
}

const std::unordered_map<std::string, TestDef>& tests() {
  // Tests that compare against something take one argument; the others take none.
  static const std::unordered_map<std::string, TestDef> table = {
      {"defined", {t_defined, 0}},
      {"undefined", {t_undefined, 0}},
      {"none", {t_none, 0}},
      {"boolean", {t_boolean, 0}},
      {"true", {t_true, 0}},
      {"false", {t_false, 0}},
      {"integer", {t_integer, 0}},
      {"float", {t_float, 0}},
      {"number", {t_number, 0}},
      {"string", {t_string, 0}},
      {"mapping", {t_mapping, 0}},
      {"iterable", {t_iterable, 0}},
      {"sequence", {t_sequence, 0}},
      {"callable", {t_callable, 0}},
      {"escaped", {t_escaped, 0}},
      {"odd", {t_odd, 0}},
      {"even", {t_even, 0}},
      {"divisibleby", {t_divisibleby, 1}},
      {"eq", {t_compare<kEq>, 1}},
      {"equalto", {t_compare<kEq>, 1}},
      {"==", {t_compare<kEq>, 1}},
      {"ne", {t_compare<kNe>, 1}},
      {"!=", {t_compare<kNe>, 1}},
      {"lt", {t_compare<kLt>, 1}},
      {"lessthan", {t_compare<kLt>, 1}},
      {"<", {t_compare<kLt>, 1}},
      {"le", {t_compare<kLe>, 1}},
      {"<=", {t_compare<kLe>, 1}},
      {"gt", {t_compare<kGt>, 1}},
      {"greaterthan", {t_compare<kGt>, 1}},
      {">", {t_compare<kGt>, 1}},
      {"ge", {t_compare<kGe>, 1}},
      {">=", {t_compare<kGe>, 1}},
      {"in", {t_in, 1}},
      {"sameas", {t_sameas, 1}},
      {"lower", {t_lower, 0}},
      {"upper", {t_upper, 0}},
      {"filter", {t_filter, 0}},
      {"test", {t_test, 0}},
  };
  return table;
}

}  // namespace

const TestDef* find_test(const std::string& name) {
  auto it = tests().find(name);
  return it == tests().end() ? nullptr : &it->second;
}

}  // namespace llm::jinja
