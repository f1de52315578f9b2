// Unit tests of the Jinja engine (core/chat/jinja*) and the built-in conversation templates.
// Expected strings are what jinja2 3.1 renders with transformers' chat-template environment
// (trim_blocks, lstrip_blocks, loopcontrols, tojson = json.dumps(ensure_ascii=False)).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "core/chat/chat_template.h"
#include "core/chat/conv_templates.h"
#include "core/chat/jinja.h"
#include "core/error.h"

using nlohmann::ordered_json;

namespace {

std::string render(const std::string& src, const ordered_json& ctx = ordered_json::object(),
                   llm::jinja::RenderOptions opts = {}) {
  if (opts.date.empty()) opts.date = "2026-01-15";
  return llm::jinja::render_template(src, ctx, opts);
}

// The llm::Error message of a failing render ("" if it renders).
std::string error_of(const std::string& src, const ordered_json& ctx = ordered_json::object(),
                     llm::jinja::RenderOptions opts = {}) {
  try {
    render(src, ctx, opts);
  } catch (const llm::Error& e) {
    return e.what();
  }
  return "";
}

ordered_json parse(const char* text) { return ordered_json::parse(text); }

}  // namespace

// ---- whitespace --------------------------------------------------------------------------------

TEST_CASE("trim_blocks and lstrip_blocks", "[jinja]") {
  // Block tags alone on their line vanish with their indentation and newline.
  CHECK(render("  {% if true %}\n    x\n  {% endif %}\n  {{ 'a' }}  {% if true %}y{% endif %}") ==
        "    x\n  a  y");
  CHECK(render("{% for i in range(2) %}\n{{ i }}\n{% endfor %}") == "0\n1\n");
  // lstrip only applies when the tag starts its line.
  CHECK(render("{{ 1 }}  {% if true %}x{% endif %}") == "1  x");
  CHECK(render("{{ 1 }}\n  {% if true %}x{% endif %}") == "1\nx");
  // Variable tags are not trimmed.
  CHECK(render("{{ 'a' }}\nb") == "a\nb");
}

TEST_CASE("whitespace control markers", "[jinja]") {
  CHECK(render("a\n  {%- if true %}\nb\n  {% endif -%}\nc") == "ab\nc");
  CHECK(render("{{ 'a' -}}\n   {{- 'b' }}   {%+ if true %}z{% endif +%}\nw") == "ab   z\nw");
  CHECK(render("<<{% if true -%}\n  x\n  {%- endif %}>>") == "<<x>>");
  CHECK(render("{%- for m in [1, 2] -%}\n  {{ m }}\n{%- endfor %}\n end") == "12 end");
  CHECK(render("x {#- c -#} y") == "xy");
  CHECK(render("a  {# c #}  b\n  {#- c #}\nc") == "a    bc");
}

TEST_CASE("comments, raw blocks and the trailing newline", "[jinja]") {
  CHECK(render("{# comment #}{{ 1 }}{# multi\nline #}\n{{ 2 }}") == "12");
  CHECK(render("{% raw %}\n  {{ x }}  {% endraw %}") == "\n  {{ x }}  ");
  CHECK(render("{%- raw -%}\n   {{ raw }}\n{%- endraw -%}\n  after") == "{{ raw }}after");
  // keep_trailing_newline=False: one final newline of the source is dropped.
  CHECK(render("a\n") == "a");
  CHECK(render("a\n\n") == "a\n");
  CHECK(render("a\r\nb") == "a\nb");
}

// ---- values and expressions --------------------------------------------------------------------

TEST_CASE("literals print as Python str()", "[jinja]") {
  CHECK(
      render("{{ [1, 'a', \"it's\", none, true, 1.5, {'k': [1]}] }} {{ (1,) }} {{ ('a', 'b') }}") ==
      "[1, 'a', \"it's\", None, True, 1.5, {'k': [1]}] (1,) ('a', 'b')");
  CHECK(render("{{ True }} {{ false }} {{ None }} {{ none }}") == "True False None None");
  CHECK(render("{{ 1.0 }} {{ 1e20 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 0.1 + 0.2 "
               "}}") == "1.0 1e+20 1e+16 1000000000000000.0 0.0001 1e-05 0.30000000000000004");
  CHECK(render(R"({{ 'a "q" \'s\' \\ \n\t\x41\u00e9\U0001F600 \101' }})") ==
        "a \"q\" 's' \\ \n\tAé😀 A");
  CHECK(render("{{ 'a' 'b' \"c\" }}") == "abc");
  CHECK(render("{{ ['a\\nb', '\\x01'] }}") == "['a\\nb', '\\x01']");
}

TEST_CASE("arithmetic follows Python", "[jinja]") {
  CHECK(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 1 / 2 }} {{ 4 / 2 }}") ==
        "3 -4 2 -2 0.5 2.0");
  CHECK(render("{{ 2 ** 10 }} {{ 2 ** -1 }} {{ 2 ** 0.5 }} {{ 7.0 // 2 }} {{ 10 % 3.5 }}") ==
        "1024 0.5 1.4142135623730951 3.0 3.0");
  // jinja2 precedence: unary minus binds tighter than **, which is left-associative.
  CHECK(render("{{ -2 ** 2 }} {{ 2 ** 3 ** 2 }} {{ 1 + 2 * 3 - 4 / 2 }}") == "4 64 5.0");
  CHECK(render("{{ 'ab' * 2 }} {{ [1] * 2 }} {{ [1] + [2] }} {{ 1 + true }}") ==
        "abab [1, 1] [1, 2] 2");
  CHECK(render("{{ 'a' ~ 1 ~ none ~ [1] ~ undefined }}") == "a1None[1]");
  CHECK(error_of("{{ 'a' ~ 1 + 2 }}") ==
        "template line 1: can only concatenate str (not \"int\") to str");
  CHECK(error_of("{{ 1 + none }}") ==
        "template line 1: unsupported operand type(s) for +: 'int' and 'NoneType'");
  CHECK(error_of("{{ 5 // 0 }}") == "template line 1: integer division or modulo by zero");
  CHECK(error_of("{{ 2 ** 64 }}") == "template line 1: integer overflow");
}

TEST_CASE("comparisons, membership and logic", "[jinja]") {
  CHECK(render("{{ 1 < 2 < 3 }} {{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] == [1, 2] }} "
               "{{ [1] == (1,) }}") == "True True True True False");
  CHECK(render("{{ 'a' in ['a'] }} {{ 'k' in {'k': 1} }} {{ 'b' not in 'abc' }} "
               "{{ not 1 in [1] }}") == "True True False False");
  CHECK(render("{{ true and 'x' }} {{ false or 'y' }} {{ 0 or none }} {{ '' and 1 }}") ==
        "x y None ");
  CHECK(error_of("{{ 1 < 'a' }}") ==
        "template line 1: '<' not supported between instances of 'int' and 'str'");
  CHECK(error_of("{{ 1 in 'abc' }}") ==
        "template line 1: 'in <string>' requires string as left operand, not int");
}

TEST_CASE("conditional expressions", "[jinja]") {
  CHECK(render("{{ 'x' if false }}|{{ 'x' if false else 'y' }}|{{ 1 if 0 else 2 if 0 else 3 }}") ==
        "|y|3");
  CHECK(render("{% set y = 1 if false %}{{ y is defined }}") == "False");
}

TEST_CASE("attribute, item and slice access", "[jinja]") {
  ordered_json ctx = parse(R"({"m": {"role": "user", "items": 5}, "l": [1, 2, 3]})");
  CHECK(render("{{ m.role }} {{ m['role'] }} {{ l[-1] }} {{ l[1:] }} {{ l[::-1] }} {{ l.0 }}",
               ctx) == "user user 3 [2, 3] [3, 2, 1] 1");
  // A method wins over a key for `.`, the key wins for `[]`.
  CHECK(render("{{ m['items'] }} {{ m.items() | list }}", ctx) ==
        "5 [('role', 'user'), ('items', 5)]");
  CHECK(render("{{ 'héllo'[1] }} {{ 'héllo'[1:4] }} {{ 'héllo'|length }} {{ l[5] }}|", ctx) ==
        "é éll 5 |");
}

TEST_CASE("undefined values behave like jinja2.Undefined", "[jinja]") {
  CHECK(render("[{{ x }}]{{ x is defined }}{{ x is undefined }}{{ x|default('d') }}") ==
        "[]FalseTrued");
  CHECK(render("{% for a in x %}{% else %}empty{% endfor %} {{ x|length }} {{ 'a' in x }}") ==
        "empty 0 False");
  CHECK(render("{{ {'a': 1}.b }}|{{ none.x }}|{{ [1][3] }}|") == "|||");
  CHECK(error_of("{{ x.y }}") == "template line 1: 'x' is undefined");
  CHECK(error_of("{{ {'a': 1}.b.c }}") == "template line 1: 'dict object' has no attribute 'b'");
  CHECK(error_of("{{ none.a.b }}") == "template line 1: 'None' has no attribute 'a'");
  CHECK(error_of("{{ x + 1 }}") == "template line 1: 'x' is undefined");
  CHECK(error_of("{{ x() }}") == "template line 1: 'x' is undefined");
  CHECK(error_of("{{ x|tojson }}") ==
        "template line 1: Object of type Undefined is not JSON serializable");
}

// ---- statements --------------------------------------------------------------------------------

TEST_CASE("for loops expose the loop variable", "[jinja]") {
  CHECK(
      render("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
             "{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}") ==
      "1032TrueFalse3;2121FalseFalse3;3210FalseTrue3;");
  CHECK(render("{% for x in 'abc' %}{{ loop.previtem }}{{ x }}{{ loop.nextitem }}|"
               "{{ loop.cycle('o', 'e') }}|{% endfor %}") == "ab|o|abc|e|bc|o|");
  CHECK(render("{% for x in [1, 1, 2] %}{{ loop.changed(x) }}{% endfor %}") == "TrueFalseTrue");
}

TEST_CASE("for loops: unpacking, filters, else, break and continue", "[jinja]") {
  CHECK(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }}"
               "{% if not loop.last %},{% endif %}{% endfor %}") == "a=1,b=2");
  CHECK(render("{% for a, (b, c) in [[1, [2, 3]]] %}{{ a }}{{ b }}{{ c }}{% endfor %}") == "123");
  CHECK(render("{% for x in [1, 2, 3] if x > 1 %}{{ loop.index }}/{{ loop.length }}:{{ x }} "
               "{% endfor %}") == "1/2:2 2/2:3 ");
  CHECK(render("{% for x in [] %}{% else %}E{% endfor %}") == "E");
  CHECK(render("{% for a in [1, 2, 3, 4] %}{% if a == 2 %}{% continue %}{% endif %}{{ a }}"
               "{% if a == 3 %}{% break %}{% endif %}{% endfor %}") == "13");
  CHECK(error_of("{% for a, b in [(1, 2, 3)] %}{% endfor %}") ==
        "template line 1: too many values to unpack (expected 2)");
  CHECK(error_of("{% for x in none %}{% endfor %}") ==
        "template line 1: 'NoneType' object is not iterable");
}

TEST_CASE("loop bodies get a fresh scope per iteration", "[jinja]") {
  CHECK(render("{% set x = 1 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}"
               "{{ x }}") == "2221");
  CHECK(render("{% for i in range(3) %}{% if i == 0 %}{% set y = 'a' %}{% endif %}[{{ y }}]"
               "{% endfor %}") == "[a][][]");
  CHECK(render("{% if true %}{% set z = 1 %}{% endif %}{{ z }}") == "1");
}

TEST_CASE("recursive loops", "[jinja]") {
  ordered_json ctx =
      parse(R"({"tree": [{"n": "a", "c": [{"n": "b", "c": []}]}, {"n": "c", "c": []}]})");
  CHECK(render("{% for x in tree recursive %}{{ x.n }}{{ loop.depth }}"
               "{% if x.c %}({{ loop(x.c) }}){% endif %}{% endfor %}",
               ctx) == "a1(b2)c1");
}

TEST_CASE("set, block set and namespace", "[jinja]") {
  CHECK(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}") == "12");
  CHECK(
      render("{% set x %}BLK{{ 1 }}{% endset %}{{ x }}{% set y | upper %}abc{% endset %}{{ y }}") ==
      "BLK1ABC");
  CHECK(render("{% set ns = namespace(a=1) %}{% for i in range(3) %}{% set ns.a = ns.a + i %}"
               "{% endfor %}{{ ns.a }} {{ ns }}") == "4 <Namespace {'a': 4}>");
  CHECK(render("{% set ns = namespace(items=[]) %}{% for i in range(3) %}"
               "{% set ns.items = ns.items + [i] %}{% endfor %}{{ ns.items }}") == "[0, 1, 2]");
  CHECK(error_of("{% set x = 1 %}{% set x.a = 2 %}") ==
        "template line 1: cannot assign attribute on non-namespace object");
}

TEST_CASE("macros", "[jinja]") {
  CHECK(render("{% macro m(a, b='B') %}[{{ a }}{{ b }}]{% endmacro %}{{ m(1) }}{{ m(1, 2) }}"
               "{{ m(b=3, a=4) }}{{ m() }}") == "[1B][12][43][B]");
  CHECK(render("{% macro f(a, b=a ~ '!') %}{{ b }}{% endmacro %}{{ f('x') }}") == "x!");
  CHECK(render("{% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, k=3) }}") ==
        "(1, 2){'k': 3}");
  CHECK(render("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
               "{{ f(3) }}") == "321");
  // Macros see the variables of their template at call time.
  CHECK(render("{% set x = 1 %}{% macro m() %}{{ x }}{% endmacro %}{% set x = 2 %}{{ m() }}") ==
        "2");
  CHECK(render("{% macro m(a) %}<{{ caller(a) }}>{% endmacro %}"
               "{% call(x) m(5) %}got {{ x }}{% endcall %}") == "<got 5>");
  CHECK(error_of("{% macro f(a) %}{{ a }}{% endmacro %}{{ f(1, 2) }}") ==
        "template line 1: macro 'f' takes not more than 1 argument(s)");
  CHECK(error_of("{% macro f(a) %}{{ a }}{% endmacro %}{{ f(b=1) }}") ==
        "template line 1: macro 'f' takes no keyword argument 'b'");
}

TEST_CASE("filter blocks, with and generation", "[jinja]") {
  CHECK(render("{% filter upper %}abc {{ 'd' }}{% endfilter %}") == "ABC D");
  CHECK(render("{% set x = 5 %}{% with x = x + 1, y = 2 %}{{ x }}{{ y }}{% endwith %}{{ x }}") ==
        "625");
  CHECK(render("{% generation %}kept {{ 1 }}{% endgeneration %}") == "kept 1");
}

// ---- filters -----------------------------------------------------------------------------------

TEST_CASE("string filters", "[jinja]") {
  CHECK(render("{{ '  a b \\n'|trim }}|{{ 'xxaxx'|trim('x') }}|{{ 'aBc'|upper }}|"
               "{{ 'AbC'|lower }}|{{ 'hello wORLD-foo'|title }}|{{ 'hELLO'|capitalize }}") ==
        "a b|a|ABC|abc|Hello World-Foo|Hello");
  CHECK(render("{{ 'aaa'|replace('a', 'b', 2) }} {{ 'a\\nb'|indent(2) }} "
               "{{ 'a\\n\\nb'|indent(2, true) }}") == "bba a\n  b   a\n\n  b");
  CHECK(
      render("{{ 'hello world foo'|truncate(9) }} {{ 'a b c'|wordcount }} {{ 'ab'|center(6) }}|") ==
      "hello... 3   ab  |");
  CHECK(render("{{ '<a href=\"x\">'|e }} {{ '%s-%d'|format('a', 3) }} {{ 42|string ~ '!' }}") ==
        "&lt;a href=&#34;x&#34;&gt; a-3 42!");
  CHECK(render("{{ x|default('d') }} {{ ''|default('e') }} {{ ''|default('e', true) }} "
               "{{ none|d('n') }}") == "d  e None");
}

TEST_CASE("number filters", "[jinja]") {
  CHECK(render(
            "{{ '42'|int }} {{ '3.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 'ff'|int(base=16) }} "
            "{{ '1.5'|float }} {{ -3|abs }} {{ (-3)|abs }}") == "42 3 0 7 255 1.5 3 3");
  CHECK(render("{{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 3|round }} "
               "{{ 3.2|round(0, 'ceil') }}") == "2.0 4.0 2.67 3 4.0");
}

TEST_CASE("sequence filters", "[jinja]") {
  ordered_json ctx = parse(R"({"users": [{"name": "b", "age": 30}, {"name": "A", "age": 20},
                                          {"name": "c"}]})");
  CHECK(render("{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'a']|sort }} {{ [3, 1]|sort(reverse=true) }}") ==
        "[1, 2, 3] ['A', 'a', 'b'] [3, 1]");
  CHECK(render("{{ users|sort(attribute='name')|map(attribute='name')|join(',') }}", ctx) ==
        "A,b,c");
  CHECK(render("{{ users|selectattr('age')|map(attribute='name')|list }} "
               "{{ users|rejectattr('age', 'defined')|map(attribute='name')|list }} "
               "{{ users|selectattr('age')|selectattr('age', 'gt', 25)|list|length }}",
               ctx) == "['b', 'A'] ['c'] 1");
  CHECK(render("{{ [1, 2, 3]|select('odd')|list }} {{ [1, 2, 3]|reject('odd')|list }} "
               "{{ ['A', 'B']|map('lower')|list }} {{ users|map(attribute='age', default=0)|sum }}",
               ctx) == "[1, 3] [2] ['a', 'b'] 50");
  CHECK(render("{{ ['b', 'A', 'a']|unique|list }} {{ [1, 2, 3]|first }} {{ [1, 2, 3]|last }} "
               "{{ ['b', 'A']|max }} {{ [3, 1]|min }} {{ [1, 2]|reverse|list }}") ==
        "['b', 'A'] 1 3 b 1 [2, 1]");
  CHECK(render("{{ {'b': 1, 'A': 2, 'a': 0}|dictsort }} {{ {'k': 1}|items|list }} "
               "{{ 'ab'|list }} {{ [1, 2, 3, 4, 5]|batch(2)|list }}") ==
        "[('A', 2), ('a', 0), ('b', 1)] [('k', 1)] ['a', 'b'] [[1, 2], [3, 4], [5]]");
  CHECK(render("{{ {'a': 1, 'b': 2}|length }} {{ [1, [2]]|count }} {{ [1, 2]|join('-') }}") ==
        "2 2 1-2");
}

TEST_CASE("tojson matches transformers' json.dumps", "[jinja]") {
  CHECK(render("{{ {'a': 'x', 'b': [1, 2.0, none, true], 'é': '\"\\n'}|tojson }}") ==
        R"({"a": "x", "b": [1, 2.0, null, true], "é": "\"\n"})");
  CHECK(render("{{ {'a': [], 'b': {}, 'c': [1, {'d': 2}]}|tojson(indent=2) }}") ==
        "{\n  \"a\": [],\n  \"b\": {},\n  \"c\": [\n    1,\n    {\n      \"d\": 2\n    }\n  ]\n}");
  CHECK(render("{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} "
               "{{ 'é😀'|tojson(ensure_ascii=true) }} {{ [1, 2]|tojson(separators=(',', ':')) }}") ==
        R"({"a": 2, "b": 1} "\u00e9\ud83d\ude00" [1,2])");
  // Key order is the caller's when the context is an ordered_json.
  CHECK(render("{{ t|tojson }}", parse(R"({"t": {"z": 1, "a": 2}})")) == R"({"z": 1, "a": 2})");
}

TEST_CASE("generators and Markup behave like jinja2", "[jinja]") {
  // Filters that yield return generators: always true, no len(), not JSON-serializable.
  CHECK(render("{% if [] | select('odd') %}T{% endif %}") == "T");
  CHECK(error_of("{{ [1, 2]|map('string')|length }}") ==
        "template line 1: object of type 'generator' has no len()");
  CHECK(error_of("{{ [1, 2]|map('string')|tojson }}") ==
        "template line 1: Object of type generator is not JSON serializable");
  CHECK(render("{% set g = [1, 2, 3]|select('odd') %}{{ g|list }}{{ g|list }}") == "[1, 3][]");
  CHECK(render("{{ {'a': 1}.items() }} {{ range(3) }} {{ range(1, 9, 3)|list }}") ==
        "dict_items([('a', 1)]) range(0, 3) [1, 4, 7]");
  // `|safe` makes Markup, and Markup + str escapes the plain side.
  CHECK(render("{{ 'a'|safe + '<b>' }} {{ '<x>'|e|e }} {{ ('<x>'|safe) ~ '<y>' }}") ==
        "a&lt;b&gt; &lt;x&gt; <x><y>");
}

// ---- methods -----------------------------------------------------------------------------------

TEST_CASE("string methods", "[jinja]") {
  CHECK(render("{{ '  a b  '.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a b c'.split(' ', 1) }} "
               "{{ 'a b c'.rsplit(' ', 1) }} {{ 'a\\nb\\r\\nc'.splitlines() }}") ==
        "['a', 'b'] ['a', 'b', '', 'c'] ['a', 'b c'] ['a b', 'c'] ['a', 'b', 'c']");
  CHECK(
      render(
          "{{ ' x '.strip() }}|{{ 'xyx'.strip('x') }}|{{ ' x'.lstrip() }}|{{ 'x '.rstrip() }}|") ==
      "x|y|x|x|");
  CHECK(render("{% set s = 'Hello World' %}{{ s.startswith('He') }} {{ s.endswith(('x', 'ld')) }} "
               "{{ s.find('o') }} {{ s.rfind('o') }} {{ s.count('o') }} {{ s.replace('o', '0') }} "
               "{{ s.upper() }} {{ s.lower() }} {{ 'they\\'re'.title() }}") ==
        "True True 4 7 2 Hell0 W0rld HELLO WORLD hello world They'Re");
  CHECK(
      render("{{ '123'.isdigit() }} {{ 'ab'.isalpha() }} {{ ' '.isspace() }} {{ 'AB'.isupper() }} "
             "{{ ','.join(['a', 'b']) }} {{ 'a.b.c'.partition('.') }}") ==
      "True True True True a,b ('a', '.', 'b.c')");
  CHECK(render("{{ '{} {x}'.format(1, x=2) }} {{ '{0:>3}{0}'.format(1) }} "
               "{{ '{:.2f}|{:,}'.format(3.14159, 1234567) }} {{ '%s and %r' % ('a', 'b') }}") ==
        "1 2   11 3.14|1,234,567 a and 'b'");
  CHECK(error_of("{{ '{} {0}'.format(1) }}") ==
        "template line 1: cannot switch from automatic field numbering to manual field "
        "specification");
}

TEST_CASE("dict and list methods", "[jinja]") {
  CHECK(render("{% set d = {'a': 1} %}{{ d.get('a') }} {{ d.get('b') }} {{ d.get('b', 5) }} "
               "{{ d.keys()|list }} {{ d.values()|list }}") == "1 None 5 ['a'] [1]");
  const std::string mutate =
      "{% set l = [3, 1] %}{% set _ = l.append(2) %}{% set _ = l.extend([5]) %}"
      "{% set _ = l.insert(0, 0) %}{{ l }} {{ l.pop() }} {{ l.pop(0) }} {{ l.index(2) }} "
      "{{ l.count(1) }}{% set d = {} %}{% set _ = d.update(a=1) %} {{ d }}";
  CHECK(render(mutate) == "[0, 3, 1, 2, 5] 5 0 2 1 {'a': 1}");
  // transformers' ImmutableSandboxedEnvironment refuses mutation; the option does the same.
  llm::jinja::RenderOptions sandbox;
  sandbox.immutable_sandbox = true;
  CHECK(error_of(mutate, ordered_json::object(), sandbox) ==
        "template line 1: access to attribute 'append' of 'list' object is unsafe.");
}

// ---- tests and globals
// ---------------------------------------------------------------------------

TEST_CASE("tests", "[jinja]") {
  CHECK(render("{{ none is none }} {{ 1 is not none }} {{ 'a' is string }} {{ 1 is number }} "
               "{{ true is number }} {{ true is integer }} {{ 1.0 is float }} {{ {} is mapping }} "
               "{{ [] is mapping }}") == "True True True True True False True True False");
  CHECK(render("{{ 'x' is iterable }} {{ none is iterable }} {{ x is iterable }} "
               "{{ [] is sequence }} {{ true is boolean }} {{ 1 is true }} {{ true is true }} "
               "{{ range is callable }}") == "True False True True True False True True");
  CHECK(render("{{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 1 is eq 1 }} "
               "{{ 2 is gt 1 }} {{ 'a' is in 'abc' }} {{ 'A' is upper }} {{ 'a' is lower }} "
               "{% set l = [] %}{{ l is sameas l }}") ==
        "True True True True True True True True True");
}

TEST_CASE("globals", "[jinja]") {
  CHECK(render("{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }}") ==
        "[0, 1, 2] [1, 4, 7] [5, 3, 1]");
  CHECK(render("{{ dict(a=1, b=2) }} {% set n = namespace({'q': 1}, r=2) %}{{ n.q }}{{ n.r }}") ==
        "{'a': 1, 'b': 2} 12");
  CHECK(render("{{ strftime_now('%Y-%m-%d %A %d %b') }}") == "2026-01-15 Thursday 15 Jan");
  llm::jinja::RenderOptions other_day;
  other_day.date = "2024-02-29";
  CHECK(render("{{ strftime_now('%d %B %Y') }}", ordered_json::object(), other_day) ==
        "29 February 2024");
  // raise_exception's message surfaces unchanged.
  CHECK(error_of("line 1\n{{ raise_exception('Conversation roles must alternate') }}") ==
        "Conversation roles must alternate");
}

// ---- errors
// --------------------------------------------------------------------------------------

TEST_CASE("errors name the template line", "[jinja]") {
  const std::string many_lines = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n{{ x|frobnicate }}";
  CHECK(error_of(many_lines) == "template line 12: unknown filter 'frobnicate'");
  CHECK(error_of("{% if true %}\n\n{% endfor %}") == "template line 3: unexpected 'endfor'");
  CHECK(error_of("{% if true %}\nno end") == "template line 1: unclosed 'if' (missing 'endif')");
  CHECK(error_of("\n{% frob %}") == "template line 2: unknown tag 'frob'");
  CHECK(error_of("{{ 1 is frobnicated }}") == "template line 1: unknown test 'frobnicated'");
  CHECK(error_of("{{ 1 + }}") == "template line 1: unexpected '}}'");
  CHECK(error_of("\n\n{{ 'abc }}") == "template line 3: unterminated string literal");
  CHECK(error_of("{% break %}") == "template line 1: 'break' outside of a loop");
  CHECK(error_of("{{ f(a=1, 2) }}") ==
        "template line 1: positional argument follows keyword argument");
  CHECK(error_of("{% include 'x' %}") == "template line 1: unsupported tag 'include'");
  CHECK(error_of("{% for m in messages %}\n  {{ m.content.upper() }}\n{% endfor %}",
                 parse(R"({"messages": [{"role": "user"}]})")) ==
        "template line 2: 'dict object' has no attribute 'content'");
}

TEST_CASE("parse-time checks follow jinja2", "[jinja]") {
  // Unknown filters and tests fail when the template is parsed ...
  CHECK(error_of("{% for x in [] %}\n{{ x|nofilter }}{% endfor %}") ==
        "template line 2: unknown filter 'nofilter'");
  CHECK_THROWS_WITH(llm::jinja::Template("{% macro m() %}{{ 1 is notest }}{% endmacro %}"),
                    "template line 1: unknown test 'notest'");
  // ... except inside an `if` or an inline if-expression, where they fail only when run
  // (DeepSeek's templates rely on this for `from_json`).
  CHECK(render("{% if false %}{{ x|from_json }}{% endif %}{{ 1 if true else x|nofilter }}") == "1");
  CHECK(error_of("{% if true %}{{ {}|from_json }}{% endif %}") ==
        "template line 1: unknown filter 'from_json'");
  // Python-style colons before %}, and non-ASCII identifiers.
  CHECK(render("{% if true: %}a{% else: %}b{% endif %}{% for x in [1]: %}{{ x }}{% endfor %}") ==
        "a1");
  CHECK(render("{% set größe = 3 %}{{ größe }}") == "3");
  CHECK(error_of("{% set a, = [1] %}") == "template line 1: expected a name, got '='");
}

TEST_CASE("hostile templates fail cleanly", "[jinja]") {
  CHECK(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}") ==
        "template line 1: maximum recursion depth exceeded");
  CHECK(error_of("{% for i in range(10**9) %}{% endfor %}") ==
        "template line 1: Range too big. The sandbox blocks ranges larger than MAX_RANGE "
        "(100000).");
  llm::jinja::RenderOptions small;
  small.max_loop_iterations = 1000;
  CHECK(error_of("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}",
                 ordered_json::object(),
                 small) == "template line 1: too many loop iterations (limit 1000)");
  small.max_output_bytes = 100;
  CHECK(error_of("{{ 'x' * 101 }}", ordered_json::object(), small) ==
        "template line 1: output exceeds 100 bytes");
  CHECK(error_of("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}")
            .find("too deep") != std::string::npos);
  std::string chain = "{{ 1";
  for (int i = 0; i < 5000; ++i) chain += " + 1";
  CHECK(error_of(chain + " }}").find("too deeply nested") != std::string::npos);
  CHECK(error_of("{% set l = [] %}{% set _ = l.append(l) %}{{ l }}").find("nesting") !=
        std::string::npos);
  CHECK(error_of("{{ 'x' * 10**12 }}") ==
        "template line 1: string too large (over 268435456 bytes)");
  // Doubling a string in a loop hits the same cap instead of exhausting memory.
  CHECK(error_of("{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                 "{% set ns.s = ns.s ~ ns.s %}{% endfor %}") ==
        "template line 1: string too large (over 268435456 bytes)");
  CHECK(error_of("{% set ns = namespace(s='xx') %}{% for i in range(40) %}"
                 "{% set ns.s = ns.s.replace('x', ns.s) %}{% endfor %}") ==
        "template line 1: string too large (over 268435456 bytes)");
  CHECK_NOTHROW(error_of(std::string("{{ \xff\xfe }}")));
  CHECK(render("{{ '\xff' }}") == "\xff");  // invalid UTF-8 passes through untouched
}

// ---- built-in conversation templates -----------------------------------------------------------

TEST_CASE("built-in conversation templates", "[conv_templates]") {
  const ordered_json chat = parse(R"([
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Hi!"},
      {"role": "assistant", "content": "Hello."},
      {"role": "user", "content": "2+2?"}])");
  llm::ChatTemplateOptions opts;
  opts.add_generation_prompt = true;
  auto conv = [&](const std::string& name) {
    const std::string* src = llm::find_conv_template(name);
    REQUIRE(src != nullptr);
    return llm::render_chat_template(*src, chat, opts);
  };
  CHECK(conv("llama-2") ==
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] 2+2? [/INST]");
  CHECK(conv("llama-3") ==
        "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(conv("chatml") ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n");
  CHECK(conv("mistral") == "<s>[INST] Be brief.\n\nHi! [/INST] Hello.</s>[INST] 2+2? [/INST]");
  CHECK(conv("phi-3") ==
        "<s><|system|>\nBe brief.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\nHello.<|end|>\n"
        "<|user|>\n2+2?<|end|>\n<|assistant|>\n");
  CHECK(conv("gemma") ==
        "<s><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\nHello."
        "<end_of_turn>\n<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n");
  CHECK(conv("redpajama_chat") == "Be brief.\n<human>: Hi!\n<bot>: Hello.\n<human>: 2+2?\n<bot>:");
  CHECK(conv("vicuna_v1.1") == "<s>Be brief. USER: Hi! ASSISTANT: Hello.</s>USER: 2+2? ASSISTANT:");
  CHECK(conv("rwkv_world") ==
        "User: hi\n\nAssistant: Be brief.\n\nUser: Hi!\n\nAssistant: Hello.\n\nUser: 2+2?\n\n"
        "Assistant:");
}

TEST_CASE("built-in templates: defaults, generation prompt and roles", "[conv_templates]") {
  CHECK(llm::conv_template_names() ==
        std::vector<std::string>{"chatml", "gemma", "llama-2", "llama-3", "mistral", "phi-3",
                                 "redpajama_chat", "rwkv_world", "vicuna_v1.1"});
  CHECK(llm::find_conv_template("no-such-template") == nullptr);

  const ordered_json one = parse(R"([{"role": "user", "content": "Hi"}])");
  llm::ChatTemplateOptions opts;
  opts.bos_token = "<|begin_of_text|>";
  // Without a system message the MLC default system prompt is used.
  CHECK(llm::render_chat_template(*llm::find_conv_template("llama-3"), one, opts) ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful, "
        "respectful and honest assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        "Hi<|eot_id|>");
  // An empty system message drops the system block; content parts are flattened.
  const ordered_json parts = parse(R"([{"role": "system", "content": ""},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image"},
                                   {"type": "text", "text": "b"}]}])");
  opts.add_generation_prompt = true;
  CHECK(llm::render_chat_template(*llm::find_conv_template("chatml"), parts, opts) ==
        "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n");
  const ordered_json tool = parse(R"([{"role": "user", "content": "q"},
                                      {"role": "tool", "content": "t"}])");
  CHECK_THROWS_WITH(llm::render_chat_template(*llm::find_conv_template("gemma"), tool, opts),
                    "the gemma template does not support role 'tool'");
  CHECK(llm::render_chat_template(*llm::find_conv_template("chatml"), tool, opts)
            .find("<|im_start|>tool\nt<|im_end|>\n") != std::string::npos);
}
