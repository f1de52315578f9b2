// Syntax tree of a parsed Jinja template. Nodes are plain structs tagged with a kind; the
// interpreter switches on the kind. Every node remembers its source line for error messages.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/chat/jinja_value.h"

namespace llm::jinja {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class ExprKind {
  kLiteral,  // value
  kList,     // items
  kTuple,    // items
  kDict,     // keys/items pairs: items[2i] key, items[2i+1] value
  kName,     // name
  kGetAttr,  // a.name
  kGetItem,  // a[b]
  kSlice,    // a[items0:items1:items2]; missing bounds are null
  kCall,     // a(args)
  kFilter,   // a | name(args); a is null inside {% filter %}
  kTest,     // a is [not] name(args)
  kNot,      // not a
  kNeg,      // -a
  kPos,      // +a
  kBinary,   // a op b (arithmetic, ~, and, or)
  kCompare,  // a op b [op c ...]
  kCond,     // b if a else c
};

struct Arg {
  std::string name;  // empty for positional; "*" / "**" for argument unpacking
  ExprPtr value;
};

struct Expr {
  ExprKind kind;
  int line = 0;
  Value value;                   // kLiteral
  std::string name;              // kName, kGetAttr, kFilter, kTest; operator for kBinary
  ExprPtr a, b, c;               // operands (see ExprKind)
  std::vector<ExprPtr> items;    // kList, kTuple, kDict, kCompare operands after `a`
  std::vector<std::string> ops;  // kCompare operators
  std::vector<Arg> args;         // kCall, kFilter, kTest
  bool negated = false;          // kTest
  int depth = 1;                 // height of this subtree, bounded by the parser

  Expr(ExprKind k, int l) : kind(k), line(l) {}
};

enum class StmtKind {
  kText,         // text
  kOutput,       // {{ expr }}
  kIf,           // conds[i] -> bodies[i]; else_body
  kFor,          // targets in iter [if cond] body [else]
  kSet,          // target = expr, or ns.attr = expr
  kSetBlock,     // {% set target %}body{% endset %} with optional filters
  kMacro,        // {% macro name(params) %}
  kCallBlock,    // {% call(params) macro(args) %}body{% endcall %}
  kFilterBlock,  // {% filter f %}body{% endfilter %}
  kWith,         // {% with a = 1 %}body{% endwith %}; also {% generation %}
  kBreak,
  kContinue,
};

struct Param {
  std::string name;
  ExprPtr default_value;  // may be null
};

struct Stmt {
  StmtKind kind;
  int line = 0;
  std::string text;  // kText; macro name; `attr` of `set ns.attr`
  ExprPtr expr;      // output / iterable / value / call / filter chain
  ExprPtr cond;      // for-loop filter
  // Assignment targets: a kName or a (nested) kTuple of them. for/set use targets[0];
  // with has one per value in `conds`.
  std::vector<ExprPtr> targets;
  bool recursive = false;  // for ... recursive
  // Macros (and call-block bodies) accept extra positional / keyword arguments and a
  // caller only when their body mentions varargs / kwargs / caller, as in jinja2.
  bool catch_varargs = false;
  bool catch_kwargs = false;
  bool uses_caller = false;
  std::vector<ExprPtr> conds;  // kIf; kWith values
  std::vector<Body> bodies;    // kIf branches
  Body body;
  Body else_body;
  std::vector<Param> params;  // macro / call block parameters

  Stmt(StmtKind k, int l) : kind(k), line(l) {}
};

}  // namespace llm::jinja
