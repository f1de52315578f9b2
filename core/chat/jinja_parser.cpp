#include "core/chat/jinja_parser.h"

#include <algorithm>
#include <set>

#include "core/chat/jinja_interp.h"
#include "core/error.h"

namespace llm::jinja {

namespace {

// Limits that keep hostile templates from exhausting the stack while parsing, evaluating or
// destroying the tree.
constexpr int kMaxNesting = 200;
constexpr int kMaxExprDepth = 400;

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : toks_(tokens) {}

  Body parse() {
    std::string end;
    Body body = subparse({}, &end);
    if (cur().type != TokenType::kEof) fail(cur().line, "unexpected " + describe(cur()));
    // Like jinja2, unknown names are reported after syntax errors, first one first.
    if (!unknown_names_.empty()) fail(unknown_names_[0].first, unknown_names_[0].second);
    return body;
  }

 private:
  // ---- token helpers -------------------------------------------------------------------------

  const Token& cur() const { return toks_[pos_]; }
  const Token& look(size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  void next() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool is_op(const char* op) const { return cur().type == TokenType::kOp && cur().text == op; }
  bool is_name(const char* name) const {
    return cur().type == TokenType::kName && cur().text == name;
  }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }

  [[noreturn]] void fail(int line, const std::string& msg) const {
    throw llm::Error("template line " + std::to_string(line) + ": " + msg);
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case TokenType::kText:
        return "text";
      case TokenType::kVarBegin:
        return "'{{'";
      case TokenType::kVarEnd:
        return "'}}'";
      case TokenType::kBlockBegin:
        return "'{%'";
      case TokenType::kBlockEnd:
        return "'%}'";
      case TokenType::kString:
        return "string";
      case TokenType::kInt:
      case TokenType::kFloat:
        return "number " + t.text;
      case TokenType::kEof:
        return "end of template";
      default:
        return "'" + t.text + "'";
    }
  }

  void expect_op(const char* op) {
    if (!skip_op(op))
      fail(cur().line, std::string("expected '") + op + "', got " + describe(cur()));
  }
  std::string expect_name() {
    if (cur().type != TokenType::kName) fail(cur().line, "expected a name, got " + describe(cur()));
    std::string n = cur().text;
    next();
    return n;
  }
  void expect_block_end() {
    if (cur().type != TokenType::kBlockEnd) {
      fail(cur().line, "expected end of tag '%}', got " + describe(cur()));
    }
    next();
  }

  // A tag that opens a body may end with a Python-style ':' before '%}', as in jinja2.
  void expect_body_start() {
    skip_op(":");
    expect_block_end();
  }

  // jinja2 rejects unknown filters and tests when compiling, except directly inside an
  // `if` (condition and branches) or an inline `a if b else c`, where the check waits until
  // they run. Unknown names found outside are collected in unknown_names_.
  struct SoftScope {
    SoftScope(Parser* p, bool soft) : p(p), saved(p->soft_) { p->soft_ = soft; }
    ~SoftScope() { p->soft_ = saved; }
    Parser* p;
    bool saved;
  };

  struct DepthGuard {
    DepthGuard(Parser* p, int line) : p(p) {
      if (++p->depth_ > kMaxNesting) p->fail(line, "template nesting too deep");
    }
    ~DepthGuard() { --p->depth_; }
    Parser* p;
  };

  ExprPtr make(ExprKind kind, int line) { return std::make_unique<Expr>(kind, line); }

  // Records the subtree height; deep left-leaning chains (a+a+a+...) are refused here
  // because evaluation and destruction recurse over them.
  ExprPtr& sized(ExprPtr& e) {
    int d = 0;
    for (const Expr* c : {e->a.get(), e->b.get(), e->c.get()}) {
      if (c) d = std::max(d, c->depth);
    }
    for (const auto& c : e->items) {
      if (c) d = std::max(d, c->depth);
    }
    for (const auto& arg : e->args) d = std::max(d, arg.value->depth);
    e->depth = d + 1;
    if (e->depth > kMaxExprDepth) fail(e->line, "expression too deeply nested");
    return e;
  }

  // ---- statements --------------------------------------------------------------------------

  // Parses until a block tag named in `ends`; leaves the stream just after that name and
  // stores it in *found (empty at end of input).
  Body subparse(const std::set<std::string>& ends, std::string* found) {
    DepthGuard guard(this, cur().line);
    Body body;
    found->clear();
    while (true) {
      const Token& t = cur();
      if (t.type == TokenType::kEof) return body;
      if (t.type == TokenType::kText) {
        auto s = std::make_unique<Stmt>(StmtKind::kText, t.line);
        s->text = t.text;
        body.push_back(std::move(s));
        next();
      } else if (t.type == TokenType::kVarBegin) {
        auto s = std::make_unique<Stmt>(StmtKind::kOutput, t.line);
        next();
        s->expr = parse_tuple(true, {}, false);
        if (cur().type != TokenType::kVarEnd) {
          fail(cur().line, "expected end of print statement '}}', got " + describe(cur()));
        }
        next();
        body.push_back(std::move(s));
      } else if (t.type == TokenType::kBlockBegin) {
        next();
        if (cur().type != TokenType::kName)
          fail(cur().line, "expected a tag name, got " + describe(cur()));
        if (ends.count(cur().text)) {
          *found = cur().text;
          next();
          return body;
        }
        StmtPtr s = parse_statement();
        if (s) body.push_back(std::move(s));
      } else {
        fail(t.line, "unexpected " + describe(t));
      }
    }
  }

  // Parses a body closed by `end` and consumes the closing tag.
  Body parse_body_until(const char* end, const char* opener, int open_line) {
    std::string found;
    Body body = subparse({end}, &found);
    if (found.empty()) {
      fail(open_line, std::string("unclosed '") + opener + "' (missing '" + end + "')");
    }
    expect_block_end();
    return body;
  }

  StmtPtr parse_statement() {
    const Token& t = cur();
    const std::string name = t.text;
    const int line = t.line;
    next();
    if (name == "if") return parse_if(line);
    if (name == "for") return parse_for(line);
    if (name == "set") return parse_set(line);
    if (name == "macro") return parse_macro(line);
    if (name == "call") return parse_call_block(line);
    if (name == "filter") return parse_filter_block(line);
    if (name == "with") return parse_with(line);
    if (name == "generation") {
      // transformers' AssistantTracker tag: renders its body as is (in its own scope).
      SoftScope hard(this, false);
      expect_body_start();
      auto s = std::make_unique<Stmt>(StmtKind::kWith, line);
      s->body = parse_body_until("endgeneration", "generation", line);
      return s;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail(line, "'" + name + "' outside of a loop");
      expect_block_end();
      return std::make_unique<Stmt>(name == "break" ? StmtKind::kBreak : StmtKind::kContinue, line);
    }
    static const std::set<std::string> kUnexpected = {"elif", "else"};
    if (kUnexpected.count(name) || name.rfind("end", 0) == 0) {
      fail(line, "unexpected '" + name + "'");
    }
    static const std::set<std::string> kUnsupported = {"include", "extends",    "block", "import",
                                                       "from",    "autoescape", "do",    "trans"};
    if (kUnsupported.count(name)) fail(line, "unsupported tag '" + name + "'");
    fail(line, "unknown tag '" + name + "'");
  }

  StmtPtr parse_if(int line) {
    SoftScope soft(this, true);
    auto s = std::make_unique<Stmt>(StmtKind::kIf, line);
    ExprPtr cond = parse_tuple(false, {}, false);
    expect_body_start();
    while (true) {
      std::string found;
      Body body = subparse({"elif", "else", "endif"}, &found);
      s->conds.push_back(std::move(cond));
      s->bodies.push_back(std::move(body));
      if (found == "elif") {
        cond = parse_tuple(false, {}, false);
        expect_body_start();
        continue;
      }
      if (found == "else") {
        expect_body_start();
        s->else_body = parse_body_until("endif", "if", line);
        return s;
      }
      if (found == "endif") {
        expect_block_end();
        return s;
      }
      fail(line, "unclosed 'if' (missing 'endif')");
    }
  }

  // An assignment target: `name`, `a, b`, `(a, (b, c))`; with_ns also allows `ns.attr`
  // (the attribute goes to s->text).
  void parse_targets(Stmt* s, bool with_ns) {
    if (with_ns && cur().type == TokenType::kName && look().type == TokenType::kOp &&
        look().text == ".") {
      auto name = make(ExprKind::kName, cur().line);
      name->name = expect_name();
      next();
      s->text = expect_name();
      s->targets.push_back(std::move(name));
      return;
    }
    s->targets.push_back(parse_target_list());
  }

  ExprPtr parse_target_list() {
    DepthGuard guard(this, cur().line);
    int line = cur().line;
    ExprPtr first = parse_target_atom();
    if (!is_op(",")) return first;
    auto tuple = make(ExprKind::kTuple, line);
    tuple->items.push_back(std::move(first));
    while (skip_op(",")) tuple->items.push_back(parse_target_atom());
    return std::move(sized(tuple));
  }

  ExprPtr parse_target_atom() {
    if (skip_op("(")) {
      ExprPtr inner = parse_target_list();
      expect_op(")");
      return inner;
    }
    auto name = make(ExprKind::kName, cur().line);
    name->name = expect_name();
    return name;
  }

  StmtPtr parse_for(int line) {
    auto s = std::make_unique<Stmt>(StmtKind::kFor, line);
    parse_targets(s.get(), false);
    if (!skip_name("in")) fail(cur().line, "expected 'in', got " + describe(cur()));
    s->expr = parse_tuple(false, {"recursive"}, false);
    SoftScope hard(this, false);  // the loop's filter and bodies run in the loop's frame
    if (skip_name("if")) s->cond = parse_expression(true);
    s->recursive = skip_name("recursive");
    expect_body_start();
    ++loop_depth_;
    std::string found;
    s->body = subparse({"endfor", "else"}, &found);
    --loop_depth_;
    if (found == "else") {
      expect_body_start();
      s->else_body = parse_body_until("endfor", "for", line);
    } else if (found == "endfor") {
      expect_block_end();
    } else {
      fail(line, "unclosed 'for' (missing 'endfor')");
    }
    return s;
  }

  StmtPtr parse_set(int line) {
    auto s = std::make_unique<Stmt>(StmtKind::kSet, line);
    parse_targets(s.get(), true);
    if (skip_op("=")) {
      s->expr = parse_tuple(true, {}, false);
      expect_block_end();
      return s;
    }
    s->kind = StmtKind::kSetBlock;
    SoftScope hard(this, false);
    if (is_op("|")) s->expr = parse_filters(nullptr, false);
    expect_body_start();
    s->body = parse_body_until("endset", "set", line);
    return s;
  }

  void parse_signature(Stmt* s) {
    expect_op("(");
    while (!is_op(")")) {
      if (!s->params.empty()) expect_op(",");
      if (is_op(")")) break;
      Param p;
      p.name = expect_name();
      if (skip_op("=")) {
        p.default_value = parse_expression(true);
      } else if (!s->params.empty() && s->params.back().default_value) {
        fail(cur().line, "non-default argument follows default argument");
      }
      s->params.push_back(std::move(p));
    }
    next();
  }

  StmtPtr parse_macro(int line) {
    SoftScope hard(this, false);
    auto s = std::make_unique<Stmt>(StmtKind::kMacro, line);
    s->text = expect_name();
    parse_signature(s.get());
    expect_body_start();
    parse_macro_body(s.get(), "endmacro", "macro", line);
    return s;
  }

  StmtPtr parse_call_block(int line) {
    SoftScope hard(this, false);
    auto s = std::make_unique<Stmt>(StmtKind::kCallBlock, line);
    s->text = "caller";  // the body is a macro of that name
    if (is_op("(")) parse_signature(s.get());
    s->expr = parse_expression(true);
    if (s->expr->kind != ExprKind::kCall) fail(line, "expected a call after 'call'");
    expect_body_start();
    parse_macro_body(s.get(), "endcall", "call", line);
    return s;
  }

  void parse_macro_body(Stmt* s, const char* end, const char* opener, int line) {
    int saved_loops = loop_depth_;
    loop_depth_ = 0;  // a macro body is not inside the caller's loop
    macros_.push_back(s);
    s->body = parse_body_until(end, opener, line);
    macros_.pop_back();
    loop_depth_ = saved_loops;
  }

  StmtPtr parse_filter_block(int line) {
    SoftScope hard(this, false);
    auto s = std::make_unique<Stmt>(StmtKind::kFilterBlock, line);
    s->expr = parse_filters(nullptr, true);
    expect_body_start();
    s->body = parse_body_until("endfilter", "filter", line);
    return s;
  }

  StmtPtr parse_with(int line) {
    SoftScope hard(this, false);
    auto s = std::make_unique<Stmt>(StmtKind::kWith, line);
    while (cur().type != TokenType::kBlockEnd) {
      if (!s->targets.empty()) expect_op(",");
      s->targets.push_back(parse_target_atom());
      expect_op("=");
      s->conds.push_back(parse_expression(true));
    }
    expect_block_end();
    s->body = parse_body_until("endwith", "with", line);
    return s;
  }

  // ---- expressions -------------------------------------------------------------------------

  bool is_tuple_end(const std::set<std::string>& extra_end) const {
    const Token& t = cur();
    if (t.type == TokenType::kVarEnd || t.type == TokenType::kBlockEnd ||
        t.type == TokenType::kEof) {
      return true;
    }
    if (t.type == TokenType::kOp && t.text == ")") return true;
    return t.type == TokenType::kName && extra_end.count(t.text);
  }

  // Comma-separated expressions: one expression, or a tuple when a comma appears.
  ExprPtr parse_tuple(bool with_condexpr, const std::set<std::string>& extra_end,
                      bool explicit_parens) {
    int line = cur().line;
    auto tuple = make(ExprKind::kTuple, line);
    bool is_tuple = false;
    while (true) {
      if (!tuple->items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      tuple->items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!tuple->items.empty()) return std::move(tuple->items[0]);
      if (!explicit_parens) fail(cur().line, "expected an expression, got " + describe(cur()));
    }
    return std::move(sized(tuple));
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(this, cur().line);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    int line = cur().line;
    size_t unknown_mark = unknown_names_.size();
    ExprPtr expr = parse_or();
    while (skip_name("if")) {
      // All parts of `a if b else c` are soft: their unknown filters/tests wait for runtime.
      unknown_names_.resize(std::min(unknown_names_.size(), unknown_mark));
      SoftScope soft(this, true);
      auto cond = make(ExprKind::kCond, line);
      cond->a = parse_or();
      cond->b = std::move(expr);
      if (skip_name("else")) cond->c = parse_condexpr();
      expr = std::move(sized(cond));
      line = cur().line;
    }
    return expr;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      auto e = make(ExprKind::kBinary, cur().line);
      next();
      e->name = "or";
      e->a = std::move(left);
      e->b = parse_and();
      left = std::move(sized(e));
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      auto e = make(ExprKind::kBinary, cur().line);
      next();
      e->name = "and";
      e->a = std::move(left);
      e->b = parse_not();
      left = std::move(sized(e));
    }
    return left;
  }

  ExprPtr parse_not() {
    DepthGuard guard(this, cur().line);
    if (is_name("not")) {
      auto e = make(ExprKind::kNot, cur().line);
      next();
      e->a = parse_not();
      return std::move(sized(e));
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    int line = cur().line;
    ExprPtr first = parse_math1();
    auto cmp = make(ExprKind::kCompare, line);
    while (true) {
      std::string op;
      if (cur().type == TokenType::kOp &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && look().type == TokenType::kName && look().text == "in") {
        op = "not in";
        next();
        next();
      } else {
        break;
      }
      cmp->ops.push_back(op);
      cmp->items.push_back(parse_math1());
    }
    if (cmp->ops.empty()) return first;
    cmp->a = std::move(first);
    return std::move(sized(cmp));
  }

  ExprPtr binary(const std::string& op, ExprPtr left, ExprPtr right, int line) {
    auto e = make(ExprKind::kBinary, line);
    e->name = op;
    e->a = std::move(left);
    e->b = std::move(right);
    return std::move(sized(e));
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().text;
      int line = cur().line;
      next();
      left = binary(op, std::move(left), parse_concat(), line);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      int line = cur().line;
      next();
      left = binary("~", std::move(left), parse_math2(), line);
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = cur().text;
      int line = cur().line;
      next();
      left = binary(op, std::move(left), parse_pow(), line);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      int line = cur().line;
      next();
      left = binary("**", std::move(left), parse_unary(true), line);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(this, cur().line);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      auto e = make(is_op("-") ? ExprKind::kNeg : ExprKind::kPos, cur().line);
      next();
      e->a = parse_unary(false);
      node = std::move(sized(e));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    auto lit = [&](Value v) {
      auto e = make(ExprKind::kLiteral, t.line);
      e->value = std::move(v);
      return e;
    };
    switch (t.type) {
      case TokenType::kName: {
        ExprPtr e;
        if (t.text == "true" || t.text == "True") {
          e = lit(Value(true));
        } else if (t.text == "false" || t.text == "False") {
          e = lit(Value(false));
        } else if (t.text == "none" || t.text == "None") {
          e = lit(Value::none());
        } else {
          e = make(ExprKind::kName, t.line);
          e->name = t.text;
          note_special_name(t.text);
        }
        next();
        return e;
      }
      case TokenType::kString: {
        std::string s;
        int line = t.line;
        while (cur().type == TokenType::kString) {  // adjacent literals concatenate
          s += cur().text;
          next();
        }
        auto e = make(ExprKind::kLiteral, line);
        e->value = Value(std::move(s));
        return e;
      }
      case TokenType::kInt: {
        auto e = lit(Value(t.int_value));
        next();
        return e;
      }
      case TokenType::kFloat: {
        auto e = lit(Value(t.float_value));
        next();
        return e;
      }
      case TokenType::kOp:
        if (t.text == "(") {
          next();
          ExprPtr e = parse_tuple(true, {}, true);
          expect_op(")");
          return e;
        }
        if (t.text == "[") return parse_list();
        if (t.text == "{") return parse_dict();
        break;
      default:
        break;
    }
    fail(t.line, "unexpected " + describe(t));
  }

  ExprPtr parse_list() {
    auto e = make(ExprKind::kList, cur().line);
    expect_op("[");
    while (!is_op("]")) {
      if (!e->items.empty()) expect_op(",");
      if (is_op("]")) break;
      e->items.push_back(parse_expression(true));
    }
    expect_op("]");
    return std::move(sized(e));
  }

  ExprPtr parse_dict() {
    auto e = make(ExprKind::kDict, cur().line);
    expect_op("{");
    while (!is_op("}")) {
      if (!e->items.empty()) expect_op(",");
      if (is_op("}")) break;
      e->items.push_back(parse_expression(true));
      expect_op(":");
      e->items.push_back(parse_expression(true));
    }
    expect_op("}");
    return std::move(sized(e));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".") || is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    int line = cur().line;
    if (skip_op(".")) {
      if (cur().type == TokenType::kName) {
        auto e = make(ExprKind::kGetAttr, line);
        e->a = std::move(node);
        e->name = expect_name();
        return std::move(sized(e));
      }
      if (cur().type != TokenType::kInt) fail(cur().line, "expected name or number after '.'");
      auto e = make(ExprKind::kGetItem, line);
      e->a = std::move(node);
      e->b = make(ExprKind::kLiteral, line);
      e->b->value = Value(cur().int_value);
      next();
      return std::move(sized(e));
    }
    expect_op("[");
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    next();
    auto e = make(ExprKind::kGetItem, line);  // as in jinja2, `x[]` indexes with ()
    e->a = std::move(node);
    if (args.size() == 1) {
      if (args[0]->kind == ExprKind::kSlice) {
        args[0]->a = std::move(e->a);
        return std::move(sized(args[0]));
      }
      e->b = std::move(args[0]);
    } else {
      auto t = make(ExprKind::kTuple, line);
      t->items = std::move(args);
      e->b = std::move(sized(t));
    }
    return std::move(sized(e));
  }

  // One subscript: an expression or a slice `[start]:[stop][:[step]]`.
  ExprPtr parse_subscribed() {
    int line = cur().line;
    ExprPtr start;
    if (!is_op(":")) {
      start = parse_expression(true);
      if (!is_op(":")) return start;
    }
    next();
    auto s = make(ExprKind::kSlice, line);
    s->items.push_back(std::move(start));
    if (!is_op(":") && !is_op("]") && !is_op(",")) {
      s->items.push_back(parse_expression(true));
    } else {
      s->items.push_back(nullptr);
    }
    if (skip_op(":") && !is_op("]") && !is_op(",")) {
      s->items.push_back(parse_expression(true));
    } else {
      s->items.push_back(nullptr);
    }
    return s;
  }

  void parse_call_args(std::vector<Arg>* args) {
    int line = cur().line;
    expect_op("(");
    bool need_comma = false;
    bool seen_kw = false;
    while (!is_op(")")) {
      if (need_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      Arg a;
      if (is_op("*") || is_op("**")) {
        a.name = cur().text;
        next();
        seen_kw = true;
      } else if (cur().type == TokenType::kName && look().type == TokenType::kOp &&
                 look().text == "=") {
        a.name = expect_name();
        next();
        seen_kw = true;
      } else if (seen_kw) {
        fail(line, "positional argument follows keyword argument");
      }
      a.value = parse_expression(true);
      args->push_back(std::move(a));
      need_comma = true;
    }
    next();
  }

  ExprPtr parse_call(ExprPtr node) {
    auto e = make(ExprKind::kCall, cur().line);
    e->a = std::move(node);
    parse_call_args(&e->args);
    return std::move(sized(e));
  }

  std::string dotted_name() {
    std::string name = expect_name();
    while (skip_op(".")) name += "." + expect_name();
    return name;
  }

  // `| f(args) | g ...`; with start_inline the first filter has no leading pipe.
  ExprPtr parse_filters(ExprPtr node, bool start_inline) {
    while (is_op("|") || start_inline) {
      if (!start_inline) next();
      start_inline = false;
      auto e = make(ExprKind::kFilter, cur().line);
      e->name = dotted_name();
      if (!soft_ && !find_filter(e->name)) {
        unknown_names_.emplace_back(e->line, "unknown filter '" + e->name + "'");
      }
      if (is_op("(")) parse_call_args(&e->args);
      e->a = std::move(node);
      node = std::move(sized(e));
    }
    return node;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        node = parse_filters(std::move(node), false);
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_test(ExprPtr node) {
    auto e = make(ExprKind::kTest, cur().line);
    next();  // 'is'
    e->negated = skip_name("not");
    e->name = dotted_name();
    if (!soft_ && !find_test(e->name)) {
      unknown_names_.emplace_back(e->line, "unknown test '" + e->name + "'");
    }
    e->a = std::move(node);
    const Token& t = cur();
    if (is_op("(")) {
      parse_call_args(&e->args);
    } else if ((t.type == TokenType::kName || t.type == TokenType::kString ||
                t.type == TokenType::kInt || t.type == TokenType::kFloat ||
                (t.type == TokenType::kOp && (t.text == "[" || t.text == "{"))) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      // `x is divisibleby 3`: a single argument without parentheses.
      if (is_name("is")) fail(t.line, "you cannot chain multiple tests with 'is'");
      Arg a;
      a.value = parse_postfix(parse_primary());
      e->args.push_back(std::move(a));
    }
    return std::move(sized(e));
  }

  // Records use of varargs / kwargs / caller by the macros being parsed.
  void note_special_name(const std::string& name) {
    for (Stmt* m : macros_) {
      if (name == "varargs") m->catch_varargs = true;
      if (name == "kwargs") m->catch_kwargs = true;
      if (name == "caller") m->uses_caller = true;
    }
  }

  const std::vector<Token>& toks_;
  std::vector<Stmt*> macros_;  // enclosing macro / call-block definitions
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  bool soft_ = false;                                       // see SoftScope
  std::vector<std::pair<int, std::string>> unknown_names_;  // (line, message)
};

}  // namespace

Body parse_template(const std::vector<Token>& tokens) { return Parser(tokens).parse(); }

}  // namespace llm::jinja
