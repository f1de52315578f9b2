// Statement execution and expression evaluation.
#include <algorithm>

#include "core/chat/jinja_interp.h"

namespace llm::jinja {

namespace {

// Adds the line of the innermost failing node to a RenderError that has none yet.
struct LineTagger {
  template <typename F>
  static auto run(int line, F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (RenderError& e) {
      if (e.line == 0) e.line = line;
      throw;
    }
  }
};

}  // namespace

// ---- ArgParser -------------------------------------------------------------------------------

ArgParser::ArgParser(const std::string& what, const CallArgs& args,
                     std::initializer_list<const char*> names)
    : what_(what), values_(names.size()), set_(names.size(), false) {
  if (args.pos.size() > names.size()) {
    render_fail("%s() takes at most %zu argument(s) (%zu given)", what.c_str(), names.size(),
                args.pos.size());
  }
  for (size_t i = 0; i < args.pos.size(); ++i) {
    values_[i] = args.pos[i];
    set_[i] = true;
  }
  for (const auto& [key, value] : args.kw) {
    size_t i = 0;
    for (const char* n : names) {
      if (key == n) break;
      ++i;
    }
    if (i == names.size()) {
      render_fail("%s() got an unexpected keyword argument '%s'", what.c_str(), key.c_str());
    }
    if (set_[i])
      render_fail("%s() got multiple values for argument '%s'", what.c_str(), key.c_str());
    values_[i] = value;
    set_[i] = true;
  }
}

int64_t ArgParser::get_int(size_t i, int64_t fallback) const {
  if (!set_[i] || values_[i].is_none()) return fallback;
  const Value& v = values_[i];
  if (v.is_int() || v.is_bool()) return v.as_int();
  if (v.is_float()) return static_cast<int64_t>(v.as_float());
  render_fail("%s(): expected an integer, got '%s'", what_.c_str(), type_name(v).c_str());
}

std::string ArgParser::get_str(size_t i, const std::string& fallback) const {
  if (!set_[i]) return fallback;
  return to_str(values_[i]);
}

// ---- Interpreter: entry ------------------------------------------------------------------------

std::string Interpreter::render(const Body& body, const Value& context) {
  auto globals = std::make_shared<Scope>(nullptr);
  install_globals(*globals);
  auto top = std::make_shared<Scope>(globals);
  if (context.is_mapping()) {
    for (const auto& [k, v] : context.dict().entries()) top->set(to_str(k), v);
  }
  std::string out;
  exec(body, top, out);
  return out;
}

Interpreter::~Interpreter() {
  for (auto& kv : mutated_) {
    const Value& v = kv.second;
    if (v.is_seq()) v.list().items.clear();
    if (v.is_dict()) v.dict().clear();
  }
}

void Interpreter::track_mutation(const Value& container) {
  mutated_.emplace(container.identity(), container);
}

void Interpreter::count_iterations(size_t n) {
  iterations_ += n;
  if (iterations_ > options_.max_loop_iterations) {
    render_fail("too many loop iterations (limit %zu)", options_.max_loop_iterations);
  }
}

void Interpreter::append_output(std::string& out, const std::string& text) {
  out += text;
  if (out.size() > options_.max_output_bytes) {
    render_fail("output exceeds %zu bytes", options_.max_output_bytes);
  }
}

// ---- statements --------------------------------------------------------------------------------

Interpreter::Flow Interpreter::exec(const Body& body, const ScopePtr& scope, std::string& out) {
  for (const auto& s : body) {
    Flow f = LineTagger::run(s->line, [&] { return exec_stmt(*s, scope, out); });
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::exec_stmt(const Stmt& s, const ScopePtr& scope, std::string& out) {
  switch (s.kind) {
    case StmtKind::kText:
      append_output(out, s.text);
      return Flow::kNormal;
    case StmtKind::kOutput:
      append_output(out, to_str(eval(*s.expr, scope)));
      return Flow::kNormal;
    case StmtKind::kIf:
      for (size_t i = 0; i < s.conds.size(); ++i) {
        if (truthy(eval(*s.conds[i], scope))) return exec(s.bodies[i], scope, out);
      }
      return exec(s.else_body, scope, out);
    case StmtKind::kFor:
      return exec_for(s, scope, eval(*s.expr, scope), 0, out);
    case StmtKind::kSet:
      exec_set(s, scope);
      return Flow::kNormal;
    case StmtKind::kSetBlock: {
      std::string text;
      exec(s.body, scope, text);
      Value v(std::move(text));
      if (s.expr) v = eval_filter_chain(*s.expr, v, scope);
      assign(s, v, scope);
      return Flow::kNormal;
    }
    case StmtKind::kMacro:
      scope->set(s.text, make_macro(s, scope));
      return Flow::kNormal;
    case StmtKind::kCallBlock:
      exec_call_block(s, scope, out);
      return Flow::kNormal;
    case StmtKind::kFilterBlock: {
      std::string text;
      exec(s.body, scope, text);
      append_output(out, to_str(eval_filter_chain(*s.expr, Value(std::move(text)), scope)));
      return Flow::kNormal;
    }
    case StmtKind::kWith: {
      auto inner = std::make_shared<Scope>(scope);
      for (size_t i = 0; i < s.targets.size(); ++i) {
        bind_target(*s.targets[i], eval(*s.conds[i], scope), *inner);
      }
      return exec(s.body, inner, out);
    }
    case StmtKind::kBreak:
      return Flow::kBreak;
    case StmtKind::kContinue:
      return Flow::kContinue;
  }
  return Flow::kNormal;
}

void Interpreter::bind_target(const Expr& target, const Value& v, Scope& scope) {
  if (target.kind == ExprKind::kName) {
    scope.set(target.name, v);
    return;
  }
  if (!v.is_undefined() && !v.is_string() && !v.is_seq() && !v.is_mapping()) {
    render_fail("cannot unpack non-iterable %s object", type_name(v).c_str());
  }
  std::vector<Value> parts = iterate(v);
  const size_t n = target.items.size();
  if (parts.size() < n) {
    render_fail("not enough values to unpack (expected %zu, got %zu)", n, parts.size());
  }
  if (parts.size() > n) render_fail("too many values to unpack (expected %zu)", n);
  for (size_t i = 0; i < n; ++i) bind_target(*target.items[i], parts[i], scope);
}

void Interpreter::assign(const Stmt& s, const Value& v, const ScopePtr& scope) {
  if (s.text.empty()) {
    bind_target(*s.targets[0], v, *scope);
    return;
  }
  // {% set ns.attr = v %}
  const Value* ns = scope->lookup(s.targets[0]->name);
  if (!ns || !ns->is_dict() || ns->dict().kind != DictKind::kNamespace) {
    render_fail("cannot assign attribute on non-namespace object");
  }
  track_mutation(*ns);
  ns->dict().set(s.text, v);
}

Interpreter::Flow Interpreter::exec_for(const Stmt& s, const ScopePtr& scope, const Value& iterable,
                                        int depth, std::string& out) {
  std::vector<Value> items = iterate(iterable);
  if (s.cond) {  // `for x in xs if cond`: filtered before the loop, so loop.length agrees
    std::vector<Value> kept;
    for (const Value& item : items) {
      count_iterations(1);
      auto probe = std::make_shared<Scope>(scope);
      bind_target(*s.targets[0], item, *probe);
      if (truthy(eval(*s.cond, probe))) kept.push_back(item);
    }
    items.swap(kept);
  }
  if (items.empty()) return exec(s.else_body, scope, out);

  Value recurse;
  if (s.recursive) {
    closure_scopes_.push_back(scope);
    std::weak_ptr<Scope> weak = scope;
    const Stmt* stmt = &s;
    recurse =
        Value::make_callable("loop", [stmt, weak, depth](Interpreter& in, CallArgs& args) -> Value {
          if (args.pos.size() != 1) render_fail("loop() takes exactly one argument");
          ScopePtr sc = weak.lock();
          if (!sc) render_fail("recursive loop called outside its scope");
          if (++in.call_depth_ > in.options_.max_call_depth) {
            render_fail("maximum recursion depth exceeded");
          }
          std::string text;
          in.exec_for(*stmt, sc, args.pos[0], depth + 1, text);
          --in.call_depth_;
          return Value(std::move(text));
        });
  }

  const size_t n = items.size();
  auto last_changed = std::make_shared<Value>();
  for (size_t i = 0; i < n; ++i) {
    count_iterations(1);
    auto iter_scope = std::make_shared<Scope>(scope);
    bind_target(*s.targets[0], items[i], *iter_scope);

    Value loop = Value::make_dict(DictKind::kLoop);
    Dict& d = loop.dict();
    d.set("index", static_cast<int64_t>(i + 1));
    d.set("index0", static_cast<int64_t>(i));
    d.set("revindex", static_cast<int64_t>(n - i));
    d.set("revindex0", static_cast<int64_t>(n - i - 1));
    d.set("first", i == 0);
    d.set("last", i + 1 == n);
    d.set("length", static_cast<int64_t>(n));
    d.set("depth", depth + 1);
    d.set("depth0", depth);
    if (i > 0) d.set("previtem", items[i - 1]);
    if (i + 1 < n) d.set("nextitem", items[i + 1]);
    d.set("cycle", Value::make_callable("cycle", [i](Interpreter&, CallArgs& args) -> Value {
            if (args.pos.empty()) render_fail("no items for cycling given");
            return args.pos[i % args.pos.size()];
          }));
    d.set("changed",
          Value::make_callable("changed", [last_changed](Interpreter&, CallArgs& args) -> Value {
            Value now = Value::make_list(args.pos);
            if (!last_changed->is_undefined() && values_equal(*last_changed, now)) return false;
            *last_changed = now;
            return true;
          }));
    if (s.recursive) d.call = std::make_shared<Callable>(recurse.callable());
    iter_scope->set("loop", loop);

    if (exec(s.body, iter_scope, out) == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

void Interpreter::exec_set(const Stmt& s, const ScopePtr& scope) {
  assign(s, eval(*s.expr, scope), scope);
}

Value Interpreter::make_macro(const Stmt& s, const ScopePtr& scope) {
  closure_scopes_.push_back(scope);
  std::weak_ptr<Scope> weak = scope;
  const Stmt* stmt = &s;
  return Value::make_callable(
      s.text,
      [stmt, weak](Interpreter& in, CallArgs& args) -> Value {
        ScopePtr closure = weak.lock();
        if (!closure) render_fail("macro '%s' called outside its scope", stmt->text.c_str());
        auto scope = std::make_shared<Scope>(closure);
        const auto& params = stmt->params;
        const char* name = stmt->text.c_str();
        // jinja2's Macro.__call__: positional first, then keywords for the remaining
        // parameters; leftovers go to varargs/kwargs only if the body uses them.
        std::vector<bool> bound(params.size(), false);
        std::vector<Value> varargs;
        for (size_t i = 0; i < args.pos.size(); ++i) {
          if (i < params.size()) {
            scope->set(params[i].name, args.pos[i]);
            bound[i] = true;
          } else {
            varargs.push_back(args.pos[i]);
          }
        }
        std::vector<std::pair<std::string, Value>> rest;
        for (auto& [key, value] : args.kw) {
          auto it = std::find_if(params.begin(), params.end(),
                                 [&](const Param& p) { return p.name == key; });
          size_t i = static_cast<size_t>(it - params.begin());
          if (it != params.end() && !bound[i]) {
            scope->set(key, value);
            bound[i] = true;
          } else {
            rest.emplace_back(key, value);
          }
        }
        Value caller = Value::undefined("No caller defined");
        if (stmt->uses_caller) {
          auto it = std::find_if(rest.begin(), rest.end(),
                                 [](const auto& kv) { return kv.first == "caller"; });
          if (it != rest.end()) {
            caller = it->second;
            rest.erase(it);
          }
          scope->set("caller", caller);
        }
        Value kwargs = Value::make_dict();
        for (auto& [key, value] : rest) {
          if (!stmt->catch_kwargs) {
            if (key == "caller") {
              render_fail(
                  "macro '%s' was invoked with two values for the special caller "
                  "argument. This is most likely a bug.",
                  name);
            }
            render_fail("macro '%s' takes no keyword argument '%s'", name, key.c_str());
          }
          kwargs.dict().set(Value(key), value);
        }
        if (!varargs.empty() && !stmt->catch_varargs) {
          render_fail("macro '%s' takes not more than %zu argument(s)", name, params.size());
        }
        // Defaults are evaluated at call time and may refer to earlier parameters.
        for (size_t i = 0; i < params.size(); ++i) {
          if (bound[i]) continue;
          scope->set(params[i].name,
                     params[i].default_value
                         ? in.eval(*params[i].default_value, scope)
                         : Value::undefined("parameter '" + params[i].name + "' was not provided"));
        }
        if (stmt->catch_varargs) {
          scope->set("varargs", Value::make_list(std::move(varargs), SeqKind::kTuple));
        }
        if (stmt->catch_kwargs) scope->set("kwargs", kwargs);
        std::string out;
        in.exec(stmt->body, scope, out);
        return Value(std::move(out));
      },
      true);
}

void Interpreter::exec_call_block(const Stmt& s, const ScopePtr& scope, std::string& out) {
  // The block body becomes `caller(...)`, a macro whose parameters are the call's signature.
  Value caller = make_macro(s, scope);
  const Expr& call_expr = *s.expr;
  Value fn = eval(*call_expr.a, scope);
  CallArgs args = eval_args(call_expr.args, scope);
  args.kw.emplace_back("caller", caller);
  append_output(out, to_str(call(fn, args)));
}

// ---- expressions ------------------------------------------------------------------------------

Value Interpreter::eval(const Expr& e, const ScopePtr& scope) {
  return LineTagger::run(e.line, [&] { return eval_inner(e, scope); });
}

CallArgs Interpreter::eval_args(const std::vector<Arg>& args, const ScopePtr& scope) {
  CallArgs out;
  for (const Arg& a : args) {
    Value v = eval(*a.value, scope);
    if (a.name.empty()) {
      out.pos.push_back(std::move(v));
    } else if (a.name == "*") {
      for (Value& item : iterate(v)) out.pos.push_back(std::move(item));
    } else if (a.name == "**") {
      if (!v.is_mapping()) render_fail("argument after ** must be a mapping");
      for (const auto& [k, val] : v.dict().entries()) out.kw.emplace_back(to_str(k), val);
    } else {
      out.kw.emplace_back(a.name, std::move(v));
    }
  }
  return out;
}

Value Interpreter::eval_filter_chain(const Expr& e, const Value& input, const ScopePtr& scope) {
  Value in = e.a ? eval_filter_chain(*e.a, input, scope) : input;
  CallArgs args = eval_args(e.args, scope);
  return LineTagger::run(e.line, [&] { return apply_filter(e.name, in, args); });
}

Value Interpreter::call(const Value& fn, CallArgs& args) {
  if (fn.is_callable()) {
    if (++call_depth_ > options_.max_call_depth) {
      --call_depth_;
      render_fail("maximum recursion depth exceeded");
    }
    struct Release {
      int& depth;
      ~Release() { --depth; }
    } release{call_depth_};
    return fn.callable().fn(*this, args);
  }
  if (fn.is_dict() && fn.dict().call) return fn.dict().call->fn(*this, args);
  if (fn.is_undefined()) render_fail("%s", fn.str().c_str());
  render_fail("'%s' object is not callable", type_name(fn).c_str());
}

Value Interpreter::apply_filter(const std::string& name, const Value& input, CallArgs& args) {
  FilterFn f = find_filter(name);
  if (!f) render_fail("unknown filter '%s'", name.c_str());
  return f(*this, input, args);
}

bool Interpreter::apply_test(const std::string& name, const Value& input, CallArgs& args) {
  const TestDef* t = find_test(name);
  if (!t) render_fail("unknown test '%s'", name.c_str());
  size_t given = args.pos.size() + args.kw.size();
  if (given != t->num_args) {
    render_fail("test '%s' takes %zu argument(s) (%zu given)", name.c_str(), t->num_args, given);
  }
  return t->fn(*this, input, args);
}

Value Interpreter::eval_inner(const Expr& e, const ScopePtr& scope) {
  switch (e.kind) {
    case ExprKind::kLiteral:
      return e.value;
    case ExprKind::kList:
    case ExprKind::kTuple: {
      std::vector<Value> items;
      items.reserve(e.items.size());
      for (const auto& item : e.items) items.push_back(eval(*item, scope));
      return Value::make_list(std::move(items),
                              e.kind == ExprKind::kTuple ? SeqKind::kTuple : SeqKind::kList);
    }
    case ExprKind::kDict: {
      Value d = Value::make_dict();
      for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
        Value k = eval(*e.items[i], scope);
        d.dict().set(k, eval(*e.items[i + 1], scope));
      }
      return d;
    }
    case ExprKind::kName: {
      const Value* v = scope->lookup(e.name);
      return v ? *v : Value::undefined("'" + e.name + "' is undefined");
    }
    case ExprKind::kGetAttr:
      return get_attr(eval(*e.a, scope), e.name);
    case ExprKind::kGetItem: {
      Value obj = eval(*e.a, scope);
      return get_item(obj, eval(*e.b, scope));
    }
    case ExprKind::kSlice: {
      Value obj = eval(*e.a, scope);
      Value bounds[3];
      for (int i = 0; i < 3; ++i) {
        bounds[i] = e.items[i] ? eval(*e.items[i], scope) : Value::none();
      }
      return get_slice(obj, bounds[0], bounds[1], bounds[2]);
    }
    case ExprKind::kCall: {
      Value fn = eval(*e.a, scope);
      CallArgs args = eval_args(e.args, scope);
      return call(fn, args);
    }
    case ExprKind::kFilter: {
      Value in = eval(*e.a, scope);
      CallArgs args = eval_args(e.args, scope);
      return apply_filter(e.name, in, args);
    }
    case ExprKind::kTest: {
      Value in = eval(*e.a, scope);
      CallArgs args = eval_args(e.args, scope);
      return apply_test(e.name, in, args) != e.negated;
    }
    case ExprKind::kNot:
      return !truthy(eval(*e.a, scope));
    case ExprKind::kNeg:
    case ExprKind::kPos:
      return op_neg(eval(*e.a, scope), e.kind == ExprKind::kNeg);
    case ExprKind::kBinary: {
      Value left = eval(*e.a, scope);
      if (e.name == "and") return truthy(left) ? eval(*e.b, scope) : left;
      if (e.name == "or") return truthy(left) ? left : eval(*e.b, scope);
      Value right = eval(*e.b, scope);
      if (e.name == "~") {
        std::string text = to_str(left);
        std::string rhs = to_str(right);
        check_string_size(text.size() + rhs.size());
        return Value(text + rhs);
      }
      return op_binary(e.name, left, right);
    }
    case ExprKind::kCompare: {
      Value left = eval(*e.a, scope);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = eval(*e.items[i], scope);
        if (!op_compare(e.ops[i], left, right)) return false;
        left = std::move(right);
      }
      return true;
    }
    case ExprKind::kCond:
      if (truthy(eval(*e.a, scope))) return eval(*e.b, scope);
      if (e.c) return eval(*e.c, scope);
      return Value::undefined(
          "the inline if-expression evaluated to false and no else "
          "section was defined");
  }
  return Value();
}

}  // namespace llm::jinja
