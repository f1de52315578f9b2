#include "core/engine/json_schema.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace llm {

using nlohmann::json;

namespace {

uint8_t type_bit(const std::string& name, const std::string& path) {
  if (name == "object") return JsonSchema::kObject;
  if (name == "array") return JsonSchema::kArray;
  if (name == "string") return JsonSchema::kString;
  if (name == "integer") return JsonSchema::kInteger;
  if (name == "number") return JsonSchema::kNumber;
  if (name == "boolean") return JsonSchema::kBool;
  if (name == "null") return JsonSchema::kNull;
  fail("%s: unknown type '%s'", path.c_str(), name.c_str());
}

uint8_t value_type(const json& v) {
  if (v.is_object()) return JsonSchema::kObject;
  if (v.is_array()) return JsonSchema::kArray;
  if (v.is_string()) return JsonSchema::kString;
  if (v.is_number_integer() || v.is_number_unsigned()) return JsonSchema::kInteger;
  if (v.is_number()) return JsonSchema::kNumber;
  if (v.is_boolean()) return JsonSchema::kBool;
  return JsonSchema::kNull;
}

}  // namespace

void JsonSchema::Trie::add(const std::string& s, int index) {
  int cur = 0;
  if (index < kMaxKeys) nodes[0].below |= uint64_t{1} << index;
  for (char ch : s) {
    const uint8_t c = static_cast<uint8_t>(ch);
    int next = child(cur, c);
    if (next < 0) {
      next = static_cast<int>(nodes.size());
      nodes[static_cast<size_t>(cur)].next.emplace_back(c, next);
      nodes.emplace_back();
    }
    cur = next;
    if (index < kMaxKeys) nodes[static_cast<size_t>(cur)].below |= uint64_t{1} << index;
  }
  nodes[static_cast<size_t>(cur)].value = index;
}

int JsonSchema::Trie::child(int node, uint8_t c) const {
  for (const auto& [b, n] : nodes[static_cast<size_t>(node)].next)
    if (b == c) return n;
  return -1;
}

std::shared_ptr<const JsonSchema> JsonSchema::any_object() {
  static const std::shared_ptr<const JsonSchema> s = [] {
    auto j = std::make_shared<JsonSchema>();
    j->nodes_.resize(2);
    j->nodes_[1].types = kObject;
    j->root_ = 1;
    return j;
  }();
  return s;
}

std::shared_ptr<const JsonSchema> JsonSchema::compile(const json& schema) {
  auto j = std::make_shared<JsonSchema>();
  j->doc_ = schema;
  j->nodes_.resize(1);  // kAny
  j->root_ = j->compile_node(schema, "#");
  const Node& root = j->nodes_[static_cast<size_t>(j->root_)];
  if (root.types != kObject || root.enum_trie >= 0)
    fail("the schema's root must be an object (type \"object\")");
  return j;
}

int JsonSchema::add_enum(const std::vector<json>& values, const std::string& path) {
  if (values.empty()) fail("%s: an empty enum accepts nothing", path.c_str());
  Node n;
  n.types = 0;
  Trie t;
  for (size_t i = 0; i < values.size(); i++) {
    n.types |= value_type(values[i]);
    t.add(values[i].dump(), static_cast<int>(i));
  }
  n.enum_trie = static_cast<int>(tries_.size());
  tries_.push_back(std::move(t));
  nodes_.push_back(std::move(n));
  return static_cast<int>(nodes_.size()) - 1;
}

int JsonSchema::merge_alternatives(const std::vector<int>& alts, const std::string&) {
  Node merged;
  merged.types = 0;
  for (int a : alts) {
    const uint8_t types = nodes_[static_cast<size_t>(a)].types;
    const bool numbers = (types & (kInteger | kNumber)) != 0;
    if ((merged.types & types) != 0 || (numbers && (merged.types & (kInteger | kNumber)) != 0))
      overlapping_ = true;
    merged.types |= types;
    merged.alternatives.push_back(a);
  }
  nodes_.push_back(std::move(merged));
  return static_cast<int>(nodes_.size()) - 1;
}

bool JsonSchema::meets(const Node& n, long double a, bool a_open, long double b, bool b_open,
                       long double step) {
  long double lo = n.lo, hi = n.hi;
  bool lo_open = n.lo_open, hi_open = n.hi_open;
  if (a > lo || (a == lo && a_open)) {
    lo = a;
    lo_open = a_open;
  }
  if (b < hi || (b == hi && b_open)) {
    hi = b;
    hi_open = b_open;
  }
  if (step > 0 && std::isfinite(lo)) {
    // The first multiple from lo on (lo itself where it is one and the end is closed).
    const long double q = lo / step;
    long double first = std::ceil(q - 1e-9L * std::max(1.0L, std::fabs(q))) * step;
    if (std::fabs(first - lo) <= 1e-9L * std::max(step, std::fabs(lo)))
      first = lo_open ? lo + step : lo;
    lo = std::max(lo, first);
    lo_open = false;
  }
  return lo < hi || (lo == hi && !lo_open && !hi_open);
}

bool JsonSchema::meets_integer(const Node& n, long double a, long double b, long double step) {
  long double lo = std::max(a, n.lo_open ? std::floor(static_cast<long double>(n.lo)) + 1
                                         : std::ceil(static_cast<long double>(n.lo)));
  const long double hi = std::min(b, n.hi_open ? std::ceil(static_cast<long double>(n.hi)) - 1
                                               : std::floor(static_cast<long double>(n.hi)));
  if (step > 0) lo = std::ceil(lo / step) * step;
  return lo <= hi;
}

long double JsonSchema::step_value(const Node& n, bool integer) {
  if (!n.step) return 0;
  return integer ? static_cast<long double>(integer_step(n))
                 : n.step / std::pow(10.0L, n.step_decimals);
}

uint64_t JsonSchema::integer_step(const Node& n) {
  uint64_t p = 1;
  for (int d = 0; d < n.step_decimals; d++) p *= 10;
  return n.step / std::gcd(n.step, p);
}

void JsonSchema::number_bounds(const json& s, const std::string& path, Node& n) {
  auto number = [&](const char* key) {
    if (!s[key].is_number() || !std::isfinite(s[key].get<double>()))
      fail("%s: %s must be a number", path.c_str(), key);
    return s[key].get<double>();
  };
  if (s.contains("minimum")) n.lo = number("minimum");
  if (s.contains("maximum")) n.hi = number("maximum");
  // Draft 4 writes exclusiveMinimum: true beside minimum; later drafts give the bound.
  for (const char* key : {"exclusiveMinimum", "exclusiveMaximum"}) {
    if (!s.contains(key)) continue;
    const bool is_min = std::string(key) == "exclusiveMinimum";
    double& bound = is_min ? n.lo : n.hi;
    bool& open = is_min ? n.lo_open : n.hi_open;
    if (s[key].is_boolean()) {
      if (s[key].get<bool>() && std::isfinite(bound)) open = true;
      continue;
    }
    const double v = number(key);
    if (is_min ? v >= bound : v <= bound) {
      bound = v;
      open = true;
    }
  }
  if (s.contains("multipleOf")) {
    const double m = number("multipleOf");
    if (!(m > 0)) fail("%s: multipleOf must be greater than 0", path.c_str());
    // Enforced where it is a decimal of at most 9 places (0.01, 0.5, 3, 2.5, ...).
    for (int d = 0; d <= 9 && !n.step; d++) {
      const double scaled = m * std::pow(10.0, d), r = std::round(scaled);
      if (r >= 1 && r < 1e15 && std::fabs(scaled - r) <= 1e-9 * r) {
        n.step = static_cast<uint64_t>(r);
        n.step_decimals = d;
      }
    }
  }
  n.bounded = std::isfinite(n.lo) || std::isfinite(n.hi) || n.step;
  if (!n.bounded) return;
  const long double inf = HUGE_VALL;
  const bool empty = n.types & kNumber ? !meets(n, -inf, false, inf, false, step_value(n, false))
                                       : !meets_integer(n, -inf, inf, step_value(n, true));
  if (empty && !(n.types & ~(kInteger | kNumber)))
    fail("%s: the bounds accept no number%s", path.c_str(),
         n.step ? " that is a multiple of multipleOf" : "");
}

int JsonSchema::compile_node(const json& s, const std::string& path) {
  if (nodes_.size() > 10000) fail("%s: the schema is too large", path.c_str());
  if (s.is_boolean()) {
    if (s.get<bool>()) return kAny;
    fail("%s: the schema false accepts nothing", path.c_str());
  }
  if (!s.is_object()) fail("%s: a schema must be an object or a boolean", path.c_str());
  if (s.contains("$ref")) {
    if (!s["$ref"].is_string()) fail("%s: $ref must be a string", path.c_str());
    const std::string ref = s["$ref"].get<std::string>();
    const auto known = refs_.find(ref);
    if (known != refs_.end()) return known->second;
    if (ref.rfind("#", 0) != 0) fail("%s: only local $refs (#/...) are supported", path.c_str());
    json::json_pointer ptr;
    try {
      ptr = json::json_pointer(ref.substr(1));
    } catch (const json::exception&) {
      fail("%s: bad $ref '%s'", path.c_str(), ref.c_str());
    }
    if (!doc_.contains(ptr)) fail("%s: $ref '%s' points nowhere", path.c_str(), ref.c_str());
    // The slot first, so that a recursive schema finds it.
    const int slot = static_cast<int>(nodes_.size());
    nodes_.emplace_back();
    refs_[ref] = slot;
    const json target = doc_.at(ptr);
    const int compiled = compile_node(target, ref);
    const Node copy = nodes_[static_cast<size_t>(compiled)];
    nodes_[static_cast<size_t>(slot)] = copy;
    return slot;
  }
  for (const char* k :
       {"not", "if", "then", "else", "patternProperties", "dependentRequired", "dependentSchemas",
        "unevaluatedProperties", "unevaluatedItems", "propertyNames", "contains"})
    if (s.contains(k)) fail("%s: '%s' is not supported", path.c_str(), k);
  for (const char* k : {"anyOf", "oneOf"}) {
    if (!s.contains(k)) continue;
    if (!s[k].is_array() || s[k].empty()) fail("%s: %s must be a list", path.c_str(), k);
    std::vector<int> alts;
    for (size_t i = 0; i < s[k].size(); i++)
      alts.push_back(compile_node(s[k][i], path + "/" + k + "/" + std::to_string(i)));
    return merge_alternatives(alts, path);
  }
  if (s.contains("allOf")) {
    if (!s["allOf"].is_array() || s["allOf"].size() != 1)
      fail("%s: allOf is supported with one schema only", path.c_str());
    return compile_node(s["allOf"][0], path + "/allOf/0");
  }
  if (s.contains("const")) return add_enum({s["const"]}, path);
  if (s.contains("enum")) {
    if (!s["enum"].is_array()) fail("%s: enum must be a list", path.c_str());
    return add_enum(s["enum"].get<std::vector<json>>(), path);
  }

  Node n;
  if (s.contains("type")) {
    n.types = 0;
    const json& t = s["type"];
    if (t.is_string()) {
      n.types = type_bit(t.get<std::string>(), path);
    } else if (t.is_array()) {
      for (const json& e : t) {
        if (!e.is_string()) fail("%s: type must be names", path.c_str());
        n.types |= type_bit(e.get<std::string>(), path);
      }
    } else {
      fail("%s: type must be a name or a list of names", path.c_str());
    }
  } else if (s.contains("properties") || s.contains("required") ||
             s.contains("additionalProperties")) {
    n.types = kObject;
  } else if (s.contains("items") || s.contains("prefixItems")) {
    n.types = kArray;
  }
  if (n.types & kObject) {
    if (s.contains("properties")) {
      if (!s["properties"].is_object()) fail("%s: properties must be an object", path.c_str());
      for (const auto& [key, sub] : s["properties"].items()) {
        if (n.keys.size() == kMaxKeys) fail("%s: more than %d properties", path.c_str(), kMaxKeys);
        n.keys.push_back(key);
        n.key_values.push_back(0);  // compiled below: nodes_ may grow meanwhile
      }
      for (size_t i = 0; i < n.keys.size(); i++)
        n.key_values[i] =
            compile_node(s["properties"][n.keys[i]], path + "/properties/" + n.keys[i]);
    }
    if (s.contains("required")) {
      if (!s["required"].is_array()) fail("%s: required must be a list", path.c_str());
      for (const json& r : s["required"]) {
        const auto it = r.is_string()
                            ? std::find(n.keys.begin(), n.keys.end(), r.get<std::string>())
                            : n.keys.end();
        if (it == n.keys.end())
          fail("%s: required key %s is not among the properties", path.c_str(), r.dump().c_str());
        n.required |= uint64_t{1} << (it - n.keys.begin());
      }
    }
    if (s.contains("additionalProperties")) {
      const json& a = s["additionalProperties"];
      if (a.is_boolean() && !a.get<bool>())
        n.extra_keys = false;
      else
        n.extra_value = compile_node(a, path + "/additionalProperties");
    }
    Trie t;
    for (size_t i = 0; i < n.keys.size(); i++)
      t.add(json(n.keys[i]).dump().substr(1), static_cast<int>(i));
    n.key_trie = static_cast<int>(tries_.size());
    tries_.push_back(std::move(t));
  }
  // Tuples: prefixItems (2020-12) or items as a list (earlier drafts) give the first items
  // their own schemas; items / additionalItems then the rest (false: no more).
  bool closed_tuple = false;
  if (n.types & kArray) {
    const bool listed = s.contains("items") && s["items"].is_array();
    const char* prefix = s.contains("prefixItems") ? "prefixItems" : listed ? "items" : nullptr;
    if (prefix) {
      if (!s[prefix].is_array()) fail("%s: %s must be a list", path.c_str(), prefix);
      for (size_t i = 0; i < s[prefix].size(); i++)
        n.prefix_items.push_back(
            compile_node(s[prefix][i], path + "/" + prefix + "/" + std::to_string(i)));
    }
    const char* rest = listed ? "additionalItems" : "items";
    if (s.contains(rest)) {
      const json& r = s[rest];
      if (r.is_boolean() && !r.get<bool>())
        closed_tuple = true;
      else
        n.items = compile_node(r, path + "/" + rest);
    }
  }
  auto bound = [&](const char* key, uint32_t* out) {
    if (!s.contains(key)) return;
    if (!s[key].is_number_unsigned() && !s[key].is_number_integer())
      fail("%s: %s must be a whole number", path.c_str(), key);
    const int64_t v = s[key].get<int64_t>();
    if (v < 0) fail("%s: %s must not be negative", path.c_str(), key);
    *out = static_cast<uint32_t>(std::min<int64_t>(v, UINT32_MAX - 1));
  };
  bound("minItems", &n.min_items);
  bound("maxItems", &n.max_items);
  bound("minLength", &n.min_length);
  bound("maxLength", &n.max_length);
  bound("minProperties", &n.min_props);
  bound("maxProperties", &n.max_props);
  if (n.min_props > n.max_props ||
      (!n.extra_keys && n.min_props > static_cast<uint32_t>(n.keys.size())))
    fail("%s: minProperties asks for more keys than the object may have", path.c_str());
  if (closed_tuple)
    n.max_items = std::min(n.max_items, static_cast<uint32_t>(n.prefix_items.size()));
  // uniqueItems over items of one enum: each value once (the grammar keeps which were
  // taken); the array can then hold at most as many items as there are values.
  if ((n.types & kArray) && s.contains("uniqueItems")) {
    if (!s["uniqueItems"].is_boolean()) fail("%s: uniqueItems must be true or false", path.c_str());
    const Node* item = n.items >= 0 && static_cast<size_t>(n.items) < nodes_.size()
                           ? &nodes_[static_cast<size_t>(n.items)]
                           : nullptr;
    if (s["uniqueItems"].get<bool>() && n.prefix_items.empty() && n.items != kAny && item &&
        item->enum_trie >= 0) {
      int values = 0;
      for (const Trie::TrieNode& t : tries_[static_cast<size_t>(item->enum_trie)].nodes)
        values = std::max(values, t.value + 1);
      if (values <= kMaxKeys) {
        n.unique_enum = true;
        n.max_items = std::min(n.max_items, static_cast<uint32_t>(values));
      }
    }
  }
  if (n.min_items > n.max_items || n.min_length > n.max_length)
    fail("%s: a minimum above its maximum accepts nothing", path.c_str());
  number_bounds(s, path, n);
  if (s.contains("format")) {
    if (!s["format"].is_string()) fail("%s: format must be a name", path.c_str());
    n.format = parse_string_format(s["format"].get<std::string>());
  }
  if (s.contains("pattern")) {
    if (!s["pattern"].is_string()) fail("%s: pattern must be a string", path.c_str());
    try {
      patterns_.push_back(PatternDfa::compile(s["pattern"].get<std::string>()));
    } catch (const Error& e) {
      fail("%s: %s", path.c_str(), e.what());
    }
    n.pattern = static_cast<int>(patterns_.size()) - 1;
  }
  nodes_.push_back(std::move(n));
  return static_cast<int>(nodes_.size()) - 1;
}

}  // namespace llm
