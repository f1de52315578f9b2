// JSON mode: the byte-level recognizer against nlohmann's parser (what it accepts in
// full is JSON, every JSON object it is shown is accepted), its limits, and the engine
// keeping a random model's replies inside one object.
#include <catch2/catch.hpp>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <string>

#include "backends/registry.h"
#include "core/engine/engine.h"
#include "core/engine/json_grammar.h"
#include "core/engine/json_schema.h"
#include "core/model.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

using namespace llm;
using nlohmann::json;

namespace {

// How many bytes of text the recognizer takes before refusing one (text.size(): all).
size_t accepted(const std::string& text, bool* done = nullptr) {
  JsonGrammar g;
  size_t n = 0;
  while (n < text.size() && g.feed(static_cast<uint8_t>(text[n]))) n++;
  if (done) *done = n == text.size() && g.done();
  return n;
}

// A constrained reply of the engine's model to a fixed prompt, sampled with seed.
const std::map<int32_t, float> kNoBias;

std::string constrained_reply(Engine& engine, const Tokenizer& tok,
                              std::shared_ptr<const JsonSchema> schema, int max_tokens,
                              uint64_t seed, FinishReason* why,
                              const std::map<int32_t, float>& bias = kNoBias) {
  GenerationRequest r;
  for (const auto& [id, b] : bias) r.sampling.logit_bias[id] = b;
  r.prompt = tok.encode("Answer in JSON:", true);
  r.max_tokens = max_tokens;
  r.json = std::move(schema);
  r.sampling.temperature = 1.f;
  r.sampling.top_p = 0.95f;
  r.sampling.seed = seed;
  auto stream = engine.submit(r);
  std::string text;
  *why = FinishReason::None;
  while (*why == FinishReason::None) {
    GenerationEvent ev = stream->next();
    text += ev.text;
    *why = ev.finish;
  }
  return text;
}

json random_value(std::mt19937& rng, int depth) {
  std::uniform_int_distribution<int> kind(0, depth > 4 ? 4 : 6);
  switch (kind(rng)) {
    case 0:
      return nullptr;
    case 1:
      return rng() % 2 == 0;
    case 2:
      return static_cast<int>(rng() % 2000) - 1000;
    case 3:
      return std::uniform_real_distribution<double>(-1e6, 1e6)(rng) * 1e-3;
    case 4: {
      static const char* pieces[] = {"a",  "é",    "\"",  "\\",   "\n",
                                     "\t", "日本", "x y", "\x01", "🙂"};
      std::string s;
      for (int i = rng() % 5; i > 0; i--) s += pieces[rng() % 10];
      return s;
    }
    case 5: {
      json a = json::array();
      for (int i = rng() % 4; i > 0; i--) a.push_back(random_value(rng, depth + 1));
      return a;
    }
    default: {
      json o = json::object();
      for (int i = rng() % 4; i > 0; i--)
        o["k" + std::to_string(rng() % 100)] = random_value(rng, depth + 1);
      return o;
    }
  }
}

}  // namespace

TEST_CASE("json mode: objects are accepted to their last byte, and nothing after", "[json_mode]") {
  for (const std::string& ok : std::vector<std::string>{
           "{}", " {\"a\":1}", "\n{\"a\": [1, -2.5e+3, 0, 0.5E-2, true, false, null]}",
           "{\"s\": \"x\\u00e9\\n\\\"\\\\\\/\", \"o\": {\"b\": [], \"c\": {}}}",
           "{\"utf8\": \"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x99\x82\"}"}) {
    INFO(ok);
    bool done = false;
    CHECK(accepted(ok, &done) == ok.size());
    CHECK(done);
    CHECK(accepted(ok + "}", nullptr) == ok.size());
  }
  // Refused at the byte that breaks it.
  const std::vector<std::pair<std::string, size_t>> bad = {{"[]", 0},
                                                           {"\"a\"", 0},
                                                           {"   {}", 2},
                                                           {"{\"a\"}", 4},
                                                           {"{\"a\":01}", 6},
                                                           {"{\"a\":1,}", 7},
                                                           {"{,}", 1},
                                                           {"{\"a\":tru}", 8},
                                                           {"{\"a\":1.}", 7},
                                                           {"{\"a\":-}", 6},
                                                           {"{\"a\":\"\x01\"}", 6},
                                                           {"{\"a\":\"\xff\"}", 6},
                                                           {"{\"a\":\"\xc3(\"}", 7},
                                                           {"{\"a\":\"\xe0\x80\x80\"}", 7},
                                                           {"{\"a\":\"\xed\xa0\x80\"}", 7},
                                                           {"{\"a\":\"\\x\"}", 7},
                                                           {"{\"a\":\"\\u12g4\"}", 10},
                                                           {"{\"a\" 1}", 5},
                                                           {"{\"a\":[1 2]}", 8},
                                                           {"{\"a\":[1,]}", 8},
                                                           {"{\"a\":1]", 6}};
  for (const auto& [text, at] : bad) {
    INFO(text);
    CHECK(accepted(text) == at);
  }
  // Depth and whitespace are bounded.
  std::string deep = "{\"a\":";
  for (int i = 1; i < JsonGrammar::kMaxDepth; i++) deep += "[";
  CHECK(accepted(deep + "[") == deep.size());
  CHECK(accepted("{" + std::string(JsonGrammar::kMaxSpaces + 1, ' ') + "}") ==
        1 + JsonGrammar::kMaxSpaces);
}

TEST_CASE("json mode: agrees with a JSON parser on random and mutated objects", "[json_mode]") {
  std::mt19937 rng(5);
  int mutated_json = 0;
  for (int i = 0; i < 400; i++) {
    json o = json::object();
    for (int k = rng() % 5; k > 0; k--) o["key" + std::to_string(k)] = random_value(rng, 1);
    for (const std::string& text : {o.dump(), o.dump(2), o.dump(1, '\t')}) {
      INFO(text);
      bool done = false;
      CHECK(accepted(text, &done) == text.size());
      CHECK(done);
      // A byte changed: whatever the recognizer takes in full is JSON.
      std::string m = text;
      m[rng() % m.size()] = "{}[]\",:0-.e \\ax\x80"[rng() % 17];
      bool m_done = false;
      if (accepted(m, &m_done) == m.size() && m_done) {
        // (A number too large for a double is JSON that this parser refuses.)
        INFO("mutated: " << m);
        bool parsed = true;
        try {
          parsed = !json::parse(m).is_discarded();
        } catch (const json::out_of_range& e) {
          parsed = e.id == 406;  // number overflow
        } catch (const json::exception&) {
          parsed = false;
        }
        CHECK(parsed);
        mutated_json++;
      }
    }
  }
  CHECK(mutated_json > 0);
}

TEST_CASE("json mode: the engine keeps a random model's replies inside one object",
          "[json_mode][engine]") {
  auto backend = create_backend("cpu", 2);
  const std::string path = test::tiny_chat_model("q0f32", 3);
  auto model = Model::load(path, *backend);
  auto tok = Tokenizer::load(path);
  Engine engine(*model, tok.get(), EngineOptions{});
  // Even seeds favour the tokens "{" and "}" alone (logit bias): those replies are an
  // empty object, so some surely end by the grammar; the others mostly run to
  // max_tokens.
  std::map<int32_t, float> close_bias;
  for (const char* t : {"{", " {", "}", " }"})
    for (int32_t id : tok->encode(t, false))
      if (tok->token_bytes(id) == t) close_bias[id] = 20.f;
  REQUIRE(close_bias.size() >= 2);
  int complete = 0;
  for (uint64_t seed = 1; seed <= 12; seed++) {
    FinishReason why = FinishReason::None;
    const std::string text = constrained_reply(engine, *tok, JsonSchema::any_object(), 48, seed,
                                               &why, seed % 2 == 0 ? close_bias : kNoBias);
    INFO("seed " << seed << ": " << text);
    REQUIRE((why == FinishReason::Stop || why == FinishReason::Length));
    bool done = false;
    CHECK(accepted(text, &done) == text.size());
    CHECK(done == (why == FinishReason::Stop));
    if (why == FinishReason::Stop) {
      CHECK(json::parse(text).is_object());
      complete++;
    }
  }
  CHECK(complete >= 6);
  GenerationRequest no_tok;
  no_tok.prompt = {1, 2};
  no_tok.json = JsonSchema::any_object();
  Engine bare(*model, nullptr, EngineOptions{});
  CHECK_THROWS_WITH(bare.submit(no_tok), Catch::Contains("JSON mode needs a tokenizer"));
}

namespace {

// How many bytes of text the schema's recognizer takes (text.size(): all), and whether
// the object is then complete.
size_t accepted_by(const JsonSchema& schema, const std::string& text, bool* done = nullptr) {
  JsonGrammar g(schema);
  size_t n = 0;
  while (n < text.size() && g.feed(static_cast<uint8_t>(text[n]))) n++;
  if (done) *done = n == text.size() && g.done();
  return n;
}

const json kPerson = json::parse(R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "description": "a name", "format": "hostname", "minLength": 1},
    "age": {"type": "integer"},
    "height": {"type": "number"},
    "nick": {"type": ["string", "null"]},
    "role": {"enum": ["admin", "user", 3, null]},
    "tags": {"type": "array", "items": {"type": "string"}},
    "boss": {"$ref": "#/$defs/person"},
    "meta": {"type": "object", "additionalProperties": {"type": "integer"}},
    "id": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    "k\"q": {"const": true}
  },
  "required": ["name", "age"],
  "additionalProperties": false,
  "$defs": {"person": {"type": "object", "properties": {"name": {"type": "string"},
            "boss": {"$ref": "#/$defs/person"}}, "required": ["name"],
            "additionalProperties": false}}
})");

}  // namespace

TEST_CASE("json schema: documents that follow it are accepted, in any key order",
          "[json_mode][json_schema]") {
  const auto schema = JsonSchema::compile(kPerson);
  for (const std::string& ok : std::vector<std::string>{
           R"({"name":"Ann","age":30})", R"({ "age" : -4 , "name" : "B\u00e9a\n" })",
           R"({"name":"C","age":0,"height":1.5e3,"nick":null,"role":"admin","tags":["x",""],)"
           R"("boss":{"name":"D","boss":{"name":"E"}},"meta":{"a":1,"b":2},"id":"x7",)"
           R"("k\"q":true})",
           R"({"role":3,"name":"F","nick":"f","age":12,"id":42,"meta":{}})",
           "{\n  \"name\": \"G\",\n  \"age\": 1,\n  \"role\": null\n}"}) {
    INFO(ok);
    bool done = false;
    CHECK(accepted_by(*schema, ok, &done) == ok.size());
    CHECK(done);
  }
}

TEST_CASE("json schema: what breaks it is refused at the byte that breaks it",
          "[json_mode][json_schema]") {
  const auto schema = JsonSchema::compile(kPerson);
  auto refused_at = [&](const std::string& text, const std::string& at) {
    INFO(text);
    const size_t pos = text.find(at);
    REQUIRE(pos != std::string::npos);
    CHECK(accepted_by(*schema, text) == pos);
  };
  refused_at(R"({"name":"A"})", "}");                      // age is required
  refused_at(R"({"nam":"A","age":1})", "\":\"A\",\"age");  // no such key (at its end)
  refused_at(R"({"name":"A","age":1,"x":1})", "x");        // not declared
  // Given twice: "n" may still become "nick", "na" only the name given already.
  CHECK(accepted_by(*schema, R"({"name":"A","name":"B","age":1})") == 14);
  refused_at(R"({"name":1,"age":1})", "1,");     // a string wanted
  refused_at(R"({"name":"A","age":1.5})", ".");  // an integer
  refused_at(R"({"name":"A","age":1e3})", "e3");
  refused_at(R"({"name":"A","age":1,"role":"root"})", "root");  // "r" starts no enum value
  refused_at(R"({"name":"A","age":1,"role":true})", "true");
  refused_at(R"({"name":"A","age":1,"nick":5})", "5");
  refused_at(R"({"name":"A","age":1,"tags":[1]})", "1]");
  refused_at(R"({"name":"A","age":1,"meta":{"a":"b"}})", "\"b\"");
  refused_at(R"({"name":"A","age":1,"boss":{"age":1}})", "age\":1}");
  refused_at(R"({"name":"A","age":1,"id":true})", "true");
  refused_at(R"({"name":"A","age":1,"k\"q":false})", "false");
  refused_at(R"(["name"])", "[");  // the root is an object

  // An object with no keys left takes no ','.
  const auto one = JsonSchema::compile(json::parse(R"({"properties":{"a":{"type":"boolean"}},)"
                                                   R"("additionalProperties":false})"));
  CHECK(accepted_by(*one, R"({"a":true,)") == std::string(R"({"a":true)").size());
  CHECK(accepted_by(*one, R"({})") == 2);
}

TEST_CASE("json schema: what it cannot enforce is refused with its place", "[json_schema]") {
  auto fails_with = [](const char* schema, const char* what) {
    INFO(schema);
    CHECK_THROWS_WITH(JsonSchema::compile(json::parse(schema)), Catch::Contains(what));
  };
  fails_with(R"({"type":"array"})", "root must be an object");
  fails_with(R"({"type":"object","properties":{"a":{"not":{}}}})", "#/properties/a: 'not'");
  fails_with(R"({"type":"object","required":["b"]})", "required key \"b\"");
  fails_with(R"({"type":"object","properties":{"a":{"$ref":"#/$defs/x"}}})", "points nowhere");
  fails_with(R"({"type":"object","properties":{"a":{"type":"date"}}})", "unknown type 'date'");
  fails_with(R"({"type":"object","properties":{"a":{"prefixItems":{}}}})",
             "prefixItems must be a list");
}

namespace {

// Whether the decimal text x (no exponent) is a multiple of step / 10^decimals, exactly.
bool decimal_multiple(const std::string& x, int64_t step, int decimals) {
  __int128 digits = 0;
  int frac = -1;
  for (char ch : x) {
    if (ch == '.') {
      frac = 0;
    } else if (ch >= '0' && ch <= '9') {
      digits = digits * 10 + (ch - '0');
      if (frac >= 0) frac++;
    }
  }
  // digits / 10^frac = k · step / 10^decimals  <=>  digits · 10^decimals ≡ 0 (step · 10^frac)
  __int128 num = digits, den = step;
  for (int i = 0; i < decimals; i++) num *= 10;
  for (int i = 0; i < std::max(frac, 0); i++) den *= 10;
  return num % den == 0;
}

}  // namespace

TEST_CASE("json schema: the engine keeps a random model's replies to the schema",
          "[json_mode][json_schema][engine]") {
  auto backend = create_backend("cpu", 2);
  const std::string path = test::tiny_chat_model("q0f32", 3);
  auto model = Model::load(path, *backend);
  auto tok = Tokenizer::load(path);
  Engine engine(*model, tok.get(), EngineOptions{});
  // The replies under a schema for seeds 1-8 (each within it); check runs on those that
  // closed their object. Returns how many did.
  auto replies = [&](const std::shared_ptr<const JsonSchema>& schema,
                     const std::function<void(const std::string&)>& check) {
    int closed = 0;
    for (uint64_t seed = 1; seed <= 8; seed++) {
      FinishReason why = FinishReason::None;
      const std::string text = constrained_reply(engine, *tok, schema, 64, seed, &why);
      INFO("seed " << seed << ": " << text);
      REQUIRE((why == FinishReason::Stop || why == FinishReason::Length));
      // (One grammar state follows one alternative: unions are checked by `check`.)
      if (!schema->has_overlapping_alternatives()) CHECK(accepted_by(*schema, text) == text.size());
      if (why != FinishReason::Stop) continue;
      check(text);
      closed++;
    }
    return closed;
  };

  const auto schema = JsonSchema::compile(json::parse(R"({
    "type": "object", "additionalProperties": false, "required": ["n", "ok", "color"],
    "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"},
                   "color": {"enum": ["red", "green"]}}})"));
  CHECK(replies(schema, [](const std::string& text) {
          const json j = json::parse(text);
          CHECK(j.size() == 3);
          CHECK(j["n"].is_number_integer());
          CHECK(j["ok"].is_boolean());
          CHECK((j["color"] == "red" || j["color"] == "green"));
        }) > 0);

  // A union of objects (as pydantic writes one): each reply is one of them.
  const auto pets = JsonSchema::compile(json::parse(R"({
    "type": "object", "required": ["pet"], "additionalProperties": false,
    "properties": {"pet": {"anyOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]}},
    "$defs": {
      "Cat": {"type": "object", "required": ["kind", "lives"], "additionalProperties": false,
              "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer"}}},
      "Dog": {"type": "object", "required": ["kind", "good"], "additionalProperties": false,
              "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}}}}})"));
  CHECK(replies(pets, [](const std::string& text) {
          const json pet = json::parse(text)["pet"];
          CHECK(pet.size() == 2);
          if (pet["kind"] == "cat") {
            CHECK(pet["lives"].is_number_integer());
          } else {
            CHECK(pet["kind"] == "dog");
            CHECK(pet["good"].is_boolean());
          }
        }) > 0);

  // multipleOf: a price in quarters and a count in sevens, checked exactly on the numbers'
  // text (n may be past 64 bits).
  const auto steps = JsonSchema::compile(json::parse(R"({
    "type": "object", "required": ["price", "n"], "additionalProperties": false,
    "properties": {"price": {"type": "number", "multipleOf": 0.25, "minimum": 0, "maximum": 100},
                   "n": {"type": "integer", "multipleOf": 7}}})"));
  CHECK(replies(steps, [](const std::string& text) {
          const json j = json::parse(text);
          CHECK(j["price"].get<double>() >= 0);
          CHECK(j["price"].get<double>() <= 100);
          std::smatch price, n;
          REQUIRE(std::regex_search(text, price, std::regex(R"re("price"\s*:\s*(-?[0-9.]+))re")));
          REQUIRE(std::regex_search(text, n, std::regex(R"re("n"\s*:\s*(-?[0-9]+))re")));
          CHECK(decimal_multiple(price[1], 25, 2));
          CHECK(decimal_multiple(n[1], 7, 0));
        }) > 0);

  // uniqueItems over an enum: each color at most once.
  const auto colors = JsonSchema::compile(json::parse(R"({
    "type": "object", "required": ["colors"], "additionalProperties": false,
    "properties": {"colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                              "uniqueItems": true, "minItems": 2}}})"));
  CHECK(replies(colors, [](const std::string& text) {
          const json list = json::parse(text)["colors"];
          CHECK(list.size() >= 2);
          CHECK(list.size() <= 3);
          for (size_t i = 0; i < list.size(); i++)
            for (size_t k = i + 1; k < list.size(); k++) CHECK(list[i] != list[k]);
        }) > 0);
}

TEST_CASE("json grammar: assign gives the state a copy gives", "[json_mode][json_schema]") {
  const auto schema = JsonSchema::compile(kPerson);
  const std::string doc =
      R"({"name":"C","age":0,"tags":["x"],"boss":{"name":"D","boss":{"name":"E"}},"meta":{"a":1}})";
  const std::string bad = R"({"name":"C","age":0,"boss":{"name":1}})";
  JsonGrammar g(*schema);
  for (size_t i = 0; i < doc.size(); i++) {
    // b held a deeper state before: what assign does not copy must not matter.
    JsonGrammar a = g, b(*schema);
    b.feed(std::string(R"({"boss":{"boss":{"boss":{)"));
    b.assign(g);
    for (const std::string& rest : {doc.substr(i), bad.substr(std::min(i, bad.size()))}) {
      JsonGrammar x = a, y = b;
      size_t nx = 0, ny = 0;
      while (nx < rest.size() && x.feed(static_cast<uint8_t>(rest[nx]))) nx++;
      while (ny < rest.size() && y.feed(static_cast<uint8_t>(rest[ny]))) ny++;
      CHECK(nx == ny);
      CHECK(x.done() == y.done());
    }
    REQUIRE(g.feed(static_cast<uint8_t>(doc[i])));
  }
  CHECK(g.done());
}

namespace {

// After each prefix, the mask (with its shortcuts) keeps exactly the tokens of the Llama 2
// vocabulary that a full check keeps, and some token is kept. State: JsonGrammar, or
// JsonReply (the states of every open anyOf alternative).
template <class State = JsonGrammar>
void check_mask_agrees(const JsonSchema& schema, const std::vector<std::string>& prefixes) {
  static const std::vector<std::string> bytes = [] {
    auto tok = Tokenizer::load(test::data_dir() + "/tokenizers/ggml-vocab-llama-spm.gguf");
    std::vector<std::string> b(static_cast<size_t>(tok->vocab_size()));
    for (int id = 0; id < tok->vocab_size(); id++)
      if (!tok->is_special(id)) b[static_cast<size_t>(id)] = tok->token_bytes(id);
    return b;
  }();
  static const JsonTokenMask mask(bytes);
  for (const std::string& prefix : prefixes) {
    INFO(prefix);
    State state(schema);
    REQUIRE(state.feed(prefix));
    std::vector<float> got(bytes.size(), 0.f);
    mask.apply(state, got.data(), static_cast<int>(got.size()));
    int allowed = 0;
    for (size_t id = 0; id < bytes.size(); id++) {
      State g = state;
      const bool want = !bytes[id].empty() && g.feed(bytes[id]);
      if (want != (got[id] == 0.f)) FAIL_CHECK("token " << id << " '" << bytes[id] << "'");
      allowed += want ? 1 : 0;
    }
    CHECK(allowed > 0);
  }
}

}  // namespace

TEST_CASE("json mask: its shortcuts keep exactly the tokens a full check keeps",
          "[json_mode][json_schema]") {
  // States of every kind: between parts, in keys, in values, in numbers, in a UTF-8
  // character, in an escape, in an enum.
  check_mask_agrees(*JsonSchema::compile(kPerson),
                    {"", "{", R"({"na)", R"({"name":)", R"({"name":"ab)", "{\"name\":\"a\xc3",
                     R"({"name":"a\)", R"({"name":"a","age":1)", R"({"name":"a","age":-)",
                     R"({"name":"a","age":1,"role":"ad)", R"({"name":"a","age":1,"tags":[)"});
}

TEST_CASE("json schema: item counts and string lengths are bounded", "[json_mode][json_schema]") {
  const auto schema = JsonSchema::compile(json::parse(R"({
    "type": "object",
    "properties": {"tags": {"type": "array", "items": {"type": "integer"},
                            "minItems": 1, "maxItems": 2},
                   "code": {"type": "string", "minLength": 2, "maxLength": 3},
                   "none": {"type": "array", "maxItems": 0}}})"));
  auto check = [&](const std::string& text, size_t want) {
    INFO(text);
    CHECK(accepted_by(*schema, text) == want);
  };
  const std::string ok = R"({"tags":[1,2],"code":"a\né","none":[]})";
  bool done = false;
  CHECK(accepted_by(*schema, ok, &done) == ok.size());
  CHECK(done);
  check(R"({"tags":[])", 9);               // at least one item
  check(R"({"tags":[1,2,3]})", 12);        // at most two: the second ',' is refused
  check(R"({"code":"a"})", 10);            // two characters at least: the quote is refused
  check(R"({"code":"abcd"})", 12);         // three at most: the fourth is refused
  check(R"({"code":"\u00e9\t\"x"})", 19);  // escapes count one each
  check(R"({"none":[1]})", 9);
  CHECK_THROWS_WITH(JsonSchema::compile(json::parse(
                        R"({"type":"object","properties":{"a":{"minItems":3,"maxItems":2}}})")),
                    Catch::Contains("minimum above its maximum"));
}

namespace {

// Whether the state can still close the object through the bytes of `alphabet` (digits,
// '-' and '.' by default; at most depth more bytes): bounds must never leave a reply with
// no way out.
bool can_finish(const JsonGrammar& state, int depth, const std::string& alphabet = "0123456789.-") {
  JsonGrammar g = state;
  if (g.feed('}') && g.done()) return true;
  if (depth == 0) return false;
  for (char c : alphabet) {
    JsonGrammar next = state;
    if (next.feed(static_cast<uint8_t>(c)) && can_finish(next, depth - 1, alphabet)) return true;
  }
  return false;
}

// One number schema (the value of "v") against each of numbers: a document with it is
// taken whole exactly where valid(text, value) says (never with an exponent, nor with a
// fraction where integer), and every prefix of a value taken can still end.
void check_number_values(const char* value_schema, bool integer,
                         const std::vector<std::string>& numbers,
                         const std::function<bool(const std::string&, double)>& valid) {
  INFO(value_schema);
  const auto schema = JsonSchema::compile(
      json{{"type", "object"}, {"properties", {{"v", json::parse(value_schema)}}}});
  for (const std::string& x : numbers) {
    INFO(x);
    const double v = std::strtod(x.c_str(), nullptr);
    const bool fractional = x.find_first_of(".eE") != std::string::npos;
    const bool exponent = x.find_first_of("eE") != std::string::npos;
    const bool want = !exponent && !(integer && fractional) && valid(x, v);
    const std::string doc = "{\"v\":" + x + "}";
    bool done = false;
    const bool whole = accepted_by(*schema, doc, &done) == doc.size() && done;
    CHECK(whole == want);
    JsonGrammar g(*schema);
    REQUIRE(g.feed("{\"v\":"));
    for (char ch : x) {
      if (!g.feed(static_cast<uint8_t>(ch))) break;
      CHECK(can_finish(g, 5));
    }
  }
}

}  // namespace

TEST_CASE("json schema: numbers keep within minimum and maximum", "[json_mode][json_schema]") {
  // Each schema of "v", and what the value must satisfy (the oracle: strtod's double).
  struct Case {
    const char* schema;
    bool integer;
    double lo, hi;
    bool lo_open, hi_open;
  };
  const double inf = HUGE_VAL;
  const std::vector<Case> cases = {
      {R"({"type":"integer","minimum":1,"maximum":12})", true, 1, 12, false, false},
      {R"({"type":"integer","minimum":-5})", true, -5, inf, false, false},
      {R"({"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":100})", true, 0, 100, true,
       true},
      {R"({"type":"integer","maximum":-10})", true, -inf, -10, false, false},
      {R"({"type":"integer","minimum":2.5,"maximum":7.5})", true, 2.5, 7.5, false, false},
      {R"({"type":"number","minimum":0,"maximum":1})", false, 0, 1, false, false},
      {R"({"type":"number","exclusiveMinimum":-1.5,"maximum":0.25})", false, -1.5, 0.25, true,
       false},
      {R"({"type":"number","minimum":0.1,"exclusiveMaximum":5})", false, 0.1, 5, false, true},
      {R"({"type":"number","minimum":-40,"maximum":-39.5})", false, -40, -39.5, false, false},
      {R"({"type":"number","minimum":100})", false, 100, inf, false, false},
      // Draft 4: exclusiveMinimum as a flag beside minimum.
      {R"({"type":"number","minimum":0,"exclusiveMinimum":true})", false, 0, inf, true, false},
      {R"({"minimum":3,"maximum":3})", false, 3, 3, false, false},
  };
  std::vector<std::string> numbers;
  for (int i = -120; i <= 120; i++) numbers.push_back(std::to_string(i));
  for (const char* x :
       {"-0",    "0.0",    "0.1",    "0.09",      "0.10",       "-1.5",     "-1.49",    "-1.51",
        "0.25",  "0.250",  "0.2501", "4.999",     "5.0",        "5",        "-39.5",    "-39.49",
        "-40.0", "-40.01", "99.99",  "100.5",     "2.5",        "7.5",      "3.0",      "3.00001",
        "1e2",   "1E1",    "12.0",   "123456789", "-123456789", "0.000001", "1000000.5"})
    numbers.push_back(x);
  for (const Case& c : cases)
    check_number_values(c.schema, c.integer, numbers, [&](const std::string&, double v) {
      return (c.lo_open ? v > c.lo : v >= c.lo) && (c.hi_open ? v < c.hi : v <= c.hi);
    });
  // Bounds that leave no number are refused; beside another type they only rule numbers out.
  CHECK_THROWS_WITH(
      JsonSchema::compile(json::parse(R"({"type":"object","properties":{"a":{"type":"integer",)"
                                      R"("minimum":1.2,"maximum":1.8}}})")),
      Catch::Contains("accept no number"));
  CHECK_THROWS_WITH(JsonSchema::compile(json::parse(
                        R"({"type":"object","properties":)"
                        R"({"a":{"type":"number","exclusiveMinimum":1,"maximum":1}}})")),
                    Catch::Contains("accept no number"));
  const auto either = JsonSchema::compile(json::parse(
      R"({"type":"object","properties":{"a":{"type":["number","null"],"minimum":9,"maximum":1}}})"));
  CHECK(accepted_by(*either, R"({"a":null})") == 10);
  CHECK(accepted_by(*either, R"({"a":5})") == 5);
  CHECK_THROWS_WITH(
      JsonSchema::compile(json::parse(R"({"type":"object","properties":{"a":{"minimum":"1"}}})")),
      Catch::Contains("minimum must be a number"));

  // The token mask's shortcuts agree with the full check inside bounded numbers.
  const auto age = JsonSchema::compile(json::parse(
      R"({"type":"object","properties":{"age":{"type":"integer","minimum":18,"maximum":120},)"
      R"("p":{"type":"number","exclusiveMinimum":0,"maximum":1}}})"));
  check_mask_agrees(
      *age, {R"({"age":)", R"({"age":1)", R"({"age":12)", R"({"p":0.)", R"({"p":0)", R"({"p":)"});
}

TEST_CASE("json schema: numbers keep to multipleOf, within their bounds",
          "[json_mode][json_schema]") {
  struct Case {
    const char* schema;
    bool integer;
    int64_t step;  // the multiples the values take: step / 10^decimals
    int decimals;
    double lo, hi;
    bool lo_open;
  };
  const double inf = HUGE_VAL;
  const std::vector<Case> cases = {
      {R"({"type":"integer","multipleOf":3})", true, 3, 0, -inf, inf, false},
      {R"({"type":"integer","multipleOf":5,"minimum":12,"maximum":38})", true, 5, 0, 12, 38, false},
      // Integers that are multiples of 2.5 are those of 5.
      {R"({"type":"integer","multipleOf":2.5})", true, 5, 0, -inf, inf, false},
      {R"({"type":"number","multipleOf":0.5})", false, 5, 1, -inf, inf, false},
      {R"({"type":"number","multipleOf":0.01,"minimum":0,"maximum":1})", false, 1, 2, 0, 1, false},
      {R"({"type":"number","multipleOf":0.25,"exclusiveMinimum":0})", false, 25, 2, 0, inf, true},
      {R"({"type":"number","multipleOf":3})", false, 3, 0, -inf, inf, false},
      {R"({"type":"number","multipleOf":0.1})", false, 1, 1, -inf, inf, false},
      {R"({"type":"number","multipleOf":1.5,"minimum":-3,"maximum":4.5})", false, 15, 1, -3, 4.5,
       false},
  };
  std::vector<std::string> numbers;
  for (int i = -60; i <= 60; i++) numbers.push_back(std::to_string(i));
  for (const char* x :
       {"0.5",  "1.5",  "2.50",   "0.25",  "0.3",  "0.30", "0.31", "0.01", "0.015", "1.00",
        "-0.5", "-1.5", "4.5",    "4.55",  "-3.0", "-3.5", "7.5",  "2.5",  "0.75",  "0.125",
        "6.0",  "9.00", "-9.00",  "12.5",  "0.1",  "0.2",  "0.7",  "0.99", "1.01",  "-0",
        "0.0",  "1e1",  "100.50", "-4.50", "0.20", "1.20", "3.30", "0.60"})
    numbers.push_back(x);
  for (const Case& c : cases)
    check_number_values(c.schema, c.integer, numbers, [&](const std::string& x, double v) {
      return (c.lo_open ? v > c.lo : v >= c.lo) && v <= c.hi &&
             decimal_multiple(x, c.step, c.decimals);
    });
  // A step of more places than 9 is accepted and not enforced; 0 or less is refused, and so
  // are bounds that hold no multiple.
  const auto fine = JsonSchema::compile(
      json::parse(R"({"type":"object","properties":{"v":{"type":"number","multipleOf":1e-12}}})"));
  CHECK(accepted_by(*fine, R"({"v":0.123})") == 11);
  CHECK_THROWS_WITH(
      JsonSchema::compile(json::parse(R"({"type":"object","properties":{"v":{"multipleOf":0}}})")),
      Catch::Contains("multipleOf must be greater than 0"));
  CHECK_THROWS_WITH(
      JsonSchema::compile(json::parse(R"({"type":"object","properties":{"v":{"type":"integer",)"
                                      R"("multipleOf":5,"minimum":1,"maximum":4}}})")),
      Catch::Contains("multiple of multipleOf"));
  CHECK_THROWS_WITH(
      JsonSchema::compile(json::parse(R"({"type":"object","properties":{"v":{"type":"number",)"
                                      R"("multipleOf":0.5,"minimum":0.1,"maximum":0.2}}})")),
      Catch::Contains("multiple of multipleOf"));
  // The token mask's shortcuts agree with the full check inside such numbers.
  const auto price = JsonSchema::compile(json::parse(
      R"({"type":"object","properties":{"price":{"type":"number","multipleOf":0.01,"minimum":0},)"
      R"("n":{"type":"integer","multipleOf":7}}})"));
  check_mask_agrees(*price, {R"({"price":)", R"({"price":1)", R"({"price":1.2)", R"({"price":1.25)",
                             R"({"n":)", R"({"n":1)"});
}

TEST_CASE("json schema: uniqueItems over enum items gives each value once",
          "[json_mode][json_schema]") {
  const auto schema = JsonSchema::compile(json::parse(R"({"type":"object","properties":{
    "tags": {"type":"array","items":{"enum":["a","b","ab"]},"uniqueItems":true},
    "ns": {"type":"array","items":{"enum":[1,12,2]},"uniqueItems":true,"minItems":1},
    "free": {"type":"array","items":{"type":"integer"},"uniqueItems":true}}})"));
  // Each document, and how much of it is taken (all of a valid one).
  const std::vector<std::pair<std::string, size_t>> docs = {
      {R"({"tags":["a","b"]})", 18},
      {R"({"tags":["a","b","ab"]})", 23},
      {R"({"tags":["ab","a"]})", 19},
      {R"({"tags":["a","a"]})", 15},           // the second "a" ends at its quote
      {R"({"tags":["a","b","ab","a"]})", 21},  // no value is left for a fourth item
      {R"({"ns":[1,12]})", 13},
      {R"({"ns":[12,1,2]})", 15},
      {R"({"ns":[1,1]})", 10},  // 1 again: refused where it ends (it could have been 12)
      {R"({"ns":[2,12,1]})", 15},
      {R"({"ns":[]})", 7},          // minItems
      {R"({"free":[1,1,1]})", 16},  // uniqueItems over other items is not enforced
  };
  for (const auto& [doc, want] : docs) {
    INFO(doc);
    CHECK(accepted_by(*schema, doc) == want);
    // Every prefix taken inside the array can still end (a few bytes close it).
    JsonGrammar g(*schema);
    bool in_array = false;
    for (char ch : doc) {
      if (!g.feed(static_cast<uint8_t>(ch))) break;
      in_array = in_array || ch == '[';
      if (in_array && !g.done()) CHECK(can_finish(g, 5, "\"ab12,]"));
    }
  }
  // More items asked for than there are values is refused.
  CHECK_THROWS_WITH(JsonSchema::compile(json::parse(
                        R"({"type":"object","properties":{"v":{"type":"array",)"
                        R"("items":{"enum":["x","y"]},"uniqueItems":true,"minItems":3}}})")),
                    Catch::Contains("accepts nothing"));
  check_mask_agrees(
      *schema, {R"({"tags":["a",)", R"({"tags":["a","b",")", R"({"ns":[1,1)", R"({"ns":[12,)"});
}

TEST_CASE("json schema: date, time, date-time and uuid strings keep their format",
          "[json_mode][json_schema]") {
  const auto schema = JsonSchema::compile(json::parse(R"({"type":"object","properties":{
      "d":{"type":"string","format":"date"}, "t":{"type":"string","format":"time"},
      "dt":{"type":"string","format":"date-time"}, "u":{"type":"string","format":"uuid"},
      "e":{"type":"string","format":"email"}, "n":{"type":["string","null"],"format":"date"}}})"));
  auto whole = [&](const std::string& key, const std::string& value) {
    const std::string doc = "{\"" + key + "\":\"" + value + "\"}";
    bool done = false;
    return accepted_by(*schema, doc, &done) == doc.size() && done;
  };
  for (const char* ok : {"2024-02-29", "1999-12-31", "0001-01-01", "2030-10-09"})
    CHECK(whole("d", ok));
  for (const char* bad : {"2024-13-01", "2024-00-10", "2024-1-01", "2024-01-32", "2024-01-00",
                          "24-01-01", "2024/01/01", "2024-01-011", "2024-01-0", ""})
    CHECK_FALSE(whole("d", bad));
  for (const char* ok :
       {"23:59:59Z", "00:00:00+01:00", "12:30:15.123-05:30", "08:00:60z", "19:05:00.5Z"})
    CHECK(whole("t", ok));
  for (const char* bad : {"24:00:00Z", "12:60:00Z", "12:00:61Z", "12:00:00", "12:00:00.Z", "12:00Z",
                          "12:00:00+1:00", "12:00:00+24:00", "1:00:00Z"})
    CHECK_FALSE(whole("t", bad));
  CHECK(whole("dt", "2024-05-06T07:08:09Z"));
  CHECK(whole("dt", "2024-05-06t07:08:09.25+02:00"));
  CHECK_FALSE(whole("dt", "2024-05-06 07:08:09Z"));
  CHECK_FALSE(whole("dt", "2024-05-06"));
  CHECK(whole("u", "123e4567-e89b-12d3-A456-426614174000"));
  CHECK_FALSE(whole("u", "123e4567e89b12d3a456426614174000"));
  CHECK_FALSE(whole("u", "123e4567-e89b-12d3-a456-42661417400g"));
  CHECK_FALSE(whole("u", "123e4567-e89b-12d3-a456-4266141740001"));
  // Formats not enforced take any string; a format beside null still allows null.
  CHECK(whole("e", "not an email \\u00e9"));
  const std::string null_doc = R"({"n":null})";
  CHECK(accepted_by(*schema, null_doc) == null_doc.size());
  // Keys are not formatted, even after a formatted value.
  const std::string two = R"({"d":"2024-01-02","t":"10:00:00Z"})";
  CHECK(accepted_by(*schema, two) == two.size());

  // The token mask's shortcuts agree with the full check inside formatted strings (plain
  // string tokens are not taken whole there).
  check_mask_agrees(*schema,
                    {R"({"d":")", R"({"d":"2024-0)", R"({"dt":"2024-01-01T1)", R"({"u":"12)"});
}

TEST_CASE("json schema: pattern strings agree with std::regex (ECMAScript search)",
          "[json_mode][json_schema]") {
  // Each pattern with strings it must match (the random ones below rarely do).
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"^[A-Z][a-z]+$", {"Ann", "Zoe"}},
      {"^\\d{3}-\\d{4}$", {"555-1234"}},
      {"abc", {"abc", "xxabcyy"}},
      {"^(foo|bar)+$", {"foo", "barfoobar"}},
      {"^[^@\\s]+@[^@\\s]+\\.[a-z]{2,}$", {"a@b.cd", "x.y@z.org"}},
      {"^a*b?c{0,2}$", {"", "aab", "bcc", "aaacc"}},
      {"^\\w+(\\.\\w+)*$", {"a", "a.b_c.d9"}},
      {"x$", {"x", "abx"}},
      {"^(?:ab|cd)*e$", {"e", "abcde"}},
      {"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){2}$", {"0a:FF:10"}},
      {"^\\$\\d+\\.\\d\\d$", {"$1.50", "$100.00"}},
      {"^[-+]?\\d*\\.?\\d+$", {"1", "-2.5", "+.5"}},
      {".", {"a", "xyz"}},
      {"^.{2,3}$", {"ab", "a b"}},
      {"^[a-c]+?\\x41\\u0042$", {"abAB"}},
  };
  std::mt19937 rng(5);
  const std::string alphabet = "abcdefxyzABCZ0123456789-_.@:+$ e";
  for (const auto& [pattern, examples] : cases) {
    INFO("pattern " << pattern);
    const auto schema = JsonSchema::compile(json{
        {"type", "object"}, {"properties", {{"s", {{"type", "string"}, {"pattern", pattern}}}}}});
    const std::regex re(pattern, std::regex::ECMAScript);
    std::vector<std::string> texts = examples;
    for (int i = 0; i < 2000; i++) {
      std::string t;
      for (int n = static_cast<int>(rng() % 9); n > 0; n--) t += alphabet[rng() % alphabet.size()];
      texts.push_back(t);
    }
    int matched = 0;
    for (const std::string& t : texts) {
      INFO("text '" << t << "'");
      const bool want = std::regex_search(t, re);
      const std::string doc = "{\"s\":\"" + t + "\"}";
      bool done = false;
      CHECK((accepted_by(*schema, doc, &done) == doc.size() && done) == want);
      matched += want ? 1 : 0;
    }
    CHECK(matched >= static_cast<int>(examples.size()));
    // No dead ends: from every state of the automaton an accepting one is reachable.
    const PatternDfa dfa = PatternDfa::compile(pattern);
    for (size_t d = 0; d < dfa.size(); d++) {
      std::vector<char> seen(dfa.size(), 0);
      std::vector<int> todo = {static_cast<int>(d)};
      seen[d] = 1;
      bool reaches = false;
      while (!todo.empty() && !reaches) {
        const int s = todo.back();
        todo.pop_back();
        reaches = dfa.accepting(s);
        for (int c = 0; c < 256; c++) {
          const int t = dfa.next(s, static_cast<uint8_t>(c));
          if (t >= 0 && !seen[static_cast<size_t>(t)]) {
            seen[static_cast<size_t>(t)] = 1;
            todo.push_back(t);
          }
        }
      }
      CHECK(reaches);
    }
  }

  // Characters are whole UTF-8 sequences; escapes are not written in pattern strings.
  const auto two = JsonSchema::compile(
      json::parse(R"({"type":"object","properties":{"s":{"type":"string","pattern":"^.{2}$"},)"
                  R"("t":{"type":"string","pattern":"^[é日]+x$"}}})"));
  bool done = false;
  const std::string utf8 = "{\"s\":\"\xc3\xa9\xe6\x97\xa5\"}";
  CHECK((accepted_by(*two, utf8, &done) == utf8.size() && done));
  const std::string three = "{\"s\":\"\xc3\xa9\xe6\x97\xa5z\"}";
  CHECK(accepted_by(*two, three) < three.size());
  const std::string cls = "{\"t\":\"\xe6\x97\xa5\xc3\xa9x\"}";
  CHECK((accepted_by(*two, cls, &done) == cls.size() && done));
  CHECK(accepted_by(*two, R"({"s":"a\n"})") == 7);  // refused at the backslash

  // Escaped characters stay literal; keys are not matched against value patterns.
  const auto keyed = JsonSchema::compile(
      json::parse(R"({"type":"object","properties":{"k":{"type":"string","pattern":"^z$"}},)"
                  R"("additionalProperties":{"type":"string","pattern":"^z$"}})"));
  const std::string keys = R"({"k":"z","other":"z"})";
  CHECK((accepted_by(*keyed, keys, &done) == keys.size() && done));

  auto fails_with = [](const std::string& pattern, const char* what) {
    INFO(pattern);
    CHECK_THROWS_WITH(JsonSchema::compile(json{
                          {"type", "object"},
                          {"properties", {{"s", {{"type", "string"}, {"pattern", pattern}}}}}}),
                      Catch::Contains(what));
  };
  fails_with("(?=a)b", "lookaround");
  fails_with("(a)\\1", "backreference");
  fails_with("\\bword", "word boundary");
  fails_with("a^b", "anchor");
  fails_with("[abc", "unterminated '['");
  fails_with("(ab", "unterminated '('");
  fails_with("ab)", "unmatched ')'");
  fails_with("a{3,1}", "m < n");
  fails_with("*a", "repetition of nothing");
  fails_with("[é-ü]", "non-ASCII");
  fails_with("^\"$", "matches no string");
  fails_with("^(a{1000}){1000}$", "too large");
  fails_with(std::string(100000, '(') + "a" + std::string(100000, ')'), "nested more than 32");
  fails_with("^(a|b)*a(a|b){14}$", "more than 30000 automaton states");
  CHECK_THROWS_WITH(
      JsonSchema::compile(json::parse(R"({"type":"object","properties":{"s":{"pattern":5}}})")),
      Catch::Contains("pattern must be a string"));

  // The mask's shortcuts agree with the full check inside a pattern's string.
  const auto phone = JsonSchema::compile(json::parse(
      R"({"type":"object","properties":{"p":{"type":"string","pattern":"^\\d{3}-\\d{4}$"},)"
      R"("w":{"type":"string","pattern":"^[a-z ]+$"}}})"));
  check_mask_agrees(*phone, {R"({"p":")", R"({"p":"55)", R"({"p":"555-)", R"({"w":"ab)"});
}

TEST_CASE("json schema: anyOf alternatives of one type are followed side by side",
          "[json_mode][json_schema]") {
  const auto schema = JsonSchema::compile(json::parse(R"({
    "type": "object", "required": ["pet"], "additionalProperties": false,
    "properties": {
      "pet": {"anyOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]},
      "id": {"oneOf": [{"type": "string", "format": "uuid"},
                       {"type": "string", "pattern": "^[a-z]{3}$"},
                       {"type": "integer", "minimum": 0}]},
      "n": {"anyOf": [{"type": "integer", "maximum": 5}, {"type": "number", "minimum": 100}]},
      "list": {"anyOf": [{"type": "array", "items": {"type": "string"}},
                         {"type": "array", "items": {"type": "integer"}}]}},
    "$defs": {
      "Cat": {"type": "object", "required": ["kind", "lives"], "additionalProperties": false,
              "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer"}}},
      "Dog": {"type": "object", "required": ["kind"], "additionalProperties": false,
              "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}}}}})"));
  CHECK(schema->has_overlapping_alternatives());
  auto whole = [&](const std::string& doc) {
    JsonReply r(*schema);
    return r.feed(doc) && r.done();
  };
  for (const char* ok :
       {R"({"pet":{"kind":"cat","lives":9}})", R"({"pet":{"kind":"dog"}})",
        R"({"pet":{"good":true,"kind":"dog"}})", R"({"pet":{"lives":3,"kind":"cat"}})",
        R"({"pet":{"kind":"dog","good":false},"id":"abc"})",
        R"({"pet":{"kind":"cat","lives":1},"id":"123e4567-e89b-12d3-a456-426614174000"})",
        R"({"pet":{"kind":"dog"},"id":42,"n":3})", R"({"pet":{"kind":"dog"},"n":150.5})",
        R"({"pet":{"kind":"dog"},"n":-7})", R"({"pet":{"kind":"dog"},"list":["a","b"]})",
        R"({"pet":{"kind":"dog"},"list":[1,2]})", R"({"pet":{"kind":"dog"},"list":[]})"}) {
    INFO(ok);
    CHECK(whole(ok));
  }
  for (const char* bad :
       {R"({"pet":{"kind":"cat"}})", R"({"pet":{"kind":"dog","lives":9}})",
        R"({"pet":{"kind":"cat","good":true,"lives":1}})", R"({"pet":{"kind":"bird"}})",
        R"({"pet":{}})", R"({"pet":{"kind":"dog"},"id":"abcd"})",
        R"({"pet":{"kind":"dog"},"id":-1})", R"({"pet":{"kind":"dog"},"n":50})",
        R"({"pet":{"kind":"dog"},"n":5.5})", R"({"pet":{"kind":"dog"},"list":["a",1]})",
        R"({"pet":{"kind":"dog"},"list":[1,"a"]})"}) {
    INFO(bad);
    CHECK_FALSE(whole(bad));
  }
  // Two alternatives open at once, then one.
  JsonReply r(*schema);
  REQUIRE(r.feed(std::string(R"({"pet":{"kind":")")));
  CHECK(r.states().size() == 2);
  REQUIRE(r.feed(std::string("d")));
  CHECK(r.states().size() == 1);

  // The mask keeps exactly the tokens that some open alternative takes.
  check_mask_agrees<JsonReply>(
      *schema, {R"({"pet":)", R"({"pet":{")", R"({"pet":{"kind":")", R"({"pet":{"kind":"dog",")",
                R"({"pet":{"kind":"dog"},"id":)", R"({"pet":{"kind":"dog"},"n":1)",
                R"({"pet":{"kind":"dog"},"list":[)"});
}

TEST_CASE("json schema: tuples give their first items their own schemas",
          "[json_mode][json_schema]") {
  // 2020-12's prefixItems (pydantic's Tuple[int, str]), then items for the rest; and the
  // earlier drafts' items list with additionalItems.
  const auto schema = JsonSchema::compile(json::parse(R"({"type": "object", "properties": {
      "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
               "items": false, "minItems": 2},
      "head": {"prefixItems": [{"const": "x"}], "items": {"type": "boolean"}},
      "old": {"type": "array", "items": [{"type": "null"}], "additionalItems": false}}})"));
  auto whole = [&](const std::string& doc) {
    JsonReply r(*schema);
    return r.feed(doc) && r.done();
  };
  for (const char* ok : {R"({"pair":[1,"a"]})", R"({"head":["x"]})", R"({"head":["x",true,false]})",
                         R"({"head":[]})", R"({"old":[null]})", R"({"old":[]})"}) {
    INFO(ok);
    CHECK(whole(ok));
  }
  for (const char* bad :
       {R"({"pair":["a",1]})", R"({"pair":[1]})", R"({"pair":[1,"a",2]})", R"({"head":["y"]})",
        R"({"head":["x",1]})", R"({"old":[null,null]})", R"({"old":[1]})"}) {
    INFO(bad);
    CHECK_FALSE(whole(bad));
  }
  check_mask_agrees(*schema, {R"({"pair":[)", R"({"pair":[1,)", R"({"head":["x",)"});
}

TEST_CASE("json schema: objects keep within minProperties and maxProperties",
          "[json_mode][json_schema]") {
  const auto schema = JsonSchema::compile(json::parse(R"({"type": "object", "properties": {
      "tags": {"type": "object", "additionalProperties": {"type": "integer"},
               "minProperties": 1, "maxProperties": 2},
      "fixed": {"properties": {"a": {}, "b": {}, "c": {}}, "additionalProperties": false,
                "minProperties": 2}}})"));
  auto whole = [&](const std::string& doc) {
    JsonReply r(*schema);
    return r.feed(doc) && r.done();
  };
  for (const char* ok : {R"({"tags":{"x":1}})", R"({"tags":{"x":1,"y":2}})",
                         R"({"fixed":{"a":1,"c":2}})", R"({"fixed":{"c":1,"b":2,"a":3}})"}) {
    INFO(ok);
    CHECK(whole(ok));
  }
  for (const char* bad : {R"({"tags":{}})", R"({"tags":{"x":1,"y":2,"z":3}})",
                          R"({"fixed":{"a":1}})", R"({"fixed":{}})"}) {
    INFO(bad);
    CHECK_FALSE(whole(bad));
  }
  check_mask_agrees(*schema, {R"({"tags":{)", R"({"tags":{"x":1,"y":2)", R"({"fixed":{"a":1)"});
  CHECK_THROWS_WITH(
      JsonSchema::compile(json::parse(R"({"type":"object","properties":{"a":{"type":"integer"}},)"
                                      R"("additionalProperties":false,"minProperties":2})")),
      Catch::Contains("minProperties asks for more keys"));
}
