// Tree-walking interpreter for parsed templates, plus the registries of builtins it calls
// (filters, tests, methods, globals), each implemented in its own file.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/chat/jinja.h"
#include "core/chat/jinja_ast.h"
#include "core/chat/jinja_value.h"

namespace llm::jinja {

// Variables visible at one point of a template. Jinja gives every for-loop iteration, macro
// call and with-block a fresh scope; `if` and `set` do not create one.
class Scope {
 public:
  explicit Scope(std::shared_ptr<Scope> parent) : parent_(std::move(parent)) {}
  const Value* lookup(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent_.get()) {
      auto it = s->vars_.find(name);
      if (it != s->vars_.end()) return &it->second;
    }
    return nullptr;
  }
  void set(const std::string& name, Value v) { vars_[name] = std::move(v); }

 private:
  std::shared_ptr<Scope> parent_;
  std::unordered_map<std::string, Value> vars_;
};
using ScopePtr = std::shared_ptr<Scope>;

class Interpreter {
 public:
  explicit Interpreter(const RenderOptions& options) : options_(options) {}
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  std::string render(const Body& body, const Value& context);

  // Entry points for builtins.
  Value call(const Value& fn, CallArgs& args);
  Value apply_filter(const std::string& name, const Value& input, CallArgs& args);
  bool apply_test(const std::string& name, const Value& input, CallArgs& args);
  const RenderOptions& options() const { return options_; }
  // Counts loop iterations against the render's budget.
  void count_iterations(size_t n);
  // Records a list/dict changed in place (append, ns.attr = ...): only such changes can make
  // reference cycles, so these containers are emptied when the render ends.
  void track_mutation(const Value& container);

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Flow exec(const Body& body, const ScopePtr& scope, std::string& out);
  Flow exec_stmt(const Stmt& s, const ScopePtr& scope, std::string& out);
  Flow exec_for(const Stmt& s, const ScopePtr& scope, const Value& iterable, int depth,
                std::string& out);
  void exec_set(const Stmt& s, const ScopePtr& scope);
  void exec_call_block(const Stmt& s, const ScopePtr& scope, std::string& out);
  Value make_macro(const Stmt& s, const ScopePtr& scope);
  void append_output(std::string& out, const std::string& text);

  Value eval(const Expr& e, const ScopePtr& scope);
  Value eval_inner(const Expr& e, const ScopePtr& scope);
  CallArgs eval_args(const std::vector<Arg>& args, const ScopePtr& scope);
  Value eval_filter_chain(const Expr& e, const Value& input, const ScopePtr& scope);
  void bind_target(const Expr& target, const Value& v, Scope& scope);
  void assign(const Stmt& s, const Value& v, const ScopePtr& scope);

  const RenderOptions& options_;
  size_t iterations_ = 0;
  int call_depth_ = 0;
  // Scopes that defined macros; closures refer to them weakly (no reference cycles), so
  // they are kept alive here for the duration of the render.
  std::vector<ScopePtr> closure_scopes_;
  std::unordered_map<const void*, Value> mutated_;
};

// Python-style binding of a builtin's arguments to parameter names.
class ArgParser {
 public:
  ArgParser(const std::string& what, const CallArgs& args,
            std::initializer_list<const char*> names);
  bool has(size_t i) const { return set_[i]; }
  const Value& get(size_t i) const { return values_[i]; }
  Value get_or(size_t i, Value fallback) const { return set_[i] ? values_[i] : fallback; }
  int64_t get_int(size_t i, int64_t fallback) const;
  std::string get_str(size_t i, const std::string& fallback) const;

 private:
  std::string what_;
  std::vector<Value> values_;
  std::vector<bool> set_;
};

// Python operators (jinja_ops.cpp).
Value op_binary(const std::string& op, const Value& a, const Value& b);
Value op_neg(const Value& v, bool negate);
bool op_contains(const Value& container, const Value& item);
bool op_compare(const std::string& op, const Value& a, const Value& b);
Value get_attr(const Value& obj, const std::string& name);
Value get_item(const Value& obj, const Value& key);
Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
std::vector<Value> iterate(const Value& v);
// printf-style `fmt % args`; escape_args HTML-escapes %s/%r pieces (Markup formatting).
std::string percent_format(const std::string& fmt, const Value& args, bool escape_args = false);

// Builtin registries (jinja_filters.cpp, jinja_builtin_tests.cpp, jinja_methods.cpp,
// jinja_globals.cpp).
using FilterFn = Value (*)(Interpreter&, const Value&, CallArgs&);
using TestFn = bool (*)(Interpreter&, const Value&, CallArgs&);
struct TestDef {
  TestFn fn;
  size_t num_args;  // arguments after the tested value
};
FilterFn find_filter(const std::string& name);
const TestDef* find_test(const std::string& name);
// A bound method of a str/list/dict value, or Undefined if there is none.
Value find_method(const Value& obj, const std::string& name);
void install_globals(Scope& scope);

}  // namespace llm::jinja
