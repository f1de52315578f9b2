// A JSON schema compiled for constrained decoding (JsonGrammar walks it byte by byte).
//
// Enforced: `type` (one or a list); `properties` with `required` and
// `additionalProperties` (false, a schema, or anything), `minProperties` /
// `maxProperties`; `items`, tuples (`prefixItems`, or `items` as a list with
// `additionalItems`), `minItems` / `maxItems`; `minLength` / `maxLength` (characters; an
// escape counts one), `format` date, time, date-time and uuid (json_formats.h),
// `pattern` (json_pattern.h; such strings are written without escapes); `minimum` /
// `maximum` / `exclusiveMinimum` / `exclusiveMaximum` and `multipleOf` (a decimal of up
// to 9 places; numbers so bounded are written without an exponent, and with no more
// significant decimals than the step has); `enum`, `const`; `anyOf` / `oneOf` (oneOf
// taken as anyOf; alternatives of one type, such as unions of objects, are followed side
// by side); `allOf` of one schema; local `$ref`s (`#/$defs/...`, `#/definitions/...`,
// recursion included); `uniqueItems` where the items are one `enum` (or `const`) of at
// most 64 values. Keywords that only describe or bound values otherwise (`description`,
// other formats, other `uniqueItems`, a `multipleOf` of more places, ...) are accepted
// and not enforced. Anything else that would change which documents are valid is refused
// with an llm::Error naming its place.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/engine/json_formats.h"
#include "core/engine/json_pattern.h"

namespace llm {

class JsonSchema {
 public:
  // Value types, as bits.
  enum : uint8_t {
    kObject = 1,
    kArray = 2,
    kString = 4,
    kInteger = 8,
    kNumber = 16,  // any number (integers included)
    kBool = 32,
    kNull = 64,
    kAnyType = 127,
  };
  static constexpr int kAny = 0;  // the node that takes any value
  static constexpr int kMaxKeys = 64;

  // A prefix tree over byte strings (object keys, or enum values as compact JSON).
  struct Trie {
    struct TrieNode {
      std::vector<std::pair<uint8_t, int>> next;
      int value = -1;      // the index of the string that ends here
      uint64_t below = 0;  // keys: the indices of the strings at or below this node
    };
    std::vector<TrieNode> nodes{TrieNode{}};
    void add(const std::string& s, int index);
    int child(int node, uint8_t c) const;
  };

  struct Node {
    uint8_t types = kAnyType;
    // anyOf / oneOf: the alternatives' nodes (types is the union of theirs). A value goes
    // to those of its type; where several share it, the grammar follows each (JsonReply).
    std::vector<int> alternatives;
    // Objects: declared keys, the node of each one's value, and which are required.
    std::vector<std::string> keys;
    std::vector<int> key_values;
    uint64_t required = 0;
    bool extra_keys = true;  // additionalProperties is not false
    int extra_value = kAny;
    int key_trie = -1;
    int items = kAny;               // arrays: the items after prefix_items
    bool unique_enum = false;       // arrays: uniqueItems over items of one enum (<= 64 values)
    std::vector<int> prefix_items;  // arrays: the first items' nodes (tuples)
    uint32_t min_items = 0, max_items = UINT32_MAX;
    uint32_t min_props = 0, max_props = UINT32_MAX;    // objects: keys in all
    uint32_t min_length = 0, max_length = UINT32_MAX;  // strings, in characters
    StringFormat format = StringFormat::None;          // strings: `format`, where enforced
    int pattern = -1;                                  // strings: `pattern` (an automaton)
    // Numbers: the value's bounds (open: exclusive) and multipleOf as step / 10^decimals
    // (step 0: none, or not a decimal of at most 9 places and 15 digits); bounded says
    // whether there are any of these.
    bool bounded = false;
    double lo = -HUGE_VAL, hi = HUGE_VAL;
    bool lo_open = false, hi_open = false;
    uint64_t step = 0;
    int step_decimals = 0;
    int enum_trie = -1;  // enum / const: the value is one of these, as compact JSON
  };

  // Compiles schema; throws llm::Error for what it does not support.
  static std::shared_ptr<const JsonSchema> compile(const nlohmann::json& schema);
  // Any JSON object (JSON mode).
  static std::shared_ptr<const JsonSchema> any_object();

  const Node& node(int i) const { return nodes_[static_cast<size_t>(i)]; }
  // A node's multipleOf for integer values: the least whole multiple of its step.
  static uint64_t integer_step(const Node& n);
  // Its multipleOf as a value (integer values: integer_step), 0 where there is none.
  static long double step_value(const Node& n, bool integer);
  // Whether values in [a, b] (each end open or not) meet n's bounds; with a step (> 0),
  // whether one of its multiples there does (the step's rounding forgiven: a number's
  // end is checked exactly).
  static bool meets(const Node& n, long double a, bool a_open, long double b, bool b_open,
                    long double step);
  // The same for integers: the whole numbers in [a, b] against the whole numbers n's
  // bounds take (with a whole step, its multiples).
  static bool meets_integer(const Node& n, long double a, long double b, long double step);
  int root() const { return root_; }
  const Trie& trie(int i) const { return tries_[static_cast<size_t>(i)]; }
  const PatternDfa& pattern(int i) const { return patterns_[static_cast<size_t>(i)]; }
  // Whether some anyOf / oneOf has alternatives of one type (a reply may then have to be
  // followed under several of them at once).
  bool has_overlapping_alternatives() const { return overlapping_; }

 private:
  int compile_node(const nlohmann::json& s, const std::string& path);
  // minimum / maximum / exclusiveMinimum / exclusiveMaximum and multipleOf of s into n.
  void number_bounds(const nlohmann::json& s, const std::string& path, Node& n);
  int merge_alternatives(const std::vector<int>& alts, const std::string& path);
  int add_enum(const std::vector<nlohmann::json>& values, const std::string& path);

  std::vector<Node> nodes_;
  std::vector<Trie> tries_;
  std::vector<PatternDfa> patterns_;
  int root_ = kAny;
  bool overlapping_ = false;
  nlohmann::json doc_;                         // for $ref
  std::unordered_map<std::string, int> refs_;  // resolved $refs
};

}  // namespace llm
